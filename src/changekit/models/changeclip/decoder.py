"""Neck, fusion and the vision-language Swin decoder of ChangeCLIP.

* :class:`FPN`: mmseg's FPN with ``num_outs`` = inputs: 1x1 laterals (bias, no activation), top-down nearest
  upsampling and addition, 3x3 output convs (bias).
* :class:`SELayerV2`: global average pool -> 1x1 (C -> C/16 rounded to 8) + ReLU -> 1x1 + hard sigmoid
  ``clip((x + 3) / 6, 0, 1)``, multiply, then 1x1 (C -> out) + ReLU.
* :class:`SwinTextDecoder` (``SwinTextDecode``): the two dates' text embeddings are projected to four 128-d
  tokens; three stages each upsample the deeper map (nearest x2, 3x3 conv, GroupNorm(32), ReLU), run two Swin
  blocks (window 7, shifts 0 and 3, drop path 0 and 0.2) that first add a low-rank bilinear attention to the
  text tokens, and merge the skip (1x1 + ReLU, concatenation, 3x3 + ReLU). ``cls_seg`` is Dropout2d(0.1) and a
  1x1 conv to the classes, at 1/4 of the input.

At the defaults (``channels=256``) every width equals the original's; smaller ``channels`` shrink the decoder
proportionally (tests).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn


def conv_relu(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    """mmcv ``ConvModule`` without norm: conv (bias) + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU(inplace=True))


class FPN(nn.Module):
    """mmseg FPN (no extra levels): lateral 1x1, top-down nearest upsampling and sum, 3x3 outputs."""

    def __init__(self, in_channels: list[int], out_channels: int) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:  # noqa: D102
        lat = [conv(f) for conv, f in zip(self.lateral_convs, feats, strict=True)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
        return [conv(x) for conv, x in zip(self.fpn_convs, lat, strict=True)]


class SELayerV2(nn.Module):
    """Squeeze-excitation gate followed by a 1x1 projection (mmseg ``SELayer_v2`` with ``out_channels``)."""

    def __init__(self, channels: int, out_channels: int, ratio: int = 16) -> None:
        super().__init__()
        mid = max(8, int(channels // ratio + 4) // 8 * 8)  # mmcv make_divisible(channels // ratio, 8)
        if mid < 0.9 * (channels // ratio):
            mid += 8
        self.conv1 = conv_relu(channels, mid)
        self.conv2 = nn.Conv2d(mid, channels, 1)
        self.conv_last = conv_relu(channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        w = self.conv2(self.conv1(F.adaptive_avg_pool2d(x, 1)))
        w = ((w + 3) / 6).clamp(0, 1)
        return self.conv_last(x * w)


class LowRankBilinearAttention(nn.Module):
    """Pixels query the text tokens: ``softmax(Wq x (Wk t)^T / sqrt(d_k)) Wv t``."""

    def __init__(self, d_model: int = 128, d_k: int = 64, d_v: int = 256) -> None:
        super().__init__()
        self.WQ = nn.Linear(d_model, d_k)
        self.WK = nn.Linear(d_model, d_k)
        self.WV = nn.Linear(d_model, d_v)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.scaled_dot_product_attention(self.WQ(x), self.WK(text), self.WV(text))


class WindowAttention(nn.Module):
    """Swin window self-attention with a relative position bias table."""

    def __init__(self, dim: int, window: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window, device="cpu"), torch.arange(window, device="cpu"),
                                            indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        index = rel[..., 0] * (2 * window - 1) + rel[..., 1]
        self.register_buffer("relative_position_index", index.to(self.relative_position_bias_table.device))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``x``: ``(windows*B, N, C)``; ``mask``: ``(windows, N, N)`` of 0 / -100 or ``None``."""
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0).to(q.dtype)  # (1, heads, N, N)
        if mask is not None:
            nw = mask.shape[0]
            bias = (bias.unsqueeze(1) + mask.to(q.dtype)[None, :, None]).expand(b // nw, -1, -1, -1, -1)
            bias = bias.reshape(b, self.heads, n, n)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B * H/w * W/w, w*w, C)``."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def window_reverse(x: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    b = x.shape[0] // ((h // w) * (wd // w))
    x = x.view(b, h // w, wd // w, w, w, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, -1)


class SwinTextBlock(nn.Module):
    """Text attention (residual) then a (shifted) window attention block with MLP, as ``SwinTransformerBlock``."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, drop_path: float) -> None:
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, heads)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(dim, dim * 4))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(dim * 4, dim))
        self.proj = nn.Linear(dim * 2, dim)
        self.low_rank_bilinear = LowRankBilinearAttention(dim, dim // 2, dim * 2)

    def forward(self, x: torch.Tensor, text: torch.Tensor, h: int, w: int, mask: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, H*W, C)`` tokens, ``text``: ``(B, T, C)``; ``mask``: shifted-window mask."""
        x = x + self.proj(self.low_rank_bilinear(x, text))
        b, _, c = x.shape
        shortcut = x
        y = self.norm1(x).view(b, h, w, c)
        ws = self.window
        pad_b, pad_r = (-h) % ws, (-w) % ws
        y = F.pad(y, (0, 0, 0, pad_r, 0, pad_b))
        hp, wp = h + pad_b, w + pad_r
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), (1, 2))
        y = self.attn(window_partition(y, ws), mask if self.shift else None)
        y = window_reverse(y, ws, hp, wp)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), (1, 2))
        y = y[:, :h, :w].reshape(b, h * w, c)
        x = shortcut + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x)))


def shift_mask(h: int, w: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Swin's shifted-window mask ``(windows, w*w, w*w)``: 0 within a region, -100 across regions."""
    hp, wp = -(-h // window) * window, -(-w // window) * window
    img = torch.zeros(1, hp, wp, 1, device=device)
    cnt = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for wsl in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    win = window_partition(img, window).squeeze(-1)
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


class SwinUpStage(nn.Module):
    """One decoder stage (``Swin_Decoder``): upsample the deep map, two Swin text blocks, merge the skip."""

    def __init__(self, channels: int, depth: int = 2, heads: int = 2, window: int = 7,
                 drop_path_rate: float = 0.2) -> None:
        super().__init__()
        half = channels // 2
        self.window = window
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels, half, 3, padding=1),
            nn.GroupNorm(32 if half % 32 == 0 else 1, half), nn.ReLU(inplace=True),
        )
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            SwinTextBlock(half, heads, window, 0 if i % 2 == 0 else window // 2, rates[i]) for i in range(depth)
        )
        self.up_out = conv_relu(half, half)
        self.skip = conv_relu(channels, half)
        self.merge = conv_relu(channels, channels, 3)

    def forward(self, deep: torch.Tensor, skip: torch.Tensor, text: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.up(deep)
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        mask = shift_mask(h, w, self.window, self.window // 2, x.device)
        for block in self.blocks:
            tokens = block(tokens, text, h, w, mask)
        x = self.up_out(tokens.transpose(1, 2).reshape(b, c, h, w))
        return self.merge(torch.cat([self.skip(skip), x], 1))


class SwinTextDecoder(nn.Module):
    """Three :class:`SwinUpStage` from 1/32 to 1/4 guided by both dates' text, then the classifier.

    Args:
        channels: width of the fused features (256).
        text_dim: embedding width D.
        num_classes: output channels (2).
        dropout: Dropout2d before the classifier (0.1).
        drop_path: drop-path rate of the last Swin block of each stage (rates rise linearly from 0).
    """

    def __init__(self, channels: int = 256, text_dim: int = 1024, num_classes: int = 2, dropout: float = 0.1,
                 drop_path: float = 0.2) -> None:
        super().__init__()
        half = channels // 2
        self.layer1 = SwinUpStage(channels, drop_path_rate=drop_path)
        self.layer2 = SwinUpStage(channels, drop_path_rate=drop_path)
        self.layer3 = SwinUpStage(channels, drop_path_rate=drop_path)
        self.linearA = nn.Sequential(nn.Linear(text_dim, half), nn.LayerNorm(half))
        self.linearB = nn.Sequential(nn.Linear(text_dim, half), nn.LayerNorm(half))
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(channels, num_classes, 1)
        nn.init.normal_(self.conv_seg.weight, std=0.01)
        nn.init.zeros_(self.conv_seg.bias)

    def forward(self, feats: list[torch.Tensor], text_a: torch.Tensor, text_b: torch.Tensor) -> torch.Tensor:
        """Fused maps at 1/4..1/32 and text ``(B, K, D)`` per date -> logits at 1/4."""
        e1, e2, e3, e4 = feats
        text = torch.cat([self.linearA(text_a), self.linearB(text_b)], 1)
        d = self.layer1(e4, e3, text)
        d = self.layer2(d, e2, text)
        d = self.layer3(d, e1, text)
        return self.conv_seg(self.dropout(d))
