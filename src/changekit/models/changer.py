"""ChangerEx: feature-exchange ResNet-18-v1c and the Changer head with flow dual-alignment fusion (FDAF).

Paper: S. Fang, K. Li, Z. Li, "Changer: Feature Interaction is What You Need for Change Detection", IEEE TGRS 61,
2023, doi:10.1109/TGRS.2023.3277496. Configuration: open-cd 1.1.0 ``configs/_base_/models/changer_r18.py`` with
ChangeAnywhere's (and open-cd's ``changer_ex_r18``) interaction layers.

Architecture:

1. Backbone (``IA_ResNetV1c``): ResNet-18-v1c, 4 stages with strides (1, 2, 2, 2). After each stage the two
   dates' maps interact: stage 1 none, stage 2 **spatial exchange** (every second column, ``w % 2 == 0``, is
   swapped between the dates), stages 3 and 4 **channel exchange** (every second channel swapped). The exchanged
   maps feed the next stage and the head. The exchanges have no parameters.
2. Head, per date: a 1x1 conv-BN-ReLU to 128 channels for each stage, bilinear resizing to the stride-4 map,
   concatenation (512) and a 1x1 conv-BN-ReLU to 64 channels.
3. FDAF: a depth-wise 5x5 conv, InstanceNorm, GELU and a 1x1 conv predict two flows from both dates; each date is
   warped by its flow (``grid_sample``, bilinear, ``align_corners=True``) and the other date subtracted; the two
   differences are concatenated (128).
4. A MixFFN projection (1x1, depth-wise 3x3, GELU, 1x1, residual), Dropout2d(0.1), a 1x1 classifier to two-class
   logits at 1/4 of the input, and bilinear upsampling to the input size (as mmseg does after the head).

Implementation choices:

* In training the backbone stages and the head's per-stage projections run once per date, as open-cd does, so
  each BatchNorm normalises a date with that date's statistics (``siamese_bn = "per_date"``);
  ``date_batched=True`` runs both dates as one batch instead (faster; statistics pooled over both dates). In
  eval both dates always go through as one batch of ``2N`` and are split only for the exchanges and FDAF.
* Inputs are replicate-padded to a multiple of 32 (open-cd pads with zeros to 32) and the logits cropped back.
* Random initialisation follows mmseg (see :mod:`.backbones.resnet_v1c`; Kaiming for the head's conv-BN-ReLU
  layers, N(0, 0.01) for the classifier, PyTorch's defaults for FDAF and MixFFN).

Size at the defaults (3 bands, 2 classes): 11,390,946 parameters (backbone 11,195,744, head 195,202), the count
the open-cd definition gives. 5.91 GMACs per 256x256 pair (``FlopCounterMode`` FLOPs / 2).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .backbones.resnet_v1c import ResNetV1c, load_backbone_weights, rename_opencd_keys, siamese
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

_DIVISOR = 32
INTERACTIONS = ("none", "spatial", "channel")


def exchange(x: torch.Tensor, n: int, mode: str, period: int) -> torch.Tensor:
    """Swap every ``period``-th column (``"spatial"``) or channel (``"channel"``) between the dates.

    ``x`` is ``(2N, C, H, W)`` with date A in the first ``N`` items; index ``i`` is swapped when
    ``i % period == 0`` (open-cd's ``SpatialExchange`` / ``ChannelExchange`` with ``p = 1 / period``).
    """
    if mode == "none":
        return x
    a, b = x[:n], x[n:]
    size = x.shape[3] if mode == "spatial" else x.shape[1]
    swap = torch.arange(size, device=x.device) % period == 0
    swap = swap.view(1, 1, 1, -1) if mode == "spatial" else swap.view(1, -1, 1, 1)
    return torch.cat([torch.where(swap, b, a), torch.where(swap, a, b)], dim=0)


class ConvBNAct(nn.Sequential):
    """1x1 conv (no bias) -> BatchNorm -> ReLU, initialised as mmcv's ``ConvModule``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels),
                         nn.ReLU(inplace=True))
        init_conv_bn(self)


class FDAF(nn.Module):
    """Flow dual-alignment fusion of two ``(N, C, H, W)`` maps into ``(N, 2C, H, W)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        both = 2 * channels
        self.flow = nn.Sequential(
            nn.Conv2d(both, both, 5, padding=2, groups=both), nn.InstanceNorm2d(both), nn.GELU(),
            nn.Conv2d(both, 4, 1, bias=False),
        )

    @staticmethod
    def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Sample ``x`` at the identity grid plus ``flow (N, 2, H, W)`` divided by ``(W, H)`` (open-cd's scaling)."""
        n, _, h, w = x.shape
        ys = torch.linspace(-1.0, 1.0, h, device=x.device, dtype=x.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=x.device, dtype=x.dtype)
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, 2): x then y
        scale = torch.tensor([w, h], device=x.device, dtype=x.dtype)
        grid = grid.unsqueeze(0) + flow.permute(0, 2, 3, 1) / scale
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    def forward(self, xa: torch.Tensor, xb: torch.Tensor) -> torch.Tensor:  # noqa: D102
        flow = self.flow(torch.cat([xa, xb], dim=1))
        fa = self.warp(xa, flow[:, :2]) - xb
        fb = self.warp(xb, flow[:, 2:]) - xa
        return torch.cat([fa, fb], dim=1)


class MixFFN(nn.Module):
    """``x + fc2(GELU(dwconv3x3(fc1(x))))`` with 1x1 ``fc`` convolutions (SegFormer's Mix-FFN as a projection)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels, 1)
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.fc2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return x + self.fc2(F.gelu(self.dwconv(self.fc1(x))))


class ChangerHead(nn.Module):
    """Changer's decode head over the exchanged pyramid of both dates (see the module docstring).

    Args:
        in_channels: channels of the backbone stages (64, 128, 256, 512).
        channels: width of the per-stage projections (128); the fused map has half, FDAF returns it again.
        num_classes: logit channels.
        classifier_dropout: Dropout2d before the classifier (0.1).
    """

    def __init__(self, in_channels: tuple[int, ...], channels: int, num_classes: int, classifier_dropout: float):
        super().__init__()
        self.convs = nn.ModuleList(ConvBNAct(c, channels) for c in in_channels)
        self.fuse = ConvBNAct(channels * len(in_channels), channels // 2)
        self.fdaf = FDAF(channels // 2)
        self.project = MixFFN(channels)
        self.dropout = nn.Dropout2d(classifier_dropout)
        self.classifier = seg_classifier(channels, num_classes)

    def forward(self, feats: list[torch.Tensor], n: int, joint: bool = True) -> torch.Tensor:
        """Logits at the first map's size from per-stage maps ``(2N, C_i, H_i, W_i)`` (dates A then B).

        ``joint``: the projections see both dates as one batch (else one call per date, see ``siamese``).
        """
        size = feats[0].shape[-2:]
        outs = [siamese(conv, f, n, joint) for conv, f in zip(self.convs, feats, strict=True)]
        outs = [o if o.shape[-2:] == size else F.interpolate(o, size, mode="bilinear", align_corners=False)
                for o in outs]
        x = siamese(self.fuse, torch.cat(outs, dim=1), n, joint)
        x = self.project(self.fdaf(x[:n], x[n:]))
        return self.classifier(self.dropout(x))


class ChangerEx(ChangeModel):
    """ChangerEx: ResNet-18-v1c with feature exchange + Changer head. See the module docstring.

    Args:
        in_channels: bands of one date.
        num_classes: 2 for two-class logits (default, as open-cd), 1 for one sigmoid logit.
        backbone_weights: ``None`` (random init: ChangeAnywhere's ChangerEx config sets ``pretrained=None``),
            ``"imagenet"`` (open-mmlab's ``resnet18_v1c``, downloaded once) or a local file with those weights.
        interactions: per stage ``"none"``, ``"spatial"`` or ``"channel"`` exchange.
        exchange_p: the share of columns/channels exchanged per stage, as open-cd's ``p`` (every ``int(1/p)``-th
            one is swapped; ignored where the interaction is ``"none"``).
        channels: width of the head's per-stage projections (128).
        classifier_dropout: Dropout2d before the classifier.
        date_batched: in training, run both dates through the BatchNorm layers as one batch (statistics pooled
            over both dates). ``False`` (default): one pass per date, as open-cd.
    """

    siamese_bn = "per_date"

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        backbone_weights: str | None = None,
        interactions: tuple[str, ...] | list[str] = ("none", "spatial", "channel", "channel"),
        exchange_p: tuple[float, ...] | list[float] = (0.5, 0.5, 0.5, 0.5),
        channels: int = 128,
        classifier_dropout: float = 0.1,
        date_batched: bool = False,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels)
        if not isinstance(date_batched, bool):
            raise ConfigError(f"model argument 'date_batched' must be true or false, got {date_batched!r}")
        check_change_channels(num_classes)
        check_int("channels", channels, minimum=2)
        interactions, exchange_p = tuple(interactions), tuple(exchange_p)
        if len(interactions) != 4 or any(i not in INTERACTIONS for i in interactions):
            raise ConfigError(f"model argument 'interactions' needs 4 entries from {', '.join(INTERACTIONS)}, "
                              f"got {list(interactions)}")
        bad_p = [p for p in exchange_p if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 1]
        if len(exchange_p) != 4 or bad_p:
            raise ConfigError(f"model argument 'exchange_p' needs 4 numbers in (0, 1], got {list(exchange_p)}")
        self.in_channels = in_channels
        self.change_channels = num_classes
        self.date_batched = date_batched
        self.interactions = interactions
        self.periods = tuple(int(1 / p) for p in exchange_p)
        self.backbone = ResNetV1c(in_channels, depth=18, num_stages=4)
        load_backbone_weights(self.backbone, backbone_weights)
        self.head = ChangerHead(self.backbone.out_channels, channels, num_classes, classifier_dropout)

    def features(self, a: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
        """The exchanged stage maps ``(2N, C_i, H_i, W_i)`` of both dates (A first), as the head sees them."""
        n, joint = a.shape[0], self.joint
        x = siamese(self.backbone.stem_forward, torch.cat([a, b], dim=0), n, joint)
        feats = []
        for stage, mode, period in zip(self.backbone.stages, self.interactions, self.periods, strict=True):
            x = exchange(siamese(stage, x, n, joint), n, mode, period)
            feats.append(x)
        return feats

    @property
    def joint(self) -> bool:
        """Whether the BatchNorm layers see both dates as one batch now (eval, or ``date_batched``)."""
        return self.date_batched or not self.training

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:  # noqa: D102
        self.check_input(a, b)
        n, (h, w) = a.shape[0], a.shape[-2:]
        a, b = (pad_to_multiple(cpu_fast_layout(t), _DIVISOR) for t in (a, b))
        logits = self.head(self.features(a, b), n, self.joint)
        logits = F.interpolate(logits, a.shape[-2:], mode="bilinear", align_corners=False)
        return ChangeOutput(change=crop_to(logits, h, w))


@register_model
def changer_ex(**kwargs: Any) -> ChangerEx:
    """ChangerEx (Fang et al., TGRS 2023), open-cd ``changer_ex_r18``: 11,390,946 parameters at the defaults."""
    model_args: dict[str, Any] = dict(interactions=("none", "spatial", "channel", "channel"))
    return ChangerEx(**{**model_args, **kwargs})


changer_ex.model_cls = ChangerEx  # type: ignore[attr-defined]  # lets build_model validate keyword names


# ------------------------------------------------------------------------------------ open-cd checkpoints
_HEAD_RENAMES = (
    ("fusion_conv.", "fuse."),
    ("neck_layer.flow_make.", "fdaf.flow."),
    ("discriminator.layers.0.", "project.fc1."),
    ("discriminator.layers.1.", "project.dwconv."),
    ("discriminator.layers.4.", "project.fc2."),
    ("conv_seg.", "classifier."),
    (".conv.", ".0."),  # mmcv ConvModule (conv, bn) -> nn.Sequential indices
    (".bn.", ".1."),
)


@register_converter("opencd", "changer_ex", description="open-cd 1.x ChangerEx (IA_ResNetV1c r18 + Changer head)")
def changer_ex_from_opencd(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename open-cd's ``changer_ex_r18`` keys: ``backbone.*`` is kept (the exchange layers have no weights);
    ``decode_head.*`` moves to ``head.*``, and ConvModule's ``conv``/``bn`` become Sequential indices 0/1."""
    return rename_opencd_keys(state, _HEAD_RENAMES)
