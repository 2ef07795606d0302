"""Optimisers and learning-rate schedules from the config's ``optim`` and ``schedule`` sections.

Every schedule is one ``LambdaLR`` factor ``f(t)`` (warm-up, then the main decay) so that per-iteration and
per-epoch stepping, resuming, and DDP all behave the same way (Lightning steps it).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, suggest

log = logging.getLogger(__name__)

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("none", "poly", "step", "cosine", "linear")


def build_optimizer(model: nn.Module, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD with optional no-decay groups and per-parameter learning-rate multipliers.

    Weight decay is 0 for names containing any of ``no_decay_keys`` (and for biases and 1-d parameters with
    ``no_decay_bias_norm``). ``lr_mult`` maps name substrings to learning-rate factors (open-cd's
    ``paramwise_cfg.custom_keys`` ``lr_mult``, e.g. ``{decode_head: 10}``); when several keys match a name, the
    longest wins, as in mmengine. Group 0 is always the decayed base-rate group (the scheduler reads it).
    """
    name = str(cfg["name"]).lower()
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimiser '{name}'{suggest(name, OPTIMIZERS)}; choose one of {', '.join(OPTIMIZERS)}")
    keys = list(cfg.get("no_decay_keys") or [])
    mults = _lr_mults(cfg.get("lr_mult"))
    grouped: dict[tuple[float, bool], list[nn.Parameter]] = {(1.0, False): []}
    matched: set[str] = set()
    for pname, param in model.named_parameters():
        if not param.requires_grad:
            continue
        flat = cfg.get("no_decay_bias_norm") and (param.ndim <= 1 or pname.endswith(".bias"))
        hit = max((k for k in mults if k in pname), key=len, default=None)
        if hit is not None:
            matched.add(hit)
        grouped.setdefault((mults.get(hit, 1.0), bool(flat or any(k in pname for k in keys))), []).append(param)
    for key in sorted(set(mults) - matched):
        log.warning("optim.lr_mult: key '%s' matches no trainable parameter name", key)
    lr, wd = float(cfg["lr"]), float(cfg["weight_decay"])
    groups: list[dict[str, Any]] = []
    for (mult, no_decay), params in sorted(grouped.items(), key=lambda item: (item[0][0] != 1.0, item[0])):
        if params or (mult, no_decay) == (1.0, False):
            group: dict[str, Any] = {"params": params, "weight_decay": 0.0 if no_decay else wd}
            if mult != 1.0:
                group["lr"] = lr * mult
            groups.append(group)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(cfg["betas"]))
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=tuple(cfg["betas"]))
    return torch.optim.SGD(groups, lr=lr, momentum=float(cfg["momentum"]))


def _lr_mults(value: Any) -> dict[str, float]:
    """``optim.lr_mult`` checked: a mapping of non-empty name substrings to positive factors."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"config key 'optim.lr_mult' must map parameter-name substrings to factors, got {value!r}")
    for key, factor in value.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"config key 'optim.lr_mult' needs non-empty name substrings as keys, got {key!r}")
        if isinstance(factor, bool) or not isinstance(factor, int | float) or not factor > 0:
            raise ConfigError(f"config key 'optim.lr_mult.{key}' must be a positive number, got {factor!r}")
    return {key: float(factor) for key, factor in value.items()}


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
