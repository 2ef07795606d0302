"""DenseCLIP's context decoder: text embeddings attend to the image's global and local embeddings.

Queries are the (projected) text embeddings, memory the visual context ``[global, local_1 .. local_hw]``. Each
layer is pre-norm self-attention, cross-attention to the memory and an MLP (4x, GELU), with separate bias-free
q/k/v projections. The output (back in the embedding width) updates the text as ``text + gamma * delta``; that
update and ``gamma`` live in the model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention with separate bias-free q/k/v projections and a dropout after the output proj."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # noqa: D102
        b, n, c = q.shape
        m = k.shape[1]
        h = self.heads
        q = self.q_proj(q).reshape(b, n, h, c // h).transpose(1, 2)
        k = self.k_proj(k).reshape(b, m, h, c // h).transpose(1, 2)
        v = self.v_proj(v).reshape(b, m, h, c // h).transpose(1, 2)
        x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class TransformerDecoderLayer(nn.Module):
    """Pre-norm self-attention, cross-attention to the memory, MLP; names follow the original."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads, dropout)
        self.cross_attn = Attention(dim, heads, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * 4), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim * 4, dim))

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:  # noqa: D102
        y = self.norm1(x)
        x = x + self.self_attn(y, y, y)
        x = x + self.cross_attn(self.norm2(x), memory, memory)
        return x + self.dropout(self.mlp(self.norm3(x)))


class ContextDecoder(nn.Module):
    """Maps text ``(B, K, D)`` and visual context ``(B, N, D)`` to a text update ``(B, K, D)``.

    Args:
        width: decoder width (256).
        heads: attention heads (4).
        layers: decoder layers (3 in ChangeCLIP's configs).
        visual_dim: embedding width D (1024 RN50, 512 ViT-B/16).
        dropout: dropout of attention outputs and MLP (0.1).
    """

    def __init__(self, width: int = 256, heads: int = 4, layers: int = 3, visual_dim: int = 1024,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.memory_proj = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, width), nn.LayerNorm(width))
        self.text_proj = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, width))
        self.decoder = nn.ModuleList(TransformerDecoderLayer(width, heads, dropout) for _ in range(layers))
        self.out_proj = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, visual_dim))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, text: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:  # noqa: D102
        memory = self.memory_proj(visual)
        x = self.text_proj(text)
        for layer in self.decoder:
            x = layer(x, memory)
        return self.out_proj(x)
