"""The config-built composite loss the engine optimises (:func:`build_loss`)."""

from __future__ import annotations

import inspect
import logging
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, LabelValueError, suggest
from ..models.outputs import ChangeOutput
from .auto import AUTO_PARAMS, is_auto
from .terms import TARGETS, BCELoss, CELoss, DiceLoss, FocalLoss, OHEMCELoss, _number

log = logging.getLogger(__name__)

LOSSES: dict[str, type[nn.Module]] = {"bce": BCELoss, "ce": CELoss, "dice": DiceLoss, "focal": FocalLoss,
                                      "ohem_ce": OHEMCELoss}


class CompositeLoss(nn.Module):
    """A weighted sum of loss terms, each comparing one model output with one batch key.

    Built by :func:`build_loss`. ``forward`` returns the total and the unweighted value of every term
    (detached, for logging) under names like ``focal``, ``dice``, ``ce_sem_a`` (a repeated name gets ``_2``).
    """

    def __init__(self, terms: list[tuple[str, float, str, nn.Module]]) -> None:
        super().__init__()
        if not terms:
            raise ConfigError("loss: at least one loss term is required")
        self.names = [t[0] for t in terms]
        self.weights = [t[1] for t in terms]
        self.targets = [t[2] for t in terms]
        self.terms = nn.ModuleList([t[3] for t in terms])

    def forward(self, output: ChangeOutput, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and the per-term values for a model ``output`` and its ``batch``."""
        weighted: list[torch.Tensor] = []
        parts: dict[str, torch.Tensor] = {}
        for name, weight, target, term in zip(self.names, self.weights, self.targets, self.terms, strict=True):
            out_attr, batch_key = TARGETS[target]
            logits = getattr(output, out_attr)
            if logits is None:
                raise ConfigError(f"loss term '{name}' targets '{target}' but the model returns no {out_attr} logits")
            if batch_key not in batch:
                raise ConfigError(f"loss term '{name}' needs batch key '{batch_key}', which the dataset does not give")
            try:
                value = term(logits, batch[batch_key])
            except LabelValueError as exc:
                raise LabelValueError(f"loss term '{name}', batch key '{batch_key}': {exc}") from exc
            parts[name] = value.detach()
            weighted.append(weight * value)
        return torch.stack(weighted).sum(), parts

    def extra_repr(self) -> str:  # noqa: D102
        return ", ".join(f"{n}*{w:g}->{t}" for n, w, t in zip(self.names, self.weights, self.targets, strict=True))


def build_loss(spec: list[dict[str, Any]], key: str = "loss") -> CompositeLoss:
    """Build a :class:`CompositeLoss` from config entries.

    Each entry is ``{name, weight=1.0, target="change", **params}``, e.g.
    ``[{"name": "focal", "weight": 0.5, "alpha": 0.2, "gamma": 2}, {"name": "dice", "mode": "multiclass"},
    {"name": "ce", "target": "sem_a", "ignore_index": 9}]``. ``target`` picks ``output.change`` vs
    ``batch["mask"]``, ``output.sem_a`` vs ``batch["sem_a"]`` or ``output.sem_b`` vs ``batch["sem_b"]``.

    Args:
        spec: the list of entries.
        key: the config key the list came from, used in error messages.

    Raises:
        ConfigError: unknown loss name, target or parameter, or a bad value (the message names the entry).
    """
    if isinstance(spec, dict):
        spec = [spec]
    if not isinstance(spec, list) or not spec:
        raise ConfigError(f"{key}: expected a non-empty list of loss entries, got {spec!r}")
    terms: list[tuple[str, float, str, nn.Module]] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(spec):
        where = f"{key}[{i}]"
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"{where}: expected a mapping with a 'name' key, got {entry!r}")
        params = dict(entry)
        name = params.pop("name")
        if name not in LOSSES:
            raise ConfigError(f"{where}: unknown loss '{name}'{suggest(str(name), LOSSES)}; known: {', '.join(LOSSES)}")
        try:
            weight = _number("weight", params.pop("weight", 1.0))
        except ConfigError as exc:
            raise ConfigError(f"{where} ({name}): {exc}") from exc
        target = params.pop("target", "change")
        if target not in TARGETS:
            raise ConfigError(
                f"{where} ({name}): unknown target '{target}'{suggest(str(target), TARGETS)}; "
                f"known: {', '.join(TARGETS)}"
            )
        if is_auto(auto := params.get(AUTO_PARAMS.get(name, ""))):
            if target != "change":
                raise ConfigError(f"{where} ({name}): {AUTO_PARAMS[name]}: {auto} is computed from the change mask; "
                                  f"give numbers for target '{target}'")
            params[AUTO_PARAMS[name]] = None  # resolved from the training labels before training (auto_terms)
        cls = LOSSES[name]
        allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        for p in params:
            if p not in allowed:
                raise ConfigError(
                    f"{where} ({name}): unknown parameter '{p}'{suggest(str(p), allowed + ['weight', 'target'])}; "
                    f"accepted: {', '.join(['weight', 'target'] + allowed)}"
                )
        try:
            module = cls(**params)
        except ConfigError as exc:
            raise ConfigError(f"{where} ({name}): {exc}") from exc
        base = name if target == "change" else f"{name}_{target}"
        seen[base] = seen.get(base, 0) + 1
        label = base if seen[base] == 1 else f"{base}_{seen[base]}"
        terms.append((label, weight, target, module))
    log.debug("built loss %s", [(n, w, t) for n, w, t, _ in terms])
    return CompositeLoss(terms)
