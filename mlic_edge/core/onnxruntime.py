"""ONNX Runtime sessions: the one place mlic-edge opens ONNX Runtime (export checks, parity, the
runtime backend), and the provider choice per device. Imports onnxruntime when first used.
"""
from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .devices import Device, parse_device
from .errors import BackendUnavailable, one_line

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
# The shared library each GPU provider lives in (onnxruntime-gpu, onnxruntime/capi/): a build lists
# the provider whether or not that library (and CUDA, cuDNN, TensorRT below it) can load here.
PROVIDER_LIBRARIES = {CUDA: "onnxruntime_providers_cuda", TRT: "onnxruntime_providers_tensorrt"}


def import_ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable("running .onnx models needs onnxruntime: pip install onnxruntime") from None
    return ort


@functools.cache
def preload_cuda_libraries() -> None:
    """Load the CUDA and cuDNN libraries of the nvidia-* wheels into this process (ONNX Runtime's
    `preload_dlls`), once: the CUDA provider's library looks for them on the system's library path
    only, and the CUDA 12 ones the `export` extra installs for it live in site-packages (beside
    torch's CUDA 13 ones). What does not load is left to `provider_problem` to name: the
    preloader's own messages (printed, one per missing library) are dropped."""
    ort = import_ort()
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            preload(cuda=True, cudnn=True, msvc=False)
        except (OSError, RuntimeError):
            pass


def provider_problem(provider: str) -> str | None:
    """Why ONNX Runtime's `provider` cannot run here (None: it can): not in this build, or its
    library does not load (a CUDA, cuDNN or TensorRT library it needs is missing; the loader's
    own words). Loading it here keeps ONNX Runtime from logging its own error at session time."""
    ort = import_ort()
    if provider not in ort.get_available_providers():
        return f"not in this onnxruntime build (onnxruntime {ort.__version__}; pip install onnxruntime-gpu)"
    stem = PROVIDER_LIBRARIES.get(provider)
    if stem is None:
        return None
    import ctypes

    folder = Path(ort.__file__).parent / "capi"
    shared = next(folder.glob("*onnxruntime_providers_shared.*"), None)
    library = next(folder.glob(f"*{stem}.*"), None)
    if library is None:
        return None                                  # a layout we do not know: let the session tell
    preload_cuda_libraries()
    try:
        if shared is not None:
            ctypes.CDLL(str(shared), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(library))
    except OSError as e:
        return f"{library.name} does not load ({one_line(e).replace(str(library) + ': ', '')})"
    return None


def providers_for(device: str | Device, available: list[str]) -> list:
    """Provider list for a device; the CPU provider always last as the fallback. An explicit GPU
    device whose provider cannot run here is a one-line BackendUnavailable naming the reason."""
    device = parse_device(device)
    cuda = (CUDA, {"device_id": device.gpu_index})
    if device.kind == "cpu":
        return [CPU]
    if device.kind == "auto":       # only where a GPU exists and the provider loads
        from .gpu import cuda_device_count
        usable = CUDA in available and cuda_device_count() > device.gpu_index and provider_problem(CUDA) is None
        return [cuda, CPU] if usable else [CPU]
    wanted = [TRT, CUDA] if device.kind == "tensorrt" else [CUDA]
    _check_gpu(device)
    for provider in wanted:
        problem = provider_problem(provider)
        if problem is not None:
            raise BackendUnavailable(f"device {device}: ONNX Runtime's {provider} cannot run here: {problem}")
    if device.kind == "tensorrt":
        return [(TRT, {"device_id": device.gpu_index}), cuda, CPU]
    return [cuda, CPU]


def _check_gpu(device: Device) -> None:
    from .gpu import cuda_device_count

    count = cuda_device_count()
    if count <= device.gpu_index:
        where = "no CUDA GPU is visible" if count == 0 else f"{count} CUDA GPU(s) are visible"
        raise BackendUnavailable(f"device {device}: {where} here; use --device cpu")


def make_session(model, providers: list, *, threads: int | None = None,
                 disabled_optimizers: list[str] | None = None, arena: bool = True,
                 prepare: Callable[[Any, Any], bytes] | None = None, spin: bool = True):
    """InferenceSession from a path or a ModelProto, the one place mlic-edge opens ONNX Runtime.

    threads: intra-op threads (default: $MLIC_EDGE_ORT_THREADS, else ONNX Runtime's choice).
    prepare(model_proto, options) -> bytes: how a ModelProto is handed over; the layers that know
    the IRPEAttention plugin pass `kernels.irpe_reference.ort_session_inputs`, which registers
    the numpy reference op for plugin graphs (default: the proto serialized as is).
    disabled_optimizers: exporter-recorded ORT bugs to avoid (e.g. NchwcTransformer on FP16 Q/DQ).
    arena: ONNX Runtime's CPU memory arena (fast repeated runs); off for one-off checks of large
    models, whose activations then go back to the system after each run.
    spin: the intra-op threads busy-wait between parallel sections (ONNX Runtime's default: the
    lowest latency where they have the cores to themselves); off where other threads need those
    cores between model calls (a server decoding the next batch), which the spinning would take.
    """
    ort = import_ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # provider fallback warnings: callers check what was used
    options.enable_cpu_mem_arena = arena
    threads = threads or int(os.environ.get("MLIC_EDGE_ORT_THREADS", "0") or 0)
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if hasattr(model, "SerializeToString"):
        model = prepare(model, options) if prepare is not None else model.SerializeToString()
    else:
        model = str(model)
    kwargs = {"disabled_optimizers": disabled_optimizers} if disabled_optimizers else {}
    return ort.InferenceSession(model, options, providers=providers, **kwargs)
