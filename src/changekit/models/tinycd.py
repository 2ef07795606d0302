"""TinyCD: a 285k-parameter change detector built on the first stages of EfficientNet-b4.

Paper: A. Codegoni, G. Lombardi, A. Ferrari, "TINYCD: A (Not So) Deep Learning Model For Change Detection",
Neural Computing and Applications 35:8471-8486, 2023, doi:10.1007/s00521-022-08122-3. Code:
github.com/AndreaCodegoni/Tiny_model_4_CD (released weights ``pretrained_models/levir_best.pth``, ``whu_best.pth``).

Architecture (``x`` = date A, ``y`` = date B, both ``(N, C, H, W)``, H and W multiples of 8):

* **Backbone**: torchvision's ``efficientnet_b4().features[0:4]`` (stem, then the 24-, 32- and 56-channel MBConv
  stages at strides 2, 4, 8), shared by both dates. It is the released code's backbone, built by the same
  torchvision function, so ImageNet weights load unchanged.
* **Mix-and-attention blocks (MAMB)**: the two dates' maps of one level are interleaved channel by channel
  (``x0, y0, x1, y1, ...``), and a grouped 3x3 convolution with one group per output channel mixes each pair
  (``Mix``: conv -> PReLU -> InstanceNorm). At full resolution and at strides 2 and 4 a pixel-wise MLP (1x1 convs
  with PReLU) turns the mixed map into a one-channel attention mask; at stride 8 the mixed 56-channel map is
  the decoder's input.
* **Up-sampling blocks**: bilinear x2 (``align_corners=True``), multiplied by the mask of that resolution, then
  a depthwise 3x3 and a pointwise 1x1 conv (each PReLU -> InstanceNorm): 56 -> 64 -> 64 -> 32 channels.
* **Pixel-wise classifier**: 1x1 convs 32 -> 16 -> 8 -> 1 with PReLU. The released model ends in a sigmoid; here
  the last convolution's output is returned as a one-channel sigmoid logit (``ChangeOutput`` holds logits), so
  ``change_prob()`` is exactly the released output.

Implementation choices:

* Both dates pass through the backbone in one batched call in eval mode (exactly the two-pass result); in training
  they go one after the other, so BatchNorm statistics stay per date as in the released code.
* InstanceNorm statistics depend on the whole map, so padding would change the result: H and W must be multiples
  of 8 (``input_divisor = 8``; ``changekit predict`` and evaluation pad automatically).
* ``classifier=(16,)`` with ``prelu_logit=True`` is open-cd's ``TinyCD`` variant (32 -> 16 -> 1, PReLU on the
  logit too, 285,000 parameters), used by its converter.

Parameters: 285,128 at the defaults (3 bands), as the released model has (paper: 0.28 M). Compute per 256x256
pair: 1.33 G multiply-adds (``torch.utils.flop_counter.FlopCounterMode`` FLOPs / 2, the fvcore/open-cd convention;
convolutions and matrix products only); the paper reports 1.45 GFLOPs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError
from .base import ChangeModel
from .blocks import check_int
from .foreign import register_converter
from .outputs import ChangeOutput
from .registry import register_model

log = logging.getLogger(__name__)

_BACKBONE_LAYERS = 4  # efficientnet_b4.features[0..3]
_LEVEL_CHANNELS = (24, 32, 56)  # backbone outputs at strides 2, 4, 8
_MASK_HIDDEN = ((10, 5), (12, 6), (16, 8))  # mask MLP widths at strides 1, 2, 4 (the first scales with bands)
_UP_CHANNELS = (64, 64, 32)


class Mix(nn.Module):
    """Interleave two maps' channels and mix each (a_i, b_i) pair with a grouped 3x3 conv -> PReLU -> InstanceNorm.

    ``(N, C, H, W), (N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 3, padding=1, groups=channels)
        self.act = nn.PReLU()
        self.norm = nn.InstanceNorm2d(channels)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # noqa: D102
        mixed = torch.stack((x, y), dim=2).flatten(1, 2)  # channel order x0, y0, x1, y1, ...
        return self.norm(self.act(self.conv(mixed)))


class PixelMLP(nn.Module):
    """1x1 convolutions, each followed by a PReLU except, when ``prelu_last`` is false, the last one.

    Args:
        widths: channels from input to output, e.g. ``(32, 16, 8, 1)``.
        prelu_last: keep the PReLU after the last convolution (the masks do; the classifier's logit does not).
    """

    def __init__(self, widths: Sequence[int], prelu_last: bool = True) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for i, (cin, cout) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            last = i == len(widths) - 2
            act = nn.PReLU() if prelu_last or not last else nn.Identity()
            self.layers.append(nn.ModuleDict({"conv": nn.Conv2d(cin, cout, 1), "act": act}))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        for layer in self.layers:
            x = layer["act"](layer["conv"](x))
        return x


class MaskMix(nn.Module):
    """MAMB: :class:`Mix` then a :class:`PixelMLP` to a one-channel mask ``(N, 1, H, W)``."""

    def __init__(self, channels: int, hidden: Sequence[int]) -> None:
        super().__init__()
        self.mix = Mix(channels)
        self.mlp = PixelMLP((channels, *hidden, 1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.mlp(self.mix(x, y))


class UpMask(nn.Module):
    """Bilinear x2 (align_corners), times the mask of the finer level, depthwise 3x3 and pointwise 1x1 convs.

    ``(N, cin, h, w), mask (N, 1, 2h, 2w) -> (N, cout, 2h, 2w)``.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, padding=1, groups=cin)
        self.act1 = nn.PReLU()
        self.norm1 = nn.InstanceNorm2d(cin)
        self.pw = nn.Conv2d(cin, cout, 1)
        self.act2 = nn.PReLU()
        self.norm2 = nn.InstanceNorm2d(cout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True) * mask
        x = self.norm1(self.act1(self.dw(x)))
        return self.norm2(self.act2(self.pw(x)))


def _torchvision_b4(hub: bool) -> nn.Module:
    from torchvision.models import EfficientNet_B4_Weights, efficientnet_b4

    if not hub:
        return efficientnet_b4(weights=None)
    try:
        return efficientnet_b4(weights=EfficientNet_B4_Weights.IMAGENET1K_V1)
    except Exception as exc:  # offline, no cache, hub error: never continue silently without the weights
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(
            f"could not get torchvision's ImageNet efficientnet_b4 weights ({reason}); pass "
            "model.backbone_weights=/path/to/efficientnet_b4.pth, or model.backbone_weights=null for a random init"
        ) from None


def build_backbone(in_channels: int, weights: str | None) -> nn.ModuleList:
    """torchvision's ``efficientnet_b4().features[0:4]``, optionally with ImageNet weights.

    ``weights``: ``None`` (random init), ``"imagenet"`` (torchvision's hub; needs the internet or its cache) or a
    local torchvision ``efficientnet_b4`` state dict (full model or ``features`` only). A stem for other than 3
    bands is rebuilt; a 3-band stem from the file is adapted to it.
    """
    from .siam_unet import load_encoder_weights

    full = _torchvision_b4(hub=weights == "imagenet")
    features = full.features
    if in_channels != 3:
        old = features[0][0]
        features[0][0] = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                                   bias=False)
    if weights is not None and weights != "imagenet":
        try:
            load_encoder_weights(features, weights)
        except ConfigError as exc:  # the shared loader names its own config key
            raise ConfigError(str(exc).replace("encoder_weights", "model.backbone_weights", 1)) from None
    return nn.ModuleList(features[i] for i in range(_BACKBONE_LAYERS))


class TinyCD(ChangeModel):
    """TinyCD (Codegoni et al. 2023): EfficientNet-b4 stages 0-3, MAMB mixing, up-sampling with masks.

    Args:
        in_channels: bands of one date.
        backbone_weights: ``None`` (random init), a local torchvision ``efficientnet_b4`` ``.pth``, or
            ``"imagenet"`` for torchvision's hub download (never used by default or in tests).
        classifier: hidden widths of the pixel-wise classifier (released: ``(16, 8)``; open-cd: ``(16,)``).
        prelu_logit: a PReLU on the logit as well (open-cd's variant; the released model has a sigmoid there).
        freeze_backbone: stop gradients to the backbone (the released code's ``freeze_backbone`` option).
    """

    input_divisor = 8
    siamese_bn = "per_date"  # training runs the backbone once per date, as released

    def __init__(
        self,
        in_channels: int = 3,
        backbone_weights: str | None = None,
        classifier: Sequence[int] = (16, 8),
        prelu_logit: bool = False,
        freeze_backbone: bool = False,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels)
        if backbone_weights is not None and not isinstance(backbone_weights, str):
            raise ConfigError(f"model argument 'backbone_weights' must be a path or 'imagenet', got {backbone_weights!r}")
        if not isinstance(classifier, list | tuple) or not classifier:
            raise ConfigError(f"model argument 'classifier' must be a non-empty list of widths, got {classifier!r}")
        for width in classifier:
            check_int("classifier", width)
        self.in_channels = in_channels
        self.change_channels = 1
        self.backbone = build_backbone(in_channels, backbone_weights)
        if freeze_backbone:
            self.backbone.requires_grad_(False)
        self.first_mix = MaskMix(in_channels, _MASK_HIDDEN[0])
        self.mixers = nn.ModuleList([MaskMix(_LEVEL_CHANNELS[0], _MASK_HIDDEN[1]),
                                     MaskMix(_LEVEL_CHANNELS[1], _MASK_HIDDEN[2])])
        self.bottom_mix = Mix(_LEVEL_CHANNELS[2])
        widths = (_LEVEL_CHANNELS[2], *_UP_CHANNELS)
        self.ups = nn.ModuleList(UpMask(cin, cout) for cin, cout in zip(widths[:-1], widths[1:], strict=True))
        self.classifier = PixelMLP((_UP_CHANNELS[-1], *classifier, 1), prelu_last=prelu_logit)

    def _levels(self, a: torch.Tensor, b: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Backbone maps of both dates at strides 2, 4 and 8 (the stem's stride-2 output is not mixed)."""
        if self.training:  # BatchNorm statistics per date, as the released code computes them
            pairs, xa, xb = [], a, b
            for i, layer in enumerate(self.backbone):
                xa, xb = layer(xa), layer(xb)
                if i:
                    pairs.append((xa, xb))
            return pairs
        n, x, maps = a.shape[0], torch.cat([a, b]), []
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i:
                maps.append((x[:n], x[n:]))
        return maps

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:
        """``a``, ``b``: ``(N, C, H, W)`` (H, W multiples of 8) -> one-channel sigmoid logits ``(N, 1, H, W)``."""
        self.check_input(a, b)
        levels = self._levels(a, b)
        masks = [self.first_mix(a, b)] + [mixer(x, y) for mixer, (x, y) in zip(self.mixers, levels, strict=False)]
        x = self.bottom_mix(*levels[-1])
        for up, mask in zip(self.ups, reversed(masks), strict=True):
            x = up(x, mask)
        return ChangeOutput(change=self.classifier(x))


def _create_tinycd(**kwargs: Any) -> TinyCD:
    return TinyCD(**kwargs)


@register_model
def tinycd(**kwargs: Any) -> TinyCD:
    """TinyCD (Codegoni et al., Neural Comput. Appl. 2023): 285,128 parameters, sigmoid output."""
    return _create_tinycd(**kwargs)


tinycd.model_cls = TinyCD  # type: ignore[attr-defined]  # lets build_model validate keyword names


# ---------------------------------------------------------------- released weights
def _rename_heads(key: str) -> str:
    """The released head names (``_first_mix._mixing._convmix.0``...) -> ours (``first_mix.mix.conv``...)."""
    rules = (
        ("_first_mix.", "first_mix."), ("_mixing_mask.0.", "mixers.0."), ("_mixing_mask.1.", "mixers.1."),
        ("_mixing_mask.2._mixing.", "bottom_mix."),  # whu_best.pth: saved by an earlier code version
        ("_mixing_mask.2.", "bottom_mix."), ("_classify.", "classifier."), ("_up.", "ups."),
        ("_mixing.", "mix."), ("_linear.", "mlp."), ("_linears.", "layers."),
        ("_convmix.0.", "conv."), ("_convmix.1.", "act."),
        ("_convolution.0.", "dw."), ("_convolution.1.", "act1."), ("_convolution.3.", "pw."),
        ("_convolution.4.", "act2."),
    )
    for old, new in rules:
        key = key.replace(old, new)
    parts = key.split(".")  # PixelMLP: layers.<i>.0 -> layers.<i>.conv, layers.<i>.1 -> layers.<i>.act
    for i in range(len(parts) - 2):
        if parts[i] == "layers" and parts[i + 2] in ("0", "1"):
            parts[i + 2] = "conv" if parts[i + 2] == "0" else "act"
    return ".".join(parts)


def map_released_keys(state: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """Rename a released ``ChangeClassifier`` state dict (keys under ``prefix``) to :class:`TinyCD`'s.

    Keys outside ``prefix`` are dropped; ``_backbone.*`` keeps torchvision's own names under ``backbone.``. The
    stride-8 mixer is ``_mixing_mask.2._convmix`` in ``levir_best.pth`` (the released code) and
    ``_mixing_mask.2._mixing._convmix`` in ``whu_best.pth`` (saved by an earlier version, which wrapped the same
    mixing block; the released code cannot load that file): both map onto ``bottom_mix``.
    """
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix):]
        out["backbone." + key[len("_backbone."):] if key.startswith("_backbone.") else _rename_heads(key)] = value
    return out


_PROTOCOL = {
    # TinyCD's evaluation: ImageNet mean/std on [0, 1] images, sigmoid > 0.5; date A first as in its data loader
    "data": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
    "trainer": {"threshold": 0.5, "eval_mode": "whole"},
}


@register_converter("tinycd", "tinycd", config=_PROTOCOL)
def tinycd_from_release(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """TinyCD's released state dict (``levir_best.pth`` / ``whu_best.pth``)."""
    return map_released_keys(state)


@register_converter("opencd", "tinycd", model_kwargs={"classifier": [16], "prelu_logit": True}, config=_PROTOCOL)
def tinycd_from_opencd(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open-cd's ``TinyCD`` backbone (``IdentityHead``): classifier 32 -> 16 -> 1 with a PReLU on the logit."""
    return map_released_keys(state, prefix="backbone.")
