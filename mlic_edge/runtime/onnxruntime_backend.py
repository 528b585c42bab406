"""ONNX Runtime backend: CPU everywhere; CUDA / TensorRT execution providers when present.

Why check the providers after opening: onnxruntime-gpu lists CUDA/TensorRT providers even on
machines without a GPU and silently falls back to the CPU; we report (and for an explicit
`device="cuda"` refuse) what the session really uses.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.errors import BackendUnavailable, ModelFileError
from ..core.onnx_metadata import read_metadata
from ..core.onnxruntime import CPU, CUDA, import_ort, make_session, providers_for
from .base import Backend


class OnnxRuntimeBackend(Backend):
    kind = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str = "auto", threads: int | None = None):
        ort = import_ort()
        path = Path(path)
        metadata = read_metadata(path)  # ModelFileError without mlic-edge metadata
        providers = providers_for(device, ort.get_available_providers())
        if len(providers) > 1:
            ort.set_default_logger_severity(3)  # provider load failures: we check what was used
        model, prepare = path, None
        if metadata.extra.get("irpe_plugin"):  # plugin nodes run as the reference op (numpy)
            from ..core.onnx_metadata import load_model_proto
            from ..kernels.irpe_reference import ort_session_inputs as prepare
            model = load_model_proto(path)
        try:
            self.session = make_session(model, providers, threads=threads, prepare=prepare,
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
