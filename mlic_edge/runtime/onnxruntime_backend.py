"""ONNX Runtime backend: CPU everywhere; CUDA / TensorRT execution providers when present.

Why check the providers before and after opening: onnxruntime-gpu lists CUDA/TensorRT providers
even on machines without a GPU or without the CUDA libraries, logs its own error and falls back to
the CPU; an explicit GPU device is refused in one line before the session is made
(`core.onnxruntime.providers_for`), and what the session really uses is what we report.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.devices import Device, parse_device
from ..core.errors import BackendUnavailable, ModelFileError, one_line
from ..core.onnx_metadata import read_metadata
from ..core.onnxruntime import CPU, CUDA, import_ort, make_session, providers_for
from .base import Backend


class OnnxRuntimeBackend(Backend):
    kind = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str | Device = "auto", threads: int | None = None,
                 spin: bool = True):
        ort = import_ort()
        path, device = Path(path), parse_device(device)
        metadata = read_metadata(path)  # ModelFileError without mlic-edge metadata
        try:
            providers = providers_for(device, ort.get_available_providers())
        except BackendUnavailable as e:
            raise BackendUnavailable(f"{path}: {e}") from None
        if len(providers) > 1:
            ort.set_default_logger_severity(4)  # provider load failures: we check what was used
        model, prepare = path, None
        if metadata.extra.get("irpe_plugin"):  # plugin nodes run as the reference op (numpy)
            from ..core.onnx_metadata import load_model_proto
            from ..kernels.irpe_reference import ort_session_inputs as prepare
            model = load_model_proto(path)
        try:
            self.session = make_session(model, providers, threads=threads, prepare=prepare, spin=spin,
                                        disabled_optimizers=metadata.extra.get("ort_disabled_optimizers"))
        except Exception as e:
            raise ModelFileError(f"{path}: ONNX Runtime cannot load it ({one_line(e, 200)})") from None
        used = self.session.get_providers()
        if device.is_gpu and CUDA not in used:
            raise BackendUnavailable(f"{path}: ONNX Runtime could not use CUDA here (no GPU or CUDA "
                                     f"libraries); use --device cpu")
        self.provider = used[0]
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        fixed = inp.shape[0] if isinstance(inp.shape[0], int) else None  # static-batch graph
        outputs = [o.name for o in self.session.get_outputs()]
        # device: where it runs ("cpu" | "cuda:N"); the provider (CUDA / TensorRT EP) is in describe()
        super().__init__(path, metadata, device="cpu" if self.provider == CPU else f"cuda:{device.gpu_index}",
                         output_names=outputs, batch_range=(fixed, fixed) if fixed else None)

    def _run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.output_names, {self.input_name: images})
        return {name: np.asarray(v, dtype=np.float32) for name, v in zip(self.output_names, values)}

    def describe(self) -> dict:
        return {**super().describe(), "provider": self.provider}

    def close(self) -> None:
        self.session = None
