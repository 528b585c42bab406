"""`mlic-edge serve MODEL`: the model behind NVIDIA Triton Inference Server, through PyTriton.

Why PyTriton: it ships a real `tritonserver` (HTTP/KServe v2, gRPC, Prometheus metrics, the
dynamic batcher) as a pip wheel, and runs a Python callable as the model, so the server runs OUR
runtime (ONNX Runtime, TensorRT, torch: whatever `open_backend` picks for the file) and OUR
decoding, and a served model gives the scores a local `infer` gives. Its server has only the Python
backend: `export-triton` writes repositories for NVIDIA's containers instead (serve/repository.py).

Models served (`<name>` = the file's stem, or --name):

* `<name>`: input `image` BYTES [1] (one encoded JPEG/PNG/WebP/... file per row, or the file
  base64-encoded, as KServe JSON requests (curl) carry it; at most `max_request_mb` per request,
  see below); outputs
  `scores` FP32 [K] (sigmoid), `labels` BYTES [1] (the classes at or above the model's per-class
  thresholds, ';'-joined) and `error` BYTES [1] ("" or one line). Decoding runs on the server, in
  threads, so clients send files as they are.
* `<name>_tensor`: input `images` FP32 [3, S, S] (preprocessed as the model's metadata says);
  the same outputs (error always "").
* `<name>_metadata`: input `request` BYTES [1] (anything); output `metadata` BYTES [1]: the
  model's metadata JSON (classes, thresholds, preprocessing) plus the backend that runs it. The
  client (`RemoteTagger`) reads it once.

Errors per row: Triton's dynamic batcher runs requests from many clients in one call, and PyTriton
turns an exception into an error for every request of that call. So an image that cannot be
decoded is answered in-band: its row has `error` set, NaN scores and no labels, and the other rows
of the batch (other clients' requests) are served normally.

Request size: a request whose images together exceed `max_request_mb` is answered with an error in
each of its rows, before any of it is decoded, and its bytes are dropped at once. This is the size
limit that applies: the tritonserver of PyTriton 0.7 (Triton 2.51) has no HTTP input size option of
its own and its gRPC endpoint takes messages up to 2 GB. Triton still receives a body whole before
the model sees it, so a server open to untrusted clients wants a proxy in front that caps bodies
too (nginx `client_max_body_size`).
"""
from __future__ import annotations

import base64
import json
import os
import re
import signal
import sys
import sysconfig
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.capabilities import MODEL_FORMATS, model_format
from ..core.errors import BackendUnavailable, ConfigError, DatasetError, one_line
from ..core.image_bytes import ImageDecodeError, decode_image_bytes
from ..metrics import sigmoid
from ..runtime.backend import open_backend, read_model_metadata
from ..runtime.base import Backend
from ..runtime.model import LoadedModel
from .defaults import DEFAULT_MAX_BATCH, DEFAULT_MAX_REQUEST_MB, DEFAULT_QUEUE_DELAY_US

SERVE_INSTALL = 'pip install "mlic-edge[serve]"'   # the extra also pins numpy < 2 for PyTriton
# Backends whose one open model serves every instance (ONNX Runtime sessions and torch modules
# are thread-safe); a TensorRT engine gets an execution context per instance.
SHARED_BACKENDS = tuple(f.backend for f in MODEL_FORMATS.values() if f.backend != MODEL_FORMATS["engine"].backend)
MB = 1 << 20
STOP_TIMEOUT_S = 5
_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")


@dataclass
class ServeOptions:
    name: str | None = None
    max_batch: int | None = None          # None: the engine's profile max, else 8
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    instances: int = 1
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    device: str = "auto"
    workers: int = 4                      # decoding threads per model instance
    max_request_mb: float = DEFAULT_MAX_REQUEST_MB   # encoded image bytes per request
    verbose: bool = False


def model_name(model: str | os.PathLike, name: str | None) -> str:
    """The served name: --name, else the file's stem (Triton allows letters, digits, . _ -)."""
    chosen = name or Path(model).stem
    if not re.fullmatch(r"[A-Za-z0-9._-]+", chosen):
        raise ConfigError(f"model name {chosen!r}: only letters, digits, '.', '_' and '-' (use --name)")
    return chosen


def default_max_batch(model: str | os.PathLike) -> int:
    """The engine's profile max batch (sidecar), or 8 for ONNX/checkpoints (any batch)."""
    if model_format(model).backend == MODEL_FORMATS["engine"].backend:
        from ..tensorrt.sidecar import read_engine_info

        profile = read_engine_info(model).profile
        if profile:
            return int(profile["max"])
    return DEFAULT_MAX_BATCH


def stub_library_dir() -> str | None:
    """This interpreter's library folder: Triton's Python backend stub embeds libpython and must
    load THIS one (a pyenv 3.11.7 stub that loads Debian's libpython 3.11.2 fails with
    "'_thread.RLock' object has no attribute '_recursion_count'", pytriton issue #51)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    return libdir if libdir and Path(libdir).is_dir() else None


def _prepare_environment() -> None:
    """Put this interpreter's libpython first on LD_LIBRARY_PATH; Triton starts with this env."""
    libdir = stub_library_dir()
    if libdir:
        current = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p and p != libdir]
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *current])


def _check_numpy() -> None:
    """PyTriton 0.7's Python backend stub is compiled for numpy 1.x (pybind11 reads the numpy 1
    dtype layout): under numpy 2 it answers every request with empty tensors. Refuse up front."""
    major = int(np.__version__.split(".")[0])
    if major >= 2:
        raise BackendUnavailable(
            f"mlic-edge serve: PyTriton's Python backend stub needs numpy < 2 (this environment has "
            f"numpy {np.__version__}, with which it returns empty tensors): {SERVE_INSTALL} installs "
            f"a numpy it works with")


class _Runner:
    """One model instance: a backend (opened lazily in the thread Triton calls it from, as
    TensorRT wants), decoding threads and the sigmoid + thresholds."""

    def __init__(self, path: Path, model: LoadedModel, device: str, workers: int, shared: Backend | None):
        self.path, self.model, self.device = path, model, device
        self.backend = shared
        self._lock = threading.Lock()
        self.pool = ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="mlic-serve-decode")

    def _backend(self) -> Backend:
        with self._lock:
            if self.backend is None:
                self.backend = open_backend(self.path, device=self.device)
            return self.backend

    def _decode(self, data: bytes, row: int) -> np.ndarray:
        """A file's bytes (binary clients), or the file base64-encoded (KServe JSON, e.g. curl)."""
        try:
            image = decode_image_bytes(data, source="image", reduce_to=self.model.image_size)
        except ImageDecodeError:
            text = data.strip()
            if not text or len(text) % 4 or not _BASE64.fullmatch(text):
                raise
            image = decode_image_bytes(base64.b64decode(text), source="image", reduce_to=self.model.image_size)
        return self.model.preprocessing(image)                                 # (3, S, S)

    def images(self, image: np.ndarray, refused: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """image: (B, 1) bytes objects -> scores (B, K), labels (B, 1), error (B, 1). refused:
        (B, 1), per row "" or the error of a row not to be decoded (see `refuse_oversized`)."""
        rows = [bytes(item) for item in image.reshape(len(image), -1)[:, 0]]
        refused = [""] * len(rows) if refused is None else [str(r) for r in refused.reshape(len(rows), -1)[:, 0]]
        futures = [None if no else self.pool.submit(self._decode, data, i)
                   for i, (data, no) in enumerate(zip(rows, refused))]
        tensors: list[np.ndarray | None] = []
        errors: list[str] = []
        for future, no in zip(futures, refused):
            if future is None:
                tensors.append(None)
                errors.append(no)
                continue
            try:
                tensors.append(future.result())
                errors.append("")
            except (DatasetError, ImageDecodeError) as e:
                tensors.append(None)
                errors.append(str(e))
            except Exception as e:  # a hostile file must not take the batch (other clients) down
                tensors.append(None)
                errors.append(f"{type(e).__name__}: {one_line(e)}")
        good = [t for t in tensors if t is not None]
        scores = np.full((len(rows), len(self.model.classes)), np.nan, np.float32)
        if good:
            ok = np.array([t is not None for t in tensors])
            scores[ok] = self._scores(np.stack(good))
        return self._outputs(scores, errors)

    def tensors(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """images: (B, 3, S, S) float32, preprocessed -> the same outputs."""
        return self._outputs(self._scores(np.asarray(images, np.float32)), [""] * len(images))

    def _scores(self, batch: np.ndarray) -> np.ndarray:
        return sigmoid(self._backend().predict(batch)["logits"]).astype(np.float32)   # (n, K)

    def _outputs(self, scores: np.ndarray, errors: list[str]) -> dict[str, np.ndarray]:
        labels = [";".join(self.model.labels_above(row)) if not e else ""
                  for row, e in zip(scores, errors)]
        return {"scores": scores,
                "labels": np.array([[label.encode()] for label in labels], dtype=object),     # (B, 1)
                "error": np.array([[e.encode()] for e in errors], dtype=object)}              # (B, 1)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def refuse_oversized(requests: list, limit_mb: float) -> list:
    """The requests, each given a `refused` input (one string per row: "" or why the row is not
    decoded). A request whose `image` rows total more than `limit_mb` MB is refused whole, its rows
    replaced by empty bytes so that its body is freed before the batch is decoded."""
    for request in requests:
        image = request["image"]
        size = sum(len(item) for item in image.reshape(-1))
        reason = ""
        if size > limit_mb * MB:
            reason = (f"request of {size / MB:.1f} MB exceeds the server's limit of {limit_mb:g} MB "
                      f"(mlic-edge serve --max-request-mb)")
            request["image"] = np.full(image.shape, b"", dtype=object)
        request["refused"] = np.full((len(image), 1), reason, dtype=object)
    return requests


def serve(model: str | os.PathLike, options: ServeOptions, *, on_ready=None) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code (0 after a clean stop)."""
    path = Path(model)
    name, max_batch = _check_request(path, options)
    pytriton = _import_pytriton()
    _check_numpy()
    _prepare_environment()
    shared, runners = _open_runners(path, options)
    loaded = runners[0].model
    described = {**runners[0]._backend().describe(), "served_as": name}
    info = json.dumps({"metadata": json.loads(loaded.metadata.to_json()), "backend": described}).encode()
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    triton = None
    try:
        triton = _start(pytriton, options, name, max_batch, runners, info)
        if on_ready is not None:
            on_ready(name, max_batch)
        while not stop.wait(0.5):
            if not triton.is_alive():
                raise BackendUnavailable("the Triton server process exited; run with --verbose for its log")
    finally:
        if triton is not None:
            _stop(triton)
        for runner in runners:
            runner.close()
        if shared is not None:
            shared.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def _check_request(path: Path, options: ServeOptions) -> tuple[str, int]:
    """(served name, max batch), or a one-line ConfigError before anything starts."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such model file")
    name = model_name(path, options.name)
    max_batch = options.max_batch or default_max_batch(path)
    for flag, value in (("--max-batch", max_batch), ("--instances", options.instances)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if not options.max_request_mb > 0:
        raise ConfigError(f"--max-request-mb must be > 0, got {options.max_request_mb}")
    if options.max_queue_delay_us < 0:
        raise ConfigError(f"--max-queue-delay-us must be >= 0, got {options.max_queue_delay_us}")
    return name, max_batch


def _import_pytriton() -> dict[str, Any]:
    """The PyTriton names `serve` uses; a one-line BackendUnavailable saying what to install."""
    try:
        from pytriton.decorators import batch
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import (DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonLifecyclePolicy,
                                     TritonSecurityConfig)
    except ImportError:
        raise BackendUnavailable(f"mlic-edge serve needs PyTriton: {SERVE_INSTALL}") from None
    return {"batch": batch, "DynamicBatcher": DynamicBatcher, "ModelConfig": ModelConfig, "Tensor": Tensor,
            "DEFAULT_PROTECTED_ENDPOINTS": DEFAULT_PROTECTED_ENDPOINTS, "Triton": Triton,
            "TritonConfig": TritonConfig, "TritonLifecyclePolicy": TritonLifecyclePolicy,
            "TritonSecurityConfig": TritonSecurityConfig}


def _open_runners(path: Path, options: ServeOptions) -> tuple[Backend | None, list[_Runner]]:
    """(the shared backend or None, one runner per instance), the model opened now so that a
    problem is reported before the server starts, not on the first request. The model's metadata
    is read once: from the shared backend (a checkpoint is loaded and hashed once), or from the
    engine's sidecar."""
    shared = open_backend(path, device=options.device, **_runtime_options(path)) \
        if model_format(path).backend in SHARED_BACKENDS else None
    loaded = shared.loaded_model if shared is not None else \
        LoadedModel.from_metadata(read_model_metadata(path), str(path))   # ModelFileError on a foreign file
    runners = [_Runner(path, loaded, options.device, options.workers, shared) for _ in range(options.instances)]
    if shared is None:
        runners[0]._backend()
    return shared, runners


def _runtime_options(path: Path) -> dict[str, Any]:
    """ONNX Runtime without busy-waiting threads: between two model calls the server decodes the
    next batch on the same cores, and spinning threads would hold them (`make_session`)."""
    return {"spin": False} if model_format(path).backend == MODEL_FORMATS["onnx"].backend else {}


def _start(pytriton: dict[str, Any], options: ServeOptions, name: str, max_batch: int, runners: list[_Runner],
           info: bytes) -> Any:
    """A running Triton serving `<name>`, `<name>_tensor` and `<name>_metadata`."""
    p = pytriton
    config = p["TritonConfig"](http_address=options.host, http_port=options.http_port, grpc_address=options.host,
                               grpc_port=options.grpc_port, metrics_address=options.host,
                               metrics_port=options.metrics_port, exit_timeout_secs=STOP_TIMEOUT_S,
                               log_verbose=1 if options.verbose else None)
    # PyTriton guards the admin APIs with a random token; statistics (read-only: how clients find
    # the served model's name, and how many batches ran) stays open, the others stay guarded.
    security = p["TritonSecurityConfig"](
        restricted_endpoints=[e for e in p["DEFAULT_PROTECTED_ENDPOINTS"] if e != "statistics"])
    # Ready means every model is loaded: with a local model store, `bind` writes each model's
    # config into the repository and tritonserver loads them all (--load-model=*) before it opens
    # its endpoints. PyTriton's default loads them one by one through the API once the server
    # answers, when /v2/health/ready already says 200 with the companions still missing. A request
    # arriving before PyTriton has connected a model's handler waits in its queue (ZeroMQ).
    policy = p["TritonLifecyclePolicy"](launch_triton_on_startup=False, local_model_store=True)
    triton = p["Triton"](config=config, security_config=security, triton_lifecycle_policy=policy)
    try:
        _bind(p, triton, name, max_batch, options, runners, info)
        triton.run()
    except Exception as e:
        _stop(triton)
        raise BackendUnavailable(_start_failure(e)) from None
    return triton


def _bind(p: dict[str, Any], triton: Any, name: str, max_batch: int, options: ServeOptions,
          runners: list[_Runner], info: bytes) -> None:
    Tensor, ModelConfig, batch = p["Tensor"], p["ModelConfig"], p["batch"]
    size, K = runners[0].model.image_size, len(runners[0].model.classes)
    outputs = [Tensor(name="scores", dtype=np.float32, shape=(K,)), Tensor(name="labels", dtype=bytes, shape=(1,)),
               Tensor(name="error", dtype=bytes, shape=(1,))]
    batched = ModelConfig(max_batch_size=max_batch,
                          batcher=p["DynamicBatcher"](max_queue_delay_microseconds=options.max_queue_delay_us))

    def image_fn(runner: _Runner):
        @batch
        def decode_and_run(image: np.ndarray, refused: np.ndarray) -> dict[str, np.ndarray]:
            return runner.images(image, refused)

        def infer(requests: list) -> list[dict[str, np.ndarray]]:
            return decode_and_run(refuse_oversized(requests, options.max_request_mb))     # before decoding
        return infer

    def tensor_fn(runner: _Runner):
        @batch
        def infer(images: np.ndarray) -> dict[str, np.ndarray]:
            return runner.tensors(images)
        return infer

    @batch
    def metadata_fn(request: np.ndarray) -> dict[str, np.ndarray]:
        return {"metadata": np.array([[info]] * len(request), dtype=object)}

    triton.bind(name, [image_fn(r) for r in runners], inputs=[Tensor(name="image", dtype=bytes, shape=(1,))],
                outputs=outputs, config=batched)
    triton.bind(f"{name}_tensor", [tensor_fn(r) for r in runners],
                inputs=[Tensor(name="images", dtype=np.float32, shape=(3, size, size))], outputs=outputs,
                config=batched)
    triton.bind(f"{name}_metadata", metadata_fn, inputs=[Tensor(name="request", dtype=bytes, shape=(1,))],
                outputs=[Tensor(name="metadata", dtype=bytes, shape=(1,))], config=ModelConfig(max_batch_size=max_batch))


def _stop(triton: Any) -> None:
    """Stop Triton, bounded: PyTriton waits for in-flight requests up to exit_timeout_secs."""
    done = threading.Event()

    def run() -> None:
        try:
            triton.stop()
        except Exception:
            pass
        done.set()

    threading.Thread(target=run, daemon=True, name="mlic-serve-stop").start()
    done.wait(STOP_TIMEOUT_S + 10)


def _start_failure(error: BaseException) -> str:
    """One line for a server that did not start; names the libpython fix where the stub failed."""
    text = one_line(error)
    libdir = stub_library_dir()
    if "_recursion_count" in text or "stub" in text.lower():
        return (f"Triton's Python backend stub failed to start ({text[:200]}); it must load this "
                f"interpreter's libpython ({sys.version.split()[0]}): LD_LIBRARY_PATH starts with {libdir}, "
                f"check that libpython{sysconfig.get_python_version()}.so is there")
    return (f"Triton did not start: {text[:300]} (ports in use? --http-port/--grpc-port/--metrics-port; "
            f"the Python backend stub loads libpython from LD_LIBRARY_PATH, which starts with {libdir}; --verbose)")


def wait_ready(url: str, timeout_s: float = 60.0, model: str | None = None) -> None:
    """Block until the HTTP endpoint (or `model` on it) reports ready (tests, benchmarks)."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    endpoint = f"{url}/v2/models/{model}/ready" if model else f"{url}/v2/health/ready"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(endpoint, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url}: not ready after {timeout_s:.0f} s")
