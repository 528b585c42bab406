"""`mlic-edge serve MODEL`: the model behind NVIDIA Triton Inference Server, through PyTriton.

Why PyTriton: it ships a real `tritonserver` (HTTP/KServe v2, gRPC, Prometheus metrics, the
dynamic batcher) as a pip wheel, and runs a Python callable as the model, so the server runs OUR
runtime (ONNX Runtime, TensorRT, torch: whatever `open_backend` picks for the file) and OUR
decoding, and a served model gives the scores a local `infer` gives. Its server has only the Python
backend: `export-triton` writes repositories for NVIDIA's containers instead (serve/repository.py).

Models served (`<name>` = the file's stem, or --name):

* `<name>`: input `image` BYTES [1] (one encoded JPEG/PNG/WebP/... file per row, or the file
  base64-encoded, as KServe JSON requests (curl) carry it); outputs
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

from ..core.errors import BackendUnavailable, ConfigError, DatasetError, one_line
from ..core.preprocess import preprocess, preprocess_args
from ..metrics import sigmoid
from ..runtime.backend import open_backend, read_model_metadata
from ..runtime.base import Backend
from ..runtime.tagger import labels_above
from ..core.image_bytes import ImageDecodeError, decode_image_bytes

DEFAULT_MAX_BATCH = 8
DEFAULT_QUEUE_DELAY_US = 2000
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
    verbose: bool = False


def model_name(model: str | os.PathLike, name: str | None) -> str:
    """The served name: --name, else the file's stem (Triton allows letters, digits, . _ -)."""
    chosen = name or Path(model).stem
    if not re.fullmatch(r"[A-Za-z0-9._-]+", chosen):
        raise ConfigError(f"model name {chosen!r}: only letters, digits, '.', '_' and '-' (use --name)")
    return chosen


def default_max_batch(model: str | os.PathLike) -> int:
    """The engine's profile max batch (sidecar), or 8 for ONNX/checkpoints (any batch)."""
    from ..core.capabilities import model_format

    if model_format(model).backend == "tensorrt":
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
            f"numpy {np.__version__}, with which it returns empty tensors); `bash scripts/serve_venv.sh` "
            f"makes .venv-serve (numpy 1.26): .venv-serve/bin/python -m mlic_edge serve ...")


class _Runner:
    """One model instance: a backend (opened lazily in the thread Triton calls it from, as
    TensorRT wants), decoding threads and the sigmoid + thresholds."""

    def __init__(self, model: Path, device: str, workers: int, shared: Backend | None):
        self.model, self.device = model, device
        self.backend = shared
        self._lock = threading.Lock()
        self.metadata = read_model_metadata(model)
        self.classes = list(self.metadata.classes)
        self.thresholds = self.metadata.class_thresholds(str(model))                  # (K,) float64
        self.args = preprocess_args(self.metadata.preprocess)                # (S, mean, std, interpolation)
        self.pool = ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="mlic-serve-decode")

    def _backend(self) -> Backend:
        with self._lock:
            if self.backend is None:
                self.backend = open_backend(self.model, device=self.device)
            return self.backend

    def _decode(self, data: bytes, row: int) -> np.ndarray:
        """A file's bytes (binary clients), or the file base64-encoded (KServe JSON, e.g. curl)."""
        try:
            image = decode_image_bytes(data, source="image", reduce_to=self.args[0])
        except ImageDecodeError:
            text = data.strip()
            if not text or len(text) % 4 or not _BASE64.fullmatch(text):
                raise
            image = decode_image_bytes(base64.b64decode(text), source="image", reduce_to=self.args[0])
        return preprocess(image, *self.args)                                  # (3, S, S)

    def images(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """image: (B, 1) bytes objects -> scores (B, K), labels (B, 1), error (B, 1)."""
        rows = [bytes(item) for item in image.reshape(len(image), -1)[:, 0]]
        futures = [self.pool.submit(self._decode, data, i) for i, data in enumerate(rows)]
        tensors: list[np.ndarray | None] = []
        errors: list[str] = []
        for future in futures:
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
        scores = np.full((len(rows), len(self.classes)), np.nan, np.float32)
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
        labels = [";".join(labels_above(self.classes, row, self.thresholds)) if not e else ""
                  for row, e in zip(scores, errors)]
        return {"scores": scores,
                "labels": np.array([[label.encode()] for label in labels], dtype=object),     # (B, 1)
                "error": np.array([[e.encode()] for e in errors], dtype=object)}              # (B, 1)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


def serve(model: str | os.PathLike, options: ServeOptions, *, on_ready=None) -> int:
    """Run the server until SIGTERM/SIGINT; returns the exit code (0 after a clean stop)."""
    path = Path(model)
    if not path.is_file():
        raise ConfigError(f"{path}: no such model file")
    name = model_name(path, options.name)
    metadata = read_model_metadata(path)                  # ModelFileError on a foreign file
    max_batch = options.max_batch or default_max_batch(path)
    for flag, value in (("--max-batch", max_batch), ("--instances", options.instances)):
        if value < 1:
            raise ConfigError(f"{flag} must be >= 1, got {value}")
    if options.max_queue_delay_us < 0:
        raise ConfigError(f"--max-queue-delay-us must be >= 0, got {options.max_queue_delay_us}")
    try:
        from pytriton.decorators import batch
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import DEFAULT_PROTECTED_ENDPOINTS, Triton, TritonConfig, TritonSecurityConfig
    except ImportError:
        raise BackendUnavailable("mlic-edge serve needs PyTriton: `bash scripts/serve_venv.sh` makes .venv-serve "
                                 "with it (numpy 1.x), then .venv-serve/bin/python -m mlic_edge serve ...") from None
    _check_numpy()
    _prepare_environment()

    from ..core.capabilities import model_format

    shared = None
    if model_format(path).backend != "tensorrt":                  # ORT sessions / torch modules are thread-safe
        shared = open_backend(path, device=options.device)
    runners = [_Runner(path, options.device, options.workers, shared) for _ in range(options.instances)]
    if shared is None:
        runners[0]._backend()                             # fail now, not on the first request
    size = runners[0].args[0]
    K = len(metadata.classes)
    described = {**runners[0]._backend().describe(), "served_as": name}
    info = json.dumps({"metadata": json.loads(metadata.to_json()), "backend": described}).encode()

    def image_fn(runner: _Runner):
        @batch
        def infer(image: np.ndarray) -> dict[str, np.ndarray]:
            return runner.images(image)
        return infer

    def tensor_fn(runner: _Runner):
        @batch
        def infer(images: np.ndarray) -> dict[str, np.ndarray]:
            return runner.tensors(images)
        return infer

    @batch
    def metadata_fn(request: np.ndarray) -> dict[str, np.ndarray]:
        return {"metadata": np.array([[info]] * len(request), dtype=object)}

    outputs = [Tensor(name="scores", dtype=np.float32, shape=(K,)),
               Tensor(name="labels", dtype=bytes, shape=(1,)),
               Tensor(name="error", dtype=bytes, shape=(1,))]
    batcher = DynamicBatcher(max_queue_delay_microseconds=options.max_queue_delay_us)
    config = TritonConfig(http_address=options.host, http_port=options.http_port, grpc_address=options.host,
                          grpc_port=options.grpc_port, metrics_address=options.host,
                          metrics_port=options.metrics_port, exit_timeout_secs=STOP_TIMEOUT_S,
                          log_verbose=1 if options.verbose else None)
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    # PyTriton guards the admin APIs with a random token; statistics (read-only: how clients find
    # the served model's name, and how many batches ran) stays open, the others stay guarded.
    security = TritonSecurityConfig(restricted_endpoints=[e for e in DEFAULT_PROTECTED_ENDPOINTS if e != "statistics"])
    triton = Triton(config=config, security_config=security)
    try:
        try:
            triton.bind(name, [image_fn(r) for r in runners],
                        inputs=[Tensor(name="image", dtype=bytes, shape=(1,))], outputs=outputs,
                        config=ModelConfig(max_batch_size=max_batch, batcher=batcher))
            triton.bind(f"{name}_tensor", [tensor_fn(r) for r in runners],
                        inputs=[Tensor(name="images", dtype=np.float32, shape=(3, size, size))], outputs=outputs,
                        config=ModelConfig(max_batch_size=max_batch, batcher=batcher))
            triton.bind(f"{name}_metadata", metadata_fn, inputs=[Tensor(name="request", dtype=bytes, shape=(1,))],
                        outputs=[Tensor(name="metadata", dtype=bytes, shape=(1,))],
                        config=ModelConfig(max_batch_size=max_batch))
            triton.run()
        except Exception as e:
            raise BackendUnavailable(_start_failure(e)) from None
        if on_ready is not None:
            on_ready(name, max_batch)
        while not stop.wait(0.5):
            if not triton.is_alive():
                raise BackendUnavailable("the Triton server process exited; run with --verbose for its log")
    finally:
        _stop(triton)
        for runner in runners:
            runner.close()
        if shared is not None:
            shared.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


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
