"""iRPE against the public reference's outputs (tests/resources/irpe_reference.npz, see the README
there) and against method.md's formula."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mlic_edge.model.attention import MultiheadAttention
from mlic_edge.model.irpe import (IRPE, ContextualBias, ContextualValue, bucket_ids, bucket_one_hot,
                                  num_buckets, piecewise_index)

VECTORS = Path(__file__).resolve().parent / "resources" / "irpe_reference.npz"


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(VECTORS))     # part of the repository: a missing file fails, never skips


@pytest.mark.parametrize("ratio", [1.9, 2.0, 3.0])
def test_piecewise_index_matches_reference(ref, ratio):
    got = piecewise_index(torch.from_numpy(ref["offsets"]), ratio).numpy()
    np.testing.assert_array_equal(got, ref[f"piecewise_r{ratio}"])
    assert num_buckets(ratio) == int(ref[f"num_buckets_r{ratio}"])


def test_piecewise_small_ratio_values():
    # method.md: for r = 1.9, |offset| 0->0, 1->1, 2->2, 3->2, >=4->3
    got = piecewise_index(torch.tensor([0, 1, 2, 3, 4, 9, -3, -4, -50]), 1.9).tolist()
    assert got == [0, 1, 2, 2, 3, 3, -2, -3, -3]


@pytest.mark.parametrize("key", ["2x3_r1.9", "5x7_r1.9", "14x14_r1.9", "14x14_r3.0", "18x18_r1.9",
                                 "12x12_r1.9"])
def test_bucket_matrix_matches_reference(ref, key):
    hw, r = key.split("_r")
    h, w = map(int, hw.split("x"))
    got = bucket_ids(h, w, float(r)).numpy()
    np.testing.assert_array_equal(got, ref[f"bucket_ids_{key}"])


@pytest.mark.parametrize("tag", ["shared", "perhead"])
def test_contextual_key_bias_and_value_match_reference(ref, tag):
    h, w = ref["ctx_grid_hw"].tolist()
    ratio = float(ref["ctx_ratio"])
    ids = bucket_ids(h, w, ratio)
    n = num_buckets(ratio)
    q = torch.from_numpy(ref[f"ctx_{tag}_q"])
    attn = torch.from_numpy(ref[f"ctx_{tag}_attn"])
    heads, head_dim = q.shape[1], q.shape[3]

    key_bias = ContextualBias(heads, head_dim, n, shared_head=tag == "shared")
    value = ContextualValue(heads, head_dim, n, shared_head=tag == "shared")
    with torch.no_grad():
        key_bias.weight.copy_(torch.from_numpy(ref[f"ctx_{tag}_Wk"]))
        value.weight.copy_(torch.from_numpy(ref[f"ctx_{tag}_Wv"]))
        bias = key_bias(q, ids)
        out_v = value(attn, bucket_one_hot(ids, n))
    np.testing.assert_allclose(bias.numpy(), ref[f"ctx_{tag}_bias_k"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out_v.numpy(), ref[f"ctx_{tag}_out_v"], atol=1e-5, rtol=0)


def _reference_irpe_attention(x, attn: MultiheadAttention, ids):
    """method.md's contextual iRPE self-attention on q, k and v, in float64, with explicit loops
    over the bucket lookups (no gather, no one-hot) so it shares no code path with the module."""
    B, L, d = x.shape
    H, dh = attn.num_heads, attn.head_dim
    s = dh ** -0.5

    def heads(t):
        return t.reshape(B, L, H, dh).permute(0, 2, 1, 3)

    lin = lambda m, t: t @ m.weight.double().T + m.bias.double()  # noqa: E731
    q, k, v = heads(lin(attn.q_proj, x)), heads(lin(attn.k_proj, x)), heads(lin(attn.v_proj, x))
    irpe = attn.irpe
    Wq = irpe.query_bias.weight.double().expand(H, dh, -1)
    Wk = irpe.key_bias.weight.double().expand(H, dh, -1)
    Wv = irpe.value.weight.double().expand(H, -1, dh)
    qs = q * s
    logits = torch.zeros(B, H, L, L, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            table_k = qs[b, h] @ Wk[h]            # (L, N)
            table_q = (k[b, h] * s) @ Wq[h]       # (L, N)
            for i in range(L):
                for j in range(L):
                    logits[b, h, i, j] = (qs[b, h, i] @ k[b, h, j] + table_k[i, ids[i, j]]
                                          + table_q[j, ids[j, i]])
    A = logits.softmax(-1)
    out = A @ v
    for b in range(B):
        for h in range(H):
            for i in range(L):
                for j in range(L):
                    out[b, h, i] += A[b, h, i, j] * Wv[h, ids[i, j]]
    out = out.permute(0, 2, 1, 3).reshape(B, L, d)
    return lin(attn.out_proj, out), A


@pytest.mark.parametrize("shared_head", [True, False])
def test_irpe_self_attention_equals_formula_float64(shared_head):
    torch.manual_seed(0)
    grid, heads, d = (3, 4), 2, 16
    irpe = IRPE(heads, d // heads, grid, ratio=1.9, on="qkv", shared_head=shared_head)
    attn = MultiheadAttention(d, heads, dropout=0.0, irpe=irpe)
    for p in attn.parameters():  # tables start at zero: randomise so every term matters
        torch.nn.init.normal_(p, std=0.5)
    attn = attn.double().eval()
    x = torch.randn(2, grid[0] * grid[1], d, dtype=torch.float64)
    out, weights = attn(x, x, x)
    ref_out, ref_weights = _reference_irpe_attention(x, attn, bucket_ids(*grid, 1.9))
    torch.testing.assert_close(weights, ref_weights, atol=1e-6, rtol=0)
    torch.testing.assert_close(out, ref_out, atol=1e-6, rtol=0)
    # The query-side term is really there: dropping it changes the result.
    attn.irpe.query_bias = None
    assert (attn(x, x, x)[0] - ref_out).abs().max() > 1e-3


def test_irpe_subset_only_builds_requested_tables():
    irpe = IRPE(4, 8, (5, 5), on="k")
    assert irpe.key_bias is not None and irpe.query_bias is None and irpe.value is None
    assert irpe.one_hot is None  # no value side: no (L, L, N) buffer either


def test_bucket_buffers_are_not_in_state_dict():
    irpe = IRPE(4, 8, (14, 14))
    assert set(irpe.state_dict()) == {"query_bias.weight", "key_bias.weight", "value.weight"}
    assert irpe.ids.shape == (196, 196) and irpe.one_hot.shape == (196, 196, 49)
    assert math.isclose(irpe.one_hot.sum().item(), 196 * 196)
