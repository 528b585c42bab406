"""GPU facts and device buffers for the TensorRT backend, without pycuda.

Why two implementations: pycuda needs nvcc to install (impossible in CI and on many edge
images). Where PyTorch with CUDA is installed, its CUDA tensors are the buffers (what Ultralytics
and torch2trt do) and its graph API captures CUDA graphs; elsewhere (edge devices without torch)
NVIDIA's cuda-python (`from cuda.bindings import runtime as cudart`; the old `from cuda import
cudart` is gone in cuda-bindings 13) provides cudaMalloc / cudaMemcpyAsync / stream capture.

Both expose the same small `DeviceIO` surface the TensorRT backend needs: a stream handle (int,
what `execute_async_v3` takes), allocation, async host<->device copies, CUDA-graph capture of a
launch function, and CUDA-event timers. Nothing here knows about TensorRT, so the buffer and
graph logic can be tested on any CUDA GPU.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..core.errors import BackendUnavailable
from ..core.gpu import check as _check
from ..core.gpu import load_cudart as _cudart

IO_KINDS = ("auto", "torch", "cudart")


# ----------------------------------------------------------------------------------- device IO
class DeviceArray:
    """A device allocation: `ptr` (int address for set_tensor_address), shape, numpy dtype."""

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype, owner: Any = None):
        self.ptr, self.shape, self.dtype, self.owner = int(ptr), tuple(shape), np.dtype(dtype), owner

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


class DeviceIO:
    """Stream + buffers + graphs on one GPU. Subclasses: TorchDeviceIO, CudartDeviceIO."""

    kind = "base"
    stream_handle: int

    def alloc(self, shape: tuple[int, ...], dtype: Any) -> DeviceArray: ...
    def upload(self, dst: DeviceArray, host: np.ndarray) -> None: ...
    def download(self, src: DeviceArray, shape: tuple[int, ...]) -> Callable[[], np.ndarray]:
        """Queue a device->host copy of the first prod(shape) elements; call the returned
        function after synchronize() to get the array."""
    def synchronize(self) -> None: ...
    def make_current(self) -> None:
        """Make this IO's GPU the thread's current CUDA device: TensorRT creates its runtime,
        engine and execution context on the current device, which must hold the buffers."""
    def capture(self, launch: Callable[[int], None]) -> Callable[[], None]:
        """Record launch(stream_handle) into a CUDA graph; returns replay() (on our stream)."""
    def event_timer(self): ...
    def close(self) -> None: ...


class TorchDeviceIO(DeviceIO):
    kind = "torch"

    def __init__(self, index: int = 0):
        from .torch_backend import import_torch

        torch = import_torch()
        if not torch.cuda.is_available():
            raise BackendUnavailable("torch sees no CUDA GPU")
        self.torch = torch
        self.device = torch.device("cuda", index)
        self.stream = torch.cuda.Stream(self.device)
        self.stream_handle = int(self.stream.cuda_stream)
        self._graphs: list = []

    def make_current(self) -> None:
        self.torch.cuda.set_device(self.device)

    def _dtype(self, dtype):
        return getattr(self.torch, np.dtype(dtype).name)  # float32 -> torch.float32, ...

    def alloc(self, shape, dtype) -> DeviceArray:
        t = self.torch.empty(tuple(shape), dtype=self._dtype(dtype), device=self.device)
        return DeviceArray(t.data_ptr(), shape, dtype, owner=t)

    def upload(self, dst: DeviceArray, host: np.ndarray) -> None:
        src = self.torch.from_numpy(np.ascontiguousarray(host, dtype=dst.dtype)).reshape(-1)
        with self.torch.cuda.stream(self.stream):
            dst.owner.reshape(-1)[:src.numel()].copy_(src, non_blocking=True)

    def download(self, src: DeviceArray, shape) -> Callable[[], np.ndarray]:
        count = int(np.prod(shape, dtype=np.int64))
        host = self.torch.empty(count, dtype=self._dtype(src.dtype), pin_memory=True)
        with self.torch.cuda.stream(self.stream):
            host.copy_(src.owner.reshape(-1)[:count], non_blocking=True)
        return lambda: host.numpy().reshape(shape).copy()

    def synchronize(self) -> None:
        self.stream.synchronize()

    def capture(self, launch) -> Callable[[], None]:
        graph = self.torch.cuda.CUDAGraph()
        # thread_local: the decode threads of `infer` may touch CUDA-free code meanwhile.
        with self.torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
            launch(self.stream_handle)
        self._graphs.append(graph)

        def replay() -> None:
            with self.torch.cuda.stream(self.stream):
                graph.replay()
        return replay

    def event_timer(self):
        from .torch_backend import TorchEventTimer

        return TorchEventTimer(self.torch, self.stream)

    def close(self) -> None:
        self._graphs.clear()


class CudartDeviceIO(DeviceIO):
    kind = "cudart"

    def __init__(self, index: int = 0):
        cudart = _cudart()
        if cudart is None:
            raise BackendUnavailable("device buffers need torch with CUDA or cuda-python "
                                     "(pip install 'mlic-edge[trt]')")
        self.cudart = cudart
        self.index = index
        self.make_current()
        self.stream = _check(cudart.cudaStreamCreateWithFlags(cudart.cudaStreamNonBlocking),
                             "cudaStreamCreate")
        self.stream_handle = int(self.stream)
        self._allocations: list[int] = []
        self._graphs: list = []

    def make_current(self) -> None:
        _check(self.cudart.cudaSetDevice(self.index), "cudaSetDevice")

    def alloc(self, shape, dtype) -> DeviceArray:
        array = DeviceArray(0, shape, dtype)
        ptr = _check(self.cudart.cudaMalloc(max(array.nbytes, 1)), "cudaMalloc")
        self._allocations.append(int(ptr))
        array.ptr = int(ptr)
        return array

    def upload(self, dst: DeviceArray, host: np.ndarray) -> None:
        host = np.ascontiguousarray(host, dtype=dst.dtype)
        self._keep = host  # pageable source must outlive the async copy (until synchronize)
        _check(self.cudart.cudaMemcpyAsync(dst.ptr, host.ctypes.data, host.nbytes,
                                           self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                           self.stream), "cudaMemcpyAsync(H2D)")

    def download(self, src: DeviceArray, shape) -> Callable[[], np.ndarray]:
        host = np.empty(shape, dtype=src.dtype)
        _check(self.cudart.cudaMemcpyAsync(host.ctypes.data, src.ptr, host.nbytes,
                                           self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                           self.stream), "cudaMemcpyAsync(D2H)")
        return lambda: host

    def synchronize(self) -> None:
        _check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def capture(self, launch) -> Callable[[], None]:
        cudart = self.cudart
        _check(cudart.cudaStreamBeginCapture(
            self.stream, cudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
            "cudaStreamBeginCapture")
        try:
            launch(self.stream_handle)
        except BaseException:
            cudart.cudaStreamEndCapture(self.stream)  # leave capture mode; the launch error wins
            raise
        graph = _check(cudart.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")
        executable = _check(cudart.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        self._graphs.append((graph, executable))

        def replay() -> None:
            _check(cudart.cudaGraphLaunch(executable, self.stream), "cudaGraphLaunch")
        return replay

    def event_timer(self):
        return _CudartEventTimer(self.cudart, self.stream)

    def close(self) -> None:
        cudart = self.cudart
        for graph, executable in self._graphs:
            cudart.cudaGraphExecDestroy(executable)
            cudart.cudaGraphDestroy(graph)
        self._graphs.clear()
        for ptr in self._allocations:
            cudart.cudaFree(ptr)
        self._allocations.clear()
        if self.stream is not None:
            cudart.cudaStreamDestroy(self.stream)
            self.stream = None


class _CudartEventTimer:
    kind = "cuda_events"

    def __init__(self, cudart, stream):
        self.cudart, self.stream = cudart, stream
        self.begin = _check(cudart.cudaEventCreate(), "cudaEventCreate")
        self.end = _check(cudart.cudaEventCreate(), "cudaEventCreate")

    def start(self) -> None:
        _check(self.cudart.cudaEventRecord(self.begin, self.stream), "cudaEventRecord")

    def stop(self) -> float:
        _check(self.cudart.cudaEventRecord(self.end, self.stream), "cudaEventRecord")
        _check(self.cudart.cudaEventSynchronize(self.end), "cudaEventSynchronize")
        ms = _check(self.cudart.cudaEventElapsedTime(self.begin, self.end), "cudaEventElapsedTime")
        self.cudart.cudaEventDestroy(self.begin)
        self.cudart.cudaEventDestroy(self.end)
        return float(ms)


def make_device_io(kind: str = "auto", index: int = 0) -> DeviceIO:
    """auto: torch CUDA tensors when torch with CUDA is importable, else cuda-python."""
    if kind not in IO_KINDS:
        raise BackendUnavailable(f"io must be one of {', '.join(IO_KINDS)}, got {kind!r}")
    if kind in ("auto", "torch"):
        from .torch_backend import import_torch
        try:
            usable = import_torch().cuda.is_available()
        except BackendUnavailable:
            usable = False
        if usable:
            return TorchDeviceIO(index)
        if kind == "torch":
            raise BackendUnavailable("io='torch' needs PyTorch with a CUDA GPU")
    return CudartDeviceIO(index)
