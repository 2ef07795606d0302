"""LightCDNet's early-fusion backbone: a shared stem, the deep-supervised fusion module, ShuffleNetV2 stages.

Layout (open-cd's ``LightCDNet`` backbone, which the ChangeAnywhere configs use):

* **stem** (shared by both dates): 3x3 conv stride 2 (no bias) -> channel LayerNorm (eps 1e-6) -> GELU, 24 ch.
* **fusion** (DSFM, the paper's "deep supervised fusion module"): per date, a residual bottleneck of a 1x1
  expansion to 96 channels, ``fusion_blocks`` ShuffleNetV2 units and a 1x1 reduction back to 24; then a temporal
  channel attention over both dates (squeeze-excitation of the concatenated pair, each date re-weighted by
  ``1 + sigmoid``), a channel shuffle of ``[a, b]`` and a 1x1 conv to 24 channels. Its output is also the input
  of the auxiliary (deep-supervision) head.
* **stages**: three ShuffleNetV2 stages (a stride-2 unit, then stride-1 units) of ``stage_repeats`` units, each
  followed by two passes of one criss-cross attention (CCNet) module.

The pyramid the neck receives is taken where open-cd's backbone takes it: after unit ``r1`` of stage 1 (before
its attention), after unit ``r2 - 1`` of stage 2 and after unit ``r3 - 2`` of stage 3, i.e. at the running
indices ``cumsum(r1 - 1, r2, r3)`` of the flat list of units and attention modules. open-cd computes those
indices from the unit counts alone, so they fall short of the stage ends once the attention modules sit in the
list; the last ``2`` units and the attention of stage 3 therefore never reach the output. They are kept (so
open-cd checkpoints load unchanged), not run, and frozen (no gradient could reach them anyway).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class ConvBN(nn.Sequential):
    """Convolution without bias -> BatchNorm (-> ReLU): the conv-BN pair every LightCDNet part uses."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        if relu:
            self.relu = nn.ReLU(inplace=True)


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """Interleave ``groups`` channel groups: ``(g0c0, g0c1, ..., g1c0, ...) -> (g0c0, g1c0, g0c1, g1c1, ...)``."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit (Ma et al., ECCV 2018) at ``stride`` 1 (split) or 2 (two branches), then shuffle.

    ``(N, cin, H, W) -> (N, cout, H / stride, W / stride)``; at stride 1 ``cin == cout``.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        half = cout // 2
        self.stride = stride
        main_in = cin if stride == 2 else half
        self.shortcut = None
        if stride == 2:  # depthwise 3x3 stride 2, then pointwise
            self.shortcut = nn.Sequential(ConvBN(cin, cin, 3, 2, groups=cin, relu=False), ConvBN(cin, half))
        self.main = nn.Sequential(
            ConvBN(main_in, half), ConvBN(half, half, 3, stride, groups=half, relu=False), ConvBN(half, half)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.shortcut is not None:
            out = torch.cat([self.shortcut(x), self.main(x)], 1)
        else:
            keep, work = x.split(x.shape[1] // 2, dim=1)
            out = torch.cat([keep, self.main(work)], 1)
        return channel_shuffle(out)


class CrissCrossAttention(nn.Module):
    """CCNet's criss-cross attention (Huang et al., ICCV 2019): every pixel attends to its row and column.

    Queries and keys are 1x1 projections to ``C / 8`` channels; one softmax runs over the ``H + W - 1`` pixels of
    the cross (the pixel itself counted once, in its row); the result, scaled by ``gamma`` (initialised to 0, so
    the module starts as the identity), is added to the input. ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, channels: int, recurrence: int = 2) -> None:
        super().__init__()
        self.recurrence = recurrence
        self.query = nn.Conv2d(channels, channels // 8, 1)
        self.key = nn.Conv2d(channels, channels // 8, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def _attend(self, x: torch.Tensor) -> torch.Tensor:
        h = x.shape[2]
        q, k, v = self.query(x), self.key(x), self.value(x)
        # column scores [n, w, h, i] = q[:, :, h, w] . k[:, :, i, w]; the pixel itself is left to the row scores
        col = torch.matmul(q.permute(0, 3, 2, 1), k.permute(0, 3, 1, 2))
        col = col.masked_fill(torch.eye(h, dtype=torch.bool, device=x.device), float("-inf"))
        # row scores [n, h, w, j] = q[:, :, h, w] . k[:, :, h, j]
        row = torch.matmul(q.permute(0, 2, 3, 1), k.permute(0, 2, 1, 3))
        attn = torch.cat([col.permute(0, 2, 1, 3), row], dim=-1).softmax(dim=-1)  # [n, h, w, h + w]
        a_col, a_row = attn[..., :h], attn[..., h:]
        out_col = torch.matmul(v.permute(0, 3, 1, 2), a_col.permute(0, 2, 3, 1)).permute(0, 2, 3, 1)
        out_row = torch.matmul(v.permute(0, 2, 1, 3), a_row.transpose(2, 3)).permute(0, 2, 1, 3)
        return self.gamma * (out_col + out_row) + x

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        for _ in range(self.recurrence):
            x = self._attend(x)
        return x


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of every pixel of an ``(N, C, H, W)`` map (mmseg's ``LayerNorm2d``)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class TimeAttention(nn.Module):
    """Channel attention over both dates: squeeze-excitation of ``[a, b]``, each date scaled by ``1 + sigmoid``.

    The hidden layer has ``max(C / 16, 8)`` channels and a BatchNorm over the pooled vectors (one per pair). A
    training batch of a single pair, on which the reference fails (one value per channel has no batch
    statistics), is normalised with the running statistics instead, without updating them.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // 16, 8)
        self.squeeze = nn.Conv2d(2 * channels, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.excite = nn.Conv2d(hidden, 2 * channels, 1, bias=False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        hidden = self.squeeze(torch.cat([a, b], 1).mean((2, 3), keepdim=True))
        bn = self.bn
        if bn.training and hidden.shape[0] == 1 and bn.running_mean is not None:
            hidden = F.batch_norm(hidden, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
        else:
            hidden = bn(hidden)
        weights = self.excite(F.relu(hidden)).sigmoid()
        wa, wb = weights.chunk(2, dim=1)
        return a * wa + a, b * wb + b


class FusionModule(nn.Module):
    """DSFM: a residual ShuffleNet bottleneck per date, temporal attention, shuffle-and-merge of the dates.

    ``(N, C, H, W) x 2 -> (N, C, H, W)``. The per-date part runs on both dates at once in eval mode (identical
    results) and date by date in training, so its BatchNorm statistics stay per date as in the reference.
    """

    def __init__(self, channels: int, blocks: int) -> None:
        super().__init__()
        wide = 4 * channels
        self.expand = ConvBN(channels, wide)
        self.blocks = nn.Sequential(*[ShuffleUnit(wide, wide, 1) for _ in range(blocks)])
        self.reduce = ConvBN(wide, channels)
        self.time_attn = TimeAttention(channels)
        self.merge = ConvBN(2 * channels, channels)

    def _single(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.reduce(self.blocks(self.expand(x)))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.training:
            a, b = self._single(a), self._single(b)
        else:
            a, b = self._single(torch.cat([a, b])).chunk(2)
        a, b = self.time_attn(a, b)
        return self.merge(channel_shuffle(torch.cat([a, b], 1)))


class ShuffleStage(nn.Module):
    """A stride-2 :class:`ShuffleUnit`, ``repeats - 1`` stride-1 units, then criss-cross attention."""

    def __init__(self, cin: int, cout: int, repeats: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([ShuffleUnit(cin, cout, 2)] + [ShuffleUnit(cout, cout, 1)
                                                                  for _ in range(repeats - 1)])
        self.attn = CrissCrossAttention(cout)

    def layers(self) -> list[nn.Module]:
        """Units then attention, in running order."""
        return [*self.blocks, self.attn]


def tap_indices(repeats: Sequence[int]) -> list[int]:
    """Running indices (over units and attention modules of all stages) of the maps passed on (see module doc)."""
    steps = [repeats[0] - 1, *repeats[1:]]
    return [sum(steps[: i + 1]) for i in range(len(steps))]


class LightCDBackbone(nn.Module):
    """Shared stem, early fusion and ShuffleNetV2 stages; returns ``[fused, s1, s2, s3]`` at strides 2..16.

    Args:
        in_channels: bands of one date.
        widths: stem width, then the three stage widths (``(24, 116, 232, 464)`` for the base size).
        fusion_blocks: ShuffleNet units in the fusion bottleneck (4 / 8 / 16 for the S / B / L sizes).
        stage_repeats: units per stage (``(4, 8, 4)``).
    """

    def __init__(self, in_channels: int, widths: Sequence[int], fusion_blocks: int,
                 stage_repeats: Sequence[int]) -> None:
        super().__init__()
        self.stem = nn.Sequential()
        self.stem.add_module("conv", nn.Conv2d(in_channels, widths[0], 3, 2, 1, bias=False))
        self.stem.add_module("norm", ChannelLayerNorm(widths[0]))
        self.stem.add_module("act", nn.GELU())
        self.fusion = FusionModule(widths[0], fusion_blocks)
        self.stages = nn.ModuleList(
            ShuffleStage(cin, cout, r) for cin, cout, r in zip(widths[:-1], widths[1:], stage_repeats, strict=True)
        )
        self.taps = tap_indices(stage_repeats)
        for module in self.unused():
            module.requires_grad_(False)

    def _running(self) -> list[nn.Module]:
        return [layer for stage in self.stages for layer in stage.layers()]  # type: ignore[operator]

    def unused(self) -> list[nn.Module]:
        """The modules after the last tap: present in checkpoints, never run."""
        return self._running()[self.taps[-1] + 1:]

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
        """``(N, C, H, W) x 2`` -> ``[(N, w0, H/2, W/2), (N, w1, H/4, W/4), (N, w2, H/8, W/8), (N, w3, H/16, W/16)]``."""
        n = a.shape[0]
        stem = self.stem(torch.cat([a, b]))  # LayerNorm: per pixel, so one batched pass is exact
        x = self.fusion(stem[:n], stem[n:])
        outs = [x]
        for i, layer in enumerate(self._running()[: self.taps[-1] + 1]):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
        return outs
