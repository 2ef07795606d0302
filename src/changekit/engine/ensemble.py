"""Write a seed-ensemble checkpoint from trained checkpoints (``changekit ensemble``).

The ensemble (:class:`~changekit.models.ensemble.Ensemble`) averages its members' probabilities, so its members
must read their inputs the same way: same task, classes, bands, normalisation and radiometric matching. The
first checkpoint's config supplies everything else (data paths, evaluation window), and the decision threshold
is the mean of the members' thresholds unless one is given.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..models import build_model, count_parameters
from ..models.ensemble import member_kwargs
from ..safety import check_output
from .checkpoint import load_weights, read_checkpoint, save_checkpoint
from .finish import decision_threshold
from .options import check_threshold

#: config["data"] keys that decide how a model reads its inputs; the members must agree on each
INPUT_KEYS = ("task", "classes", "bands", "resolved_normalize", "tags")


def _input_contract(cfg: dict[str, Any]) -> dict[str, Any]:
    data = cfg.get("data") or {}
    contract = {k: data.get(k) for k in INPUT_KEYS}
    if isinstance(contract["resolved_normalize"], dict):  # what was asked does not matter, what was resolved does
        contract["resolved_normalize"] = {k: v for k, v in contract["resolved_normalize"].items() if k != "request"}
    return contract


def make_ensemble(checkpoints: Sequence[str | Path], out: str | Path, threshold: float | None = None,
                  overwrite: bool = False) -> dict[str, Any]:
    """Combine trained checkpoints into one ensemble checkpoint at ``out``.

    Args:
        checkpoints: two or more checkpoints (``model.ckpt``, ``best.ckpt`` or ``last.ckpt``) of one task.
        out: the ensemble checkpoint to write (never one of the inputs).
        threshold: its decision threshold; default: the mean of the members' thresholds.
        overwrite: replace an existing ``out``.

    Returns:
        ``checkpoint``, ``members`` (model names), ``params``, ``threshold`` and the members' ``thresholds``.

    Raises:
        ConfigError: fewer than two checkpoints, a nested ensemble, members that read their inputs differently
            (naming the file and the key), or a threshold outside [0, 1].
        CheckpointError: an input is not a changekit checkpoint.
        OutputError: ``out`` is an input or exists without ``overwrite``.
    """
    paths = [Path(p) for p in checkpoints]
    if len(paths) < 2:
        raise ConfigError(f"ensemble: give at least two checkpoints (got {len(paths)})")
    check_threshold(threshold)
    out = check_output(out, inputs=paths, overwrite=overwrite, kind="file")
    read = [read_checkpoint(p) for p in paths]
    first = _input_contract(read[0][1])
    members = []
    for path, (_, cfg) in zip(paths, read, strict=True):
        if cfg["model"]["name"] == "ensemble":
            raise ConfigError(f"{path}: already an ensemble; list its members' checkpoints instead")
        contract = _input_contract(cfg)
        for key in INPUT_KEYS:
            if contract[key] != first[key]:
                raise ConfigError(f"{path}: data.{key} differs from {paths[0]}'s ({contract[key]!r} vs "
                                  f"{first[key]!r}); an ensemble averages models that read their inputs alike")
        name, kwargs = member_kwargs(cfg["model"], str(path))
        members.append({"name": name, **kwargs})
    net = build_model("ensemble", members=members)
    state = {f"members.{i}.{k}": v for i, (weights, _) in enumerate(read) for k, v in weights.items()}
    load_weights(net, state, out)
    thresholds = [decision_threshold(cfg) for _, cfg in read]
    chosen = float(threshold) if threshold is not None else sum(thresholds) / len(thresholds)
    config = copy.deepcopy(read[0][1])
    config["model"] = {"name": "ensemble", "members": members}
    config["trainer"]["threshold"] = round(chosen, 4)
    config["trainer"].setdefault("ema", {})["enabled"] = False  # the members' evaluated weights are stored
    save_checkpoint(out, net, config, ensemble={"checkpoints": [str(p.resolve()) for p in paths],
                                                "thresholds": thresholds})
    return {"checkpoint": out, "members": [m["name"] for m in members], "params": count_parameters(net),
            "threshold": round(chosen, 4), "thresholds": thresholds}
