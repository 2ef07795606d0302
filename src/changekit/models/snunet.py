"""SNUNet-CD: a siamese nested U-Net (UNet++) with the Ensemble Channel Attention Module (ECAM).

Paper: S. Fang, K. Li, J. Shao, Z. Li, "SNUNet-CD: A Densely Connected Siamese Network for Change Detection of VHR
Images", IEEE GRSL 19 (2022), 8007805, doi:10.1109/LGRS.2021.3056416. Reference definition: open-cd's
``SNUNet_ECAM`` backbone with an ``FCNHead(num_convs=0)`` (``configs/_base_/models/snunet_c16.py``), as
ChangeAnywhere trains it with ``base_channel=32`` (``snunet_c32_256x256_50e_*``).

Architecture (base width c: levels of c, 2c, 4c, 8c, 16c channels):

* A shared encoder of five levels. Each is a residual double convolution: conv3x3 (its output is the residual),
  BN, ReLU, conv3x3, BN, adding the residual, ReLU. A 2x2 max-pool sits between levels. As in the released code,
  date A stops after level 3; only date B reaches level 4.
* Dense nested decoding: node (i, j) takes both dates' level-i maps, the nodes (i, 1..j-1) and node (i+1, j-1)
  upsampled by a 2x2 stride-2 transposed convolution (level-(i+1) inputs come from date B).
* ECAM on the four full-resolution nodes (0, 1..4): ``CA(cat) * (cat + repeat(CA_intra(sum)))``, where the
  channel attention (CA) is a shared 1x1-conv MLP over average- and max-pooled maps, with ratios 16 (4c wide)
  and 4 (c wide).
* open-cd's head: Dropout2d(0.1) then a 1x1 convolution to 2 classes (softmax, trained with cross-entropy). The
  authors' release has the same 2-class 1x1 convolution after ECAM, without the dropout.

Implementation choices:

* Training runs each date through the encoder separately, as the reference does. BatchNorm then normalises
  each date by its own batch statistics, and updates its running statistics once per date. Evaluation uses
  running statistics, so both dates share one batched pass there, which is exact and faster.
* Inputs are replicate-padded to a multiple of 32 (open-cd pads with zeros, the mean colour, to 32; the network
  needs 16). The logits are cropped back, so any input size works.
* Parameter counts: c32 (default) 12,034,978; c16 3,012,178, both equal to open-cd's definition. Multiply-adds
  per 256x256 pair: c32 46.60 G, c16 11.68 G (``FlopCounterMode`` FLOPs / 2, the fvcore/open-cd convention).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import ChangeModel
from .blocks import (
    check_change_channels,
    check_int,
    cpu_fast_layout,
    crop_to,
    init_conv_bn,
    pad_to_multiple,
    seg_classifier,
)
from .foreign import register_converter
from .outputs import ChangeOutput
from .registry import register_model

_LEVELS = 5
_PAD = 32


class NestedBlock(nn.Module):
    """Residual double convolution of SNUNet (``conv_block_nested``); the residual is the first conv's output."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.conv1(x)
        y = self.bn2(self.conv2(F.relu(self.bn1(x))))
        return F.relu(y.add_(x))


class ChannelAttention(nn.Module):
    """CBAM-style channel attention: a shared 1x1-conv MLP over average- and max-pooled maps, then a sigmoid."""

    def __init__(self, channels: int, ratio: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // ratio, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // ratio, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> weights ``(N, C, 1, 1)`` in (0, 1)."""
        pooled = torch.cat([F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)])
        avg, mx = self.fc2(F.relu(self.fc1(pooled))).chunk(2)
        return torch.sigmoid(avg + mx)


class SNUNet(ChangeModel):
    """SNUNet-CD with ECAM (see the module docstring).

    Args:
        in_channels: bands of one date.
        num_classes: 2 for two-class logits (open-cd's and the authors'), 1 for one sigmoid logit.
        base_channel: width of the first level, 32 (ChangeAnywhere, the paper's default) or 16 (open-cd's
            LEVIR-CD and SVCD rows). The ECAM ratios need ``4 * base_channel >= 16``.
        dropout: Dropout2d probability before the classifier (open-cd's head: 0.1; the authors' code: 0).
    """

    siamese_bn = "per_date"  # the reference runs the shared encoder once per date

    def __init__(self, in_channels: int = 3, num_classes: int = 2, base_channel: int = 32, dropout: float = 0.1):
        super().__init__()
        check_int("in_channels", in_channels)
        check_int("base_channel", base_channel, minimum=4)
        check_change_channels(num_classes)
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ConfigError(f"model argument 'dropout' must be a number in [0, 1), got {dropout!r}")
        self.in_channels = in_channels
        self.change_channels = num_classes
        widths = [base_channel * 2**i for i in range(_LEVELS)]
        for i, width in enumerate(widths):  # encoder nodes (i, 0)
            self.add_module(f"conv{i}_0", NestedBlock(widths[i - 1] if i else in_channels, width))
        for i in range(1, _LEVELS):  # transposed convolutions of nodes (i, j), i >= 1
            for j in range(_LEVELS - i):
                self.add_module(f"up{i}_{j}", nn.ConvTranspose2d(widths[i], widths[i], 2, stride=2))
        for j in range(1, _LEVELS):  # nested nodes (i, j): both dates, nodes (i, 1..j-1), upsampled (i+1, j-1)
            for i in range(_LEVELS - j):
                self.add_module(f"conv{i}_{j}", NestedBlock(widths[i] * (j + 1) + widths[i + 1], widths[i]))
        self.ca = ChannelAttention(4 * base_channel, ratio=16)
        self.ca1 = ChannelAttention(base_channel, ratio=4)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        # the released initialisation (Kaiming fan-out convolutions, BN 1/0, transposed convolutions left at
        # PyTorch's default), then open-cd's classifier init
        init_conv_bn(self)
        self.classifier = seg_classifier(4 * base_channel, num_classes)

    def _encode(self, x: torch.Tensor, depth: int) -> list[torch.Tensor]:
        """Encoder nodes (0, 0) .. (depth - 1, 0) of ``x``."""
        feats = [self.get_submodule("conv0_0")(x)]
        for i in range(1, depth):
            feats.append(self.get_submodule(f"conv{i}_0")(F.max_pool2d(feats[-1], 2)))
        return feats

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:
        """``a``, ``b``: ``(N, C, H, W)`` -> change logits ``(N, K, H, W)``."""
        self.check_input(a, b)
        n, (h, w) = a.shape[0], a.shape[-2:]
        a, b = (pad_to_multiple(cpu_fast_layout(t), _PAD) for t in (a, b))
        if self.training:  # per-date BatchNorm statistics, as the reference computes them
            enc_a, enc_b = self._encode(a, _LEVELS - 1), self._encode(b, _LEVELS)
        else:
            both = self._encode(torch.cat([a, b]), _LEVELS - 1)
            enc_a, enc_b = [f[:n] for f in both], [f[n:] for f in both]
            enc_b.append(self.get_submodule(f"conv{_LEVELS - 1}_0")(F.max_pool2d(enc_b[-1], 2)))
        nodes: dict[tuple[int, int], torch.Tensor] = {(i, 0): f for i, f in enumerate(enc_b)}
        for j in range(1, _LEVELS):
            for i in range(_LEVELS - j):
                up = self.get_submodule(f"up{i + 1}_{j - 1}")(nodes[(i + 1, j - 1)])
                inputs = [enc_a[i], enc_b[i], *(nodes[(i, k)] for k in range(1, j)), up]
                nodes[(i, j)] = self.get_submodule(f"conv{i}_{j}")(torch.cat(inputs, dim=1))
        top = [nodes[(0, j)] for j in range(1, _LEVELS)]
        out = torch.cat(top, dim=1)
        intra = self.ca1(torch.stack(top).sum(0))
        out = self.ca(out) * (out + intra.repeat(1, len(top), 1, 1))
        return ChangeOutput(change=crop_to(self.classifier(self.dropout(out)), h, w))


def _create_snunet(default_base_channel: int, **kwargs: Any) -> SNUNet:
    return SNUNet(**{"base_channel": default_base_channel, **kwargs})


@register_model
def snunet(**kwargs: Any) -> SNUNet:
    """SNUNet-CD with ECAM, base width 32 (ChangeAnywhere's ``snunet_c32``): 12,034,978 parameters."""
    return _create_snunet(32, **kwargs)


@register_model
def snunet_c16(**kwargs: Any) -> SNUNet:
    """SNUNet-CD with ECAM, base width 16 (open-cd's LEVIR-CD / SVCD ``snunet_c16``): 3,012,178 parameters."""
    return _create_snunet(16, **kwargs)


snunet.model_cls = SNUNet  # type: ignore[attr-defined]  # lets build_model validate keyword names
snunet_c16.model_cls = SNUNet  # type: ignore[attr-defined]


def _snunet_from_opencd(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open-cd keys -> ours: ``backbone.`` dropped, ``UpI_J.up`` -> ``upI_J``, ``decode_head.conv_seg`` ->
    ``classifier``; all other names (``convI_J.conv1``..., ``ca.fc1``...) are open-cd's own."""
    out = {}
    for key, value in state.items():
        if key.startswith("backbone.Up") and ".up." in key:
            key = "up" + key[len("backbone.Up"):].replace(".up.", ".", 1)
        elif key.startswith("backbone."):
            key = key[len("backbone."):]
        elif key.startswith("decode_head.conv_seg."):
            key = "classifier." + key[len("decode_head.conv_seg."):]
        out[key] = value
    return out


register_converter("opencd", "snunet", description="open-cd / ChangeAnywhere SNUNet_ECAM, base_channel 32")(
    _snunet_from_opencd)
register_converter("opencd", "snunet_c16", description="open-cd SNUNet_ECAM, base_channel 16 (LEVIR-CD, SVCD)")(
    _snunet_from_opencd)
