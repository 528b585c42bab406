"""ONNX Runtime backend: CPU everywhere; CUDA / TensorRT execution providers when present.

Why check the providers after opening: onnxruntime-gpu lists CUDA/TensorRT providers even on
machines without a GPU and silently falls back to the CPU; we report (and for an explicit
`device="cuda"` refuse) what the session really uses.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable, ModelFileError
from .backend import Backend
from .onnx_metadata import read_metadata

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def _import_ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailable("running .onnx models needs onnxruntime: pip install onnxruntime") from None
    return ort


def _providers_for(device: str, available: list[str]) -> list:
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
        from .cuda_io import cuda_device_count
        if cuda_device_count() > index:
            return [cuda, CPU]
    return [CPU]


def make_session(model, providers: list, *, threads: int | None = None,
                 disabled_optimizers: list[str] | None = None, arena: bool = True):
    """InferenceSession from a path or a ModelProto, the one place mlic-edge opens ONNX Runtime.

    threads: intra-op threads (default: $MLIC_EDGE_ORT_THREADS, else ONNX Runtime's choice).
    A ModelProto with IRPEAttention plugin nodes gets the numpy reference op registered.
    disabled_optimizers: exporter-recorded ORT bugs to avoid (e.g. NchwcTransformer on FP16 Q/DQ).
    arena: ONNX Runtime's CPU memory arena (fast repeated runs); off for one-off checks of large
    models, whose activations then go back to the system after each run.
    """
    ort = _import_ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3  # provider fallback warnings: callers check what was used
    options.enable_cpu_mem_arena = arena
    threads = threads or int(os.environ.get("MLIC_EDGE_ORT_THREADS", "0") or 0)
    if threads:
        options.intra_op_num_threads = threads
    if hasattr(model, "SerializeToString"):
        from .irpe_reference import ort_session_inputs
        model = ort_session_inputs(model, options)
    else:
        model = str(model)
    kwargs = {"disabled_optimizers": disabled_optimizers} if disabled_optimizers else {}
    return ort.InferenceSession(model, options, providers=providers, **kwargs)


class OnnxRuntimeBackend(Backend):
    kind = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str = "auto", threads: int | None = None):
        ort = _import_ort()
        path = Path(path)
        metadata = read_metadata(path)  # ModelFileError without mlic-edge metadata
        providers = _providers_for(device, ort.get_available_providers())
        if len(providers) > 1:
            ort.set_default_logger_severity(3)  # provider load failures: we check what was used
        model = path
        if metadata.extra.get("irpe_plugin"):  # plugin nodes run as the reference op (numpy)
            from .onnx_metadata import load_model_proto
            model = load_model_proto(path)
        try:
            self.session = make_session(model, providers, threads=threads,
                                        disabled_optimizers=metadata.extra.get("ort_disabled_optimizers"))
        except Exception as e:
            raise ModelFileError(f"{path}: ONNX Runtime cannot load it "
                                 f"({' '.join(str(e).split())[:200]})") from None
        used = self.session.get_providers()
        if device.startswith("cuda") and CUDA not in used:
            raise BackendUnavailable(f"{path}: ONNX Runtime could not use CUDA here (no GPU or CUDA "
                                     f"libraries); use --device cpu")
        self.provider = used[0]
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None  # static-batch graph
        outputs = [o.name for o in self.session.get_outputs()]
        index = int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0
        # device: where it runs ("cpu" | "cuda:N"); the provider (CUDA / TensorRT EP) is in describe()
        super().__init__(path, metadata, device="cpu" if self.provider == CPU else f"cuda:{index}",
                         output_names=outputs, batch_range=(fixed, fixed) if fixed else None)

    def _run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, {self.input_name: images})
        return {name: np.asarray(v, dtype=np.float32) for name, v in zip(self.output_names, values)}

    def describe(self) -> dict:
        return {**super().describe(), "provider": self.provider}

    def close(self) -> None:
        self.session = None
