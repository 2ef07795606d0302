"""Layers and helpers shared by several model families.

Only things used by more than one family live here; a family's own blocks stay in its file.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

FUSIONS = ("diff", "concat", "sum")


def fold_bn(weight: torch.Tensor, bias: torch.Tensor | None, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of ``bn(conv(x))`` as one convolution (eval mode: running statistics)."""
    scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # type: ignore[operator]
    folded_bias = bn.bias - bn.running_mean * scale  # type: ignore[operator]
    if bias is not None:
        folded_bias = folded_bias + bias * scale
    return weight * scale.view(-1, *([1] * (weight.dim() - 1))), folded_bias


class ConvBNReLU(nn.Module):
    """3x3 conv (with bias, as in the FC-* papers) -> BatchNorm -> ReLU -> optional Dropout2d.

    In eval mode the BatchNorm is folded into the convolution on the fly (one conv + in-place ReLU instead of
    three passes over the activations: 12-15 % faster on CPU). The fold is recomputed every call from the
    current weights, so loading a state dict or switching modes needs no bookkeeping. ``dropout == 0`` adds no
    module at all.
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        bn = self.bn
        if self.training or bn.running_mean is None or bn.running_var is None:
            x = F.relu(bn(self.conv(x)), inplace=True)
            return self.drop(x) if self.drop is not None else x
        weight, bias = fold_bn(self.conv.weight, self.conv.bias, bn)
        return F.conv2d(x, weight, bias, padding=1).relu_()


def conv_bn_relu(in_channels: int, out_channels: int, dropout: float = 0.0) -> ConvBNReLU:
    """Shorthand for :class:`ConvBNReLU`."""
    return ConvBNReLU(in_channels, out_channels, dropout)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pad the bottom/right of ``x`` so H and W are multiples of ``multiple``.

    Models pad internally and crop their logits back (:func:`crop_to`) so any input size works;
    replicate padding keeps border statistics close to the image instead of inventing a black frame.
    Returns ``x`` itself (no copy) when no padding is needed.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, pw, 0, ph), mode="replicate")


def cpu_fast_layout(x: torch.Tensor) -> torch.Tensor:
    """On CPU, return ``x`` in channels_last: oneDNN convolutions then run ~35 % faster (measured on FC-Siam-diff,
    256x256, batch 8). The layout propagates through the network; :func:`crop_to` restores the standard layout
    of the output. Other devices keep the caller's layout (pass channels_last yourself on GPU with AMP).
    """
    if x.device.type == "cpu" and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def crop_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Undo :func:`pad_to_multiple` on an output map and return it in the standard contiguous layout."""
    if x.shape[-2] != height or x.shape[-1] != width:
        x = x[..., :height, :width]
    return x.contiguous()


def fuse(fa: torch.Tensor, fb: torch.Tensor, mode: str) -> torch.Tensor:
    """Combine the two dates' features of one level: ``|a-b|``, ``[a, b]`` or ``a+b``."""
    if mode == "diff":
        return torch.sub(fa, fb).abs_()
    if mode == "concat":
        return torch.cat([fa, fb], dim=1)
    if mode == "sum":
        return fa + fb
    raise ConfigError(f"fusion must be one of {', '.join(FUSIONS)}, got '{mode}'")


def fused_channels(channels: int, mode: str) -> int:
    """Channels after :func:`fuse` of two ``channels``-wide maps."""
    return 2 * channels if mode == "concat" else channels


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise ``ConfigError`` naming the argument when ``value`` is not one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"model argument '{name}' must be one of {', '.join(map(str, choices))}, got {value!r}")


def check_int(name: str, value: Any, minimum: int = 1) -> None:
    """Raise ``ConfigError`` naming the argument unless ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"model argument '{name}' must be an integer >= {minimum}, got {value!r}")


def check_change_channels(value: Any) -> None:
    """Binary change models emit 1 (sigmoid) or 2 (softmax) channels; anything else is a config error."""
    if isinstance(value, bool) or value not in (1, 2):
        raise ConfigError(
            f"model argument 'num_classes' must be 1 (sigmoid logit) or 2 (two-class logits), got {value!r}"
        )


def init_conv_bn(module: nn.Module) -> None:
    """mmcv/mmseg's default initialisation of conv-BN networks trained from scratch: Kaiming-normal (fan-out,
    ReLU) ``Conv2d`` weights, BatchNorm weight 1 and bias 0 (transposed convolutions keep PyTorch's default)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def seg_classifier(channels: int, classes: int) -> nn.Conv2d:
    """mmseg's ``conv_seg``: a 1x1 classifier initialised N(0, 0.01) with bias 0 (``BaseDecodeHead``)."""
    conv = nn.Conv2d(channels, classes, kernel_size=1)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.zeros_(conv.bias)
    return conv
