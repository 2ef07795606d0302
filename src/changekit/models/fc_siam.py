"""FC-EF, FC-Siam-conc and FC-Siam-diff: small fully convolutional U-Nets for change detection.

Paper: R. Caye Daudt, B. Le Saux, A. Boulch, "Fully convolutional siamese networks for change detection",
IEEE ICIP 2018, pp. 4063-4067, doi:10.1109/ICIP.2018.8451652.

Architecture (base width 16, as open-cd configures them with ``base_channel=16``): four encoder levels of
16/32/64/128 channels with 2, 2, 3, 3 convolutions (3x3 conv -> BN -> ReLU -> Dropout2d 0.2) each followed by a
2x2 max-pool; a decoder of stride-2 transposed convolutions with skip connections and 3, 3, 2, 2 convolutions
per level; the last convolution emits the change logits at input resolution.

* **FC-EF** (early fusion) stacks the two dates along channels and runs one U-Net.
* **FC-Siam-conc** runs both dates through one shared encoder and concatenates both dates' skips.
* **FC-Siam-diff** does the same but feeds ``|skip_a - skip_b|`` to the decoder.

Implementation choices:

* FC-Siam: in training, the shared encoder runs once per date (date A, then B), as in the original code and in
  open-cd, so that each BatchNorm normalises a date with that date's statistics (``siamese_bn = "per_date"``).
  ``date_batched=True`` runs both dates as one batch instead (BatchNorm statistics pooled over both dates).
  In eval both give the same result and the dates always go through in one batched pass.
* Inputs are replicate-padded internally to a multiple of 16 and the logits cropped back, so any input size
  works (``input_divisor = 1``). The original code instead replicate-pads the upsampled decoder maps.
* CPU speed: on CPU the input is switched to channels_last (oneDNN runs these small-width convolutions ~35 %
  faster) and in eval mode each BatchNorm is folded into its convolution (~15 % more); the logits come back in
  the standard layout. Both leave the results unchanged up to float rounding.
* Logits only (no LogSoftmax); ``num_classes=2`` gives two-class logits, ``num_classes=1`` a sigmoid logit.

Parameter counts at the defaults (in_channels 3, 2 classes): FC-EF 1,350,578, FC-Siam-conc 1,545,986,
FC-Siam-diff 1,350,146 (published: 1.35 M, 1.55 M, 1.35 M).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import ChangeModel
from .blocks import (
    check_change_channels,
    check_int,
    conv_bn_relu,
    cpu_fast_layout,
    crop_to,
    fuse,
    pad_to_multiple,
)
from .outputs import ChangeOutput
from .registry import register_model

_ENC_DEPTHS = (2, 2, 3, 3)  # convolutions per encoder level
_DEC_DEPTHS = (3, 3, 2, 2)  # convolutions per decoder level, deepest first
_LEVELS = len(_ENC_DEPTHS)
_DIVISOR = 2**_LEVELS


class FCEncoder(nn.Module):
    """Four conv levels, each followed by a 2x2 max-pool; returns the pooled bottom and the skips."""

    def __init__(self, in_channels: int, widths: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        stages = []
        prev = in_channels
        for width, depth in zip(widths, _ENC_DEPTHS, strict=True):
            convs = [conv_bn_relu(prev if i == 0 else width, width, dropout) for i in range(depth)]
            stages.append(nn.Sequential(*convs))
            prev = width
        self.stages = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:  # noqa: D102
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
            x = self.pool(x)
        return x, skips


class FCDecoder(nn.Module):
    """Transposed-conv upsampling, concatenation with the (fused) skip, then the level's convolutions.

    Args:
        widths: encoder widths, shallowest first (16, 32, 64, 128).
        skip_factor: how many ``width``-wide maps the skip of a level holds (2 for FC-Siam-conc, else 1).
        out_channels: channels of the final (plain) convolution.
        dropout: Dropout2d probability after every BN-ReLU.
    """

    def __init__(self, widths: tuple[int, ...], skip_factor: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.ups = nn.ModuleList()
        self.stages = nn.ModuleList()
        deepest_first = list(reversed(widths))
        for level, (width, depth) in enumerate(zip(deepest_first, _DEC_DEPTHS, strict=True)):
            last = level == _LEVELS - 1
            nxt = out_channels if last else deepest_first[level + 1]
            self.ups.append(nn.ConvTranspose2d(width, width, kernel_size=3, stride=2, padding=1, output_padding=1))
            convs: list[nn.Module] = [conv_bn_relu(width * (1 + skip_factor), width, dropout)]
            convs += [conv_bn_relu(width, width, dropout) for _ in range(depth - 2)]
            convs.append(nn.Conv2d(width, nxt, 3, padding=1) if last else conv_bn_relu(width, nxt, dropout))
            self.stages.append(nn.Sequential(*convs))

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        """``skips`` shallowest first, as the encoder returns them; ``x`` is the pooled bottom."""
        for up, stage, skip in zip(self.ups, self.stages, reversed(skips), strict=True):
            x = stage(torch.cat([up(x), skip], dim=1))
        return x


def _check_args(in_channels: int, num_classes: int, base_channels: int, dropout: float) -> None:
    check_int("in_channels", in_channels)
    check_int("base_channels", base_channels)
    check_change_channels(num_classes)
    if isinstance(dropout, bool) or not isinstance(dropout, int | float) or not 0 <= dropout < 1:
        raise ConfigError(f"model argument 'dropout' must be a number in [0, 1), got {dropout!r}")


class FCEF(ChangeModel):
    """FC-EF: early fusion, one U-Net over the channel-stacked pair.

    Args:
        in_channels: channels of one date (the network sees twice as many).
        num_classes: 2 for two-class logits (default), 1 for one sigmoid logit.
        base_channels: width of the first level; levels are 1, 2, 4, 8 times this.
        dropout: Dropout2d probability after every conv-BN-ReLU (0 disables).
    """

    #: early fusion: no layer sees one date alone (tests/models/test_siamese_batchnorm.py)
    siamese_bn = "none"

    def __init__(self, in_channels: int = 3, num_classes: int = 2, base_channels: int = 16, dropout: float = 0.2):
        super().__init__()
        _check_args(in_channels, num_classes, base_channels, dropout)
        self.in_channels = in_channels
        self.change_channels = num_classes
        widths = tuple(base_channels * 2**i for i in range(_LEVELS))
        self.encoder = FCEncoder(2 * in_channels, widths, dropout)
        self.decoder = FCDecoder(widths, 1, num_classes, dropout)

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:  # noqa: D102
        self.check_input(a, b)
        h, w = a.shape[-2:]
        x = pad_to_multiple(cpu_fast_layout(torch.cat([a, b], dim=1)), _DIVISOR)
        bottom, skips = self.encoder(x)
        return ChangeOutput(change=crop_to(self.decoder(bottom, skips), h, w))


class FCSiam(ChangeModel):
    """FC-Siam-conc / FC-Siam-diff: a shared encoder for both dates, skips fused per level.

    Args:
        in_channels: channels of one date.
        num_classes: 2 for two-class logits (default), 1 for one sigmoid logit.
        base_channels: width of the first level; levels are 1, 2, 4, 8 times this.
        dropout: Dropout2d probability after every conv-BN-ReLU (0 disables).
        fusion: ``"concat"`` (FC-Siam-conc: both dates' skips) or ``"diff"`` (FC-Siam-diff: ``|a - b|``).
        date_batched: in training, run both dates through the encoder as one batch (BatchNorm statistics pooled
            over both dates). ``False`` (default): one pass per date, as the original code and open-cd do.
    """

    #: the encoder's BatchNorms see each date's batch on its own in training, as in the original code
    siamese_bn = "per_date"

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        base_channels: int = 16,
        dropout: float = 0.2,
        fusion: str = "diff",
        date_batched: bool = False,
    ) -> None:
        super().__init__()
        _check_args(in_channels, num_classes, base_channels, dropout)
        if fusion not in ("concat", "diff"):
            raise ConfigError(f"model argument 'fusion' must be 'concat' or 'diff', got {fusion!r}")
        if not isinstance(date_batched, bool):
            raise ConfigError(f"model argument 'date_batched' must be true or false, got {date_batched!r}")
        self.in_channels = in_channels
        self.change_channels = num_classes
        self.fusion = fusion
        self.date_batched = date_batched
        widths = tuple(base_channels * 2**i for i in range(_LEVELS))
        self.encoder = FCEncoder(in_channels, widths, dropout)
        self.decoder = FCDecoder(widths, 2 if fusion == "concat" else 1, num_classes, dropout)

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:  # noqa: D102
        self.check_input(a, b)
        n, (h, w) = a.shape[0], a.shape[-2:]
        if self.date_batched or not self.training:
            x = pad_to_multiple(cpu_fast_layout(torch.cat([a, b], dim=0)), _DIVISOR)
            bottom, skips = self.encoder(x)
            skips_a, skips_b = [s[:n] for s in skips], [s[n:] for s in skips]
            bottom = bottom[n:]  # the original decodes from the pooled bottom of its second (date-B) pass
        else:
            _, skips_a = self.encoder(pad_to_multiple(cpu_fast_layout(a), _DIVISOR))
            bottom, skips_b = self.encoder(pad_to_multiple(cpu_fast_layout(b), _DIVISOR))
        fused = [fuse(sa, sb, self.fusion) for sa, sb in zip(skips_a, skips_b, strict=True)]
        return ChangeOutput(change=crop_to(self.decoder(bottom, fused), h, w))


@register_model
def fc_ef(**kwargs: Any) -> FCEF:
    """FC-EF (Daudt et al., ICIP 2018), base width 16: 1,350,578 parameters at the defaults."""
    model_args: dict[str, Any] = dict(base_channels=16)
    return FCEF(**{**model_args, **kwargs})


@register_model
def fc_siam_conc(**kwargs: Any) -> FCSiam:
    """FC-Siam-conc (Daudt et al., ICIP 2018), base width 16: 1,545,986 parameters at the defaults."""
    model_args: dict[str, Any] = dict(base_channels=16, fusion="concat")
    return FCSiam(**{**model_args, **kwargs})


@register_model
def fc_siam_diff(**kwargs: Any) -> FCSiam:
    """FC-Siam-diff (Daudt et al., ICIP 2018), base width 16: 1,350,146 parameters at the defaults."""
    model_args: dict[str, Any] = dict(base_channels=16, fusion="diff")
    return FCSiam(**{**model_args, **kwargs})


fc_ef.model_cls = FCEF  # type: ignore[attr-defined]  # lets build_model validate keyword names
fc_siam_conc.model_cls = FCSiam  # type: ignore[attr-defined]
fc_siam_diff.model_cls = FCSiam  # type: ignore[attr-defined]
