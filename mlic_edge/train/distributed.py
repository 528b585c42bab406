"""torch.distributed plumbing: one process per GPU (or per CPU worker with gloo), set by torchrun.

`torchrun --nproc-per-node N -m mlic_edge train ...` sets RANK/WORLD_SIZE/LOCAL_RANK; without
them everything below degrades to a single process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..config import check_device
from ..core.errors import BackendUnavailable


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun; NCCL on CUDA, gloo on the CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def check_device_available(spec: str, what: str = "--device") -> None:
    """A one-line error, before anything is built, for a device spec that is malformed ('gpu',
    'cuda:x') or names a GPU torch cannot see; torch itself would fail with a traceback later."""
    check_device(spec, what)
    if not spec.startswith("cuda"):
        return
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise BackendUnavailable(f"{what} {spec!r}: torch sees no CUDA GPU (torch {torch.__version__}, "
                                 f"CUDA {torch.version.cuda or 'not built in'}); use cpu or auto")
    index = int(spec.partition(":")[2] or os.environ.get("LOCAL_RANK", "0"))
    if index >= count:
        raise BackendUnavailable(f"{what} {spec!r}: torch sees {count} CUDA GPU(s): cuda:0 to cuda:{count - 1}")


def resolve_device(spec: str, what: str = "--device") -> torch.device:
    """'auto' -> this process's GPU (LOCAL_RANK) when CUDA is available, else the CPU.
    `what` names the spec's source in errors (--device, train.device)."""
    check_device_available(spec, what)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(spec)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def all_gather_objects(obj, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()
