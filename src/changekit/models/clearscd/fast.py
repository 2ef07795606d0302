"""CPU inference path of smp's EfficientNet encoder: BatchNorms folded into the convolutions and the SiLU /
sigmoid activations fused into them (oneDNN post-ops, :mod:`..onednn`), the SE gating and the residual in place.

Same arithmetic as ``EfficientNetEncoder.forward`` in eval mode, up to rounding, with about half the passes over
the feature maps: each MBConv block otherwise writes its expanded map five times (conv, BN, SiLU, depthwise conv
output, BN, SiLU, SE product). Only valid without autograd.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import onednn
from ..blocks import fold_bn


def _conv(conv: nn.Conv2d, x: torch.Tensor, bn: nn.Module | None = None, act: str = "none") -> torch.Tensor:
    pad = getattr(conv, "static_padding", None)  # efficientnet's Conv2dStaticSamePadding (TF "same" padding)
    if pad is not None:
        x = pad(x)
    weight, bias = (conv.weight, conv.bias) if bn is None else fold_bn(conv.weight, conv.bias, bn)
    return onednn.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups, act)


def mbconv(block: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """``MBConvBlock.forward`` (eval; drop-connect is inactive in eval)."""
    x = inputs
    if block._has_expansion:
        x = _conv(block._expand_conv, x, block._bn0, "swish")
    x = _conv(block._depthwise_conv, x, block._bn1, "swish")
    if block._has_se:
        squeezed = _conv(block._se_reduce, x.mean((2, 3), keepdim=True), act="swish")  # adaptive_avg_pool2d(x, 1)
        x = x.mul_(_conv(block._se_expand, squeezed, act="sigmoid"))
    x = _conv(block._project_conv, x, block._bn2)
    if block._has_drop_connect:
        x = x.add_(inputs)
    return x


def supported(encoder: nn.Module) -> bool:
    """Whether ``encoder`` is smp's EfficientNet encoder with the SiLU activation this path fuses."""
    blocks = getattr(encoder, "_blocks", None)
    return (blocks is not None and isinstance(getattr(encoder, "_swish", None), nn.SiLU)
            and all(isinstance(getattr(b, "_swish", None), nn.SiLU) for b in blocks))


def encoder_forward(encoder: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """``EfficientNetEncoder.forward`` (eval): the input and the five stage outputs."""
    features = [x]
    x = _conv(encoder._conv_stem, x, encoder._bn0, "swish")
    features.append(x)
    for i, block in enumerate(encoder._blocks):
        x = mbconv(block, x)
        if i in encoder._out_indexes:
            features.append(x)
            if len(features) > encoder._depth:
                break
    return features[: encoder._depth + 1]
