"""Fused CPU inference kernels: oneDNN convolutions and linears with the bias and activation in one pass.

PyTorch ships these ops (``torch.ops.mkldnn._convolution_pointwise`` / ``_linear_pointwise``) for its compiler;
calling them in eager mode removes the separate activation pass over every large feature map, and the bias
broadcast that ``addmm`` writes before its product. They only serve float32 CPU tensors without autograd; every
function here falls back to the plain PyTorch ops otherwise, or when a build lacks them, with the same result
up to rounding. BatchNorm folding, which these paths use too, is :func:`changekit.models.blocks.fold_bn`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_ACTS = {"none": lambda x: x, "relu": F.relu, "swish": F.silu, "gelu": F.gelu, "sigmoid": torch.sigmoid}


def _op(name: str) -> Any:
    if not torch.backends.mkldnn.is_available():
        return None
    try:
        return getattr(torch.ops.mkldnn, name)
    except (AttributeError, RuntimeError):
        return None


LINEAR = _op("_linear_pointwise")
CONV = _op("_convolution_pointwise")


def usable(x: torch.Tensor) -> bool:
    """Whether the fused kernels may run on ``x``: float32 on CPU, no autograd."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Any = 1, padding: Any = 0,
           dilation: Any = 1, groups: int = 1, act: str = "none") -> torch.Tensor:
    """``act(F.conv2d(...))`` with ``act`` in ``none | relu | swish | gelu | sigmoid`` fused when possible."""
    if CONV is not None and usable(x):
        pair = lambda v: [v, v] if isinstance(v, int) else list(v)  # noqa: E731
        return CONV(x, weight, bias, pair(padding), pair(stride), pair(dilation), groups, act, [],
                    "none" if act == "gelu" else "")
    return _ACTS[act](F.conv2d(x, weight, bias, stride, padding, dilation, groups))


def linear(x: torch.Tensor, fc: nn.Linear) -> torch.Tensor:
    """``fc(x)`` with the bias fused into the GEMM when possible."""
    if LINEAR is not None and usable(x):
        return LINEAR(x, fc.weight, fc.bias, "none", [], "")
    return fc(x)
