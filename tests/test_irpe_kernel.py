"""The fused Triton iRPE attention (forward and backward) against the PyTorch iRPE attention.

On machines without a GPU the kernels run under Triton's interpreter (tests/conftest.py), which
executes the same kernel code with numpy; on a CUDA machine they are compiled. Small tiles
(16 x 16) on a 5 x 7 grid (L = 35) make every program stream several key blocks, with a partial
last block, so the online softmax, the masking and the per-bucket sums are all exercised.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mlic_edge.core.errors import ConfigError
from mlic_edge.model.attention import MultiheadAttention
from mlic_edge.model.irpe import IRPE, bucket_ids, num_buckets
from mlic_edge.model.irpe_fused import fused_irpe_available, irpe_attention
from mlic_edge.kernels.irpe_reference import irpe_attention_reference

REPO = Path(__file__).resolve().parents[1]

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.skipif(not fused_irpe_available(DEVICE),
                                reason="Triton not installed (the fused iRPE kernel needs it)")
TILES = (16, 16, 4)


def make_attention(on: str, shared: bool, dtype: torch.dtype, heads: int = 2, head_dim: int = 8,
                   grid=(5, 7), kernel: str = "torch", seed: int = 0) -> MultiheadAttention:
    torch.manual_seed(seed)
    irpe = IRPE(heads, head_dim, grid, 1.9, on=on, shared_head=shared)
    for table in irpe.parameters():        # zero-initialised in the model: make them matter here
        torch.nn.init.normal_(table, std=0.5)
    return MultiheadAttention(heads * head_dim, heads, 0.0, irpe=irpe, irpe_kernel=kernel).to(DEVICE, dtype)


def fused_core(mha: MultiheadAttention, x: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
    q, k, v = mha.q_proj(x), mha.k_proj(x), mha.v_proj(x)
    out = irpe_attention(q, k, v, mha.irpe, mha.num_heads, mha.scale, dropout_p, blocks=TILES)
    return mha.out_proj(out)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got - want).abs().max() / want.abs().max()).item()


@pytest.mark.parametrize("on,shared,dtype,tol", [
    ("qkv", True, torch.float64, 1e-10),
    ("qkv", False, torch.float32, 1e-5),
    ("kv", True, torch.float32, 1e-5),
    ("qv", False, torch.float64, 1e-10),
])
def test_fused_forward_and_backward_match_pytorch(on, shared, dtype, tol):
    if dtype == torch.float64 and DEVICE.type == "cuda":
        pytest.skip("float64 is an interpreter check: compiled, the kernels accumulate in float32")
    torch.backends.cuda.matmul.allow_tf32 = False
    mha = make_attention(on, shared, dtype)
    x = torch.randn(2, 35, 16, dtype=dtype, device=DEVICE, requires_grad=True)
    params = [x] + [p for _, p in mha.named_parameters()]
    names = ["x"] + [n for n, _ in mha.named_parameters()]

    want, _ = mha(x, x, x)
    grad_out = torch.randn_like(want)
    want_grads = torch.autograd.grad(want, params, grad_out)
    got = fused_core(mha, x)
    got_grads = torch.autograd.grad(got, params, grad_out)

    assert relative_error(got, want) < tol
    for name, g, w in zip(names, got_grads, want_grads):
        if name == "k_proj.bias" and "q" not in on:
            continue  # softmax ignores a per-query constant: this gradient is 0 up to rounding
        assert relative_error(g, w) < tol, name


def test_model_switches_to_the_fused_kernel_and_agrees():
    fused = make_attention("qkv", True, torch.float32, kernel="triton", grid=(3, 4))
    plain = make_attention("qkv", True, torch.float32, kernel="torch", grid=(3, 4))
    plain.load_state_dict(fused.state_dict())
    x = torch.randn(3, 12, 16, device=DEVICE)
    out, weights = fused(x, x, x)
    want, want_weights = plain(x, x, x)
    assert weights is None and want_weights is not None       # the fused path never forms (L, L)
    assert relative_error(out, want) < 1e-5


def test_fused_dropout_is_one_mask_for_forward_and_backward():
    """Dropout draws its mask from (seed, position) in both passes: the gradient the kernels return
    must be the derivative of the forward they computed (central difference along a random
    direction of every input and table; float64 in the interpreter, float32 compiled)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    dtype, eps, tol = (torch.float32, 1e-3, 1e-2) if DEVICE.type == "cuda" else (torch.float64, 1e-6, 1e-6)
    mha = make_attention("qkv", False, dtype)
    x = torch.randn(2, 35, 16, dtype=dtype, device=DEVICE, requires_grad=True)
    params = [x] + list(mha.parameters())
    direction = [torch.randn_like(p) for p in params]

    def forward() -> torch.Tensor:
        torch.manual_seed(123)                      # the kernel's seed comes from torch's RNG
        return fused_core(mha, x, dropout_p=0.3)

    no_dropout = fused_core(mha, x)
    out = forward()
    assert torch.equal(out, forward())              # same seed, same mask
    assert relative_error(out, no_dropout) > 1e-3   # and dropout did something
    weights = torch.randn_like(out)
    analytic = sum((g * d).sum() for g, d in zip(torch.autograd.grad((out * weights).sum(), params), direction))
    with torch.no_grad():
        for p, d in zip(params, direction):
            p.add_(eps * d)
        plus = (forward() * weights).sum()
        for p, d in zip(params, direction):
            p.sub_(2 * eps * d)
        minus = (forward() * weights).sum()
        for p, d in zip(params, direction):
            p.add_(eps * d)
    numeric = (plus - minus) / (2 * eps)
    assert abs((analytic - numeric) / numeric).item() < tol


def test_triton_kernel_unavailable_is_a_config_error(monkeypatch):
    if DEVICE.type == "cuda":
        pytest.skip("CUDA present: the kernel is available")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    mha = make_attention("qkv", True, torch.float32, kernel="triton")
    x = torch.randn(1, 35, 16)
    with pytest.raises(ConfigError, match="irpe_kernel=triton"):
        mha(x, x, x)


# ------------------------------------------------------------------ the plugin kernel's contract
@pytest.mark.parametrize("shared,grid", [(True, (5, 7)), (False, (3, 3))])
def test_plugin_kernel_launched_like_tensorrt_equals_the_reference_op(shared, grid):
    """`irpe_attention_plugin_kernel` with TensorRT's AOT argument order (7 inputs, seq_len,
    output) and grid (cdiv(L, BLOCK_M), B * H) computes the reference op's output."""
    import triton

    from mlic_edge.kernels import irpe_triton

    device = DEVICE
    rng = np.random.default_rng(1)
    B, H, dh = 2, 2, 16
    L, n = grid[0] * grid[1], num_buckets(1.9)
    heads = 1 if shared else H
    q, k, v = (rng.standard_normal((B, L, H * dh)).astype(np.float32) for _ in range(3))
    tables = [rng.standard_normal(s).astype(np.float32) * 0.5
              for s in [(heads, dh, n), (heads, dh, n), (heads, n, dh)]]
    ids = bucket_ids(*grid, 1.9).numpy().astype(np.int32)
    want = irpe_attention_reference(q, k, v, ids, *tables, num_heads=H, scale=dh ** -0.5)

    tensors = [torch.from_numpy(a).to(device) for a in (q, k, v, ids, *tables)]
    out = torch.empty_like(tensors[0])
    block_m, block_n = 16, 16
    irpe_triton.irpe_attention_plugin_kernel[(triton.cdiv(L, block_m), B * H)](
        *tensors, L, out, NUM_HEADS=H, HEAD_DIM=dh, N_BUCKETS=n, TABLE_HEADS=heads, SCALE=dh ** -0.5,
        BLOCK_M=block_m, BLOCK_N=block_n, D_PAD=dh, NB_PAD=64, DOT_PRECISION="ieee")
    np.testing.assert_allclose(out.cpu().numpy(), want, rtol=1e-4, atol=1e-5)


AOT_SCRIPT = """
import json, re, sys
from triton.backends.compiler import GPUTarget
from mlic_edge.tensorrt.plugin import AOT_MAX_SHARED
from mlic_edge.kernels.irpe_triton import compile_plugin_kernel
rows = []
for dtype, heads, head_dim in [("fp32", 4, 8), ("fp16", 4, 8), ("fp32", 8, 64), ("fp16", 4, 512), ("fp32", 4, 512)]:
    try:  # the tiles the AOT path uses: TensorRT's launch has no opt-in above 48 KiB
        k = compile_plugin_kernel(dtype, heads, head_dim, 49, 1, head_dim ** -0.5,
                                  target=GPUTarget("cuda", 90, 32), max_shared=AOT_MAX_SHARED)
    except ValueError as e:
        rows.append(dict(dtype=dtype, head_dim=head_dim, error=str(e)))
        continue
    entry = re.search(r"\\.entry\\s+(\\w+)\\s*\\((.*?)\\)", k["ptx"], re.S)
    params = [p for p in entry.group(2).split(",") if p.strip()]
    rows.append(dict(dtype=dtype, head_dim=head_dim, name=entry.group(1), params=len(params),
                     last=params[-1].split()[1], shared=k["shared"], block_m=k["block_m"]))
print(json.dumps(rows))
"""


TRAINING_SCRIPT = """
import json
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mlic_edge.kernels import irpe_triton as K
rows = []
for fn in (K.irpe_attention_fwd_kernel, K.irpe_attention_bwd_dq_kernel, K.irpe_attention_bwd_dkv_kernel):
    block_m, block_n, warps = K.block_configs(64, 2)[0]
    const = dict(NUM_HEADS=8, HEAD_DIM=64, N_BUCKETS=49, HAS_Q=True, HAS_K=True, HAS_V=True, DROPOUT=True,
                 BLOCK_M=block_m, BLOCK_N=block_n, D_PAD=64, NB_PAD=64, DOT_PRECISION="tf32")
    scalars = dict(seq_len="i32", seed="i32", scale="fp32", dropout_p="fp32")
    sig = {a: "constexpr" if a in const else scalars.get(a, "*i32" if a == "ids_ptr" else
           "*bf16" if a in ("q_ptr", "k_ptr", "v_ptr", "out_ptr", "do_ptr", "dq_ptr", "dk_ptr", "dv_ptr")
           else "*fp32") for a in fn.arg_names}
    compiled = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=const),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    rows.append(dict(name=compiled.metadata.name, shared=compiled.metadata.shared))
print(json.dumps(rows))
"""


def _compile_for_sm90(script: str) -> list[dict]:
    """Run `script` (prints a JSON list last) with a real Triton compile, not the interpreter."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                          timeout=600)
    if done.returncode != 0 and "ptxas" in done.stderr and "not found" in done.stderr:
        pytest.skip("this Triton install ships no ptxas")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_training_kernels_compile_for_a_gpu():
    """The interpreter runs code a real compile rejects (e.g. a loop variable changing type), so the
    forward and both backward kernels are also compiled for sm_90 here, bf16, head_dim 64."""
    rows = _compile_for_sm90(TRAINING_SCRIPT)
    assert [r["name"] for r in rows] == ["irpe_attention_fwd_kernel", "irpe_attention_bwd_dq_kernel",
                                         "irpe_attention_bwd_dkv_kernel"]
    assert all(0 < r["shared"] <= 232448 for r in rows), rows


def test_plugin_kernel_compiles_to_ptx_with_tensorrts_argument_list():
    """The AOT path without a GPU: Triton compiles the plugin kernel for sm_90; the PTX entry takes
    exactly TensorRT's arguments (7 input pointers, the int32 seq_len, the output pointer), within
    48 KiB of shared memory (no opt-in attribute on TensorRT's AOT launch). fp32 at head dim 512
    cannot fit even 16 x 16 tiles: a clear error, not a kernel that fails to launch."""
    rows = _compile_for_sm90(AOT_SCRIPT)
    refused = [row for row in rows if "error" in row]
    assert [(r["dtype"], r["head_dim"]) for r in refused] == [("fp32", 512)], refused
    assert "TensorRT's AOT launch: 48 KiB" in refused[0]["error"]
    for row in rows:
        if "error" in row:
            continue
        assert row["name"] == "irpe_attention_plugin_kernel"
        assert row["params"] == 9, row
        assert row["last"] == ".u64", row                     # the output pointer comes last
        assert 0 < row["shared"] <= 48 * 1024, row


def test_checkpoints_trained_with_the_kernel_load_for_any_device(tmp_path):
    """irpe_kernel is how training ran: export / eval / infer rebuild the model with the PyTorch ops."""
    from mlic_edge.checkpoint import load_model, save_checkpoint
    from mlic_edge.config import ModelConfig
    from mlic_edge.model import build_model

    cfg = ModelConfig(num_classes=3, backbone="test_resnet", pretrained="none", image_size=64, d_model=32,
                      nhead=4, dim_feedforward=64, irpe_kernel="triton")
    save_checkpoint(tmp_path / "m.pt", {"model": build_model(cfg).state_dict(), "config": cfg.to_dict()})
    model, ckpt = load_model(tmp_path / "m.pt")
    assert ckpt["config"]["irpe_kernel"] == "triton" and model.cfg.irpe_kernel == "torch"
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_plugin_input_order_is_written_once():
    """The node's input order (kernels.irpe_reference.PLUGIN_INPUTS) is the one the Triton plugin
    kernel takes and the export writes."""
    import inspect

    from mlic_edge.kernels import irpe_reference, irpe_triton

    kernel_args = list(inspect.signature(irpe_triton.irpe_attention_plugin_kernel.fn).parameters)
    assert tuple(kernel_args[:len(irpe_reference.PLUGIN_INPUTS)]) == irpe_triton.PLUGIN_INPUTS
    assert [a.split("_")[0] for a in irpe_triton.PLUGIN_INPUTS[:3]] == list(irpe_reference.PLUGIN_INPUTS[:3])
    assert kernel_args[len(irpe_reference.PLUGIN_INPUTS):][:2] == ["seq_len", "out_ptr"]
