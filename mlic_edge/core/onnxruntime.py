"""ONNX Runtime sessions: the one place mlic-edge opens ONNX Runtime (export checks, parity, the
runtime backend), and the provider choice per device. Imports onnxruntime when first used.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .errors import BackendUnavailable

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def import_ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable("running .onnx models needs onnxruntime: pip install onnxruntime") from None
    return ort


def providers_for(device: str, available: list[str]) -> list:
    """Provider list for a device name; the CPU provider always last as the fallback."""
    index = int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0
    cuda = (CUDA, {"device_id": index})
    if device == "cpu":
        return [CPU]
    if device == "tensorrt":
        if TRT not in available:
            raise BackendUnavailable("onnxruntime here has no TensorrtExecutionProvider "
                                     "(install onnxruntime-gpu and TensorRT)")
        return [(TRT, {"device_id": index}), cuda, CPU]
    if device.startswith("cuda"):
        if CUDA not in available:
            raise BackendUnavailable("onnxruntime here has no CUDAExecutionProvider "
                                     "(pip install onnxruntime-gpu)")
        return [cuda, CPU]
    if CUDA in available:  # auto: only where a GPU exists (else ORT logs a load error, then falls back)
        from .gpu import cuda_device_count
        if cuda_device_count() > index:
            return [cuda, CPU]
    return [CPU]


def make_session(model, providers: list, *, threads: int | None = None,
                 disabled_optimizers: list[str] | None = None, arena: bool = True,
                 prepare: Callable[[Any, Any], bytes] | None = None):
    """InferenceSession from a path or a ModelProto, the one place mlic-edge opens ONNX Runtime.

    threads: intra-op threads (default: $MLIC_EDGE_ORT_THREADS, else ONNX Runtime's choice).
    prepare(model_proto, options) -> bytes: how a ModelProto is handed over; the layers that know
    the IRPEAttention plugin pass `kernels.irpe_reference.ort_session_inputs`, which registers
    the numpy reference op for plugin graphs (default: the proto serialized as is).
    disabled_optimizers: exporter-recorded ORT bugs to avoid (e.g. NchwcTransformer on FP16 Q/DQ).
    arena: ONNX Runtime's CPU memory arena (fast repeated runs); off for one-off checks of large
    models, whose activations then go back to the system after each run.
    """
    ort = import_ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # provider fallback warnings: callers check what was used
    options.enable_cpu_mem_arena = arena
    threads = threads or int(os.environ.get("MLIC_EDGE_ORT_THREADS", "0") or 0)
    if threads:
        options.intra_op_num_threads = threads
    if hasattr(model, "SerializeToString"):
        model = prepare(model, options) if prepare is not None else model.SerializeToString()
    else:
        model = str(model)
    kwargs = {"disabled_optimizers": disabled_optimizers} if disabled_optimizers else {}
    return ort.InferenceSession(model, options, providers=providers, **kwargs)
