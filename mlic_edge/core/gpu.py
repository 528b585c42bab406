"""GPU facts without torch: how many CUDA devices, their names and compute capabilities, the driver.

`cuda_device_count` asks the driver library itself (ctypes), so machines without a GPU answer
at once; the rest uses cuda-bindings (`from cuda.bindings import runtime as cudart`), else torch.
"""
from __future__ import annotations

from typing import Any

from .errors import BackendUnavailable


def load_cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return None
    return cudart


def check(result, what: str):
    """cuda-bindings calls return (error, *values): raise on error, return the value(s)."""
    cudart = load_cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        name = cudart.cudaGetErrorString(err)[1]
        raise BackendUnavailable(f"CUDA error in {what}: {name.decode() if isinstance(name, bytes) else name}")
    return values[0] if len(values) == 1 else (tuple(values) or None)


def cuda_device_count() -> int:
    """CUDA devices visible, from the driver library itself (ctypes; no torch, no cuda-python):
    cheap enough to decide whether to try a GPU provider at all."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    else:
        return 0
    count = ctypes.c_int(0)
    if lib.cuInit(0) != 0 or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return int(count.value)


def gpu_info(index: int = 0) -> dict[str, Any] | None:
    """{"name", "compute_capability": "M.m", "memory_gb", "index"} of CUDA device `index`, or None
    when no CUDA GPU is visible. Uses cuda-bindings (no torch needed), else torch."""
    if cuda_device_count() <= index:  # cheap driver query first: no torch import on CPU machines
        return None
    cudart = load_cudart()
    if cudart is not None:
        err, props = cudart.cudaGetDeviceProperties(index)
        if err == cudart.cudaError_t.cudaSuccess:
            name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
            return {"name": name.rstrip("\x00").strip(), "compute_capability": f"{props.major}.{props.minor}",
                    "memory_gb": round(props.totalGlobalMem / 2 ** 30, 1), "index": index}
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available() or torch.cuda.device_count() <= index:
        return None
    props = torch.cuda.get_device_properties(index)
    return {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
            "memory_gb": round(props.total_memory / 2 ** 30, 1), "index": index}


def cuda_driver_version() -> str | None:
    cudart = load_cudart()
    if cudart is None:
        return None
    err, version = cudart.cudaDriverGetVersion()
    if err != cudart.cudaError_t.cudaSuccess or not version:
        return None
    return f"{version // 1000}.{(version % 1000) // 10}"
