#!/usr/bin/env python3
"""Where the fused iRPE kernel spends its time: forward and forward+backward (bf16) with the iRPE
sides switched on one at a time, against PyTorch's flash attention (no iRPE) as the floor.

Usage: PYTHONPATH=. python benchmarks/irpe_kernel_ablation.py [--batch 32]
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from mlic_edge.model.irpe import IRPE
from mlic_edge.model.irpe_fused import irpe_attention
from torch_cuda_latency import timed_calls  # same timing as the other benchmarks (CUDA events)


def median_ms(fn, repeats: int = 20) -> float:
    return float(np.median(timed_calls(fn, torch.device("cuda"), warmup=1, repeats=repeats)))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    for grid, d_model, heads in [((14, 14), 2048, 4), ((14, 14), 512, 8)]:
        L, dh = grid[0] * grid[1], d_model // heads
        q, k, v = (torch.randn(args.batch, L, d_model, device="cuda", dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        grad = torch.randn_like(q)

        def flash(q=q, k=k, v=v):
            split = lambda t: t.view(args.batch, L, heads, dh).transpose(1, 2)  # noqa: E731
            out = F.scaled_dot_product_attention(split(q), split(k), split(v))     # (B, H, L, dh)
            return out.transpose(1, 2).reshape(args.batch, L, d_model)

        rows = [("sdpa (no iRPE)", flash)]
        for on in ("qkv", "qk", "kv", "k", "v"):
            irpe = IRPE(heads, dh, grid, 1.9, on=on).cuda().to(torch.bfloat16)
            rows.append((f"fused iRPE on {on}", lambda irpe=irpe: irpe_attention(q, k, v, irpe, heads, dh ** -0.5)))
        for name, fn in rows:
            fwd = median_ms(lambda: fn().detach())
            both = median_ms(lambda: torch.autograd.grad(fn(), (q, k, v), grad))
            print(f"L {L} d_model {d_model} heads {heads} | {name:<20} fwd {fwd:7.3f} ms  fwd+bwd {both:7.3f} ms",
                  flush=True)


if __name__ == "__main__":
    main()
