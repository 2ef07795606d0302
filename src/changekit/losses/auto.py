"""``pos_weight: auto | auto_sqrt`` and ``class_weights: auto | auto_sqrt``: loss weights from the change share
the loss sees.

``auto`` is inverse class frequency (Daudt et al. 2018): it balances the two classes, which maximises balanced
accuracy and puts the F1-optimal threshold far above 0.5 when change is rare (OSCD, 2 %: a weight ratio of
about 48, under which the calibrated F1-optimal threshold of about 0.2 maps to about 0.9). ``auto_sqrt`` takes
the square root of that ratio (about 7 on OSCD): recall is still raised, but less, and 0.5 stays near the
F1-optimal threshold. The share is the one the loss sees: under ``data.sampler: change_balanced`` it is the
sampled share (:meth:`~changekit.data.samplers.ChangeIndex.sampled_share`), not the labels', so the sampler and
the weights do not both correct the same imbalance.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError

AUTO_PARAMS = {"bce": "pos_weight", "ce": "class_weights"}  # parameters that accept an automatic weight
#: automatic weight values -> power of the inverse class frequency they apply
AUTO_POWERS = {"auto": 1.0, "auto_sqrt": 0.5}


def is_auto(value: Any) -> bool:
    """``value`` is one of the automatic weight values (:data:`AUTO_POWERS`)."""
    return isinstance(value, str) and value in AUTO_POWERS


def auto_terms(spec: list[dict[str, Any]] | dict[str, Any]) -> list[int]:
    """Indices of the loss entries with an automatic weight still to resolve."""
    entries = [spec] if isinstance(spec, dict) else spec
    return [i for i, e in enumerate(entries)
            if isinstance(e, dict) and is_auto(e.get(AUTO_PARAMS.get(str(e.get("name")), "")))]


def class_frequency_weights(share: float, power: float) -> list[float]:
    """Weights ``w_c = f_c^-power / sum_k f_k^(1 - power)`` for class frequencies ``f = (1 - share, share)``:
    the weighted mean weight of a pixel is 1, so the loss keeps its scale."""
    freq = (1.0 - share, share)
    norm = sum(f ** (1.0 - power) for f in freq)
    return [round(f ** -power / norm, 4) for f in freq]


def resolve_auto_weights(spec: list[dict[str, Any]], change_share: float, key: str = "loss",
                         source: str = "training change share") -> list[str]:
    """Replace automatic weights in ``spec`` (in place) by numbers from the change share the loss sees.

    Args:
        spec: the config's loss entries.
        change_share: changed pixels / labelled pixels as the loss sees them (the training labels', or the
            sampled share under a change-aware sampler).
        key: config key named in messages.
        source: what ``change_share`` is, for the log line.

    Returns:
        One line per resolved value (``loss[0].pos_weight = 48.6``), for the log.

    Raises:
        ConfigError: the training labels hold no change (or nothing but change), so no weight follows.
    """
    done = []
    for i in auto_terms(spec):
        param = AUTO_PARAMS[spec[i]["name"]]
        value = spec[i][param]
        if not 0.0 < change_share < 1.0:
            raise ConfigError(f"{key}[{i}].{param}: {value} needs both changed and unchanged pixels in the "
                              f"training labels (data.train), found a change share of {change_share:.4g}; "
                              f"give a number")
        power = AUTO_POWERS[value]
        if param == "pos_weight":
            spec[i][param] = round(((1 - change_share) / change_share) ** power, 4)
        else:
            spec[i][param] = class_frequency_weights(change_share, power)
        done.append(f"{key}[{i}].{param} = {spec[i][param]} ({value}; {source} {change_share:.4f})")
    return done
