"""ChangeFormer as open-cd and ChangeAnywhere configure it: a siamese MiT encoder, the two dates' features
concatenated per level, and SegFormer's all-MLP head.

Sources: open-cd's ``configs/_base_/models/changeformer_mit-b0.py`` (``SiamEncoderDecoder``: backbone
``mmseg.MixVisionTransformer``, neck ``FeatureFusionNeck(policy='concat')``, head ``mmseg.SegformerHead`` with
doubled input widths, 2 classes, dropout 0.1), overridden to MiT-b1 (``embed_dims=64``, heads 1/2/5/8, depths
2/2/2/2) by ChangeAnywhere's ``changeformer_mit-b1_256x256_50e_*`` configs. open-cd's README says of it: "We simply
convert the Segformer to a siamese variant and do not strictly refer to the ChangeFormer". The paper's own
ChangeFormer (Bandara & Patel, IGARSS 2022: difference modules per level, MLP projections, its own upsampling) is
therefore not what these configs train, and changekit follows the configs.

Size at the defaults (MiT-b1, 3 bands, 2 classes): 13,940,930 parameters (encoder 13,151,424, head 789,506), equal
to open-cd's definition; 5.77 GMACs per 256x256 pair (``FlopCounterMode`` FLOPs / 2, the fvcore/open-cd
convention).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..base import ChangeModel
from ..blocks import check_change_channels, check_int, crop_to, init_conv_bn, pad_to_multiple, seg_classifier
from ..outputs import ChangeOutput
from ..registry import register_model
from .mit import MiTEncoder

PAD = 32  # open-cd's data preprocessor pads to a multiple of 32 (size_divisor=32)


class ConvBNReLU1x1(nn.Module):
    """mmcv ``ConvModule`` as SegFormer's head uses it: 1x1 convolution without bias -> BatchNorm -> ReLU.

    The child names (``conv``, ``bn``) are mmcv's, so open-cd's head keys load unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return F.relu(self.bn(self.conv(x)), inplace=True)


class SegformerHead(nn.Module):
    """SegFormer's all-MLP decoder (mmseg ``SegformerHead``) on the fused pyramid.

    Each level goes through a 1x1 ConvModule to ``channels`` and is bilinearly resized to the stride-4 grid. The
    four maps are concatenated and fused by another 1x1 ConvModule, then go through Dropout2d and a 1x1
    classifier.

    Args:
        in_channels: widths of the four fused levels (twice the encoder's with concatenation).
        channels: the common width (256 in open-cd).
        num_classes: output channels (2: two-class logits, 1: one sigmoid logit).
        dropout: Dropout2d probability before the classifier (mmseg's ``dropout_ratio``, 0.1).
    """

    def __init__(self, in_channels: tuple[int, ...], channels: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.convs = nn.ModuleList(ConvBNReLU1x1(c, channels) for c in in_channels)
        self.fusion_conv = ConvBNReLU1x1(channels * len(in_channels), channels)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        init_conv_bn(self)  # mmcv ConvModule's init
        self.conv_seg = seg_classifier(channels, num_classes)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Four maps ``(N, C_i, H/s_i, W/s_i)`` -> logits ``(N, K, H/4, W/4)``."""
        size = feats[0].shape[-2:]
        outs = []
        for conv, feat in zip(self.convs, feats, strict=True):
            out = conv(feat)
            if out.shape[-2:] != size:
                out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
            outs.append(out)
        return self.conv_seg(self.dropout(self.fusion_conv(torch.cat(outs, dim=1))))


class ChangeFormer(ChangeModel):
    """Siamese MiT encoder, per-level concatenation of the dates, SegFormer head, logits at input size.

    Both dates go through the shared encoder in one batched pass. The encoder has LayerNorms only, so this equals
    open-cd's two passes exactly, in training as well. Inputs are replicate-padded to a multiple of 32, as open-cd
    pads them (it pads with zeros, i.e. the mean colour). The stride-4 logits are upsampled bilinearly
    (``align_corners=False``) to the padded size and cropped back, so any input size works.

    Args:
        backbone: MiT variant, ``mit_b1`` (ChangeAnywhere) or ``mit_b0`` (open-cd's LEVIR-CD row) .. ``mit_b5``.
        backbone_weights: ``None`` (random init), a local MiT file (mmseg, NVlabs or smp names), or ``"imagenet"``
            (smp's hub weights; needs the internet or a cached copy).
        in_channels: bands of one date.
        num_classes: 2 for two-class logits (open-cd's), 1 for one sigmoid logit.
        channels: width of the SegFormer head (256).
        dropout: Dropout2d probability before the classifier (0.1).
    """

    siamese_bn = "none"  # the encoder has LayerNorms only; the head's BatchNorms see fused pairs

    def __init__(
        self,
        backbone: str = "mit_b1",
        backbone_weights: str | None = None,
        in_channels: int = 3,
        num_classes: int = 2,
        channels: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        check_change_channels(num_classes)
        check_int("channels", channels)
        if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
            raise ConfigError(f"model argument 'dropout' must be a number in [0, 1), got {dropout!r}")
        self.in_channels = in_channels
        self.change_channels = num_classes
        self.backbone = MiTEncoder(backbone, in_channels, backbone_weights)
        fused = tuple(2 * c for c in self.backbone.out_channels)  # FeatureFusionNeck(policy='concat')
        self.decode_head = SegformerHead(fused, channels, num_classes, float(dropout))

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:
        """``a``, ``b``: ``(N, C, H, W)`` -> change logits ``(N, K, H, W)``."""
        self.check_input(a, b)
        n, (h, w) = a.shape[0], a.shape[-2:]
        x = pad_to_multiple(torch.cat([a, b], dim=0), PAD)
        feats = [torch.cat([f[:n], f[n:]], dim=1) for f in self.backbone(x)]
        logits = F.interpolate(self.decode_head(feats), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return ChangeOutput(change=crop_to(logits, h, w))


@register_model
def changeformer(**kwargs: Any) -> ChangeFormer:
    """ChangeFormer as open-cd / ChangeAnywhere build it (MiT-b1, SegFormer head): 13,940,930 parameters."""
    model_args: dict[str, Any] = dict(backbone="mit_b1")
    return ChangeFormer(**{**model_args, **kwargs})


changeformer.model_cls = ChangeFormer  # type: ignore[attr-defined]  # lets build_model validate keyword names
