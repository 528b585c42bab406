"""Encoder with iRPE self-attention and a decoder of cross-attention only (Q2L/DETR style).

Post-norm layers as in Q2L: sublayer -> dropout -> residual -> LayerNorm. The learned position
embedding is added once to the flattened features before the encoder (paper, Fig. 1), so no layer
re-adds it. In the decoder, tgt starts at zeros and the label embeddings enter as the query
position term of every layer (Q2L); the paper removes the decoder self-attention (Table V).
"""
from __future__ import annotations

from torch import Tensor, nn

from .attention import MultiheadAttention
from .irpe import IRPE


class FeedForward(nn.Module):
    def __init__(self, d_model: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear2(self.dropout(self.linear1(x).relu()))


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                 irpe: IRPE | None = None, irpe_kernel: str = "torch"):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout, irpe=irpe, irpe_kernel=irpe_kernel)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: Tensor) -> Tensor:
        # src: (B, L, d)
        attn_out, _ = self.self_attn(src, src, src)
        src = self.norm1(src + self.dropout1(attn_out))
        return self.norm2(src + self.dropout2(self.ffn(src)))


class DecoderLayer(nn.Module):
    """Cross-attention (+ FFN); self-attention among the label queries only when asked for."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                 self_attn: bool = False):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout) if self_attn else None
        self.norm_self = nn.LayerNorm(d_model) if self_attn else None
        self.dropout_self = nn.Dropout(dropout) if self_attn else None
        self.cross_attn = MultiheadAttention(d_model, nhead, dropout)
        self.ffn = FeedForward(d_model, dim_feedforward, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, query_pos: Tensor) -> tuple[Tensor, Tensor]:
        # tgt, query_pos: (B, K, d); memory: (B, L, d)
        if self.self_attn is not None:
            q = tgt + query_pos
            out, _ = self.self_attn(q, q, tgt)
            tgt = self.norm_self(tgt + self.dropout_self(out))
        out, weights = self.cross_attn(tgt + query_pos, memory, memory)   # weights (B, H, K, L)
        tgt = self.norm1(tgt + self.dropout1(out))
        tgt = self.norm2(tgt + self.dropout2(self.ffn(tgt)))
        return tgt, weights


class Transformer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float,
                 enc_layers: int, dec_layers: int, encoder: str, decoder_self_attn: str,
                 grid: tuple[int, int], irpe_ratio: float, irpe_on: str, irpe_shared_head: bool,
                 irpe_kernel: str = "torch"):
        super().__init__()
        head_dim = d_model // nhead
        if encoder == "none":
            enc_layers = 0

        def make_irpe() -> IRPE | None:
            if encoder != "irpe":
                return None
            return IRPE(nhead, head_dim, grid, irpe_ratio, irpe_on, irpe_shared_head)

        self.encoder = nn.ModuleList(
            EncoderLayer(d_model, nhead, dim_feedforward, dropout, irpe=make_irpe(), irpe_kernel=irpe_kernel)
            for _ in range(enc_layers))
        with_self_attn = {"none": set(), "all": set(range(dec_layers)), "second": {1}}[decoder_self_attn]
        self.decoder = nn.ModuleList(
            DecoderLayer(d_model, nhead, dim_feedforward, dropout, self_attn=i in with_self_attn)
            for i in range(dec_layers))
        self.decoder_norm = nn.LayerNorm(d_model)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Q2L/DETR: xavier_uniform_ on every matrix. The iRPE tables keep the reference's zero
        # init: applying xavier to them too would start the model with random position biases.
        for name, p in self.named_parameters():
            if p.dim() > 1 and ".irpe." not in name:
                nn.init.xavier_uniform_(p)

    def forward(self, src: Tensor, query_embed: Tensor) -> tuple[Tensor, Tensor]:
        """src (B, L, d) with positions added; query_embed (K, d).

        Returns the decoded label features (B, K, d) and the last layer's cross-attention
        weights averaged over heads (B, K, L).
        """
        memory = src
        for layer in self.encoder:
            memory = layer(memory)                                     # (B, L, d)
        query_pos = query_embed.unsqueeze(0).expand(src.shape[0], -1, -1)  # (B, K, d)
        tgt = query_pos.new_zeros(query_pos.shape)
        weights = None
        for layer in self.decoder:
            tgt, weights = layer(tgt, memory, query_pos)
        return self.decoder_norm(tgt), weights.mean(dim=1)
