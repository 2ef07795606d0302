"""MISGNet's Multilevel Difference Aggregation Module (MDAM) and prediction head.

Faithful to ``models/mynet/mynet4.py`` (JackLiu-97/MISGNet @ 2c1adb1):

* :class:`Translayer` is a 1x1 conv (no bias) + BatchNorm **without** activation (the released class builds a
  ReLU that its ``forward`` never calls).
* :class:`Decode` (released ``decode``): ``z1 = ReLU(conv_l(left) * up(down))`` multiplies by the *raw*
  upsampled ``down`` feature, ``z2 = ReLU(up(conv_d1(down)) + left)``, ``out = ReLU(BN(conv3([z1, z2])))``;
  all convs 3x3 with bias, bilinear upsampling with ``align_corners=False``.
* The head (released ``final2``): 3x3 conv (with bias) 64->32 + BN + ReLU, 3x3 conv 32->2, then x4 bilinear.

In eval mode the BatchNorms are folded into their convolutions on the fly (same result up to rounding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..blocks import ConvBNReLU, fold_bn


def _conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn(conv(x))``, with the BatchNorm folded into the conv in eval mode."""
    if bn.training or bn.running_mean is None:
        return bn(conv(x))
    weight, bias = fold_bn(conv.weight, conv.bias, bn)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding)


class Translayer(nn.Module):
    """1x1 conv (no bias) + BatchNorm, no activation (as released)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return _conv_bn(self.conv, self.bn, x)


class Decode(nn.Module):
    """One MDAM fusion block: a shallow ``left`` map guided by a deeper ``down`` map.

    Args:
        left_channels: channels of ``left`` (also the channels of ``z2``'s residual).
        down_channels: channels of ``down``.
        out_channels: channels of every conv (must equal ``left_channels`` and ``down_channels`` for the
            element-wise products and sums, as in all three released instances).
    """

    def __init__(self, left_channels: int, down_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_d1 = nn.Conv2d(down_channels, out_channels, kernel_size=3, padding=1)
        self.conv_l = nn.Conv2d(left_channels, out_channels, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(out_channels * 2, out_channels, kernel_size=3, padding=1)
        self.bn3 = nn.BatchNorm2d(out_channels)

    def forward(self, left: torch.Tensor, down: torch.Tensor) -> torch.Tensor:  # noqa: D102
        size = left.shape[-2:]
        down_mask = self.conv_d1(down)
        left_mask = self.conv_l(left)
        if down.shape[-2:] != size:
            down = F.interpolate(down, size=size, mode="bilinear", align_corners=False)
            down_mask = F.interpolate(down_mask, size=size, mode="bilinear", align_corners=False)
        z1 = F.relu(left_mask * down, inplace=True)  # the raw upsampled deep feature, as released
        z2 = F.relu(down_mask + left, inplace=True)
        return F.relu(_conv_bn(self.conv3, self.bn3, torch.cat((z1, z2), dim=1)), inplace=True)


class MDAM(nn.Module):
    """Multilevel Difference Aggregation on the three SGM difference maps, then the head.

    ``forward(d1, d2, d3)`` with ``d_l = |SGM_A(l) - SGM_B(l)|`` at strides 4, 8, 16 (64, 128, 320 channels)
    returns ``num_classes`` logits at ``4x`` the size of ``d1``.
    """

    def __init__(self, dims: tuple[int, int, int] = (64, 128, 320), num_classes: int = 2) -> None:
        super().__init__()
        c1, c2, c3 = dims
        self.decode1 = Decode(c2, c2, c2)
        self.decode2 = Decode(c1, c1, c1)
        self.decode3 = Decode(c1, c1, c1)
        self.translayer1 = Translayer(c3, c2)
        self.translayer2 = Translayer(c2, c1)
        self.translayer3 = Translayer(c2, c1)
        # the released Conv(64, 32, 3, bn=True, relu=True): 3x3 conv with bias + BN + ReLU, as the shared block
        self.head = nn.Sequential(ConvBNReLU(c1, c1 // 2), nn.Conv2d(c1 // 2, num_classes, kernel_size=3, padding=1))

    def forward(self, d1: torch.Tensor, d2: torch.Tensor, d3: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out1 = self.decode1(d2, self.translayer1(d3))
        out2 = self.decode2(d1, self.translayer2(d2))
        out3 = self.decode3(out2, self.translayer3(out1))
        logits = self.head(out3)
        return F.interpolate(logits, scale_factor=4, mode="bilinear", align_corners=False)
