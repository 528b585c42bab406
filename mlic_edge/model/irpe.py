"""Image relative position encoding (iRPE; Wu et al., ICCV 2021), contextual "product" method.

The reference is microsoft/Cream, iRPE/irpe.py (pure-PyTorch path). Facts we follow:

* piecewise index g(x) of a signed offset x (their Eq. 18), alpha = r, beta = 2r, gamma = 8r;
* product buckets: R[i, j] = (g(row_i - row_j) + b) * S + (g(col_i - col_j) + b), b = int(beta),
  S = 2b + 1, N = S^2 buckets; query minus key, tokens in row-major order;
* contextual mode: a table W maps a (scaled) query or key vector to one score per bucket, and the
  attention logit of pair (i, j) reads the score of bucket R[i, j].

The reference's CUDA op (`rpe_index`) does not export, so the lookups are written with two plain
operations that ONNX, TensorRT and INT8 all handle:

* key/query side: `gather` along the bucket axis with the constant (L, L) index R;
* value side: the "bucket-sum" form. Instead of materialising Wv[R[i, j]] as an (L, L, head_dim)
  tensor, attention weights are first summed per bucket with a constant one-hot O[i, j, n] =
  [R[i, j] == n] (one batched MatMul), then multiplied by the (N, head_dim) table.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor, nn


def piecewise_index(offsets: Tensor, ratio: float) -> Tensor:
    """Piecewise index of signed integer offsets (reference Eq. 18), as int64.

    |x| <= alpha: x itself; beyond it the index grows with log|x| and is clipped at int(beta).
    """
    alpha, beta, gamma = ratio, 2 * ratio, 8 * ratio
    x = offsets.to(torch.float64)
    x_abs = x.abs()
    far = x_abs > alpha
    # Where |x| <= alpha the log term is unused; clamp keeps it finite for x = 0.
    log_part = torch.log(x_abs.clamp(min=1e-12) / alpha) / math.log(gamma / alpha) * (beta - alpha)
    y_far = torch.sign(x) * (alpha + log_part).round().clamp(max=beta)
    y = torch.where(far, y_far, x.round())
    return y.to(torch.int64)  # truncation toward zero, as the reference's cast


def num_buckets(ratio: float) -> int:
    """Bucket count N of the product method: (2 * int(beta) + 1) ** 2."""
    side = 2 * int(2 * ratio) + 1
    return side * side


@functools.lru_cache(maxsize=32)
def _bucket_ids_cached(height: int, width: int, ratio: float) -> Tensor:
    rows = torch.arange(height).repeat_interleave(width)        # (L,)
    cols = torch.arange(width).repeat(height)                    # (L,)
    d_row = rows[:, None] - rows[None, :]                        # (L, L) query minus key
    d_col = cols[:, None] - cols[None, :]
    b = int(2 * ratio)
    side = 2 * b + 1
    return (piecewise_index(d_row, ratio) + b) * side + (piecewise_index(d_col, ratio) + b)


def bucket_ids(height: int, width: int, ratio: float = 1.9) -> Tensor:
    """(L, L) int64 bucket matrix R for an height x width grid; R[i, j]: query i, key j.

    Computed once per (grid, ratio) and cached; a fresh copy is returned so callers may move it.
    """
    return _bucket_ids_cached(int(height), int(width), float(ratio)).clone()


def bucket_one_hot(ids: Tensor, n_buckets: int) -> Tensor:
    """(L, L) bucket ids -> (L, L, N) float one-hot, O[i, j, n] = [R[i, j] == n]."""
    return torch.nn.functional.one_hot(ids, n_buckets).to(torch.float32)


class ContextualBias(nn.Module):
    """Key-side (or query-side) contextual bias: one score per bucket from a query (key) vector.

    forward(x, ids) returns bias[b, h, i, j] = (x[b, h, i] @ W[h'])[ids[i, j]], where x is the
    already scaled query (key side) or key (query side; the caller transposes the result).
    """

    def __init__(self, num_heads: int, head_dim: int, n_buckets: int, shared_head: bool = True):
        super().__init__()
        self.n_buckets = n_buckets
        # Reference initialisation: zeros, so a fresh model starts as plain attention.
        self.weight = nn.Parameter(torch.zeros(1 if shared_head else num_heads, head_dim, n_buckets))

    def forward(self, x: Tensor, ids: Tensor) -> Tensor:
        # x: (B, H, L, dh); weight: (H', dh, N) broadcasts over heads when H' = 1
        scores = x @ self.weight                                   # (B, H, L, N)
        B, H, L, _ = scores.shape
        index = ids.expand(B, H, L, L)                             # (B, H, L, L), constant
        return torch.gather(scores, 3, index)                      # (B, H, L, L)


class ContextualValue(nn.Module):
    """Value-side term: out[b, h, i] = sum_j attn[b, h, i, j] * Wv[h', ids[i, j]].

    Bucket-sum form: attention mass per bucket (attn @ one-hot) times the (N, dh) table, so no
    (L, L, dh) tensor is ever built.
    """

    def __init__(self, num_heads: int, head_dim: int, n_buckets: int, shared_head: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1 if shared_head else num_heads, n_buckets, head_dim))

    def forward(self, attn: Tensor, one_hot: Tensor) -> Tensor:
        # attn: (B, H, L, L); one_hot: (L, L, N)
        B, H, L, _ = attn.shape
        per_query = attn.permute(2, 0, 1, 3).reshape(L, B * H, L)  # (L_i, B*H, L_j)
        mass = per_query @ one_hot                                 # (L_i, B*H, N)
        mass = mass.reshape(L, B, H, -1).permute(1, 2, 0, 3)       # (B, H, L, N)
        return mass @ self.weight                                  # (B, H, L, dh)


class IRPE(nn.Module):
    """iRPE of one attention layer on a fixed grid: tables for q, k and/or v plus the buckets.

    The bucket matrix and its one-hot are non-persistent buffers: derived from the grid, they move
    with the module but stay out of checkpoints.
    """

    def __init__(self, num_heads: int, head_dim: int, grid: tuple[int, int], ratio: float = 1.9,
                 on: str = "qkv", shared_head: bool = True):
        super().__init__()
        self.grid = tuple(grid)
        self.ratio = ratio
        n = num_buckets(ratio)
        self.register_buffer("ids", bucket_ids(*grid, ratio), persistent=False)
        # The fused Triton kernel reads the ids as int32 (half the bytes; L*L < 2**31).
        self.register_buffer("ids_int32", self.ids.to(torch.int32), persistent=False)
        self.register_buffer("one_hot", bucket_one_hot(self.ids, n) if "v" in on else None,
                             persistent=False)
        self.query_bias = ContextualBias(num_heads, head_dim, n, shared_head) if "q" in on else None
        self.key_bias = ContextualBias(num_heads, head_dim, n, shared_head) if "k" in on else None
        self.value = ContextualValue(num_heads, head_dim, n, shared_head) if "v" in on else None

    def logits_bias(self, q_scaled: Tensor, k_scaled: Tensor) -> Tensor | None:
        """Bias added to q_s @ k^T: key side from the queries, query side from the keys."""
        bias = None
        if self.key_bias is not None:
            bias = self.key_bias(q_scaled, self.ids)                # (B, H, L_q, L_k)
        if self.query_bias is not None:
            # bias_q[b, h, i, j] = ((k_j * s) @ Wq)[R[j, i]]: index from the key's point of view.
            bq = self.query_bias(k_scaled, self.ids).transpose(2, 3)
            bias = bq if bias is None else bias + bq
        return bias

    def value_term(self, attn: Tensor) -> Tensor | None:
        return None if self.value is None else self.value(attn, self.one_hot)
