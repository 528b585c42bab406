"""TensorRT engine backend (TensorRT 10.x and 11.x), written against the tensor-name API only.

Why this shape:
* TensorRT 11 removed the binding-index API (num_bindings, execute_async_v2, ...); everything
  here goes through I/O tensor names: num_io_tensors / get_tensor_name / get_tensor_mode,
  context.set_input_shape, set_tensor_address, execute_async_v3 (also TensorRT 10's API).
  tests/test_trt_api.py checks every attribute used on TensorRT objects against the 11.4 bindings.
* Device buffers come from `cuda_io` (torch CUDA tensors or cuda-python; never pycuda).
* Static shapes replay a CUDA graph: after one eager run for an input shape (TensorRT's
  deferred setup happens there), execute_async_v3 is captured once and replayed for every
  later batch of that shape, removing per-layer launch overhead. A new shape recaptures;
  a capture failure falls back to eager execution for good.
* `tensorrt` is imported lazily; without it or without a GPU, opening an engine raises
  BackendUnavailable naming `pip install 'mlic-edge[trt]'`.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BackendUnavailable, ModelFileError
from .backend import Backend
from .engine_info import check_engine_compatible, read_engine_info

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'mlic-edge[trt]'"
MAX_RECAPTURES = 8  # shapes alternating more often than this run eagerly (capture costs ~ms)


def import_tensorrt():
    """The tensorrt module, or BackendUnavailable. The registry's tensorrt wheels are stubs that
    fetch the libraries at install time, so a broken install can fail with any exception."""
    try:
        import tensorrt as trt
    except Exception as e:  # ImportError, OSError (missing libnvinfer), RuntimeError from stubs
        reason = " ".join(str(e).split())[:160] or type(e).__name__
        raise BackendUnavailable(f"TensorRT is not installed or not loadable here ({reason}); "
                                 f"on a machine with an NVIDIA GPU: {INSTALL_HINT}") from None
    return trt


def tensorrt_major(trt) -> int:
    """10, 11, ... from trt.__version__ ("11.4.0.106")."""
    return int(str(trt.__version__).split(".")[0])


def make_logger(trt, verbose: bool = False):
    severity = trt.Logger.Severity.VERBOSE if verbose else trt.Logger.Severity.WARNING
    return trt.Logger(severity)


class TensorRTBackend(Backend):
    kind = "tensorrt"

    def __init__(self, path: str | os.PathLike, device: str = "auto", cuda_graph: bool = True,
                 io: str = "auto"):
        from .cuda_io import gpu_info, make_device_io

        path = Path(path)
        info = read_engine_info(path)          # ModelFileError without sidecar: fail before CUDA
        if device == "cpu":
            raise BackendUnavailable(f"{path}: TensorRT engines run on a GPU only (device 'cpu' asked)")
        trt = import_tensorrt()
        index = int(device.split(":", 1)[1]) if device.startswith("cuda:") else 0
        gpu = gpu_info(index)
        check_engine_compatible(info, path, str(trt.__version__), gpu)
        self.trt = trt
        self.info = info
        self.io = make_device_io(io, index)
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        if info.metadata.extra.get("irpe_plugin"):  # engines with the fused iRPE plugin node
            from .irpe_plugin import register_irpe_plugin
            register_irpe_plugin()
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise ModelFileError(f"{path}: TensorRT could not deserialize the engine (corrupt file, "
                                 f"or built by another TensorRT version; see the log above)")
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendUnavailable(f"{path}: could not create an execution context (GPU memory?)")
        inputs, outputs = [], []
        for i in range(engine.num_io_tensors):
            tensor = engine.get_tensor_name(i)
            if engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT:
                inputs.append(tensor)
            else:
                outputs.append(tensor)
        if len(inputs) != 1:
            raise ModelFileError(f"{path}: expected one input tensor, found {inputs}")
        self.input_name = inputs[0]
        self.dtypes = {t: np.dtype(trt.nptype(engine.get_tensor_dtype(t))) for t in inputs + outputs}
        # Batch range of optimization profile 0: get_tensor_profile_shape -> [min, opt, max] shapes.
        static = tuple(engine.get_tensor_shape(self.input_name))          # (-1 | B, 3, S, S)
        if static[0] == -1:
            low, _, high = (tuple(s) for s in engine.get_tensor_profile_shape(self.input_name, 0))
            batch_range = (int(low[0]), int(high[0]))
        else:
            batch_range = (int(static[0]), int(static[0]))
        self.use_cuda_graph = cuda_graph
        self._buffers: dict[str, Any] = {}         # name -> DeviceArray sized for `_capacity`
        self._capacity = 0                         # batch the buffers hold
        self._graph_shape: tuple | None = None     # input shape the captured graph was made for
        self._replay = None
        self._captures = 0
        super().__init__(path, info.metadata, device=f"cuda:{index}", output_names=outputs,
                         batch_range=batch_range)

    # ---------------------------------------------------------------- buffers
    def _ensure_buffers(self, batch: int) -> None:
        """Device buffers for `batch` images, grown (never shrunk) as batches grow. Regrowing
        moves the addresses, which invalidates a captured graph."""
        if batch <= self._capacity:
            return
        high = self.batch_range[1]
        capacity = min(max(batch, self._capacity * 2), high)
        full = (capacity, 3, self.image_size, self.image_size)             # (B_cap, 3, S, S)
        self.context.set_input_shape(self.input_name, full)
        shapes = {self.input_name: full}
        for name in self.output_names:
            shapes[name] = tuple(self.context.get_tensor_shape(name))   # resolved for `capacity`
        self._buffers = {name: self.io.alloc(shape, self.dtypes[name]) for name, shape in shapes.items()}
        self._capacity = capacity
        self._graph_shape, self._replay = None, None

    def _enqueue(self, stream: int) -> None:
        if not self.context.execute_async_v3(stream):
            raise BackendUnavailable(f"{self.path}: TensorRT execute_async_v3 failed (see the log)")

    # ---------------------------------------------------------------- run
    def _run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        shape = tuple(images.shape)                                      # (B, 3, S, S)
        self._ensure_buffers(shape[0])
        self.io.upload(self._buffers[self.input_name], images)
        if self._replay is not None and self._graph_shape == shape:
            self._replay()
        else:
            if not self.context.set_input_shape(self.input_name, shape):
                raise ValueError(f"{self.path.name}: input shape {shape} outside the engine's profile")
            for name, buffer in self._buffers.items():
                self.context.set_tensor_address(name, buffer.ptr)
            self._enqueue(self.io.stream_handle)                         # eager (warm-up) run
            self._graph_shape, self._replay = None, None
            if self.use_cuda_graph and self._captures < MAX_RECAPTURES:
                self._capture(shape)
        out_shapes = {name: tuple(self.context.get_tensor_shape(name)) for name in self.output_names}
        pending = {name: self.io.download(self._buffers[name], out_shapes[name]) for name in self.output_names}
        self.io.synchronize()
        return {name: np.asarray(fetch(), dtype=np.float32) for name, fetch in pending.items()}

    def _capture(self, shape: tuple) -> None:
        self.io.synchronize()
        try:
            self._replay = self.io.capture(self._enqueue)
            self._graph_shape = shape
            self._captures += 1
        except Exception as e:  # some plugins/tactics are not capturable: keep eager execution
            log.warning("CUDA graph capture failed (%s); running TensorRT eagerly", e)
            self.use_cuda_graph = False
            self._replay, self._graph_shape = None, None

    def timer(self):
        return self.io.event_timer()

    def describe(self) -> dict:
        return {**super().describe(), "tensorrt_version": str(self.trt.__version__),
                "gpu": self.info.gpu, "io": self.io.kind, "cuda_graph": self.use_cuda_graph}

    def close(self) -> None:
        self._replay = None
        self._buffers = {}
        self.context = None
        self.engine = None
        if getattr(self, "io", None) is not None:
            self.io.close()
            self.io = None
