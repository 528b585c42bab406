#!/usr/bin/env python3
"""Fused Triton iRPE attention vs the PyTorch iRPE attention on a CUDA GPU: accuracy, speed, memory.

For the paper's sizes (L = 196 and 324, i.e. 14x14 and 18x18 grids; d_model 2048 with 4 heads and
512 with 8 heads) one `MultiheadAttention` with iRPE on q, k and v runs through both paths:

* accuracy: float32 (TF32 off) forward output and the gradients of the input and of every
  parameter (projections and iRPE tables), max error relative to each tensor's scale; and under
  bf16 autocast, each path's error against the float32 reference;
* speed: forward (inference) and forward + backward, median over repeats (CUDA events), with the
  ratio PyTorch / fused (> 1: the fused kernel is faster), and peak memory of each;
* the TensorRT AOT path without TensorRT: the plugin kernel compiled to PTX exactly as
  `tensorrt.plugin.aot_impl` returns it, loaded with the CUDA driver (cuda-bindings) and launched
  with TensorRT's argument list (7 inputs, seq_len, output), against the PyTorch path.

Usage: PYTHONPATH=. python benchmarks/irpe_kernel.py [--batch 32] [--repeats 20] [--json out.json]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import sys

import numpy as np
import torch

from mlic_edge.model.attention import MultiheadAttention
from mlic_edge.model.irpe import IRPE, num_buckets
from torch_cuda_latency import timed_calls  # same timing as the other benchmarks (CUDA events)

SIZES = [((14, 14), 2048, 4), ((18, 18), 2048, 4), ((14, 14), 512, 8), ((18, 18), 512, 8)]


def make_pair(grid, d_model: int, heads: int, seed: int = 0):
    torch.manual_seed(seed)
    irpe = IRPE(heads, d_model // heads, grid, 1.9, on="qkv", shared_head=True)
    for table in irpe.parameters():          # trained tables are non-zero; zeros would hide bugs
        torch.nn.init.normal_(table, std=0.1)
    torch_path = MultiheadAttention(d_model, heads, 0.0, irpe=irpe, irpe_kernel="torch").cuda()
    fused = MultiheadAttention(d_model, heads, 0.0, irpe=IRPE(heads, d_model // heads, grid, 1.9),
                               irpe_kernel="triton").cuda()
    fused.load_state_dict(torch_path.state_dict())
    return torch_path, fused


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp(min=1e-12)).item()


def forward_backward(module, x, grad):
    x = x.detach().requires_grad_(True)
    out, _ = module(x, x, x)
    grads = torch.autograd.grad(out, [x, *module.parameters()], grad)
    return out.detach(), grads


def accuracy(torch_path, fused, x) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = False
    grad = torch.randn_like(x)
    want, want_grads = forward_backward(torch_path, x, grad)
    got, got_grads = forward_backward(fused, x, grad)
    names = ["input"] + [n for n, _ in torch_path.named_parameters()]
    grad_errors = {n: rel(g, w) for n, g, w in zip(names, got_grads, want_grads)}
    row = {"fp32_out": rel(got, want), "fp32_grad_max": max(grad_errors.values()),
           "fp32_grad_worst": max(grad_errors, key=grad_errors.get)}
    with torch.autocast("cuda", dtype=torch.bfloat16):
        bf_torch, bf_torch_grads = forward_backward(torch_path, x, grad)
        bf_fused, bf_fused_grads = forward_backward(fused, x, grad)
    row["bf16_out_torch_vs_fp32"] = rel(bf_torch, want)
    row["bf16_out_fused_vs_fp32"] = rel(bf_fused, want)
    row["bf16_grad_torch_vs_fp32"] = max(rel(g, w) for g, w in zip(bf_torch_grads, want_grads))
    row["bf16_grad_fused_vs_fp32"] = max(rel(g, w) for g, w in zip(bf_fused_grads, want_grads))
    return row


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median ms, peak MiB above the starting allocation)."""
    fn()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = timed_calls(fn, torch.device("cuda"), warmup=0, repeats=repeats)
    return float(np.median(times)), (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def speed(torch_path, fused, x, repeats: int) -> dict:
    torch.backends.cuda.matmul.allow_tf32 = False
    row = {}
    for precision in ("fp32", "bf16"):
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")
        for mode in ("fwd", "fwd+bwd"):
            results = {}
            for name, module in (("torch", torch_path), ("fused", fused)):
                def step(module=module, mode=mode):
                    with autocast:
                        if mode == "fwd":
                            with torch.no_grad():
                                module(x, x, x)
                        else:
                            xr = x.detach().requires_grad_(True)
                            out, _ = module(xr, xr, xr)
                            out.float().sum().backward()
                results[name] = timed(step, repeats)
            key = f"{precision}_{mode}"
            row[f"{key}_torch_ms"], row[f"{key}_torch_MiB"] = results["torch"]
            row[f"{key}_fused_ms"], row[f"{key}_fused_MiB"] = results["fused"]
            row[f"{key}_speedup"] = results["torch"][0] / results["fused"][0]
    return row


def aot_plugin(torch_path, x) -> dict:
    """Launch the AOT PTX the way TensorRT does and compare with the PyTorch path."""
    from cuda.bindings import driver as cu

    from mlic_edge.kernels.irpe_triton import compile_plugin_kernel
    import triton

    def check(result):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if err != cu.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"CUDA driver: {err}")
        return rest[0] if len(rest) == 1 else rest

    irpe, heads = torch_path.irpe, torch_path.num_heads
    B, L, d = x.shape
    limit = triton.runtime.driver.active.utils.get_device_properties(x.device.index)["max_shared_mem"]
    with torch.no_grad():
        q, k, v = torch_path.q_proj(x), torch_path.k_proj(x), torch_path.v_proj(x)
        want = torch_path(x, x, x)[0]
    row = {}
    for dtype, torch_dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        kernel = compile_plugin_kernel(dtype, heads, d // heads, num_buckets(irpe.ratio),
                                       irpe.value.weight.shape[0], torch_path.scale, max_shared=limit)
        module = check(cu.cuModuleLoadData(kernel["ptx"].encode() + b"\0"))
        func = check(cu.cuModuleGetFunction(module, kernel["name"].encode()))
        check(cu.cuFuncSetAttribute(func, cu.CUfunction_attribute.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                    kernel["shared"]))
        inputs = [t.to(torch_dtype).contiguous() for t in (q, k, v)] + [irpe.ids_int32] + \
            [t.detach().to(torch_dtype).contiguous() for t in
             (irpe.query_bias.weight, irpe.key_bias.weight, irpe.value.weight)]
        out = torch.empty_like(inputs[0])
        args = tuple(t.data_ptr() for t in inputs) + (L, out.data_ptr())
        types = (ctypes.c_void_p,) * 7 + (ctypes.c_int32, ctypes.c_void_p)
        grid = (triton.cdiv(L, kernel["block_m"]), B * heads)
        stream = torch.cuda.current_stream().cuda_stream
        check(cu.cuLaunchKernel(func, grid[0], grid[1], 1, kernel["num_warps"] * 32, 1, 1, kernel["shared"],
                                stream, (args, types), 0))
        torch.cuda.synchronize()
        with torch.no_grad():
            got = torch_path.out_proj(out.float())
        row[f"aot_{dtype}_out_rel_err"] = rel(got, want)
        row[f"aot_{dtype}_shared_bytes"] = kernel["shared"]
        row[f"aot_{dtype}_block_m"] = kernel["block_m"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--skip-aot", action="store_true")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, batch {args.batch}", flush=True)
    rows = []
    for grid, d_model, heads in SIZES:
        L = grid[0] * grid[1]
        torch_path, fused = make_pair(grid, d_model, heads)
        x = torch.randn(args.batch, L, d_model, device="cuda")
        row = {"L": L, "d_model": d_model, "heads": heads, "batch": args.batch}
        stages = [("accuracy", accuracy, (torch_path, fused, x)),
                  ("speed", speed, (torch_path, fused, x, args.repeats))]
        if not args.skip_aot:
            stages.append(("aot", aot_plugin, (torch_path, x)))
        for name, stage, stage_args in stages:  # one failing stage must not hide the others
            try:
                row.update(stage(*stage_args))
            except Exception as e:
                row[f"{name}_error"] = f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"
        rows.append(row)
        print(json.dumps({k: (round(v, 8) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    print("\nL    d_model heads | fp32 out err  grad err | bf16 out err torch/fused | "
          "speedup fp32 fwd, fwd+bwd | bf16 fwd, fwd+bwd | MiB bf16 fwd+bwd torch/fused")
    for r in rows:
        if any(k.endswith("_error") for k in r):
            print(f"{r['L']:<4} {r['d_model']:<7} {r['heads']:<5} | errors: "
                  + "; ".join(f"{k}={v}" for k, v in r.items() if k.endswith("_error")))
            continue
        print(f"{r['L']:<4} {r['d_model']:<7} {r['heads']:<5} | {r['fp32_out']:.1e}      {r['fp32_grad_max']:.1e} | "
              f"{r['bf16_out_torch_vs_fp32']:.1e} / {r['bf16_out_fused_vs_fp32']:.1e} | "
              f"{r['fp32_fwd_speedup']:.2f}x, {r['fp32_fwd+bwd_speedup']:.2f}x | "
              f"{r['bf16_fwd_speedup']:.2f}x, {r['bf16_fwd+bwd_speedup']:.2f}x | "
              f"{r['bf16_fwd+bwd_torch_MiB']:.0f} / {r['bf16_fwd+bwd_fused_MiB']:.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
