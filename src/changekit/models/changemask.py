"""ChangeMask as re-implemented in the ClearSCD repository: the baseline ClearSCD compares against.

Paper: Z. Zheng, Y. Zhong, S. Tian, A. Ma, L. Zhang, "ChangeMask: Deep multi-task encoder-transformer-decoder
architecture for semantic change detection", ISPRS J. Photogramm. Remote Sens. 183:228-239, 2022. This file
follows the re-implementation shipped in ``tangkai-RS/ClearSCD`` (``model/ChangeMask.py``), so that users can
compare ClearSCD with it under one recipe.

Architecture: one Siamese smp EfficientNet-b0 encoder (depth 5); a UNet decoder (256, 128, 64, 32, 16) shared by
both dates with a 1x1 segmentation head; the temporal symmetric transformer (TST): for every encoder level a
Conv3d with a (2, 3, 3) kernel over the stacked dates (no bias) + BN + ReLU, applied to (A, B) and (B, A) and
multiplied, so it is symmetric in time; a second UNet decoder on the TST features with a 1x1 change head. All
outputs are at input resolution. As in that file, the TST block of the raw-input level is built (and counted)
but the UNet decoder drops that level, so its parameters get no gradient. Same weight switch as ClearSCD:
``encoder_weights=None`` reproduces the released (non-)loading of ImageNet weights.

In training the encoder and the segmentation decoder run once per date (A, then B), as in that file, so their
BatchNorms normalise each date with its own statistics; ``date_batched=True`` runs both dates as one batch
(statistics pooled). In eval both give the same result and the dates always go through as one batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import ChangeModel
from .blocks import check_int
from .clearscd.model import build_encoder, native_same_padding
from .outputs import ChangeOutput
from .registry import register_model

_DECODER = (256, 128, 64, 32, 16)


class TSTBlock(nn.Module):
    """Conv3d over the date axis (kernel 2 x k x k, no bias) -> squeeze -> BN -> ReLU.

    A depth-2 Conv3d over two stacked dates without depth padding is exactly a Conv2d over the two dates
    concatenated along channels, with weight ``[W_t0 | W_t1]``; it is stored that way (same parameter count; the
    released ``(C, C, 2, k, k)`` weight maps with ``w.permute(0, 2, 1, 3, 4).reshape(C, 2C, k, k)``), which keeps
    every weight rank 4 so the model works in channels_last, and runs faster on CPU.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return torch.relu(self.bn(self.conv(torch.cat([first, second], 1))))


class TST(nn.Module):
    """Temporal symmetric transformer: ``tst(A, B) * tst(B, A)`` per encoder level."""

    def __init__(self, channels: list[int]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([TSTBlock(c, c) for c in channels])

    def forward(self, feats_a: list[torch.Tensor], feats_b: list[torch.Tensor]) -> list[torch.Tensor]:  # noqa: D102
        return [blk(fa, fb) * blk(fb, fa) for blk, fa, fb in zip(self.blocks, feats_a, feats_b, strict=True)]


class ChangeMask(ChangeModel):
    """ChangeMask (ClearSCD repository version): semantic maps of both dates and a change map.

    Args:
        in_channels: bands of one date.
        num_classes: semantic classes (9 for Hi-UCD).
        encoder_weights: ``None`` (released: no ImageNet weights), ``"imagenet"`` or a local state-dict file.
        decoder_channels: UNet decoder widths (five levels).
        date_batched: in training, run both dates through the encoder and the segmentation decoder as one batch
            (BatchNorm statistics pooled over both dates). ``False`` (default): one pass per date, as released.
    """

    task = "semantic"
    input_divisor = 32
    #: the BatchNorms of the Siamese encoder and segmentation decoder see each date's batch on its own in
    #: training, as in the released code (tests/models/test_siamese_batchnorm.py)
    siamese_bn = "per_date"

    def __init__(self, in_channels: int = 3, num_classes: int = 9, encoder_weights: str | None = None,
                 decoder_channels: tuple[int, ...] | list[int] = _DECODER, date_batched: bool = False) -> None:
        super().__init__()
        check_int("in_channels", in_channels)
        check_int("num_classes", num_classes)
        if len(decoder_channels) != 5 or not all(isinstance(c, int) and c > 0 for c in decoder_channels):
            raise ConfigError(f"model argument 'decoder_channels' must be 5 positive integers, got {decoder_channels}")
        if not isinstance(date_batched, bool):
            raise ConfigError(f"model argument 'date_batched' must be true or false, got {date_batched!r}")
        from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder

        self.date_batched = date_batched
        self.in_channels, self.num_classes = in_channels, num_classes
        self.encoder = native_same_padding(build_encoder(in_channels, encoder_weights))
        channels = list(self.encoder.out_channels)
        self.seg_decoder = UnetDecoder(encoder_channels=channels, decoder_channels=list(decoder_channels), n_blocks=5)
        self.bcd_decoder = UnetDecoder(encoder_channels=channels, decoder_channels=list(decoder_channels), n_blocks=5)
        self.seg_head = nn.Conv2d(decoder_channels[-1], num_classes, 1)
        self.bcd_head = nn.Conv2d(decoder_channels[-1], 1, 1)
        self.tst = TST(channels)

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:  # noqa: D102
        self.check_input(a, b)
        n = a.shape[0]
        if self.date_batched or not self.training:
            feats = self.encoder(torch.cat([a, b], 0))
            change = self.bcd_head(self.bcd_decoder(self.tst([f[:n] for f in feats], [f[n:] for f in feats])))
            seg = self.seg_head(self.seg_decoder(feats))
            return ChangeOutput(change=change, sem_a=seg[:n], sem_b=seg[n:])
        feats_a, feats_b = self.encoder(a), self.encoder(b)  # the released order
        change = self.bcd_head(self.bcd_decoder(self.tst(feats_a, feats_b)))
        seg_a, seg_b = (self.seg_head(self.seg_decoder(f)) for f in (feats_a, feats_b))
        return ChangeOutput(change=change, sem_a=seg_a, sem_b=seg_b)


@register_model
def changemask(**kwargs: Any) -> ChangeMask:
    """ChangeMask baseline as shipped with ClearSCD (EfficientNet-b0, two UNet decoders, TST)."""
    return ChangeMask(**kwargs)


changemask.model_cls = ChangeMask  # type: ignore[attr-defined]
