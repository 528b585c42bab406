"""Multi-head attention written out, so iRPE can enter the logits and the values.

Equivalent to `nn.MultiheadAttention` (separate q/k/v/out projections, batch first) when no iRPE is
given. Written by hand because iRPE adds terms inside the softmax and after it, and because the
decoder's cross-attention weights are the per-label "regions of interest" we want to return.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..core.errors import ConfigError
from .irpe import IRPE
from .irpe_fused import KernelDoesNotFit, fused_irpe_available, irpe_attention


class MultiheadAttention(nn.Module):
    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0, irpe: IRPE | None = None,
                 irpe_kernel: str = "torch"):
        super().__init__()
        # How iRPE attention runs: "torch" (the ops below; what ONNX export always traces) or
        # "triton" (the fused kernel of irpe_fused.py: no (L, L) tensors, CUDA only).
        self.irpe_kernel = irpe_kernel
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.scale = self.head_dim ** -0.5
        self.q_proj = nn.Linear(d_model, d_model)
        self.k_proj = nn.Linear(d_model, d_model)
        self.v_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        self.attn_drop = nn.Dropout(dropout)
        self.irpe = irpe

    def _split(self, x: Tensor) -> Tensor:
        B, L, _ = x.shape
        return x.reshape(B, L, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, L, dh)

    def _use_fused_kernel(self, x: Tensor) -> bool:
        if self.irpe is None or self.irpe_kernel != "triton" or torch.onnx.is_in_onnx_export():
            return False
        if not fused_irpe_available(x.device):
            raise ConfigError(f"model.irpe_kernel=triton needs Triton and a CUDA device (input is on "
                              f"{x.device}); use model.irpe_kernel=torch")
        return True

    def forward(self, query: Tensor, key: Tensor, value: Tensor) -> tuple[Tensor, Tensor | None]:
        """query (B, Lq, d), key/value (B, Lk, d) -> output (B, Lq, d), weights (B, H, Lq, Lk).

        The fused iRPE kernel (self-attention only) never forms the weights and returns None.
        """
        if self._use_fused_kernel(query):
            dropout_p = self.attn_drop.p if self.training else 0.0
            try:
                out = irpe_attention(self.q_proj(query), self.k_proj(key), self.v_proj(value), self.irpe,
                                     self.num_heads, self.scale, dropout_p)       # (B, L, d)
            except KernelDoesNotFit as e:
                raise ConfigError(f"model.irpe_kernel=triton: {e}; use model.irpe_kernel=torch") from None
            return self.out_proj(out), None
        q = self._split(self.q_proj(query)) * self.scale          # (B, H, Lq, dh), q_s
        k = self._split(self.k_proj(key))                         # (B, H, Lk, dh)
        v = self._split(self.v_proj(value))                       # (B, H, Lk, dh)

        logits = q @ k.transpose(-2, -1)                          # (B, H, Lq, Lk)
        if self.irpe is not None:
            bias = self.irpe.logits_bias(q, k * self.scale)
            if bias is not None:
                logits = logits + bias
        weights = logits.softmax(dim=-1)
        dropped = self.attn_drop(weights)

        out = dropped @ v                                         # (B, H, Lq, dh)
        if self.irpe is not None:
            value_term = self.irpe.value_term(dropped)
            if value_term is not None:
                out = out + value_term
        B, H, Lq, dh = out.shape
        out = out.transpose(1, 2).reshape(B, Lq, H * dh)          # (B, Lq, d)
        return self.out_proj(out), weights
