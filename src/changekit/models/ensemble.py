"""Seed ensembles: several trained change models of one task, averaged in probability.

Why: on small real sets (OSCD's 2 % changed pixels) two seeds of one recipe differ by several hundredths of F1;
averaging the probabilities of independently trained models (Lakshminarayanan et al. 2017, "deep ensembles")
removes part of that spread without choosing a winner on the test cities. Weight averaging
(``trainer.average_last``) cannot do this across seeds: independent runs end in different minima.

``changekit ensemble A.ckpt B.ckpt --out E.ckpt`` (:mod:`changekit.engine.ensemble`) writes the checkpoint; it is
registered here so that ``test``, ``predict`` and ``export`` rebuild it by name like any other model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from .base import ChangeModel
from .outputs import ChangeOutput
from .registry import build_model, register_model

#: probabilities are kept in [EPS, 1 - EPS] so that their logarithms stay finite (exports, isfinite checks)
EPS = 1e-6
#: members built when none are given: registry-wide smoke tests build every model with its defaults
DEFAULT_MEMBERS: tuple[dict[str, Any], ...] = ({"name": "fc_ef"}, {"name": "fc_ef"})


def member_kwargs(spec: Mapping[str, Any], where: str) -> tuple[str, dict[str, Any]]:
    """``(name, kwargs)`` of one member's model config, without weight sources (weights come from the
    ensemble's checkpoint, never from a file or a hub)."""
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        raise ConfigError(f"{where}: a member must be a model config with a name, e.g. {{name: fc_ef}}; "
                          f"got {spec!r}")
    if spec["name"] == "ensemble":
        raise ConfigError(f"{where}: an ensemble cannot hold an ensemble; list the member models instead")
    kwargs = {k: v for k, v in spec.items() if k != "name" and not (k.endswith("weights") or k == "pretrained")}
    return spec["name"], kwargs


class Ensemble(ChangeModel):
    """Mean change probability (and mean class probabilities) of several change models.

    The output holds log-probabilities: ``change`` is ``(N, 2, H, W)`` = ``log(1 - p), log(p)``, so the softmax
    every consumer applies gives back the mean probability ``p``; semantic logits likewise. Members may differ
    in architecture but must share the task, the input bands and (semantic) the classes.

    Args:
        members: model configs (``{name: ..., **kwargs}``), at least two.
    """

    def __init__(self, members: Sequence[Mapping[str, Any]] = DEFAULT_MEMBERS) -> None:
        super().__init__()
        if isinstance(members, str | Mapping) or len(members) < 2:
            raise ConfigError("model 'ensemble': members must list at least two model configs")
        specs = [member_kwargs(m, f"model.members[{i}]") for i, m in enumerate(members)]
        nets = [build_model(name, **kwargs) for name, kwargs in specs]
        for field in ("task", "in_channels", "num_classes"):
            values = {getattr(n, field, None) for n in nets}
            if len(values) > 1:
                raise ConfigError(f"model 'ensemble': the members differ in {field} "
                                  f"({', '.join(f'{n.model_name}: {getattr(n, field, None)}' for n in nets)})")
        self.members = nn.ModuleList(nets)
        self.task = nets[0].task  # type: ignore[misc]
        self.num_classes = nets[0].num_classes
        if getattr(nets[0], "in_channels", None) is not None:
            self.in_channels = nets[0].in_channels
        self.input_divisor = math.lcm(*(max(int(n.input_divisor), 1) for n in nets))  # type: ignore[misc]
        self.extra_inputs = tuple(dict.fromkeys(k for n in nets for k in n.extra_inputs))  # type: ignore[misc]

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:  # noqa: D102
        outs = [m(a, b, **{k: v for k, v in extras.items() if k in m.extra_inputs}) for m in self.members]
        p = torch.stack([o.change_prob() for o in outs]).mean(0).clamp(EPS, 1 - EPS)
        change = torch.stack([torch.log1p(-p), torch.log(p)], 1)
        sem = {}
        if self.task == "semantic":
            for key in ("sem_a", "sem_b"):
                probs = torch.stack([getattr(o, key).float().softmax(1) for o in outs]).mean(0)
                sem[key] = probs.clamp_min(EPS).log()
        return ChangeOutput(change=change, **sem)

    def example_extras(self, n: int) -> dict[str, Any]:
        """Extra inputs for smoke tests, from the first member that takes them."""
        extras: dict[str, Any] = {}
        for m in self.members:
            if m.extra_inputs and hasattr(m, "example_extras"):
                extras = {**m.example_extras(n), **extras}
        return extras


@register_model
def ensemble(members: Sequence[Mapping[str, Any]] = DEFAULT_MEMBERS) -> Ensemble:
    """Probability-averaging ensemble of trained models (``changekit ensemble``); parameters: the members' sum."""
    return Ensemble(members)


ensemble.made_by = "changekit ensemble CKPT CKPT ... --out E.ckpt"  # type: ignore[attr-defined]  # `changekit models`
