#!/usr/bin/env python3
"""Forward+backward time and peak memory of one iRPE encoder layer vs a standard one of the same size.

    python benchmarks/irpe_layer.py                     # CPU, L = 196 / 324, d_model 512 / 2048
    python benchmarks/irpe_layer.py --device cuda --batch 32

Medians over repeats; the ratio iRPE / standard is measured in the same process. Peak memory: CUDA
max_memory_allocated on GPUs, else the bytes of tensors saved for backward (what a layer adds to
training memory), counted once per storage with saved-tensor hooks.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from mlic_edge.model.irpe import IRPE
from mlic_edge.model.transformer import EncoderLayer


def saved_bytes(fn) -> int:
    """Bytes of the distinct storages autograd keeps for backward (an expanded view, like the
    iRPE gather index, costs its storage once, not numel times)."""
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def bench(layer, x, repeats: int, device: torch.device) -> tuple[float, int]:
    def step():
        layer(x).sum().backward()

    for _ in range(2):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    memory = (torch.cuda.max_memory_allocated() if device.type == "cuda"
              else saved_bytes(lambda: layer(x)))
    return statistics.median(times), memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, batch {args.batch}, median of {args.repeats}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'L':>5} {'d_model':>7} {'heads':>5} | {'standard ms':>11} {'iRPE ms':>9} {'ratio':>6} | "
          f"{'std MB':>8} {'iRPE MB':>8} {'ratio':>6}")
    for side in (14, 18):
        for d_model, heads in ((512, 8), (2048, 4)):
            torch.manual_seed(0)
            ffn = 4 * d_model
            x = torch.randn(args.batch, side * side, d_model, device=device)
            standard = EncoderLayer(d_model, heads, ffn, dropout=0.1).to(device).train()
            irpe = EncoderLayer(d_model, heads, ffn, dropout=0.1,
                                irpe=IRPE(heads, d_model // heads, (side, side))).to(device).train()
            t_std, m_std = bench(standard, x, args.repeats, device)
            t_irpe, m_irpe = bench(irpe, x, args.repeats, device)
            print(f"{side * side:>5} {d_model:>7} {heads:>5} | {t_std * 1e3:>11.1f} {t_irpe * 1e3:>9.1f} "
                  f"{t_irpe / t_std:>6.2f} | {m_std / 2**20:>8.1f} {m_irpe / 2**20:>8.1f} {m_irpe / m_std:>6.2f}")


if __name__ == "__main__":
    main()
