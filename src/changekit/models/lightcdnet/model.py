"""LightCDNet: the model (backbone, FPN neck, deep-supervision heads) and its registered sizes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..base import ChangeModel
from ..blocks import check_change_channels, check_int, init_conv_bn, seg_classifier
from ..outputs import ChangeOutput
from ..registry import register_model
from .backbone import ConvBN, LightCDBackbone

#: stem and stage widths, fusion units per size (open-cd's ``net_type`` small / base / large)
SIZES: dict[str, tuple[tuple[int, int, int, int], int]] = {
    "s": ((24, 48, 96, 192), 4),
    "b": ((24, 116, 232, 464), 8),
    "l": ((24, 176, 352, 704), 16),
}
STAGE_REPEATS = (4, 8, 4)
_PAD = 32  # open-cd's data preprocessor pads inputs to multiples of 32 (zeros after normalisation)


class TinyFPN(nn.Module):
    """FPN without norms or activations: 1x1 laterals, nearest top-down sums, 3x3 output convs (all with bias).

    ``[x0..x3]`` (widths ``in_channels``) -> ``[o0..o3]``, each ``channels`` wide at its input's resolution.
    """

    def __init__(self, in_channels: Sequence[int], channels: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in in_channels)
        for conv in [*self.lateral, *self.smooth]:  # open-cd's TinyFPN init_cfg: Xavier (uniform), bias 0
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:  # noqa: D102
        lat = [conv(f) for conv, f in zip(self.lateral, feats, strict=True)]
        for i in range(len(lat) - 1, 0, -1):
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[2:], mode="nearest")
        return [conv(x) for conv, x in zip(self.smooth, lat, strict=True)]


class DeepSupervisedFPNHead(nn.Module):
    """open-cd's ``DS_FPNHead``: a 1x1 conv-BN-ReLU per level, bilinear sum at the finest level, 1x1 classifier."""

    def __init__(self, levels: int, channels: int, classes: int) -> None:
        super().__init__()
        self.scales = nn.ModuleList(ConvBN(channels, channels) for _ in range(levels))
        init_conv_bn(self.scales)
        self.classifier = seg_classifier(channels, classes)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:  # noqa: D102
        out = self.scales[0](feats[0])
        for scale, f in zip(self.scales[1:], feats[1:], strict=True):
            out = out + F.interpolate(scale(f), size=out.shape[2:], mode="bilinear", align_corners=False)
        return self.classifier(out)


class AuxiliaryHead(nn.Module):
    """mmseg's ``FCNHead`` with one 3x3 conv-BN-ReLU: supervises the fused stride-2 map during training."""

    def __init__(self, channels: int, classes: int) -> None:
        super().__init__()
        self.conv = ConvBN(channels, channels, 3)
        init_conv_bn(self.conv)
        self.classifier = seg_classifier(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.classifier(self.conv(x))


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class LightCDNet(ChangeModel):
    """LightCDNet (Xing et al., GRSL 2023) as open-cd implements it.

    Args:
        in_channels: bands of one date.
        num_classes: 2 (two-class logits, as open-cd) or 1 (a sigmoid logit).
        widths: stem and stage widths (see :data:`SIZES`).
        fusion_blocks: ShuffleNet units in the fusion module.
        stage_repeats: units per backbone stage.
        neck_channels: width of the FPN and decode head (48).
        aux_weight: weight of the auxiliary head's cross-entropy on the fused map (open-cd: 0.4; 0 drops the
            term, the head stays so checkpoints keep their layout).
    """

    siamese_bn = "per_date"  # the fusion module's per-date part runs once per date in training, as open-cd

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        widths: Sequence[int] = SIZES["b"][0],
        fusion_blocks: int = SIZES["b"][1],
        stage_repeats: Sequence[int] = STAGE_REPEATS,
        neck_channels: int = 48,
        aux_weight: float = 0.4,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels)
        check_change_channels(num_classes)
        check_int("fusion_blocks", fusion_blocks)
        check_int("neck_channels", neck_channels)
        for name, seq, count in (("widths", widths, 4), ("stage_repeats", stage_repeats, 3)):
            if not isinstance(seq, list | tuple) or len(seq) != count:
                raise ConfigError(f"model argument '{name}' must be a list of {count} integers, got {seq!r}")
            for v in seq:
                check_int(name, v, minimum=2 if name == "stage_repeats" else 1)
        if any(w % 2 for w in widths[1:]) or widths[0] % 8:
            raise ConfigError(f"model argument 'widths' must be even, the first a multiple of 8, got {widths!r}")
        if isinstance(aux_weight, bool) or not isinstance(aux_weight, int | float) or aux_weight < 0:
            raise ConfigError(f"model argument 'aux_weight' must be a number >= 0, got {aux_weight!r}")
        self.in_channels = in_channels
        self.change_channels = num_classes
        self.aux_weight = float(aux_weight)
        self.backbone = LightCDBackbone(in_channels, widths, fusion_blocks, stage_repeats)
        self.neck = TinyFPN(widths, neck_channels)
        self.head = DeepSupervisedFPNHead(len(widths), neck_channels, num_classes)
        self.aux_head = AuxiliaryHead(widths[0], num_classes)

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:
        """``(N, C, H, W) x 2 -> ChangeOutput(change=(N, K, H, W))``; in training also ``aux["aux_change"]``.

        Any size works: like open-cd's data preprocessor, the pair is zero-padded at the bottom and right to a
        multiple of 32 and the logits cropped back.
        """
        self.check_input(a, b)
        h, w = a.shape[-2:]
        ph, pw = (-h) % _PAD, (-w) % _PAD
        if ph or pw:
            a, b = F.pad(a, (0, pw, 0, ph)), F.pad(b, (0, pw, 0, ph))
        feats = self.backbone(a, b)
        logits = self.head(self.neck(feats))
        full = (h + ph, w + pw)
        aux = {}
        if self.training:
            aux["aux_change"] = _upsample(self.aux_head(feats[0]), full)[..., :h, :w]
        return ChangeOutput(change=_upsample(logits, full)[..., :h, :w].contiguous(), aux=aux)

    def extra_losses(self, output: ChangeOutput, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The deep-supervision term: ``aux_weight`` x cross-entropy of the auxiliary head (open-cd's 0.4)."""
        if "aux_change" not in output.aux or not self.aux_weight or "mask" not in batch:
            return {}
        from ...losses import CELoss  # changekit.losses imports the model package: import on use

        return {"aux_ce": self.aux_weight * CELoss(ignore_index=255)(output.aux["aux_change"], batch["mask"])}


def _create_lightcdnet(size: str, **kwargs: Any) -> LightCDNet:
    widths, fusion_blocks = SIZES[size]
    return LightCDNet(**{"widths": widths, "fusion_blocks": fusion_blocks, **kwargs})


@register_model
def lightcdnet_s(**kwargs: Any) -> LightCDNet:
    """LightCDNet-S (Xing et al., GRSL 2023; open-cd ``net_type="small"``): 347,771 parameters, 1.61 GMACs."""
    return _create_lightcdnet("s", **kwargs)


@register_model
def lightcdnet(**kwargs: Any) -> LightCDNet:
    """LightCDNet-B, ChangeAnywhere's configuration (open-cd ``net_type="base"``): 1,318,433 parameters, 3.05 GMACs."""
    return _create_lightcdnet("b", **kwargs)


@register_model
def lightcdnet_l(**kwargs: Any) -> LightCDNet:
    """LightCDNet-L (open-cd ``net_type="large"``): 2,821,019 parameters, 5.49 GMACs."""
    return _create_lightcdnet("l", **kwargs)


for _builder in (lightcdnet_s, lightcdnet, lightcdnet_l):
    _builder.model_cls = LightCDNet  # type: ignore[attr-defined]  # lets build_model validate keyword names
