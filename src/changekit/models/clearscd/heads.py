"""ClearSCD heads: the deep CVAPS change head and the SACL projection head (seed-systems 1.3)."""

from __future__ import annotations

import torch
from torch import nn


class CVAPSHead(nn.Module):
    """Deep CVAPS: change logit from the difference of the two dates' class scores.

    ``num_convs`` x [Conv3x3 (K -> K, bias) + BN + ReLU], then Conv3x3 (K -> 1, bias). The input is
    ``|logits_A - logits_B|`` (released code) or ``|softmax_A - softmax_B|`` (the paper's "posterior
    probability" wording); the choice is made by the model, this head only sees a ``K``-channel map.

    Args:
        num_classes: ``K``, the number of semantic classes (input and inner width).
        num_convs: conv-BN-ReLU blocks before the classifier (3 in ClearSCD's config).
    """

    def __init__(self, num_classes: int, num_convs: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(num_convs):
            layers.append(nn.Sequential(nn.Conv2d(num_classes, num_classes, 3, 1, 1), nn.BatchNorm2d(num_classes),
                                        nn.ReLU(inplace=True)))
        layers.append(nn.Conv2d(num_classes, 1, 3, 1, 1))
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.convs(x)


class ProjectionHead(nn.Module):
    """SACL projection: Conv1x1 (C -> hidden) + BN + ReLU + Conv1x1 (hidden -> C); training only.

    The output keeps the decoder width ``C`` (128): ClearSCD's ``proj_dim`` is that width, the hidden width 32 is
    hard-coded in the released code.
    """

    def __init__(self, channels: int = 128, hidden: int = 32) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.proj(x)
