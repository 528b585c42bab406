"""Will this training run fit in memory? Measured on one small step before the first real one.

The out-of-memory killer ends a run without a word (a ResNet101 @448 at the paper's batch does
not fit a CPU machine's memory). So before training:

* per image: the bytes autograd saves for the backward pass in one forward pass of 2 images
  (`saved_tensors_hooks`, each storage counted once, the weights it saves left out), halved, times ACTIVATION_OVERHEAD for the
  gradients of those activations and the temporaries alive during the backward pass;
* fixed: gradients, AdamW's two moments and the EMA copy (4 bytes each per parameter); the
  weights themselves are already in memory;
* available: $MLIC_EDGE_MEMORY_LIMIT (e.g. 2G, 512M) when set, else the GPU's free memory, or on
  the CPU the kernel's MemAvailable (and the cgroup's limit, in a container), times SAFETY.

When the batch does not fit, it is split into micro-batches that fit, with gradient
accumulation, so the effective batch (and the recipe's learning rate) stays (`split_batch`); when not even one
image fits, a one-line error names a setting that does.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

ACTIVATION_OVERHEAD = 2.0
SAFETY = 0.85
UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass
class MemoryPlan:
    available: int          # bytes the run may use
    fixed: int              # bytes that do not scale with the batch
    per_image: int          # bytes per image in a training step
    batch_size: int         # micro-batch to use
    grad_accum: int

    def needed(self, batch: int) -> int:
        return self.fixed + batch * self.per_image


def parse_size(text: str) -> int:
    """'2G', '512M', '1.5G' or plain bytes."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    if text and text[-1] in UNITS:
        return int(float(text[:-1]) * UNITS[text[-1]])
    return int(float(text))


def available_memory(device: torch.device) -> int:
    limit = os.environ.get("MLIC_EDGE_MEMORY_LIMIT")
    if limit:
        return int(parse_size(limit) * SAFETY)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * SAFETY)
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        cgroup = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        current = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if cgroup != "max":
            room = int(cgroup) - current
            available = room if available is None else min(available, room)
    except (OSError, ValueError):
        pass
    if available is None:
        return 1 << 62       # unknown platform: no limit we can see
    return int(available * SAFETY)


def saved_bytes_per_image(model: torch.nn.Module, image_size: int, device: torch.device,
                          channels_last: bool = False) -> int:
    """Bytes autograd keeps for the backward pass, per image (a 2-image train-mode forward)."""
    storages: dict[int, int] = {}
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}   # counted in `fixed`

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    x = torch.zeros(2, 3, image_size, image_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.train()
    # The probe must leave no trace: BatchNorm's running statistics and the RNG (dropout) as they were.
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    state = torch.get_rng_state()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            model(x)
    finally:
        torch.set_rng_state(state)
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(buffers[name])
        model.train(was_training)
    return sum(storages.values()) // 2


def plan_memory(model: torch.nn.Module, image_size: int, batch_size: int, grad_accum: int, device: torch.device,
                *, ema: bool, channels_last: bool = False) -> MemoryPlan:
    parameters = sum(p.numel() * p.element_size() for p in model.parameters())
    fixed = parameters * (3 + int(ema))          # gradients, AdamW's exp_avg and exp_avg_sq, EMA
    per_image = int(saved_bytes_per_image(model, image_size, device, channels_last) * ACTIVATION_OVERHEAD)
    available = available_memory(device)
    plan = MemoryPlan(available, fixed, per_image, batch_size, grad_accum)
    if plan.needed(batch_size) <= available:
        return plan
    micro = (available - fixed) // max(per_image, 1)
    if micro >= 1:
        plan.batch_size, plan.grad_accum = split_batch(batch_size * grad_accum, int(micro))
    else:
        plan.batch_size = 0
    return plan


def split_batch(effective: int, micro: int) -> tuple[int, int]:
    """(micro-batch <= micro, accumulation steps) for an effective batch: an exact split when one
    with a micro-batch of at least micro / 2 exists (32 with room for 11: 8 x 4), else the fewest
    steps (31 with room for 30: 16 x 2 = 32)."""
    fewest = math.ceil(effective / micro)
    for steps in range(fewest, effective + 1):
        if effective % steps == 0 and effective // steps >= micro / 2:
            return effective // steps, steps
        if effective // steps < micro / 2:
            break
    return math.ceil(effective / fewest), fewest


def gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"
