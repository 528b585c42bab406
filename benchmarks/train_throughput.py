#!/usr/bin/env python3
"""Training images/s and peak memory of the paper's model on synthetic input, as the trainer runs it.

    python benchmarks/train_throughput.py --device cuda --batch 32            # ResNet101 @448
    python benchmarks/train_throughput.py --device cuda --batch 32 --compile
    python benchmarks/train_throughput.py --device cpu --backbone tf_efficientnet_lite0 \
        --image-size 112 --d-model 256 --ffn 1024 --batch 32                 # the quickstart model

Same step as mlic_edge.train.Trainer: AMP (bf16 where supported), channels_last on CUDA, APL loss,
AdamW, one optimizer step per batch. Median images/s over the timed steps (after warm-up).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from mlic_edge.config import ModelConfig
from mlic_edge.losses import build_loss
from mlic_edge.model import build_model
from mlic_edge.train.trainer import resolve_amp
from torch_cuda_latency import timed_calls  # same timing (CUDA events / perf_counter)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--d-model", type=int, default=2048)
    p.add_argument("--ffn", type=int, default=8192)
    p.add_argument("--num-classes", type=int, default=80)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--amp", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--no-fused", action="store_true", help="AdamW foreach instead of the fused CUDA kernel")
    p.add_argument("--irpe-kernel", default="torch", choices=["torch", "triton"],
                   help="iRPE attention: the PyTorch ops or the fused Triton kernel")
    args = p.parse_args()

    device = torch.device(args.device)
    torch.manual_seed(0)
    cfg = ModelConfig(num_classes=args.num_classes, backbone=args.backbone, pretrained="none",
                      image_size=args.image_size, d_model=args.d_model, dim_feedforward=args.ffn,
                      irpe_kernel=args.irpe_kernel)
    model = build_model(cfg).to(device).train()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    net = torch.compile(model) if args.compile else model
    amp_dtype = resolve_amp(args.amp, device)
    criterion = build_loss("apl")
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, betas=(0.9, 0.9999), weight_decay=5e-3,
                                  fused=device.type == "cuda" and not args.no_fused)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    images = torch.randn(args.batch, 3, args.image_size, args.image_size, device=device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    targets = (torch.rand(args.batch, args.num_classes, device=device) < 0.05).float()

    def step():
        ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else torch.autocast(device.type, enabled=False)
        with ctx:
            loss = criterion(net(images).float(), targets)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warmup_s = time.perf_counter() - t0
    rates = list(args.batch / (timed_calls(step, device, warmup=0, repeats=args.steps) / 1e3))
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"train {args.backbone}@{args.image_size} d_model {args.d_model} batch {args.batch} on {name}, "
          f"amp {amp_dtype}, irpe kernel {args.irpe_kernel}, compile {args.compile}, fused AdamW {device.type == 'cuda' and not args.no_fused}: {statistics.median(rates):.1f} img/s "
          f"(median of {args.steps} steps; min {min(rates):.1f}, max {max(rates):.1f}), "
          f"peak memory {peak:.2f} GiB, warm-up {warmup_s:.1f} s")


if __name__ == "__main__":
    main()
