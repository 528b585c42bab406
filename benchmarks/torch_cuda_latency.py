#!/usr/bin/env python3
"""PyTorch inference latency / throughput of the paper's model (no TensorRT needed).

    python benchmarks/torch_cuda_latency.py --device cuda --dtype fp16 --batch 1,32
    python benchmarks/torch_cuda_latency.py --device cuda --dtype fp16 --batch 1,32 --cuda-graph

Eager fp32 is measured in the same process as the baseline. CUDA events time each call after
warm-up; latency p50/p90/p99 in ms, throughput = batch / p50.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mlic_edge.config import ModelConfig
from mlic_edge.model import build_model


def timed_calls(fn, device: torch.device, warmup: int, repeats: int) -> np.ndarray:
    """Milliseconds of each of `repeats` calls after `warmup` untimed ones (CUDA events on GPUs)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return np.array(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--backbone", default="resnet101")
    p.add_argument("--image-size", type=int, default=448)
    p.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"])
    p.add_argument("--batch", default="1,32")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--cuda-graph", action="store_true", help="also time CUDA-graph replay")
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    torch.backends.cudnn.benchmark = True
    cfg = ModelConfig(num_classes=80, backbone=args.backbone, pretrained="none", image_size=args.image_size)
    base = build_model(cfg).to(device).eval()
    if device.type == "cuda":
        base = base.to(memory_format=torch.channels_last)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{args.backbone}@{args.image_size} on {name}; medians over {args.repeats} calls after {args.warmup} warm-up")
    for batch in [int(b) for b in args.batch.split(",")]:
        x32 = torch.randn(batch, 3, args.image_size, args.image_size, device=device)
        if device.type == "cuda":
            x32 = x32.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            eager32 = timed_calls(lambda: base(x32), device, args.warmup, args.repeats)
            model = base.to(dtype) if dtype != torch.float32 else base
            x = x32.to(dtype)
            low = timed_calls(lambda: model(x), device, args.warmup, args.repeats)
            rows = [("eager fp32", eager32), (f"eager {args.dtype}", low)]
            if args.cuda_graph and device.type == "cuda":
                static_x = x.clone()
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(3):
                        model(static_x)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    model(static_x)
                rows.append((f"cuda graph {args.dtype}", timed_calls(graph.replay, device, args.warmup, args.repeats)))
            base = base.float()
        for label, t in rows:
            p50, p90, p99 = np.percentile(t, [50, 90, 99])
            print(f"  batch {batch:>3} {label:<16} p50 {p50:8.2f} ms  p90 {p90:8.2f}  p99 {p99:8.2f}  "
                  f"{batch / p50 * 1e3:9.1f} img/s  x{np.median(eager32) / p50:5.2f} vs eager fp32")


if __name__ == "__main__":
    main()
