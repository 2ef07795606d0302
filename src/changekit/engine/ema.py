"""Exponential moving average of model weights (validated and exported instead of the raw weights).

Follows the semantics of ``ema_pytorch.EMA`` that MISGNet trains with: before ``update_after_step`` the
average simply copies the weights; afterwards ``ema = d * ema + (1 - d) * w`` every ``update_every`` steps,
with ``d = beta``, or, when ``warmup_power`` is set, ``d = min(beta, 1 - (1 + n) ** -warmup_power)`` where ``n``
counts updates since ``update_after_step`` (the library's decay warm-up). Buffers (BatchNorm statistics) are
copied, not averaged.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMAWeights(nn.Module):
    """Holds the averaged copy of ``model``; it is a submodule, so it is saved in every checkpoint."""

    def __init__(
        self, model: nn.Module, beta: float = 0.9999, update_after_step: int = 0, update_every: int = 1,
        warmup_power: float | None = None,
    ) -> None:
        super().__init__()
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.beta = beta
        self.update_after_step = update_after_step
        self.update_every = max(1, update_every)
        self.warmup_power = warmup_power
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def decay(self) -> float:
        """The decay applied at the current step (0 means a plain copy)."""
        n = int(self.step) - self.update_after_step - 1
        if n < 0:
            return 0.0
        if self.warmup_power is None:
            return self.beta
        return min(self.beta, max(0.0, 1 - (1 + n) ** -self.warmup_power))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Call once per optimiser step with the live model."""
        self.step += 1
        if int(self.step) % self.update_every and int(self.step) > self.update_after_step:
            return
        d = self.decay()
        ema_params = dict(self.module.named_parameters())
        for name, p in model.named_parameters():
            e = ema_params[name]
            if d == 0.0:
                e.copy_(p.detach())
            else:
                e.lerp_(p.detach().to(e.dtype), 1.0 - d)
        ema_buffers = dict(self.module.named_buffers())
        for name, buf in model.named_buffers():
            ema_buffers[name].copy_(buf)

    def forward(self, *args, **kwargs):  # noqa: D102, ANN002, ANN003, ANN201
        return self.module(*args, **kwargs)
