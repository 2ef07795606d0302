"""The fused oneDNN inference kernels equal the plain PyTorch ops, and fall back without them; BN folding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from changekit.models import onednn
from changekit.models.blocks import fold_bn


@pytest.mark.parametrize("act", ["none", "relu", "swish", "gelu", "sigmoid"])
@pytest.mark.parametrize("groups", [1, 8])
def test_conv2d_matches_torch(act: str, groups: int, monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(2, 8, 9, 7).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(16, 8 // groups, 3, 3), torch.randn(16)
    ref = {"none": lambda t: t, "relu": F.relu, "swish": F.silu, "gelu": F.gelu, "sigmoid": torch.sigmoid}[act](
        F.conv2d(x, w, b, 2, 1, 1, groups))
    with torch.no_grad():
        got = onednn.conv2d(x, w, b, 2, 1, 1, groups, act)
        monkeypatch.setattr(onednn, "CONV", None)
        fallback = onednn.conv2d(x, w, b, 2, 1, 1, groups, act)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fallback, ref)


def test_linear_matches_torch_and_keeps_autograd() -> None:
    fc = torch.nn.Linear(12, 5)
    x = torch.randn(3, 4, 12)
    with torch.no_grad():
        torch.testing.assert_close(onednn.linear(x, fc), fc(x), atol=1e-5, rtol=1e-5)
    y = onednn.linear(x, fc)  # grad enabled: the autograd-aware nn.Linear
    y.sum().backward()
    assert fc.weight.grad is not None


def test_fold_bn_equals_conv_then_bn() -> None:
    conv, bn = torch.nn.Conv2d(4, 6, 3, bias=True), torch.nn.BatchNorm2d(6).eval()
    bn.running_mean.uniform_(-1, 1)
    bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 8, 8)
    w, b = fold_bn(conv.weight, conv.bias, bn)
    with torch.no_grad():
        torch.testing.assert_close(F.conv2d(x, w, b), bn(conv(x)), atol=1e-5, rtol=1e-5)
