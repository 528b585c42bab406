"""Fused iRPE self-attention in Triton: forward and backward, without (L, L) tensors in memory.

One kernel body serves two users: the torch autograd function that trains the model on CUDA
(`mlic_edge.model.irpe_fused`) and the TensorRT plugin's ahead-of-time implementation
(`mlic_edge.tensorrt.plugin`), which compiles `irpe_attention_plugin_kernel` to PTX.
This module imports Triton only (no torch), so the plugin can be built on an edge box.

The math is the "contextual product" iRPE of `mlic_edge.model.irpe`, per head h, query i, key j:

    q_s      = q * scale                                        (scale = head_dim ** -0.5)
    logit_ij = q_s_i . k_j + (q_s_i @ Wk)[R_ij] + (k_j * scale @ Wq)[R_ji]
    P        = softmax_j(logit)
    out_i    = sum_j P_ij v_j + sum_n mass_in Wv[n],   mass_in = sum_{j: R_ij = n} P_ij

How it avoids the (L, L) bias tensors: each program holds a block of queries and streams key
blocks (online softmax, as FlashAttention). The per-bucket scores sk = q_s @ Wk (L x N) and
sq = k_s @ Wq are read per pair with `tl.gather` at the bucket id; the value side accumulates the
attention mass per bucket (BLOCK_M x N) and applies Wv once at the end. Only the (L, L) int32
bucket ids are read, shared by every batch element and head.

The forward body `_forward_block` runs in two modes:
* SELF_CONTAINED (the plugin kernel): sk and sq computed in the kernel from the tables, the value
  term added in the kernel: one launch, what TensorRT's AOT plugin needs;
* training (`irpe_attention_fwd_kernel`): sk and sq computed once by the caller (cuBLAS) and read,
  the attention mass returned and the value term added by the caller, so torch's autograd
  handles the tables; saved for backward: lse (B*H, L) and mass (B*H, L, N).
Measured on an H200 (benchmarks/irpe_kernel_ablation.py), the per-bucket sums (`_bucket_sums`,
one masked row-sum per bucket) are what costs most: the place to optimise next.

Tensors, all contiguous: q, k, v, out (B, L, H * dh) -- the projections' outputs, heads
interleaved as `nn.Linear` produces them; ids (L, L) int32; Wq, Wk (H', dh, N); Wv (H', N, dh)
with H' = 1 (shared tables) or H; per-bucket tensors (B*H, L, N) float32.
"""
from __future__ import annotations

import triton
import triton.language as tl


def next_power_of_2(n: int) -> int:
    return 1 << max(int(n) - 1, 0).bit_length()


def padded(n: int) -> int:
    """Tile extent for a head dim or bucket count: a power of two, >= 16 (tl.dot's minimum K)."""
    return max(16, next_power_of_2(n))


def block_configs(head_dim: int, itemsize: int) -> list[tuple[int, int, int]]:
    """Candidate (BLOCK_M, BLOCK_N, num_warps), fastest first; callers take the first whose shared
    memory fits the GPU (H100: 227 KiB per block, A100 / Jetson Orin: 163 KiB, RTX 30/40: 99 KiB).
    Compiled for sm_90: head_dim 512 in float32 needs 16 x 16 tiles for the backward kernels
    (176 KiB); the forward fits 32 x 16 (140 KiB)."""
    d_pad = next_power_of_2(head_dim)
    if d_pad <= 64:
        first = [(64, 64, 4), (32, 32, 4)]
    elif d_pad <= 128:
        first = [(64, 32, 4), (32, 32, 4)]
    else:  # d_model 2048 / 4 heads: head_dim 512; the (BLOCK, 512) accumulators dominate
        first = [(32, 32, 8)] if itemsize <= 2 else [(32, 16, 8)]
    return first + [(16, 16, 4)]


# ------------------------------------------------------------------------------------ helpers
@triton.jit
def _load_rows(ptr, base, offs_rows, seq_len, offs_d, ROW_STRIDE: tl.constexpr, HEAD_DIM: tl.constexpr):
    """(BLOCK, D_PAD) tile of one head's rows from a (B, L, H * dh) tensor; zeros outside."""
    mask = (offs_rows[:, None] < seq_len) & (offs_d[None, :] < HEAD_DIM)
    return tl.load(ptr + base + offs_rows[:, None] * ROW_STRIDE + offs_d[None, :], mask=mask, other=0.0)


@triton.jit
def _load_table(ptr, offs_r, offs_c, ROWS: tl.constexpr, COLS: tl.constexpr):
    """(R_PAD, C_PAD) tile of one head's (ROWS, COLS) table; zeros outside."""
    mask = (offs_r[:, None] < ROWS) & (offs_c[None, :] < COLS)
    return tl.load(ptr + offs_r[:, None] * COLS + offs_c[None, :], mask=mask, other=0.0)


@triton.jit
def _head_offset(bh, seq_len, NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr):
    """(offset of head (b, h) = divmod(bh, H) in a (B, L, H * dh) tensor, h)."""
    h = bh % NUM_HEADS
    return (bh // NUM_HEADS) * seq_len * NUM_HEADS * HEAD_DIM + h * HEAD_DIM, h


@triton.jit
def _load_ids(ids_ptr, offs_a, offs_b, seq_len):
    """(len(a), len(b)) block of the bucket matrix R[a, b]; bucket 0 outside (masked later)."""
    mask = (offs_a[:, None] < seq_len) & (offs_b[None, :] < seq_len)
    return tl.load(ids_ptr + offs_a[:, None] * seq_len + offs_b[None, :], mask=mask, other=0)


@triton.jit
def _bucket_scores(x_ptr, base, offs_rows, seq_len, table_ptr, scale, ROW_STRIDE: tl.constexpr,
                   HEAD_DIM: tl.constexpr, N_BUCKETS: tl.constexpr, BLOCK: tl.constexpr,
                   D_CHUNK: tl.constexpr, NB_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """(BLOCK, NB_PAD) float32 scores (x[rows] * scale) @ W, W a (dh, N) table. Head-dim chunks
    are read from global memory (L2) so the table never has to sit in shared memory whole
    (dh = 512: 128 KiB in float32)."""
    dtype = x_ptr.dtype.element_ty
    offs_bucket = tl.arange(0, NB_PAD)
    scores = tl.zeros((BLOCK, NB_PAD), dtype=tl.float32)
    for d0 in range(0, HEAD_DIM, D_CHUNK):
        offs_d = d0 + tl.arange(0, D_CHUNK)
        x = (_load_rows(x_ptr, base, offs_rows, seq_len, offs_d, ROW_STRIDE, HEAD_DIM) * scale).to(dtype)
        w = _load_table(table_ptr, offs_d, offs_bucket, HEAD_DIM, N_BUCKETS)
        scores += tl.dot(x, w.to(dtype), input_precision=DOT_PRECISION)   # (BLOCK, NB_PAD)
    return scores


@triton.jit
def _add_value_term(out_ptr, base, offs_rows, seq_len, mass, wv_ptr, ROW_STRIDE: tl.constexpr,
                    HEAD_DIM: tl.constexpr, N_BUCKETS: tl.constexpr, D_CHUNK: tl.constexpr,
                    NB_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """out[rows] += mass @ Wv (Wv the (N, dh) value table), in head-dim chunks over what this
    program has just stored (read back after a barrier), for the same shared-memory reason as
    `_bucket_scores`."""
    tl.debug_barrier()  # the rows were stored by other threads of this program
    dtype = out_ptr.dtype.element_ty
    offs_bucket = tl.arange(0, NB_PAD)
    m = mass.to(dtype)
    for d0 in range(0, HEAD_DIM, D_CHUNK):
        offs_d = d0 + tl.arange(0, D_CHUNK)
        wv = _load_table(wv_ptr, offs_bucket, offs_d, N_BUCKETS, HEAD_DIM)             # (NB_PAD, D_CHUNK)
        mask = (offs_rows[:, None] < seq_len) & (offs_d[None, :] < HEAD_DIM)
        ptrs = out_ptr + base + offs_rows[:, None] * ROW_STRIDE + offs_d[None, :]
        current = tl.load(ptrs, mask=mask, other=0.0)     # promoted to float32 below if 16-bit
        term = tl.dot(m, wv.to(dtype), input_precision=DOT_PRECISION)        # (rows, D_CHUNK)
        tl.store(ptrs, (current + term).to(dtype), mask=mask)


@triton.jit
def _bucket_sums(x, ids, offs_bucket, N_BUCKETS: tl.constexpr, NB_PAD: tl.constexpr):
    """out[a, n] = sum_b x[a, b] * [ids[a, b] == n]: a per-row histogram of x by bucket id."""
    out = tl.zeros((x.shape[0], NB_PAD), dtype=tl.float32)
    for n in range(N_BUCKETS):
        column = tl.sum(tl.where(ids == n, x, 0.0), axis=1)               # (rows,)
        out = tl.where(offs_bucket[None, :] == n, column[:, None], out)
    return out


@triton.jit
def _dropout_keep(seed, bh, offs_m, offs_n, seq_len, dropout_p):
    """Keep mask of one (BLOCK_M, BLOCK_N) block; the same counter-based draw in fwd and bwd."""
    offsets = (bh * seq_len + offs_m[:, None]) * seq_len + offs_n[None, :]
    return tl.rand(seed, offsets) >= dropout_p


@triton.jit
def _load_scores(ptr, bh, offs_rows, seq_len, offs_bucket, N_BUCKETS: tl.constexpr):
    """(rows, NB_PAD) rows of a (B*H, L, N) per-bucket tensor (float32, float64 in tests); zeros outside."""
    mask = (offs_rows[:, None] < seq_len) & (offs_bucket[None, :] < N_BUCKETS)
    ptrs = ptr + (bh * seq_len + offs_rows[:, None]) * N_BUCKETS + offs_bucket[None, :]
    return tl.load(ptrs, mask=mask, other=0.0)


@triton.jit
def _store_scores(ptr, values, bh, offs_rows, seq_len, offs_bucket, N_BUCKETS: tl.constexpr):
    mask = (offs_rows[:, None] < seq_len) & (offs_bucket[None, :] < N_BUCKETS)
    tl.store(ptr + (bh * seq_len + offs_rows[:, None]) * N_BUCKETS + offs_bucket[None, :], values, mask=mask)


@triton.jit
def _scores(x_ptr, table_ptr, scores_ptr, base, bh, offs_rows, seq_len, scale, ROW_STRIDE: tl.constexpr,
            HEAD_DIM: tl.constexpr, N_BUCKETS: tl.constexpr, BLOCK: tl.constexpr, D_CHUNK: tl.constexpr,
            NB_PAD: tl.constexpr, PRESENT: tl.constexpr, SELF_CONTAINED: tl.constexpr,
            DOT_PRECISION: tl.constexpr):
    """(BLOCK, NB_PAD) per-bucket scores (x[rows] * scale) @ W of one side: computed from the table
    (SELF_CONTAINED, the plugin) or read from the (B*H, L, N) tensor the caller computed once
    (training: cuBLAS does it once instead of every query block redoing it)."""
    offs_bucket = tl.arange(0, NB_PAD)
    scores = tl.zeros((BLOCK, NB_PAD), dtype=tl.float32)
    if PRESENT:
        if SELF_CONTAINED:
            scores = _bucket_scores(x_ptr, base, offs_rows, seq_len, table_ptr, scale, ROW_STRIDE, HEAD_DIM,
                                    N_BUCKETS, BLOCK, D_CHUNK, NB_PAD, DOT_PRECISION)
        else:
            scores = _load_scores(scores_ptr, bh, offs_rows, seq_len, offs_bucket, N_BUCKETS)
    return scores


@triton.jit
def _logits(q_s, k, ids, ids_t, sk, sq, HAS_Q: tl.constexpr, HAS_K: tl.constexpr,
            DOT_PRECISION: tl.constexpr):
    """(BLOCK_M, BLOCK_N) logits q_s.k + key-side bias + query-side bias (no masking)."""
    s = tl.dot(q_s, tl.trans(k), input_precision=DOT_PRECISION)
    if HAS_K:
        s += tl.gather(sk, ids, axis=1)                                    # sk[i, R_ij]
    if HAS_Q:
        s += tl.trans(tl.gather(sq, ids_t, axis=1))                        # sq[j, R_ji]
    return s


# ------------------------------------------------------------------------------------ forward
@triton.jit
def _forward_block(q_ptr, k_ptr, v_ptr, ids_ptr, wq_ptr, wk_ptr, wv_ptr, sk_ptr, sq_ptr, out_ptr, lse_ptr,
                   mass_ptr, seq_len, scale, dropout_p, seed, bh, pid_m,
                   NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, N_BUCKETS: tl.constexpr,
                   TABLE_HEADS: tl.constexpr, HAS_Q: tl.constexpr, HAS_K: tl.constexpr,
                   HAS_V: tl.constexpr, SELF_CONTAINED: tl.constexpr, SAVE_STATS: tl.constexpr,
                   DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                   D_PAD: tl.constexpr, NB_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr):
    ROW_STRIDE: tl.constexpr = NUM_HEADS * HEAD_DIM
    D_CHUNK: tl.constexpr = min(D_PAD, 64)
    dtype = q_ptr.dtype.element_ty
    base, h = _head_offset(bh, seq_len, NUM_HEADS, HEAD_DIM)
    table = (h if TABLE_HEADS > 1 else 0) * HEAD_DIM * N_BUCKETS
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    offs_bucket = tl.arange(0, NB_PAD)

    q_s = (_load_rows(q_ptr, base, offs_m, seq_len, offs_d, ROW_STRIDE, HEAD_DIM) * scale).to(dtype)
    sk = _scores(q_ptr, wk_ptr + table, sk_ptr, base, bh, offs_m, seq_len, scale, ROW_STRIDE, HEAD_DIM,
                 N_BUCKETS, BLOCK_M, D_CHUNK, NB_PAD, HAS_K, SELF_CONTAINED, DOT_PRECISION)  # (BLOCK_M, NB_PAD)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, D_PAD), dtype=tl.float32)
    mass = tl.zeros((BLOCK_M, NB_PAD), dtype=tl.float32)
    for start_n in range(0, seq_len, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_rows(k_ptr, base, offs_n, seq_len, offs_d, ROW_STRIDE, HEAD_DIM)   # (BLOCK_N, D_PAD)
        v = _load_rows(v_ptr, base, offs_n, seq_len, offs_d, ROW_STRIDE, HEAD_DIM)
        ids = _load_ids(ids_ptr, offs_m, offs_n, seq_len)                           # R[i, j]
        ids_t = _load_ids(ids_ptr, offs_n, offs_m, seq_len)                         # R[j, i]
        sq = _scores(k_ptr, wq_ptr + table, sq_ptr, base, bh, offs_n, seq_len, scale, ROW_STRIDE, HEAD_DIM,
                     N_BUCKETS, BLOCK_N, D_CHUNK, NB_PAD, HAS_Q, SELF_CONTAINED, DOT_PRECISION)
        s = _logits(q_s, k, ids, ids_t, sk, sq, HAS_Q, HAS_K, DOT_PRECISION)
        s = tl.where(offs_n[None, :] < seq_len, s, float("-inf"))

        m_new = tl.maximum(m_i, tl.max(s, axis=1))                         # online softmax
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])                                     # (BLOCK_M, BLOCK_N)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        if DROPOUT:
            keep = _dropout_keep(seed, bh, offs_m, offs_n, seq_len, dropout_p)
            p = tl.where(keep, p / (1.0 - dropout_p), 0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(dtype), v, input_precision=DOT_PRECISION)
        if HAS_V:
            mass = mass * alpha[:, None] + _bucket_sums(p, ids, offs_bucket, N_BUCKETS, NB_PAD)
        m_i = m_new

    row_ok = offs_m < seq_len
    out_mask = row_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
    tl.store(out_ptr + base + offs_m[:, None] * ROW_STRIDE + offs_d[None, :], (acc / l_i[:, None]).to(dtype),
             mask=out_mask)
    mass = mass / l_i[:, None]
    if HAS_V and SELF_CONTAINED:  # out += mass @ Wv: sum_n mass_in Wv[n] (training: the caller adds it)
        _add_value_term(out_ptr, base, offs_m, seq_len, mass, wv_ptr + table, ROW_STRIDE, HEAD_DIM,
                        N_BUCKETS, D_CHUNK, NB_PAD, DOT_PRECISION)
    if SAVE_STATS:
        tl.store(lse_ptr + bh * seq_len + offs_m, m_i + tl.log(l_i), mask=row_ok)
        if HAS_V:
            _store_scores(mass_ptr, mass, bh, offs_m, seq_len, offs_bucket, N_BUCKETS)


@triton.jit
def irpe_attention_fwd_kernel(q_ptr, k_ptr, v_ptr, ids_ptr, sk_ptr, sq_ptr, out_ptr, lse_ptr, mass_ptr,
                              seq_len, scale, dropout_p, seed,
                              NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, N_BUCKETS: tl.constexpr,
                              HAS_Q: tl.constexpr, HAS_K: tl.constexpr, HAS_V: tl.constexpr,
                              DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                              D_PAD: tl.constexpr, NB_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """Training/eager launch, grid (cdiv(L, BLOCK_M), B * H): scores sk, sq (B*H, L, N) given;
    writes the attention output without the value term, lse (B*H, L) and mass (B*H, L, N)."""
    _forward_block(q_ptr, k_ptr, v_ptr, ids_ptr, q_ptr, q_ptr, q_ptr, sk_ptr, sq_ptr, out_ptr, lse_ptr,
                   mass_ptr, seq_len, scale, dropout_p, seed, tl.program_id(1), tl.program_id(0),
                   NUM_HEADS=NUM_HEADS, HEAD_DIM=HEAD_DIM, N_BUCKETS=N_BUCKETS, TABLE_HEADS=1,
                   HAS_Q=HAS_Q, HAS_K=HAS_K, HAS_V=HAS_V, SELF_CONTAINED=False, SAVE_STATS=True,
                   DROPOUT=DROPOUT, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, D_PAD=D_PAD, NB_PAD=NB_PAD,
                   DOT_PRECISION=DOT_PRECISION)


@triton.jit
def irpe_attention_plugin_kernel(q_ptr, k_ptr, v_ptr, ids_ptr, wq_ptr, wk_ptr, wv_ptr, seq_len, out_ptr,
                                 NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                                 N_BUCKETS: tl.constexpr, TABLE_HEADS: tl.constexpr, SCALE: tl.constexpr,
                                 BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, D_PAD: tl.constexpr,
                                 NB_PAD: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """TensorRT AOT launch. Argument order is TensorRT's: the 7 inputs, the scalar extra
    argument (seq_len), the output. Self-contained (scores from the tables, value term added),
    inference only (no dropout, no statistics)."""
    _forward_block(q_ptr, k_ptr, v_ptr, ids_ptr, wq_ptr, wk_ptr, wv_ptr, out_ptr, out_ptr, out_ptr, out_ptr,
                   out_ptr, seq_len, SCALE, 0.0, 0, tl.program_id(1), tl.program_id(0),
                   NUM_HEADS=NUM_HEADS, HEAD_DIM=HEAD_DIM, N_BUCKETS=N_BUCKETS, TABLE_HEADS=TABLE_HEADS,
                   HAS_Q=True, HAS_K=True, HAS_V=True, SELF_CONTAINED=True, SAVE_STATS=False,
                   DROPOUT=False, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, D_PAD=D_PAD, NB_PAD=NB_PAD,
                   DOT_PRECISION=DOT_PRECISION)


# ----------------------------------------------------------------------------------- backward
# Training splits the layer as  out = O + mass @ Wv  with O = P' V,  P' = P * dropout mask / (1-p),
# mass_in = sum_{j: R_ij = n} P'_ij, and logits q_s.k_j + sk[i, R_ij] + sq[j, R_ji], where the
# scores sk = q_s Wk and sq = k_s Wq are computed by torch (autograd takes it from there). Given
# dO and dmass (torch's gradient of mass, i.e. dO @ Wv^T):
#   dP'_ij = dO_i . v_j + dmass[i, R_ij]                  dP_ij = dP'_ij * mask / (1 - p)
#   dS_ij  = P_ij (dP_ij - delta_i),  delta_i = dO_i . O_i + mass_i . dmass_i
#   dq = scale * dS @ K      dk = dS^T @ q_s      dv = P'^T @ dO
#   dsk_in = sum_{j: R_ij = n} dS_ij                  dsq_jn = sum_{i: R_ji = n} dS_ij
@triton.jit
def _recompute_block(q_s, k, do, v, ids, ids_t, sk, sq, dmass, lse, delta, offs_m, offs_n, seq_len,
                     dropout_p, seed, bh, HAS_Q: tl.constexpr, HAS_K: tl.constexpr, HAS_V: tl.constexpr,
                     DROPOUT: tl.constexpr, DOT_PRECISION: tl.constexpr):
    """P' and dS of one (BLOCK_M, BLOCK_N) block from the saved log-sum-exp."""
    s = _logits(q_s, k, ids, ids_t, sk, sq, HAS_Q, HAS_K, DOT_PRECISION)
    valid = (offs_m[:, None] < seq_len) & (offs_n[None, :] < seq_len)
    p = tl.where(valid, tl.exp(s - lse[:, None]), 0.0)
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PRECISION)
    if HAS_V:
        dp += tl.gather(dmass, ids, axis=1)
    p_used = p
    if DROPOUT:
        keep = _dropout_keep(seed, bh, offs_m, offs_n, seq_len, dropout_p)
        p_used = tl.where(keep, p / (1.0 - dropout_p), 0.0)
        dp = tl.where(keep, dp / (1.0 - dropout_p), 0.0)
    ds = p * (dp - delta[:, None])
    return p_used, ds


@triton.jit
def _load_query_block(q_ptr, do_ptr, lse_ptr, delta_ptr, sk_ptr, dmass_ptr, base, bh, offs_m, seq_len, scale,
                      ROW_STRIDE: tl.constexpr, HEAD_DIM: tl.constexpr, N_BUCKETS: tl.constexpr,
                      HAS_K: tl.constexpr, HAS_V: tl.constexpr, BLOCK_M: tl.constexpr, D_PAD: tl.constexpr,
                      NB_PAD: tl.constexpr):
    """What backward needs of a block of queries: q_s, dO, lse, delta, sk and dmass rows."""
    dtype = q_ptr.dtype.element_ty
    offs_d = tl.arange(0, D_PAD)
    offs_bucket = tl.arange(0, NB_PAD)
    row_ok = offs_m < seq_len
    q_s = (_load_rows(q_ptr, base, offs_m, seq_len, offs_d, ROW_STRIDE, HEAD_DIM) * scale).to(dtype)
    do = _load_rows(do_ptr, base, offs_m, seq_len, offs_d, ROW_STRIDE, HEAD_DIM).to(dtype)
    lse = tl.load(lse_ptr + bh * seq_len + offs_m, mask=row_ok, other=0.0)
    delta = tl.load(delta_ptr + bh * seq_len + offs_m, mask=row_ok, other=0.0)
    sk = tl.zeros((BLOCK_M, NB_PAD), dtype=tl.float32)
    if HAS_K:
        sk = _load_scores(sk_ptr, bh, offs_m, seq_len, offs_bucket, N_BUCKETS)
    dmass = tl.zeros((BLOCK_M, NB_PAD), dtype=tl.float32)
    if HAS_V:
        dmass = _load_scores(dmass_ptr, bh, offs_m, seq_len, offs_bucket, N_BUCKETS)
    return q_s, do, lse, delta, sk, dmass


@triton.jit
def irpe_attention_bwd_dq_kernel(q_ptr, k_ptr, v_ptr, ids_ptr, sk_ptr, sq_ptr, dmass_ptr, do_ptr, lse_ptr,
                                 delta_ptr, dq_ptr, dsk_ptr, seq_len, scale, dropout_p, seed,
                                 NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                                 N_BUCKETS: tl.constexpr, HAS_Q: tl.constexpr, HAS_K: tl.constexpr,
                                 HAS_V: tl.constexpr, DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr,
                                 BLOCK_N: tl.constexpr, D_PAD: tl.constexpr, NB_PAD: tl.constexpr,
                                 DOT_PRECISION: tl.constexpr):
    """dq and dsk for one block of queries; grid (cdiv(L, BLOCK_M), B * H)."""
    ROW_STRIDE: tl.constexpr = NUM_HEADS * HEAD_DIM
    dtype = q_ptr.dtype.element_ty
    bh = tl.program_id(1)
    base, _head = _head_offset(bh, seq_len, NUM_HEADS, HEAD_DIM)
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, D_PAD)
    offs_bucket = tl.arange(0, NB_PAD)
    row_ok = offs_m < seq_len

    q_s, do, lse, delta, sk, dmass = _load_query_block(
        q_ptr, do_ptr, lse_ptr, delta_ptr, sk_ptr, dmass_ptr, base, bh, offs_m, seq_len, scale, ROW_STRIDE,
        HEAD_DIM, N_BUCKETS, HAS_K, HAS_V, BLOCK_M, D_PAD, NB_PAD)

    dq = tl.zeros((BLOCK_M, D_PAD), dtype=tl.float32)
    dsk = tl.zeros((BLOCK_M, NB_PAD), dtype=tl.float32)
    for start_n in range(0, seq_len, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        k = _load_rows(k_ptr, base, offs_n, seq_len, offs_d, ROW_STRIDE, HEAD_DIM)
        v = _load_rows(v_ptr, base, offs_n, seq_len, offs_d, ROW_STRIDE, HEAD_DIM)
        ids = _load_ids(ids_ptr, offs_m, offs_n, seq_len)
        ids_t = _load_ids(ids_ptr, offs_n, offs_m, seq_len)
        sq = tl.zeros((BLOCK_N, NB_PAD), dtype=tl.float32)
        if HAS_Q:
            sq = _load_scores(sq_ptr, bh, offs_n, seq_len, offs_bucket, N_BUCKETS)
        _, ds = _recompute_block(q_s, k, do, v, ids, ids_t, sk, sq, dmass, lse, delta, offs_m, offs_n,
                                 seq_len, dropout_p, seed, bh, HAS_Q, HAS_K, HAS_V, DROPOUT, DOT_PRECISION)
        dq += tl.dot(ds.to(dtype), k, input_precision=DOT_PRECISION)
        if HAS_K:
            dsk += _bucket_sums(ds, ids, offs_bucket, N_BUCKETS, NB_PAD)
    mask = row_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
    tl.store(dq_ptr + base + offs_m[:, None] * ROW_STRIDE + offs_d[None, :], (dq * scale).to(dtype), mask=mask)
    if HAS_K:
        _store_scores(dsk_ptr, dsk, bh, offs_m, seq_len, offs_bucket, N_BUCKETS)


@triton.jit
def irpe_attention_bwd_dkv_kernel(q_ptr, k_ptr, v_ptr, ids_ptr, sk_ptr, sq_ptr, dmass_ptr, do_ptr, lse_ptr,
                                  delta_ptr, dk_ptr, dv_ptr, dsq_ptr, seq_len, scale, dropout_p, seed,
                                  NUM_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr,
                                  N_BUCKETS: tl.constexpr, HAS_Q: tl.constexpr, HAS_K: tl.constexpr,
                                  HAS_V: tl.constexpr, DROPOUT: tl.constexpr, BLOCK_M: tl.constexpr,
                                  BLOCK_N: tl.constexpr, D_PAD: tl.constexpr, NB_PAD: tl.constexpr,
                                  DOT_PRECISION: tl.constexpr):
    """dk, dv and dsq for one block of keys; grid (cdiv(L, BLOCK_N), B * H)."""
    ROW_STRIDE: tl.constexpr = NUM_HEADS * HEAD_DIM
    dtype = q_ptr.dtype.element_ty
    bh = tl.program_id(1)
    base, _head = _head_offset(bh, seq_len, NUM_HEADS, HEAD_DIM)
    offs_n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, D_PAD)
    offs_bucket = tl.arange(0, NB_PAD)
    col_ok = offs_n < seq_len

    k = _load_rows(k_ptr, base, offs_n, seq_len, offs_d, ROW_STRIDE, HEAD_DIM)
    v = _load_rows(v_ptr, base, offs_n, seq_len, offs_d, ROW_STRIDE, HEAD_DIM)
    sq = tl.zeros((BLOCK_N, NB_PAD), dtype=tl.float32)
    if HAS_Q:
        sq = _load_scores(sq_ptr, bh, offs_n, seq_len, offs_bucket, N_BUCKETS)
    dk = tl.zeros((BLOCK_N, D_PAD), dtype=tl.float32)
    dv = tl.zeros((BLOCK_N, D_PAD), dtype=tl.float32)
    dsq = tl.zeros((BLOCK_N, NB_PAD), dtype=tl.float32)
    for start_m in range(0, seq_len, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        q_s, do, lse, delta, sk, dmass = _load_query_block(
            q_ptr, do_ptr, lse_ptr, delta_ptr, sk_ptr, dmass_ptr, base, bh, offs_m, seq_len, scale, ROW_STRIDE,
            HEAD_DIM, N_BUCKETS, HAS_K, HAS_V, BLOCK_M, D_PAD, NB_PAD)
        ids = _load_ids(ids_ptr, offs_m, offs_n, seq_len)
        ids_t = _load_ids(ids_ptr, offs_n, offs_m, seq_len)
        p_used, ds = _recompute_block(q_s, k, do, v, ids, ids_t, sk, sq, dmass, lse, delta, offs_m, offs_n,
                                      seq_len, dropout_p, seed, bh, HAS_Q, HAS_K, HAS_V, DROPOUT,
                                      DOT_PRECISION)
        dv += tl.dot(tl.trans(p_used).to(dtype), do, input_precision=DOT_PRECISION)
        ds_t = tl.trans(ds)                                                # (BLOCK_N, BLOCK_M)
        dk += tl.dot(ds_t.to(dtype), q_s, input_precision=DOT_PRECISION)
        if HAS_Q:
            dsq += _bucket_sums(ds_t, ids_t, offs_bucket, N_BUCKETS, NB_PAD)
    mask = col_ok[:, None] & (offs_d[None, :] < HEAD_DIM)
    rows = base + offs_n[:, None] * ROW_STRIDE + offs_d[None, :]
    tl.store(dk_ptr + rows, dk.to(dtype), mask=mask)
    tl.store(dv_ptr + rows, dv.to(dtype), mask=mask)
    if HAS_Q:
        _store_scores(dsq_ptr, dsq, bh, offs_n, seq_len, offs_bucket, N_BUCKETS)


# -------------------------------------------------------------------------- ahead-of-time build
# the kernel's pointer parameters for irpe_reference.PLUGIN_INPUTS, in that order
PLUGIN_INPUTS = ("q_ptr", "k_ptr", "v_ptr", "ids_ptr", "wq_ptr", "wk_ptr", "wv_ptr")


def compile_plugin_kernel(dtype: str, num_heads: int, head_dim: int, n_buckets: int, table_heads: int,
                          scale: float, target=None, max_shared: int | None = None) -> dict:
    """Compile `irpe_attention_plugin_kernel` for one plugin instance; no GPU needed.

    dtype: "fp32" | "fp16" (the plugin's I/O type). target: a triton GPUTarget (default: the
    current GPU). Returns name, ptx (with Triton's scratch parameters removed, see
    `trim_scratch_params`), block_m, num_warps, shared (bytes): what TensorRT's AOT launch needs.
    Launch: grid (cdiv(L, block_m), B * num_heads), block (num_warps * 32), arguments the seven
    inputs, seq_len (int32), the output. max_shared: the GPU's shared memory per block in bytes;
    the first tile size (see `block_configs`) that fits is used.
    """
    if dtype not in ("fp32", "fp16"):
        raise ValueError(f"IRPEAttention plugin dtype must be fp32 or fp16, got {dtype!r}")
    for block_m, block_n, num_warps in block_configs(head_dim, 4 if dtype == "fp32" else 2):
        kernel = _compile_plugin(dtype, num_heads, head_dim, n_buckets, table_heads, scale, block_m,
                                 block_n, num_warps, target)
        if max_shared is None or kernel["shared"] <= max_shared:
            return kernel
    raise ValueError(f"IRPEAttention ({dtype}, head_dim {head_dim}) needs {kernel['shared']} bytes of "
                     f"shared memory per block even with 16 x 16 tiles; {max_shared} are allowed (TensorRT's AOT "
                     f"launch: 48 KiB); use fp16 or the lowered graph (no --irpe-plugin)")


def plugin_constexprs(dtype: str, num_heads: int, head_dim: int, n_buckets: int, table_heads: int,
                      scale: float, block_m: int, block_n: int) -> dict:
    """The compile-time arguments of `irpe_attention_plugin_kernel` for one plugin instance."""
    return dict(NUM_HEADS=int(num_heads), HEAD_DIM=int(head_dim), N_BUCKETS=int(n_buckets),
                TABLE_HEADS=int(table_heads), SCALE=float(scale), BLOCK_M=block_m, BLOCK_N=block_n,
                D_PAD=padded(head_dim), NB_PAD=padded(n_buckets),
                DOT_PRECISION="ieee" if dtype == "fp32" else "tf32")


def _compile_plugin(dtype: str, num_heads: int, head_dim: int, n_buckets: int, table_heads: int,
                    scale: float, block_m: int, block_n: int, num_warps: int, target) -> dict:
    from triton.compiler import ASTSource

    constexprs = plugin_constexprs(dtype, num_heads, head_dim, n_buckets, table_heads, scale, block_m, block_n)
    signature = {name: f"*{dtype}" for name in PLUGIN_INPUTS}
    signature.update(ids_ptr="*i32", seq_len="i32", out_ptr=f"*{dtype}")
    signature.update({name: "constexpr" for name in constexprs})
    source = ASTSource(fn=irpe_attention_plugin_kernel, signature=signature, constexprs=constexprs)
    options = {"num_warps": num_warps}
    compiled = triton.compile(source, target=target, options=options)
    name = compiled.metadata.name
    return {"name": name, "ptx": trim_scratch_params(compiled.asm["ptx"], name, len(PLUGIN_INPUTS) + 2),
            "block_m": block_m, "num_warps": num_warps, "shared": int(compiled.metadata.shared)}


def trim_scratch_params(ptx: str, name: str, keep: int) -> str:
    """Drop the parameters Triton appends to every kernel (global and profile scratch pointers).

    TensorRT launches an AOT kernel with exactly its inputs, extra scalars and outputs. Our kernel
    uses neither scratch buffer (no TMA descriptors, no profiling), so after `keep` parameters the
    entry's extra ones are unused; removing them makes the PTX entry match TensorRT's argument
    list. If a later Triton ever reads them, ptxas rejects the PTX (undeclared parameter) instead
    of the kernel reading garbage.
    """
    import re

    entry = re.search(rf"\.entry\s+{re.escape(name)}\s*\((.*?)\)", ptx, flags=re.S)
    if entry is None:
        raise ValueError(f"kernel {name} not found in the PTX")
    params = [p.strip() for p in entry.group(1).split(",") if p.strip()]
    if len(params) <= keep:
        return ptx
    body = ptx[entry.end():]
    used = [i for i in range(keep, len(params)) if re.search(rf"\b{re.escape(name)}_param_{i}\b", body)]
    if used:
        raise ValueError(f"kernel {name} reads Triton's scratch parameters {used}; TensorRT's AOT "
                         f"launch does not pass them")
    kept = ",\n\t".join(params[:keep])
    return ptx[:entry.start(1)] + "\n\t" + kept + "\n" + ptx[entry.end(1):]
