"""The typed output every change model returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ChangeOutput:
    """Logits of a change model; no activation, same type in train and eval.

    Attributes:
        change: change logits ``(N, K, H, W)`` at input resolution; ``K == 1`` means a sigmoid logit,
            ``K == 2`` means two-class logits (softmax; channel 1 is "change").
        sem_a: date-A class logits ``(N, C, H, W)`` for semantic models, else ``None``.
        sem_b: date-B class logits ``(N, C, H, W)`` for semantic models, else ``None``.
        aux: extra tensors a model's own losses need (features, deep-supervision logits, ...). The
            engine never interprets them; only the model's ``extra_losses`` and its configured losses do.
    """

    change: torch.Tensor
    sem_a: torch.Tensor | None = None
    sem_b: torch.Tensor | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)

    def change_prob(self) -> torch.Tensor:
        """Probability of change ``(N, H, W)`` in [0, 1], whatever the logit layout."""
        return change_probability(self.change)


def change_probability(logits: torch.Tensor) -> torch.Tensor:
    """Map change logits ``(N, 1|2, H, W)`` to the change probability ``(N, H, W)``."""
    if logits.shape[1] == 1:
        return logits[:, 0].float().sigmoid()
    if logits.shape[1] == 2:
        return logits.float().softmax(1)[:, 1]
    raise ValueError(f"change logits must have 1 or 2 channels, got shape {tuple(logits.shape)}")
