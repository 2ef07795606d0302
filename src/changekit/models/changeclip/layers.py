"""CLIP transformer layers shared by the image and text towers (parameter names follow OpenAI's CLIP).

Keeping OpenAI's names (``transformer.resblocks.N.attn.in_proj_weight``, ``ln_1``, ``mlp.c_fc`` ...) means a
CLIP checkpoint loads by plain key matching, and it keeps the optimiser's "no weight decay on names containing
``norm``" rule selecting the same parameters as the original (CLIP's ``ln_*`` layers are decayed there).
"""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the activation OpenAI's CLIP was trained with."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``, batch-first tokens.

    Args:
        width: token width.
        heads: attention heads.
        drop_path: stochastic-depth probability of both residual branches (ViT image tower only).
    """

    def __init__(self, width: int, heads: int, drop_path: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, width * 4))
        self.mlp.add_module("gelu", QuickGELU())
        self.mlp.add_module("c_proj", nn.Linear(width * 4, width))
        self.ln_2 = nn.LayerNorm(width)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D102
        y = self.ln_1(x)
        y = self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.ln_2(x)))


class Transformer(nn.Module):
    """A stack of :class:`ResidualAttentionBlock` with drop-path rates rising linearly from 0.

    Args:
        width, layers, heads: CLIP's transformer shape.
        drop_path_rate: drop-path probability of the last block.
    """

    def __init__(self, width: int, layers: int, heads: int, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        self.width = width
        rates = torch.linspace(0, drop_path_rate, layers, device="cpu").tolist()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(width, heads, r) for r in rates)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D102
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x
