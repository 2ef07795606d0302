"""A pointwise change model and its checkpoint, for output and evaluation tests that need no training.

1x1 convolutions only: every pixel's output depends on that pixel alone, so whole-image, tiled and
sliding-window inference give the same probabilities and any difference between two evaluations is a
difference in what they count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from changekit.config import resolve
from changekit.engine.checkpoint import save_checkpoint
from changekit.models.base import ChangeModel
from changekit.models.outputs import ChangeOutput
from changekit.models.registry import list_models, register_model

MODEL = "_test_pointwise"


class Pointwise(ChangeModel):
    """Change logits (2 channels) from ``[a, b]``; with ``num_classes`` also each date's class logits."""

    def __init__(self, in_channels: int = 3, num_classes: int = 0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.task = "semantic" if num_classes else "binary"  # type: ignore[misc]
        self.change_head = nn.Conv2d(2 * in_channels, 2, 1)
        self.sem_head = nn.Conv2d(in_channels, num_classes, 1) if num_classes else None

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:
        change = self.change_head(torch.cat([a, b], 1))
        if self.sem_head is None:
            return ChangeOutput(change)
        return ChangeOutput(change, self.sem_head(a), self.sem_head(b))


if MODEL not in list_models():

    @register_model
    def _test_pointwise(in_channels: int = 3, num_classes: int = 0) -> nn.Module:
        """Test-only pointwise model (see :class:`Pointwise`)."""
        return Pointwise(in_channels, num_classes)


def pointwise_checkpoint(path: Path, data: Path | None = None, num_classes: int = 0, **data_cfg: Any) -> Path:
    """Save a checkpoint of the pointwise model whose config tests ``data`` (CPU, no workers)."""
    model_cfg: dict[str, Any] = {"name": MODEL}
    if num_classes:
        model_cfg["num_classes"] = num_classes
    cfg = resolve({
        "model": model_cfg,
        "data": {"test": None if data is None else str(data), "num_workers": 0, "batch_size": 2,
                 "task": "semantic" if num_classes else "binary", **data_cfg},
        "loss": [{"name": "ce"}],
        "trainer": {"accelerator": "cpu", "devices": 1, "progress_bar": False},
    })
    return save_checkpoint(path, Pointwise(3, num_classes), cfg)
