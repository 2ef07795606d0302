"""``pos_weight: auto`` and ``class_weights: auto``: loss weights from the training labels' change share."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

AUTO_PARAMS = {"bce": "pos_weight", "ce": "class_weights"}  # parameters that accept ``auto``


def auto_terms(spec: list[dict[str, Any]] | dict[str, Any]) -> list[int]:
    """Indices of the loss entries with an ``auto`` weight still to resolve."""
    entries = [spec] if isinstance(spec, dict) else spec
    return [i for i, e in enumerate(entries)
            if isinstance(e, dict) and e.get(AUTO_PARAMS.get(str(e.get("name")), "")) == "auto"]


def resolve_auto_weights(spec: list[dict[str, Any]], change_share: float, key: str = "loss") -> list[str]:
    """Replace ``auto`` weights in ``spec`` (in place) by numbers from the change share of the training labels.

    Args:
        spec: the config's loss entries.
        change_share: changed pixels / labelled pixels of the training set.
        key: config key named in messages.

    Returns:
        One line per resolved value (``loss[0].pos_weight = 48.6``), for the log.

    Raises:
        ConfigError: the training labels hold no change (or nothing but change), so no weight follows.
    """
    done = []
    for i in auto_terms(spec):
        param = AUTO_PARAMS[spec[i]["name"]]
        if not 0.0 < change_share < 1.0:
            raise ConfigError(f"{key}[{i}].{param}: auto needs both changed and unchanged pixels in the training "
                              f"labels (data.train), found a change share of {change_share:.4g}; give a number")
        if param == "pos_weight":
            spec[i][param] = round((1 - change_share) / change_share, 4)
        else:
            spec[i][param] = [round(0.5 / (1 - change_share), 4), round(0.5 / change_share, 4)]
        done.append(f"{key}[{i}].{param} = {spec[i][param]} (training change share {change_share:.4f})")
    return done
