"""torch.distributed plumbing: one process per GPU (or per CPU worker with gloo), set by torchrun.

`torchrun --nproc-per-node N -m mlic_edge train ...` sets RANK/WORLD_SIZE/LOCAL_RANK; without
them everything below degrades to a single process.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..core.capabilities import TRAIN_DEVICE_KINDS
from ..core.devices import Device, parse_device
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
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank())


def local_rank() -> int:
    """This process's GPU under torchrun (0 without it)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def check_device_available(spec: str | Device, what: str = "--device") -> Device:
    """The parsed device, or a one-line error before anything is built for a spec that is malformed
    ('gpu', 'cuda:x') or names a GPU torch cannot see; torch itself would fail with a traceback later."""
    device = parse_device(spec, what, kinds=TRAIN_DEVICE_KINDS)
    if device.kind != "cuda":
        return device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise BackendUnavailable(f"{what} {str(device)!r}: torch sees no CUDA GPU (torch {torch.__version__}, "
                                 f"CUDA {torch.version.cuda or 'not built in'}); use cpu or auto")
    index = device.index if device.index is not None else local_rank()
    if index >= count:
        raise BackendUnavailable(f"{what} {str(device)!r}: torch sees {count} CUDA GPU(s): cuda:0 to cuda:{count - 1}")
    return device


def resolve_device(spec: str | Device, what: str = "--device") -> torch.device:
    """'auto' -> this process's GPU (LOCAL_RANK) when CUDA is available, else the CPU; 'cuda'
    -> this process's GPU. `what` names the spec's source in errors (--device, train.device)."""
    parsed = check_device_available(spec, what)
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if parsed.kind == "auto" else parsed.kind
    if kind == "cpu":
        return torch.device("cpu")
    device = torch.device("cuda", parsed.index if parsed.index is not None else local_rank())
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
