"""Optimisers and learning-rate schedules from the config's ``optim`` and ``schedule`` sections.

Every schedule is one ``LambdaLR`` factor ``f(t)`` (warm-up, then the main decay) so that per-iteration and
per-epoch stepping, resuming, and DDP all behave the same way (Lightning steps it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, suggest

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("none", "poly", "step", "cosine", "linear")


def build_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD with optional no-decay groups (names containing ``no_decay_keys``, biases, norms)."""
    name = str(cfg["name"]).lower()
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimiser '{name}'{suggest(name, OPTIMIZERS)}; choose one of {', '.join(OPTIMIZERS)}")
    decay, no_decay = [], []
    keys = list(cfg.get("no_decay_keys") or [])
    for pname, param in model.named_parameters():
        if not param.requires_grad:
            continue
        flat = cfg.get("no_decay_bias_norm") and (param.ndim <= 1 or pname.endswith(".bias"))
        (no_decay if flat or any(k in pname for k in keys) else decay).append(param)
    groups = [{"params": decay, "weight_decay": float(cfg["weight_decay"])}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    lr = float(cfg["lr"])
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg["betas"]))
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(cfg["betas"]))
    return torch.optim.SGD(groups, lr=lr, momentum=float(cfg["momentum"]))


def lr_lambda(cfg: dict[str, Any], total: int, warmup: int, base_lr: float) -> Callable[[int], float]:
    """The factor ``f(t)`` for ``t`` in units of the schedule's interval.

    Warm-up goes linearly from ``warmup_factor`` to 1 over ``warmup`` units; the main schedule then runs over
    the remaining ``total - warmup`` units (MISGNet's and open-cd's convention).
    """
    name = str(cfg["name"]).lower()
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule '{name}'{suggest(name, SCHEDULES)}; choose one of {', '.join(SCHEDULES)}")
    w0 = float(cfg["warmup_factor"])
    floor = float(cfg["min_lr"]) / base_lr if base_lr > 0 else 0.0
    span = max(1, total - warmup)

    def main(t: int) -> float:
        progress = min(max(t - warmup, 0) / span, 1.0)
        if name == "poly":
            return floor + (1 - floor) * (1 - progress) ** float(cfg["power"])
        if name == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if name == "linear":
            return floor + (1 - floor) * (1 - progress)
        if name == "step":
            return float(cfg["gamma"]) ** (max(t - warmup, 0) // max(1, int(cfg["step_size"])))
        return 1.0

    def factor(t: int) -> float:
        if t < warmup:
            return w0 + (1 - w0) * t / warmup
        return main(t)

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: dict[str, Any], steps_per_epoch: int, total_steps: int
) -> dict[str, Any] | None:
    """Lightning's scheduler dict, or ``None`` for a constant learning rate."""
    if str(cfg["name"]).lower() == "none" and not cfg["warmup"]:
        return None
    interval = cfg["interval"]
    if interval not in ("step", "epoch"):
        raise ConfigError(f"schedule.interval must be 'step' or 'epoch', got {interval!r}")
    per_unit = 1 if interval == "step" else max(1, steps_per_epoch)
    total = max(1, math.ceil(total_steps / per_unit))
    warmup = int(cfg["warmup"])
    if cfg["warmup_unit"] == "epoch" and interval == "step":
        warmup *= max(1, steps_per_epoch)
    elif cfg["warmup_unit"] == "step" and interval == "epoch":
        warmup = math.ceil(warmup / per_unit)
    base_lr = optimizer.param_groups[0]["lr"]
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total, warmup, base_lr))
    return {"scheduler": sched, "interval": interval, "frequency": 1}
