"""TensorRT engine backend: TensorRT 10.x/11.x and TensorRT for RTX, tensor-name API only.

Why this shape:
* TensorRT 11 removed the binding-index API (num_bindings, execute_async_v2, ...); everything
  here goes through I/O tensor names: num_io_tensors / get_tensor_name / get_tensor_mode,
  context.set_input_shape, set_tensor_address, execute_async_v3 (also TensorRT 10's and TensorRT
  for RTX's API). tests/test_trt_api.py checks every attribute used on TensorRT objects against
  the 11.4 bindings.
* The sidecar says which runtime built the engine; what differs between the two (RTX's JIT
  runtime cache, persisted next to the engine per GPU) is in `tensorrt.runtimes`.
* Device buffers come from `cuda_io` (torch CUDA tensors or cuda-python; never pycuda). The
  engine's GPU is made the current device before the runtime is created, so engine, context
  and buffers live on one GPU (`--device cuda:1`).
* Static shapes replay a CUDA graph: after one eager run for an input shape (TensorRT's
  deferred setup happens there), execute_async_v3 is captured once and replayed for every
  later batch of that shape, removing per-layer launch overhead. A new shape recaptures;
  a capture failure falls back to eager execution for good.
* Engines with the IRPEAttention plugin were built with its ahead-of-time kernel (PTX inside
  the engine): they open without the plugin API or Triton. Only a JIT-plugin engine registers it.
* The runtime module is imported lazily; without it or without a GPU, opening an engine raises
  BackendUnavailable naming the pip extra.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..tensorrt.sidecar import EngineInfo, check_engine_compatible, read_engine_info
from ..core.devices import Device, parse_device
from ..core.errors import BackendUnavailable, ModelFileError
from ..core.files import atomic_write_bytes
from ..tensorrt.runtimes import TensorRTRuntime, import_runtime, runtime_cache_path
from .base import Backend

log = logging.getLogger(__name__)

MAX_RECAPTURES = 8  # shapes alternating more often than this run eagerly (capture costs ~ms)


def needs_python_plugin(info: EngineInfo) -> bool:
    """An engine whose IRPEAttention plugin runs the Python (JIT) implementation needs the plugin
    registered before deserializing; an AOT one carries its kernel and needs nothing."""
    return bool(info.metadata.extra.get("irpe_plugin")) and info.build.get("plugin_impl", "aot") != "aot"


def deserialize_engine(runtime: TensorRTRuntime, info: EngineInfo, data: bytes, io, path: Path):
    """(trt.Runtime, engine) on the GPU of `io`; the order matters: current device first."""
    trt = runtime.trt
    io.make_current()
    trt_runtime = trt.Runtime(runtime.logger())
    if needs_python_plugin(info):
        from ..tensorrt.plugin import register_irpe_plugin
        register_irpe_plugin(runtime)
    engine = trt_runtime.deserialize_cuda_engine(data)
    if engine is None:
        raise ModelFileError(f"{path}: {runtime.label} could not deserialize the engine (corrupt file, "
                             f"or built by another version; see the log above)")
    return trt_runtime, engine


class TensorRTBackend(Backend):
    kind = "tensorrt"

    def __init__(self, path: str | os.PathLike, device: str | Device = "auto", cuda_graph: bool = True,
                 io: str = "auto"):
        from ..core.gpu import gpu_info
        from .cuda_io import make_device_io

        path, device = Path(path), parse_device(device)
        info = read_engine_info(path)          # ModelFileError without sidecar: fail before CUDA
        if device.kind == "cpu":
            raise BackendUnavailable(f"{path}: TensorRT engines run on a GPU only (device 'cpu' asked)")
        runtime = import_runtime(info.runtime)
        trt = runtime.trt
        index = device.gpu_index
        gpu = gpu_info(index)
        check_engine_compatible(info, path, runtime.version, gpu)
        self.runtime = runtime
        self.trt = trt
        self.info = info
        self.io = make_device_io(io, index)
        self._runtime, engine = deserialize_engine(runtime, info, path.read_bytes(), self.io, path)
        self.engine = engine
        # RTX: the JIT kernels of this GPU, compiled on first use, cached next to the engine.
        self.runtime_cache_file = runtime_cache_path(path, gpu) if runtime.is_rtx else None
        self.context, self._runtime_cache = runtime.execution_context(engine, self.runtime_cache_file)
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
            self._save_runtime_cache()                                   # RTX: JIT for this shape done
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

    def _save_runtime_cache(self) -> None:
        if self._runtime_cache is None:
            return
        self.io.synchronize()
        try:
            data = bytes(memoryview(self._runtime_cache[1].serialize()))
            if data and (not self.runtime_cache_file.is_file() or self.runtime_cache_file.read_bytes() != data):
                atomic_write_bytes(self.runtime_cache_file, data)
        except OSError as e:  # a read-only engine folder: run on, compile again next time
            log.warning("could not write the runtime cache %s (%s)", self.runtime_cache_file, e)

    def timer(self):
        return self.io.event_timer()

    def describe(self) -> dict:
        described = {**super().describe(), "runtime": self.runtime.name, "runtime_version": self.runtime.version,
                     "compute_capabilities": self.info.compute_capabilities, "build_gpu": self.info.gpu,
                     "io": self.io.kind, "cuda_graph": self.use_cuda_graph}
        if self.runtime_cache_file is not None:
            described["runtime_cache"] = str(self.runtime_cache_file)
        return described

    def close(self) -> None:
        if getattr(self, "_runtime_cache", None) is not None and self.io is not None:
            self._save_runtime_cache()
            self._runtime_cache = None
        self._replay = None
        self._buffers = {}
        self.context = None
        self.engine = None
        if getattr(self, "io", None) is not None:
            self.io.close()
            self.io = None
