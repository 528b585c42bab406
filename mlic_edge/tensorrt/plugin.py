"""TensorRT plugin `mlic_edge::IRPEAttention` (TensorRT's Python plugin API, `tensorrt.plugin`).

The node contract (inputs, attributes) is in `irpe_reference.py`. Three parts:

* register: the output has q's shape and type;
* aot_impl: the Triton kernel `irpe_triton.irpe_attention_plugin_kernel` compiled to PTX for the
  instance's sizes and the build GPU, baked into the engine, so the engine runs without Python
  or Triton; FP32 and FP16 tactics (autotune);
* impl (JIT): the same kernel launched from Python by Triton, buffers wrapped by torch
  (development and debugging).

Both exist, so networks that contain the node are created with
NetworkDefinitionCreationFlag.PREFER_AOT_PYTHON_PLUGINS (see export/engine.py).
`register_irpe_plugin(runtime)` is called by `mlic-edge build-engine` before parsing a
plugin-mode graph; an engine built with the AOT kernel opens without it (the TensorRT backend
registers the plugin only for JIT-plugin engines). The Python plugin API is `tensorrt.plugin`
(TensorRT >= 10.14; `tensorrt_bindings.plugin` in 10.12/10.13). TensorRT for RTX 1.7 has no
AOT Python plugins: `TensorRTRuntime.plugin_support` says why.

The AOT kernel's tiles are capped at 48 KiB of dynamic shared memory: a kernel launched by
TensorRT's AOT path gets no cudaFuncSetAttribute(MaxDynamicSharedMemorySize) call from us, and
48 KiB is what CUDA allows without one.

Deliberately no `from __future__ import annotations`: `tensorrt.plugin` validates the decorated
functions' annotations as objects.
"""
from typing import List, Tuple, Union

from .runtimes import TensorRTRuntime, import_plugin_api
from ..kernels.irpe_reference import INT_INPUTS, OP_TYPE, PLUGIN_INPUTS, PLUGIN_NAMESPACE

PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{OP_TYPE}"
AOT_MAX_SHARED = 48 * 1024   # dynamic shared memory a kernel may use without an opt-in attribute
_registered: set = set()


def register_irpe_plugin(runtime: TensorRTRuntime) -> None:
    """Register the plugin with `runtime`'s plugin registry (idempotent per runtime).
    BackendUnavailable when the runtime has no Python plugin API."""
    if runtime.name in _registered:
        return
    trtp = import_plugin_api(runtime)
    _define(runtime.trt, trtp)
    _registered.add(runtime.name)


def _define(trt, trtp) -> None:
    """Register the plugin's four parts with `trtp` (TensorRT's plugin API module)."""
    _define_shape(trtp)
    _define_autotune(trtp)
    _define_aot(trt, trtp)
    _define_jit(trtp)


def _define_shape(trtp) -> None:
    @trtp.register(PLUGIN_ID)
    def irpe_attention_desc(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc,
                            bucket_ids: trtp.TensorDesc, query_table: trtp.TensorDesc,
                            key_table: trtp.TensorDesc, value_table: trtp.TensorDesc,
                            num_heads: int, scale: float) -> Tuple[trtp.TensorDesc]:
        return q.like()                                      # (B, L, d), q's type


def _define_autotune(trtp) -> None:
    @trtp.autotune(PLUGIN_ID)
    def irpe_attention_autotune(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc,
                                bucket_ids: trtp.TensorDesc, query_table: trtp.TensorDesc,
                                key_table: trtp.TensorDesc, value_table: trtp.TensorDesc,
                                num_heads: int, scale: float,
                                outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        # One position per PLUGIN_INPUTS entry, then the output. All floats share one type per tactic.
        types = ["INT32" if name in INT_INPUTS else "FP32|FP16" for name in PLUGIN_INPUTS] + ["FP32|FP16"]
        return [trtp.AutoTuneCombination(", ".join(types), "LINEAR")]


def _define_aot(trt, trtp) -> None:
    def _constant(expr: trtp.ShapeExpr, what: str) -> int:
        if not expr.is_constant:
            raise ValueError(f"IRPEAttention: {what} must be static (the feature grid and width are "
                             f"fixed at export)")
        return int(expr.constant_value())

    @trtp.aot_impl(PLUGIN_ID)
    def irpe_attention_aot(q: trtp.TensorDesc, k: trtp.TensorDesc, v: trtp.TensorDesc,
                           bucket_ids: trtp.TensorDesc, query_table: trtp.TensorDesc,
                           key_table: trtp.TensorDesc, value_table: trtp.TensorDesc,
                           num_heads: int, scale: float, outputs: Tuple[trtp.TensorDesc],
                           tactic: int) -> Tuple[Union[str, bytes], Union[str, bytes],
                                                 trtp.KernelLaunchParams, trtp.SymIntExprs]:
        from ..kernels.irpe_triton import compile_plugin_kernel

        dtype = "fp16" if q.dtype == trt.float16 else "fp32"
        d_model = _constant(q.shape_expr[2], "the model width")
        kernel = compile_plugin_kernel(
            dtype, num_heads, d_model // num_heads,
            n_buckets=_constant(value_table.shape_expr[1], "the bucket count"),
            table_heads=_constant(value_table.shape_expr[0], "the table head count"),
            scale=scale, max_shared=AOT_MAX_SHARED)
        seq_len = q.shape_expr[1]
        launch = trtp.KernelLaunchParams()
        launch.grid_x = trtp.cdiv(seq_len, kernel["block_m"])     # query blocks
        launch.grid_y = q.shape_expr[0] * num_heads               # batch x heads
        launch.block_x = kernel["num_warps"] * 32
        launch.shared_mem = kernel["shared"]
        extra_args = trtp.SymIntExprs(1)                          # between inputs and outputs
        extra_args[0] = trtp.SymInt32(seq_len)
        return kernel["name"], kernel["ptx"], launch, extra_args


def _define_jit(trtp) -> None:
    @trtp.impl(PLUGIN_ID)
    def irpe_attention_impl(q: trtp.Tensor, k: trtp.Tensor, v: trtp.Tensor, bucket_ids: trtp.Tensor,
                            query_table: trtp.Tensor, key_table: trtp.Tensor, value_table: trtp.Tensor,
                            num_heads: int, scale: float, outputs: Tuple[trtp.Tensor],
                            stream: int) -> None:
        import torch
        import triton
        from triton.runtime.errors import OutOfResources

        from ..kernels.irpe_triton import (
            block_configs,
            irpe_attention_plugin_kernel,
            plugin_constexprs,
        )

        tensors = [torch.as_tensor(t, device="cuda") for t in (q, k, v, bucket_ids, query_table,
                                                              key_table, value_table)]
        out = torch.as_tensor(outputs[0], device="cuda")
        B, L, d = tensors[0].shape
        head_dim, value = d // num_heads, tensors[6]
        dtype = "fp32" if tensors[0].dtype == torch.float32 else "fp16"
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            for block_m, block_n, num_warps in block_configs(head_dim, tensors[0].element_size()):
                try:  # the first tile size whose shared memory fits this GPU
                    irpe_attention_plugin_kernel[(triton.cdiv(L, block_m), B * num_heads)](
                        *tensors, L, out, num_warps=num_warps,
                        **plugin_constexprs(dtype, num_heads, head_dim, value.shape[1], value.shape[0],
                                            scale, block_m, block_n))
                    return
                except OutOfResources:
                    continue
            raise RuntimeError(f"IRPEAttention: no tile size fits this GPU (head_dim {head_dim}, {dtype})")
