"""Optimisers and learning-rate schedules from the config's ``optim`` and ``schedule`` sections.

Every schedule is one ``LambdaLR`` factor ``f(t)`` (warm-up, then the main decay) so that per-iteration and
per-epoch stepping, resuming, and DDP all behave the same way (Lightning steps it).

A run shorter than its recipe (``trainer.max_epochs`` / ``max_steps`` below ``schedule.plan_epochs`` /
``plan_steps``, or a ``trainer.max_time_minutes`` budget) gets the recipe's warm-up and decay as fractions of the
run actually made (:class:`SchedulePlan`, :class:`BudgetShaper`); a run of the recipe's length keeps it as is.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass
class Horizon:
    """The schedule's length in its interval's units, read by the ``LambdaLR`` factor at every step.

    It is mutable so that a run bounded by time can re-estimate its length as it goes (see
    :class:`BudgetShaper`) without rebuilding the scheduler or the optimiser.
    """

    total: int
    warmup: int
    step_size: int


def lr_lambda(cfg: dict[str, Any], total: int, warmup: int, base_lr: float) -> Callable[[int], float]:
    """The factor ``f(t)`` for ``t`` in units of the schedule's interval, over a fixed length.

    Warm-up goes linearly from ``warmup_factor`` to 1 over ``warmup`` units; the main schedule then runs over
    the remaining ``total - warmup`` units (MISGNet's and open-cd's convention).
    """
    return horizon_lambda(cfg, Horizon(int(total), int(warmup), max(1, int(cfg["step_size"]))), base_lr)


def horizon_lambda(cfg: dict[str, Any], horizon: Horizon, base_lr: float) -> Callable[[int], float]:
    """:func:`lr_lambda` over a :class:`Horizon` that may change while the run goes."""
    name = str(cfg["name"]).lower()
    if name not in SCHEDULES:
        raise ConfigError(f"unknown schedule '{name}'{suggest(name, SCHEDULES)}; choose one of {', '.join(SCHEDULES)}")
    w0 = float(cfg["warmup_factor"])
    floor = float(cfg["min_lr"]) / base_lr if base_lr > 0 else 0.0
    power, gamma = float(cfg["power"]), float(cfg["gamma"])

    def main(t: int) -> float:
        warmup = horizon.warmup
        progress = min(max(t - warmup, 0) / max(1, horizon.total - warmup), 1.0)
        if name == "poly":
            return floor + (1 - floor) * (1 - progress) ** power
        if name == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
        if name == "linear":
            return floor + (1 - floor) * (1 - progress)
        if name == "step":
            return gamma ** (max(t - warmup, 0) // max(1, horizon.step_size))
        return 1.0

    def factor(t: int) -> float:
        if t < horizon.warmup:
            return w0 + (1 - w0) * t / horizon.warmup
        return main(t)

    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: dict[str, Any], steps_per_epoch: int, total_steps: int,
    horizon: Horizon | None = None,
) -> dict[str, Any] | None:
    """Lightning's scheduler dict, or ``None`` for a constant learning rate.

    With a ``horizon`` (in optimiser steps, see :class:`SchedulePlan`) the scheduler steps per iteration over
    that horizon, whatever ``schedule.interval`` says: a run shaped to its budget is stepped finely.
    """
    if str(cfg["name"]).lower() == "none" and not cfg["warmup"]:
        return None
    interval = cfg["interval"]
    if interval not in ("step", "epoch"):
        raise ConfigError(f"schedule.interval must be 'step' or 'epoch', got {interval!r}")
    base_lr = optimizer.param_groups[0]["lr"]
    if horizon is not None:
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, horizon_lambda(cfg, horizon, base_lr))
        return {"scheduler": sched, "interval": "step", "frequency": 1}
    per_unit = 1 if interval == "step" else max(1, steps_per_epoch)
    total = max(1, math.ceil(total_steps / per_unit))
    warmup = int(cfg["warmup"])
    if cfg["warmup_unit"] == "epoch" and interval == "step":
        warmup *= max(1, steps_per_epoch)
    elif cfg["warmup_unit"] == "step" and interval == "epoch":
        warmup = math.ceil(warmup / per_unit)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total, warmup, base_lr))
    return {"scheduler": sched, "interval": interval, "frequency": 1}


# ------------------------------------------------------------------------------------ budget-shaped runs

@dataclass(frozen=True)
class SchedulePlan:
    """The recipe's own schedule in optimiser steps, and the horizon of a run shorter than the recipe.

    A recipe's warm-up and decay are written for its own length (``schedule.plan_epochs`` /
    ``schedule.plan_steps``, by default the run's ``trainer.max_epochs`` / ``max_steps``). A run cut shorter
    (fewer epochs or steps, or a time budget) keeps the same *fractions*: a 10-epoch warm-up in a 50-epoch
    recipe is the first 20 % of a 2-epoch or 3-minute run, so every run warms up, peaks and decays.

    Attributes:
        steps: the recipe's length in optimiser steps.
        warmup: the recipe's warm-up in optimiser steps.
        step_size: the ``step`` schedule's period in optimiser steps.
    """

    steps: int
    warmup: int
    step_size: int

    @classmethod
    def from_config(cls, sched: dict[str, Any], steps_per_epoch: int, run_steps: int) -> SchedulePlan:
        """The plan of ``schedule`` for ``steps_per_epoch`` optimiser steps per epoch.

        Args:
            sched: the config's ``schedule`` section.
            steps_per_epoch: optimiser steps in one epoch.
            run_steps: the run's own bound in optimiser steps (``max_steps`` / ``max_epochs``), the plan when
                the recipe names no length.
        """
        spe = max(1, int(steps_per_epoch))
        if sched.get("plan_steps"):
            steps = int(sched["plan_steps"])
        elif sched.get("plan_epochs"):
            steps = int(sched["plan_epochs"]) * spe
        else:
            steps = int(run_steps)
        warmup = int(sched["warmup"]) * (spe if sched["warmup_unit"] == "epoch" else 1)
        step_size = max(1, int(sched["step_size"])) * (spe if sched["interval"] == "epoch" else 1)
        return cls(max(1, steps), warmup, step_size)

    def horizon(self, run_steps: int) -> Horizon:
        """The horizon of a run of ``run_steps`` optimiser steps: the recipe's own when the run is at least the
        recipe's length, else warm-up and step period scaled by ``run_steps / steps``."""
        run_steps = max(1, int(run_steps))
        if run_steps >= self.steps:
            return Horizon(run_steps, self.warmup, self.step_size)
        scale = run_steps / self.steps
        warmup = max(1, round(self.warmup * scale)) if self.warmup else 0
        return Horizon(run_steps, warmup, max(1, round(self.step_size * scale)))

    def shapes(self, run_steps: int, budget_s: float | None) -> bool:
        """Whether a run bounded by ``run_steps`` and ``budget_s`` seconds needs a shaped schedule."""
        return budget_s is not None or run_steps < self.steps


class BudgetShaper:
    """Keeps a :class:`Horizon` equal to the run actually made, estimating a time budget's steps as it goes.

    The length of a run bounded by time is ``steps done + remaining budget x measured steps per second``,
    measured from the end of the first step once :data:`MEASURE_AFTER` more are done (start-up and the first
    batch excluded; before that from the start) and updated after every step, so that a machine that slows down or validations that cost time shorten the
    plan. The state (horizon and the training time spent) is saved in every checkpoint and restored on resume:
    a resumed run continues the plan it had instead of starting a new one, and stops when the budget of the
    whole run is spent.

    Args:
        plan: the recipe's plan.
        run_steps: the run's bound in optimiser steps from ``max_steps`` / ``max_epochs``.
        budget_s: ``trainer.max_time_minutes`` in seconds, or ``None``.
        state: :meth:`state_dict` of a checkpoint being resumed.
    """

    MEASURE_AFTER = 2

    def __init__(self, plan: SchedulePlan, run_steps: int, budget_s: float | None,
                 state: dict[str, Any] | None = None) -> None:
        self.plan, self.run_steps, self.budget_s = plan, max(1, int(run_steps)), budget_s
        self.spent_before = float(state.get("elapsed_s", 0.0)) if state else 0.0
        self.horizon = plan.horizon(int(state["total"]) if state and state.get("total") else self.run_steps)
        self._t0: float | None = None
        self._step0 = 0
        self._first: tuple[int, float] | None = None

    def start(self, now: float, step: int = 0) -> None:
        """This invocation starts training at ``now`` (seconds, monotonic) after ``step`` optimiser steps."""
        self._t0, self._step0, self._first = now, int(step), None

    def elapsed(self, now: float) -> float:
        """Training time of the whole run, earlier invocations included."""
        return self.spent_before + (now - self._t0 if self._t0 is not None else 0.0)

    def spent(self, now: float) -> bool:
        """Whether a time budget exists and the whole run (earlier invocations included) has used it up."""
        return self.budget_s is not None and self.elapsed(now) >= self.budget_s

    def update(self, step: int, now: float) -> bool:
        """Re-estimate the horizon after optimiser step ``step``; return whether the time budget is spent."""
        if self.budget_s is None:
            return False
        if self._t0 is None:
            self.start(now, step - 1)
        left = self.budget_s - self.elapsed(now)
        if self._first is None:
            self._first = (step, now)
        # from the first step's end once a few steps are measured; before that from the start (the first
        # step's start-up cost makes this estimate short, which only brings the peak earlier)
        ref = self._first if step - self._first[0] >= self.MEASURE_AFTER else (self._step0, self._t0)
        if step > ref[0] and now > ref[1]:
            rate = (step - ref[0]) / (now - ref[1])
            estimate = step + max(0.0, left) * rate
            total = max(step, min(self.run_steps, int(round(estimate))))
            shaped = self.plan.horizon(total)
            self.horizon.total, self.horizon.warmup, self.horizon.step_size = (shaped.total, shaped.warmup,
                                                                              shaped.step_size)
        if left <= 0:
            self.horizon.total = max(1, min(self.horizon.total, step))
            return True
        return False

    def state_dict(self, now: float) -> dict[str, Any]:
        """What a checkpoint keeps: the planned length and the training time spent."""
        return {"total": self.horizon.total, "warmup": self.horizon.warmup, "elapsed_s": self.elapsed(now),
                "budget_s": self.budget_s}
