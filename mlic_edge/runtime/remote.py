"""`RemoteTagger`: a tagger whose model runs in a Triton server (`mlic-edge serve`, or a
repository from `mlic-edge export-triton` in NVIDIA's container).

    import mlic_edge
    with mlic_edge.load("http://localhost:8000/best") as tagger:       # or grpc://localhost:8001/best
        tagger.predict(["a.jpg", "b.png"])[0].labels

Why it sends files, one per request, several requests in flight: the server decodes (threads), and
Triton's dynamic batcher merges concurrent requests (from this client and others) into the model's
batches; one image per request also makes an undecodable file an error of its own row only.
Classes, thresholds and preprocessing come from the server's `<name>_metadata` model, so labels
are computed here exactly as a local Tagger computes them (a --threshold works the same way).

Torch-free; `tritonclient` (the `serve` extra) is imported when a RemoteTagger is made.
"""
from __future__ import annotations

import io
import json
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import BackendUnavailable, ConfigError, ModelFileError, one_line
from ..core.metadata import ModelMetadata
from ..core.preprocess import image_from_array, pil
from .model import LoadedModel, Prediction
from .tagger import BaseTagger, _describe, check_options

SCHEMES = ("http://", "https://", "grpc://")


def is_remote(model: Any) -> bool:
    """True for a server URL (http://, https://, grpc://) rather than a model file."""
    return isinstance(model, str) and model.lower().startswith(SCHEMES)


def parse_server(server: str, model: str | None = None) -> tuple[str, str, str | None]:
    """"http://host:8000/name" | "grpc://host:8001/name" | "host:8000" -> (protocol, "host:port",
    model name or None). `model` (infer's --model with --server) names the model when the URL does not."""
    text = server.strip()
    protocol = "http"
    for scheme in SCHEMES:
        if text.lower().startswith(scheme):
            protocol = scheme[:-3]
            text = text[len(scheme):]
            break
    address, _, path = text.partition("/")
    if not address:
        raise ConfigError(f"{server}: expected host:port, http://host:port/model or grpc://host:port/model")
    name = path.strip("/") or None
    if name and model and name != str(model):
        raise ConfigError(f"{server}: names model {name!r} but --model says {model!r}")
    if ":" not in address:
        address += ":8001" if protocol == "grpc" else (":443" if protocol == "https" else ":8000")
    return protocol, address, name or (str(model) if model else None)


class RemoteTagger(BaseTagger):
    """A tagger over a Triton server: `predict`, `iter_predict`, `classes`, `thresholds`,
    `metadata`, `limits`, `describe`, `stream` (video: the sampled frames are sent as images) and
    `close` as for a local model (no attention).

    concurrency: requests in flight (default 2 x batch_size, so the server's batcher can fill a
    batch of batch_size while the previous one runs); timeout_s: per request and connection."""

    def __init__(self, server: str, model: str | None = None, *, batch_size: int = 8, workers: int = 2,
                 threshold: float | None = None, concurrency: int | None = None, timeout_s: float = 60.0,
                 **_ignored: Any):
        check_options(batch_size, threshold)
        self.protocol, self.address, name = parse_server(server, model)
        self.server = server
        self.timeout_s = float(timeout_s)
        self._module = _client_module(self.protocol)
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        self._closed = False
        client = self._client()
        self._check_live(client)
        self.name = name or self._discover(client)
        info = self._fetch_metadata(client)
        self.served_backend: dict[str, Any] = info.get("backend") or {}
        loaded = LoadedModel.from_metadata(_metadata(info, self.url), self.url)
        super().__init__(loaded, batch_size=batch_size, workers=workers, threshold=threshold)
        self.concurrency = max(int(concurrency or 2 * batch_size), 1)
        self._outputs = self._output_names(client)

    # ---------------------------------------------------------------- connection
    @property
    def url(self) -> str:
        """What a job is keyed on (infer --resume): the protocol, address and model name."""
        return f"{self.protocol}://{self.address}/{self.name}"

    def _client(self) -> Any:
        """One client per thread (tritonclient's HTTP client is not thread-safe)."""
        client = getattr(self._local, "client", None)
        if client is None:
            if self._closed:
                raise ConfigError("this tagger was closed")
            if self.protocol == "grpc":
                client = self._module.InferenceServerClient(self.address)
            else:
                client = self._module.InferenceServerClient(
                    self.address, ssl=self.protocol == "https", connection_timeout=self.timeout_s,
                    network_timeout=self.timeout_s)
            self._local.client = client
            with self._clients_lock:
                self._clients.append(client)
        return client

    def _check_live(self, client: Any) -> None:
        try:
            live = client.is_server_live()
        except Exception as e:
            raise BackendUnavailable(f"{self.server}: no Triton server answers ({one_line(e)})") from None
        if not live:
            raise BackendUnavailable(f"{self.server}: the Triton server is not live")

    def _discover(self, client: Any) -> str:
        """The one model served with a `<name>_metadata` companion (else name it in the URL). The
        repository index first; PyTriton restricts it (access token), so then the statistics API,
        which lists every loaded model too."""
        try:
            index = client.get_model_repository_index()
            entries = index.get("models", index) if isinstance(index, dict) else index.models
        except Exception:
            try:
                stats = client.get_inference_statistics()
            except Exception as e:
                raise BackendUnavailable(f"{self.server}: cannot list models ({one_line(e)})") from None
            entries = stats["model_stats"] if isinstance(stats, dict) else stats.model_stats
        names = {e["name"] if isinstance(e, dict) else e.name for e in entries}
        ours = sorted(n for n in names if f"{n}_metadata" in names)
        if len(ours) != 1:
            raise ConfigError(f"{self.server}: serves {', '.join(ours) or 'no mlic-edge model'}; name one: "
                              f"--model NAME or {self.protocol}://{self.address}/NAME")
        return ours[0]

    def _fetch_metadata(self, client: Any) -> dict[str, Any]:
        module = self._module
        request = module.InferInput("request", [1, 1], "BYTES")
        request.set_data_from_numpy(np.array([[b"metadata"]], dtype=object))
        try:
            result = self._infer(client, f"{self.name}_metadata", [request], ["metadata"])
        except Exception as e:
            raise ModelFileError(f"{self.protocol}://{self.address}/{self.name}: no mlic-edge metadata from "
                                 f"model {self.name}_metadata ({one_line(e)})") from None
        try:
            return json.loads(bytes(result.as_numpy("metadata").reshape(-1)[0]).decode("utf-8"))
        except (ValueError, TypeError, AttributeError) as e:
            raise ModelFileError(f"{self.url}: malformed metadata ({e})") from None

    def _output_names(self, client: Any) -> list[str]:
        """scores + error where the model has it (`serve`); an export-triton ensemble has no error
        output (it answers a bad image with Triton's error for that request)."""
        try:
            meta = client.get_model_metadata(self.name)
        except Exception as e:
            raise ModelFileError(f"{self.url}: no such model on the server ({one_line(e)})") from None
        outputs = meta["outputs"] if isinstance(meta, dict) else meta.outputs
        names = {o["name"] if isinstance(o, dict) else o.name for o in outputs}
        if "scores" not in names:
            raise ModelFileError(f"{self.url}: has no 'scores' output; not an mlic-edge model")
        return ["scores"] + (["error"] if "error" in names else [])

    def _infer(self, client: Any, model: str, inputs: list, outputs: list[str]) -> Any:
        requested = [self._module.InferRequestedOutput(n) for n in outputs]
        if self.protocol == "grpc":
            return client.infer(model, inputs, outputs=requested, client_timeout=self.timeout_s)
        return client.infer(model, inputs, outputs=requested)

    # ---------------------------------------------------------------- facts
    @property
    def has_attention(self) -> bool:
        return False

    def describe(self) -> dict[str, Any]:
        served = self.served_backend
        return {"model": self.url, "backend": f"triton ({served.get('backend', '?')})",
                "device": f"{served.get('device', '?')} at {self.address}", "precision": self.metadata.precision,
                "outputs": ["scores", "labels"], "batch_range": None, "server": self.url}

    # ---------------------------------------------------------------- images
    def iter_predict(self, inputs: Iterable, threshold: float | None = None, *, batch_size: int | None = None,
                     with_attention: bool = False, keep_images: bool = False) -> Iterator[Prediction]:
        """Predictions in input order; `concurrency` single-image requests in flight."""
        if with_attention:
            raise ConfigError(f"{self.url}: attention maps are not served; run the model locally for them")
        limits = self.limits(threshold)
        window = max(self.concurrency, batch_size or 0)
        with ThreadPoolExecutor(max_workers=window, thread_name_prefix="mlic-remote") as pool:
            pending: deque[tuple[str, Future]] = deque()
            iterator = enumerate(iter(inputs))
            try:
                for index, item in iterator:
                    pending.append((_describe(item, index), pool.submit(self._one, item)))
                    if len(pending) >= window:
                        yield self._prediction(*pending.popleft(), limits)
                while pending:
                    yield self._prediction(*pending.popleft(), limits)
            finally:
                for _, future in pending:
                    future.cancel()

    def _prediction(self, source: str, future: Future, limits: np.ndarray) -> Prediction:
        scores, error = future.result()
        if error is not None:
            return Prediction(source, error=f"{source}: {error}")
        return self.model.scored(source, scores, limits)

    def _one(self, item: Any) -> tuple[np.ndarray | None, str | None]:
        """One input -> (scores (K,), None) or (None, one-line error without the source)."""
        try:
            data = _encoded(item)
        except FileNotFoundError:
            return None, "image file not found"
        except OSError as e:
            return None, f"cannot read ({e.strerror or type(e).__name__})"
        except (ValueError, ConfigError) as e:
            return None, one_line(e)
        module = self._module
        image = module.InferInput("image", [1, 1], "BYTES")
        image.set_data_from_numpy(np.array([[data]], dtype=object))
        try:
            result = self._infer(self._client(), self.name, [image], self._outputs)
        except Exception as e:          # Triton's error for this request (export-triton), transport errors
            return None, f"server: {one_line(e)}"
        if "error" in self._outputs:
            error = bytes(result.as_numpy("error").reshape(-1)[0]).decode("utf-8", errors="replace")
            if error:
                return None, error.removeprefix("image: ")
        return np.asarray(result.as_numpy("scores"), dtype=np.float64).reshape(-1), None

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        self._closed = True
        with self._clients_lock:
            clients, self._clients = self._clients, []
        for client in clients:
            try:
                client.close()
            except Exception:
                pass

    def __repr__(self) -> str:
        return f"RemoteTagger({len(self.classes)} classes, {self.image_size} px, {self.url})"


def _client_module(protocol: str) -> Any:
    """tritonclient's module for the protocol; one-line BackendUnavailable where it is missing."""
    try:
        if protocol == "grpc":
            import tritonclient.grpc as client_module
        else:
            import tritonclient.http as client_module
    except ImportError:
        raise BackendUnavailable("talking to a Triton server needs tritonclient: "
                                 "pip install 'mlic-edge[serve]' (or tritonclient[http,grpc])") from None
    return client_module


def _metadata(info: dict[str, Any], url: str) -> ModelMetadata:
    try:
        return ModelMetadata(**info["metadata"])
    except (KeyError, TypeError) as e:
        raise ModelFileError(f"{url}: malformed metadata ({one_line(e)})") from None


def _encoded(item: Any) -> bytes:
    """The bytes sent for one input: a file as it is; PIL images and arrays as PNG (lossless)."""
    if isinstance(item, (str, os.PathLike)):
        return Path(item).read_bytes()
    if isinstance(item, np.ndarray):
        item = image_from_array(item)                    # ValueError (one line) for other arrays
    if not isinstance(item, pil().Image.Image):
        raise ConfigError(f"expected a path, a PIL image or an HWC uint8 array, got {type(item).__name__}")
    buffer = io.BytesIO()
    item.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


__all__ = ["RemoteTagger", "is_remote", "parse_server"]
