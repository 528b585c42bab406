"""The paper's model (Fig. 1): backbone -> 1x1 conv -> + learned positions -> flatten ->
iRPE encoder -> cross-attention decoder with label queries -> per-class linear heads."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from .backbone import Backbone
from .transformer import Transformer


class GroupWiseLinear(nn.Module):
    """One linear projection per class (Q2L): logits[b, k] = <W[k], h[b, k]> + b[k]."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        bound = 1.0 / math.sqrt(dim)
        self.weight = nn.Parameter(torch.empty(1, num_classes, dim).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(1, num_classes).uniform_(-bound, bound))

    def forward(self, x: Tensor) -> Tensor:
        # x: (B, K, d) -> (B, K)
        return (self.weight * x).sum(-1) + self.bias


class MLICModel(nn.Module):
    """Multi-label classifier. `forward(images) -> logits (B, K)`; sigmoid gives the scores.

    `forward_with_attention(images)` also returns the cross-attention map of every label in the
    last decoder layer, averaged over heads: (B, K, h, w) on the backbone's feature grid, each map
    summing to 1. These are the per-label "regions of interest"; upsample them to the image size
    to draw them.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.backbone = Backbone(cfg.backbone, cfg.pretrained)
        self.grid = self.backbone.grid(cfg.image_size)
        num_tokens = self.grid[0] * self.grid[1]
        self.input_proj = nn.Conv2d(self.backbone.num_channels, cfg.d_model, kernel_size=1)
        self.pos_embed = nn.Parameter(torch.empty(1, num_tokens, cfg.d_model))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.transformer = Transformer(
            cfg.d_model, cfg.nhead, cfg.dim_feedforward, cfg.dropout, cfg.enc_layers,
            cfg.dec_layers, cfg.encoder, cfg.decoder_self_attn, self.grid, cfg.irpe_ratio,
            cfg.irpe_on, cfg.irpe_shared_head, cfg.irpe_kernel)
        self.query_embed = nn.Embedding(cfg.num_classes, cfg.d_model)
        self.head = GroupWiseLinear(cfg.num_classes, cfg.d_model)

    def data_config(self) -> dict:
        """Preprocessing the model expects: square resize to image_size, then mean/std."""
        return {"image_size": self.cfg.image_size, "resize": "squash", **self.backbone.data_config()}

    def forward_features(self, images: Tensor) -> Tensor:
        """images (B, 3, S, S) -> backbone feature map (B, C, h, w)."""
        feats = self.backbone(images)
        if tuple(feats.shape[-2:]) != self.grid:
            raise ValueError(f"model was built for {self.cfg.image_size}px inputs (feature grid "
                             f"{self.grid}); got images {tuple(images.shape[-2:])} giving "
                             f"{tuple(feats.shape[-2:])}")
        return feats

    def forward_head(self, feats: Tensor) -> tuple[Tensor, Tensor]:
        """Feature map (B, C, h, w) -> logits (B, K), attention maps (B, K, h, w)."""
        x = self.input_proj(feats)                                 # (B, d, h, w)
        x = x.flatten(2).transpose(1, 2) + self.pos_embed          # (B, L, d)
        hs, attn = self.transformer(x, self.query_embed.weight)    # (B, K, d), (B, K, L)
        logits = self.head(hs)                                     # (B, K)
        return logits, attn.reshape(attn.shape[0], attn.shape[1], *self.grid)

    def forward_with_attention(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.forward_head(self.forward_features(images))

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_with_attention(images)[0]


def build_model(cfg: ModelConfig) -> MLICModel:
    return MLICModel(cfg)
