"""The fused Triton iRPE attention as a torch autograd function (training and eager inference).

`irpe_attention(q, k, v, irpe, num_heads, scale, dropout_p)` computes exactly what
`MultiheadAttention` computes between its input projections and its output projection when the
layer has iRPE (see `mlic_edge.kernels.irpe_triton` for the math and the kernels), but never
writes an (L, L) tensor: the per-bucket scores (B*H, L, N) come from torch matmuls, the kernel
returns the attention output and the attention mass per bucket (B*H, L, N), the value term
mass @ Wv is a torch matmul again (so autograd covers the tables), and backward recomputes the
attention block by block from the saved softmax statistics.

Opt-in (`model.irpe_kernel: triton`): on an H200 it uses less memory than the PyTorch ops but is
slower (README, "Fused iRPE").

Runs on CUDA, and on the CPU under Triton's interpreter (TRITON_INTERPRET=1, how the tests check
it on machines without a GPU). Tile sizes are chosen per GPU: the first of
`irpe_triton.block_configs` whose shared memory fits (compiled once, then cached).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor

from .irpe import IRPE, num_buckets

try:  # Triton ships with CUDA builds of torch; CPU-only installs simply do not get the kernel.
    import triton

    from ..kernels import irpe_triton as kernels
except ImportError:  # pragma: no cover - depends on the install
    triton = None
    kernels = None


class KernelDoesNotFit(RuntimeError):
    """No tile size of the fused kernel fits this GPU's shared memory."""


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def fused_irpe_available(device: torch.device) -> bool:
    """True when the Triton kernel can run on `device` (CUDA, or the CPU in interpreter mode)."""
    if kernels is None:
        return False
    return device.type == "cuda" or _interpreted()


def _dot_precision(dtype: torch.dtype) -> str:
    # Same contract as torch's own float32 matmuls: TF32 only when the user allowed it.
    if dtype == torch.float64 or (dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32):
        return "ieee"
    return "tf32"  # ignored by Triton for 16-bit inputs


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    # Softmax statistics and per-bucket sums: float32, or float64 for float64 inputs (tests).
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class _Launch:
    """Everything a kernel launch needs besides the tensors."""
    num_heads: int
    head_dim: int
    n_buckets: int
    has: tuple[bool, bool, bool]       # query, key, value tables present
    dropout: bool
    dot_precision: str

    def meta(self, tiles: tuple[int, int, int]) -> dict:
        block_m, block_n, num_warps = tiles
        has_q, has_k, has_v = self.has
        return dict(NUM_HEADS=self.num_heads, HEAD_DIM=self.head_dim, N_BUCKETS=self.n_buckets,
                    HAS_Q=has_q, HAS_K=has_k, HAS_V=has_v, DROPOUT=self.dropout, BLOCK_M=block_m,
                    BLOCK_N=block_n, D_PAD=kernels.padded(self.head_dim),
                    NB_PAD=kernels.padded(self.n_buckets), DOT_PRECISION=self.dot_precision,
                    num_warps=num_warps)


_tiles_cache: dict = {}
KERNELS = ("fwd", "dq", "dkv")


def _kernel(name: str):
    return {"fwd": kernels.irpe_attention_fwd_kernel, "dq": kernels.irpe_attention_bwd_dq_kernel,
            "dkv": kernels.irpe_attention_bwd_dkv_kernel}[name]


def _warmup_args(name: str, q: Tensor, scores: Tensor, ids: Tensor, scalars: tuple) -> tuple:
    """Arguments with the right types for compiling kernel `name` (values are not used)."""
    stats = scores
    if name == "fwd":   # q k v ids sk sq out lse mass
        return (q, q, q, ids, scores, scores, q, stats, stats, *scalars)
    if name == "dq":    # q k v ids sk sq dmass do lse delta dq dsk
        return (q, q, q, ids, scores, scores, stats, q, stats, stats, q, stats, *scalars)
    return (q, q, q, ids, scores, scores, stats, q, stats, stats, q, q, stats, *scalars)


def _tiles(name: str, q: Tensor, scores: Tensor, ids: Tensor, scalars: tuple, launch: _Launch,
           override: tuple[int, int, int] | None) -> tuple[int, int, int]:
    """First tile configuration whose compiled kernel fits the GPU's shared memory."""
    configs = kernels.block_configs(launch.head_dim, q.element_size())
    if override is not None:
        return override
    if _interpreted():
        return configs[0]
    key = (name, launch, q.dtype, scores.dtype, q.device.index)
    if key not in _tiles_cache:
        limit = triton.runtime.driver.active.utils.get_device_properties(q.device.index)["max_shared_mem"]
        needed = {}
        for tiles in configs:
            compiled = _kernel(name).warmup(*_warmup_args(name, q, scores, ids, scalars), grid=(1, 1),
                                            **launch.meta(tiles))
            needed[tiles] = compiled.metadata.shared
            if needed[tiles] <= limit:
                _tiles_cache[key] = tiles
                break
        else:
            raise KernelDoesNotFit(f"fused iRPE kernel {name} ({q.dtype}, head_dim {launch.head_dim}) "
                                   f"needs {min(needed.values())} bytes of shared memory; this GPU has {limit}")
    return _tiles_cache[key]


def _plan(q: Tensor, ids: Tensor, n_buckets: int, has: tuple[bool, bool, bool], num_heads: int,
          dropout_p: float, seed: int, scale: float, need_backward: bool, override) -> tuple[_Launch, dict]:
    """The launch description and the tile sizes of the kernels these inputs need.

    Done before the autograd function runs, so a kernel that does not fit the GPU is known
    before any work (and the caller can fall back to the PyTorch path)."""
    L = q.shape[1]
    launch = _Launch(num_heads, q.shape[2] // num_heads, n_buckets, has, dropout_p > 0,
                     _dot_precision(q.dtype))
    scores = q.new_empty(1, dtype=_stats_dtype(q.dtype))
    scalars = (L, scale, dropout_p, seed)
    names = KERNELS if need_backward else KERNELS[:1]
    return launch, {name: _tiles(name, q, scores, ids, scalars, launch, override) for name in names}


class IRPEAttentionFunction(torch.autograd.Function):
    """The part of iRPE attention that needs (L, L) blocks, fused:

    (q, k, v (B, L, d), sk, sq (B*H, L, N) per-bucket scores or None, ids (L, L) int32)
        -> O = P' V (B, L, d), mass (B*H, L, N) = attention mass per bucket

    The caller computes sk = q_s Wk and sq = k_s Wq before and adds mass @ Wv after, with torch
    ops (cuBLAS, and autograd for the tables).
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, sk: Tensor | None, sq: Tensor | None, ids: Tensor,
                num_heads: int, scale: float, dropout_p: float, seed: int, plan: tuple):
        launch, tiles = plan
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        B, L, _ = q.shape
        stats = _stats_dtype(q.dtype)
        dummy = q.new_empty(1, dtype=stats)
        out = torch.empty_like(q)
        lse = torch.empty(B * num_heads, L, device=q.device, dtype=stats)
        mass = torch.zeros(B * num_heads, L, launch.n_buckets, device=q.device, dtype=stats)
        kernels.irpe_attention_fwd_kernel[(triton.cdiv(L, tiles["fwd"][0]), B * num_heads)](
            q, k, v, ids, dummy if sk is None else sk, dummy if sq is None else sq, out, lse, mass,
            L, scale, dropout_p, seed, **launch.meta(tiles["fwd"]))
        if not launch.has[2]:
            ctx.mark_non_differentiable(mass)
        ctx.save_for_backward(q, k, v, sk, sq, ids, out, lse, mass)
        ctx.args = (num_heads, scale, dropout_p, seed, plan)
        return out, mass

    @staticmethod
    def backward(ctx, grad_out: Tensor, grad_mass: Tensor | None):
        q, k, v, sk, sq, ids, out, lse, mass = ctx.saved_tensors
        num_heads, scale, dropout_p, seed, (launch, tiles) = ctx.args
        B, L, d = q.shape
        head_dim = launch.head_dim
        stats = _stats_dtype(q.dtype)
        do = grad_out.contiguous().to(q.dtype)
        dmass = (torch.zeros_like(mass) if grad_mass is None else grad_mass.to(stats)).contiguous()

        def heads(x: Tensor) -> Tensor:  # (B, L, d) -> (B*H, L, dh), at least float32
            return x.to(stats).view(B, L, num_heads, head_dim).transpose(1, 2).reshape(B * num_heads, L, head_dim)

        # delta_i = sum_j P'_ij dP'_ij = dO_i . O_i + mass_i . dmass_i
        delta = ((heads(do) * heads(out)).sum(-1) + (mass * dmass).sum(-1)).contiguous()
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dsk = torch.zeros_like(mass) if sk is not None else None
        dsq = torch.zeros_like(mass) if sq is not None else None
        dummy = q.new_empty(1, dtype=stats)
        scores = (dummy if sk is None else sk, dummy if sq is None else sq, dmass)
        common = (L, scale, dropout_p, seed)
        kernels.irpe_attention_bwd_dq_kernel[(triton.cdiv(L, tiles["dq"][0]), B * num_heads)](
            q, k, v, ids, *scores, do, lse, delta, dq, dummy if dsk is None else dsk, *common,
            **launch.meta(tiles["dq"]))
        kernels.irpe_attention_bwd_dkv_kernel[(triton.cdiv(L, tiles["dkv"][1]), B * num_heads)](
            q, k, v, ids, *scores, do, lse, delta, dk, dv, dummy if dsq is None else dsq, *common,
            **launch.meta(tiles["dkv"]))
        cast = lambda g, like: None if g is None else g.to(like.dtype)  # noqa: E731
        return dq, dk, dv, cast(dsk, sk), cast(dsq, sq), None, None, None, None, None, None


def irpe_attention(q: Tensor, k: Tensor, v: Tensor, irpe: IRPE, num_heads: int, scale: float,
                   dropout_p: float = 0.0, blocks: tuple[int, int, int] | None = None) -> Tensor:
    """Fused iRPE self-attention core: projections' outputs (B, L, d) -> pre-output-projection (B, L, d).

    `blocks` = (BLOCK_M, BLOCK_N, num_warps) overrides the tile sizes (tests use small tiles to
    exercise several blocks on tiny inputs). Raises KernelDoesNotFit before any work when no tile
    size fits the GPU.
    """
    B, L, d = q.shape
    head_dim = d // num_heads

    def heads(x: Tensor) -> Tensor:  # (B, L, d) -> (B, H, L, dh)
        return x.view(B, L, num_heads, head_dim).transpose(1, 2)

    def scores(x: Tensor, module) -> Tensor | None:  # (x * scale) @ W per head -> (B*H, L, N), float32
        if module is None:
            return None
        s = (heads(x) * scale) @ module.weight
        return s.reshape(B * num_heads, L, -1).to(_stats_dtype(x.dtype)).contiguous()

    has = (irpe.query_bias is not None, irpe.key_bias is not None, irpe.value is not None)
    n_buckets = num_buckets(irpe.ratio)
    seed = int(torch.randint(0, 2**31 - 1, ())) if dropout_p > 0 else 0  # torch's CPU RNG: resumable
    need_backward = torch.is_grad_enabled() and any(
        t.requires_grad for t in (q, k, v, *(p for p in irpe.parameters())))
    sk, sq = scores(q, irpe.key_bias), scores(k, irpe.query_bias)
    plan = _plan(q, irpe.ids_int32, n_buckets, has, num_heads, dropout_p, seed, scale, need_backward, blocks)
    out, mass = IRPEAttentionFunction.apply(q, k, v, sk, sq, irpe.ids_int32, num_heads, scale, dropout_p,
                                            seed, plan)
    if irpe.value is not None:  # + sum_n mass_in Wv[n]
        weight = irpe.value.weight
        value_term = mass.view(B, num_heads, L, n_buckets).to(weight.dtype) @ weight  # (B, H, L, dh)
        out = out + value_term.transpose(1, 2).reshape(B, L, d).to(out.dtype)
    return out
