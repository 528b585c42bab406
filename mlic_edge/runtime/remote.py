"""`RemoteTagger`: a tagger whose model runs in a Triton server (`mlic-edge serve`, or a
repository from `mlic-edge export-triton` in NVIDIA's container).

    import mlic_edge
    with mlic_edge.load("http://localhost:8000/best") as tagger:       # or grpc://localhost:8001/best
        tagger.predict(["a.jpg", "b.png"])[0].labels

Why it sends files, up to the server's max batch per request, a few requests in flight: the server
decodes (threads) next to the model, so the client stays light; a request per image costs a round
trip (HTTP, Triton, the Python backend's IPC) per image, a full request costs one per batch; and
with the next request queued while one runs, the server's model never waits for the client.
Triton's dynamic batcher still merges smaller requests (a job's last, other clients'). Tensors
travel binary (gRPC always; HTTP with binary_data). An undecodable file is an error of its own row
(the server's `error` output); a request that fails as a whole (an export-triton ensemble answers a
bad image that way) is sent again one row per request, so only the bad row fails.
Classes, thresholds and preprocessing come from the server's `<name>_metadata` model, so labels
are computed here exactly as a local Tagger computes them (a --threshold works the same way).

Torch-free; `tritonclient` (the `serve` extra) is imported when a RemoteTagger is made.
"""
from __future__ import annotations

import io
import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import BackendUnavailable, ConfigError, ModelFileError, one_line
from ..core.images import batched
from ..core.metadata import ModelMetadata
from ..core.preprocess import image_from_array, pil
from .model import LoadedModel, Prediction
from .tagger import BaseTagger, _describe, check_options

SCHEMES = ("http://", "https://", "grpc://")
DEFAULT_IN_FLIGHT = 3          # requests: one running, one queued behind it, one being built
POLL_S = 0.2


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

    concurrency: requests in flight, each of up to the server's max batch of images (`max_batch`,
    read from the model's config); timeout_s: per request and connection; wait_s: how long to wait
    for the server and the model (named, or the one it serves) to be ready, 0 to check once."""

    def __init__(self, server: str, model: str | None = None, *, batch_size: int = 8, workers: int = 2,
                 threshold: float | None = None, concurrency: int | None = None, timeout_s: float = 60.0,
                 wait_s: float = 0.0, **_ignored: Any):
        check_options(batch_size, threshold)
        if wait_s < 0:
            raise ConfigError(f"wait: expected seconds >= 0, got {wait_s}")
        self.protocol, self.address, name = parse_server(server, model)
        self.server = server
        self.timeout_s = float(timeout_s)
        self._module = _client_module(self.protocol)
        self._local = threading.local()
        self._clients: list[Any] = []
        self._clients_lock = threading.Lock()
        self._closed = False
        client = self._client()
        self.name = self._wait_ready(client, name, float(wait_s))
        info = self._fetch_metadata(client)
        self.served_backend: dict[str, Any] = info.get("backend") or {}
        loaded = LoadedModel.from_metadata(_metadata(info, self.url), self.url)
        super().__init__(loaded, batch_size=batch_size, workers=workers, threshold=threshold)
        self.concurrency = max(int(concurrency or DEFAULT_IN_FLIGHT), 1)
        self._outputs = self._output_names(client)
        self.max_batch = self._max_batch(client)

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

    def _wait_ready(self, client: Any, name: str | None, wait_s: float) -> str:
        """The model's name once it and its `_metadata` companion are ready: checked once
        (wait_s 0), else polled until wait_s runs out (a server still starting, a model loading)."""
        deadline = time.monotonic() + wait_s
        while True:
            found, problem = self._ready_model(client, name)
            if found is not None:
                return found
            if time.monotonic() >= deadline:
                if wait_s <= 0:
                    raise problem
                what = f"model {name}" if name else "an mlic-edge model"
                raise BackendUnavailable(f"{self.server}: {what} not ready after {wait_s:g} s "
                                         f"(last: {one_line(problem)})") from None
            time.sleep(POLL_S)

    def _ready_model(self, client: Any, name: str | None) -> tuple[str | None, Exception]:
        """(the named or discovered model, ...) when it and its `_metadata` are ready, else (None,
        why not). Several served models are a ConfigError at once: waiting cannot choose one."""
        try:
            live = client.is_server_live()
        except Exception as e:
            return None, BackendUnavailable(f"{self.server}: no Triton server answers ({one_line(e)})")
        if not live:
            return None, BackendUnavailable(f"{self.server}: the Triton server is not live")
        if name is None:
            ours = self._discover(client)
            if not ours:
                return None, ConfigError(f"{self.server}: serves no mlic-edge model; name one: "
                                         f"--model NAME or {self.protocol}://{self.address}/NAME")
            name = ours[0]
        try:
            ready = client.is_model_ready(name) and client.is_model_ready(f"{name}_metadata")
        except Exception:
            ready = False
        return (name, None) if ready else (None, BackendUnavailable(f"{self.server}: model {name} is not ready"))

    def _discover(self, client: Any) -> list[str]:
        """The models served with a `<name>_metadata` companion: none yet, or one (several: name
        one in the URL). The repository index first; PyTriton restricts it (access token), so then
        the statistics API, which lists every loaded model too."""
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
        if len(ours) > 1:
            raise ConfigError(f"{self.server}: serves {', '.join(ours)}; name one: "
                              f"--model NAME or {self.protocol}://{self.address}/NAME")
        return ours

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

    def _max_batch(self, client: Any) -> int:
        """The model's max_batch_size (its config): the most images one request may carry."""
        try:
            config = client.get_model_config(self.name, **({"as_json": True} if self.protocol == "grpc" else {}))
        except Exception as e:
            raise ModelFileError(f"{self.url}: cannot read the model's config ({one_line(e)})") from None
        config = config.get("config", config)
        return max(int(config.get("max_batch_size", 1) or 1), 1)

    def _infer(self, client: Any, model: str, inputs: list, outputs: list[str]) -> Any:
        if self.protocol == "grpc":
            requested = [self._module.InferRequestedOutput(n) for n in outputs]
            return client.infer(model, inputs, outputs=requested, client_timeout=self.timeout_s)
        requested = [self._module.InferRequestedOutput(n, binary_data=True) for n in outputs]
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
        """Predictions in input order; requests of up to `max_batch` images, `concurrency` of them
        in flight. (batch_size groups a local model's calls; the server's batch decides here.)"""
        if with_attention:
            raise ConfigError(f"{self.url}: attention maps are not served; run the model locally for them")
        limits = self.limits(threshold)
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="mlic-remote") as pool:
            pending: deque[tuple[list[str], Future]] = deque()
            try:
                for chunk in batched(enumerate(inputs), self.max_batch):      # (index, input) pairs
                    sources = [_describe(item, index) for index, item in chunk]
                    pending.append((sources, pool.submit(self._request, [item for _, item in chunk])))
                    if len(pending) > self.concurrency:
                        yield from self._predictions(*pending.popleft(), limits)
                while pending:
                    yield from self._predictions(*pending.popleft(), limits)
            finally:
                for _, future in pending:
                    future.cancel()

    def _predictions(self, sources: list[str], future: Future, limits: np.ndarray) -> Iterator[Prediction]:
        for source, (scores, error) in zip(sources, future.result()):
            if error is not None:
                yield Prediction(source, error=f"{source}: {error}")
            else:
                yield self.model.scored(source, scores, limits)

    def _request(self, items: list[Any]) -> list[tuple[np.ndarray | None, str | None]]:
        """Inputs -> per input (scores (K,), None) or (None, one-line error without the source):
        the readable ones in one request; a request that fails whole is split into one per row."""
        rows: list[tuple[np.ndarray | None, str | None]] = [(None, None)] * len(items)
        sent: list[int] = []
        data: list[bytes] = []
        for i, item in enumerate(items):
            encoded, error = _read(item)
            if error is not None:
                rows[i] = (None, error)
            else:
                sent.append(i)
                data.append(encoded)
        if not data:
            return rows
        try:
            answers = self._send(data)
        except Exception as e:          # Triton's error for this request (export-triton), transport errors
            if len(data) > 1:
                answers = [self._request_one(one) for one in data]
            else:
                answers = [(None, f"server: {one_line(e)}")]
        for i, answer in zip(sent, answers):
            rows[i] = answer
        return rows

    def _request_one(self, data: bytes) -> tuple[np.ndarray | None, str | None]:
        try:
            return self._send([data])[0]
        except Exception as e:
            return None, f"server: {one_line(e)}"

    def _send(self, data: list[bytes]) -> list[tuple[np.ndarray | None, str | None]]:
        """One request of len(data) encoded files -> per file (scores, None) or (None, error)."""
        image = self._module.InferInput("image", [len(data), 1], "BYTES")
        tensor = np.empty((len(data), 1), dtype=object)
        tensor[:, 0] = data
        if self.protocol == "grpc":
            image.set_data_from_numpy(tensor)
        else:
            image.set_data_from_numpy(tensor, binary_data=True)
        result = self._infer(self._client(), self.name, [image], self._outputs)
        scores = np.asarray(result.as_numpy("scores"), dtype=np.float64).reshape(len(data), -1)
        errors = [b""] * len(data)
        if "error" in self._outputs:
            errors = [bytes(e) for e in result.as_numpy("error").reshape(-1)]
        return [(row, None) if not e else (None, e.decode("utf-8", errors="replace").removeprefix("image: "))
                for row, e in zip(scores, errors)]

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


def _read(item: Any) -> tuple[bytes, str | None]:
    """(the bytes to send, None), or (b"", one-line error without the source)."""
    try:
        return _encoded(item), None
    except FileNotFoundError:
        return b"", "image file not found"
    except OSError as e:
        return b"", f"cannot read ({e.strerror or type(e).__name__})"
    except (ValueError, ConfigError) as e:
        return b"", one_line(e)


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
