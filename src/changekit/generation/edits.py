"""Change simulation by editing a semantic map (ChangeAnywhere's "change implies semantically different").

A date-2 map is made from a date-1 map by object-level edits, where an object is a connected component of one
class:

* ``remove``: the object disappears and its pixels take the class that surrounds it (the most frequent allowed
  class in a two-pixel ring around it);
* ``insert``: an object cut from another map (a donor; the map itself when there is none) is pasted at a random
  place;
* ``convert``: the object changes class, the new class drawn from the transition table's weights.

Every pixel that ends up with a different class must be an allowed transition ``(class in date 1 -> class in
date 2)`` of the table (weight > 0); an edit that would break this is rejected. Edits are applied until the
changed-area fraction reaches a target drawn from ``area_fraction``; an edit that would overshoot the upper bound
is clipped to a square window inside the object (a partial demolition or conversion) and rejected if it still
overshoots. Ignore pixels are never edited. Every accepted edit is recorded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import ConfigError

__all__ = ["EditConfig", "transition_matrix", "simulate_change", "OPS"]

OPS = ("remove", "insert", "convert")


@dataclass
class EditConfig:
    """Settings of :func:`simulate_change`.

    Attributes:
        area_fraction: ``(low, high)`` of the changed fraction of valid pixels; the target is uniform within it.
        ops: relative frequency of each edit kind (``remove``, ``insert``, ``convert``); 0 disables one.
        transitions: ``{from: {to: weight}}`` with class names or indices; ``None`` allows every change with
            weight 1. Unlisted pairs are forbidden.
        min_object_pixels: smaller components are not edited (speckle).
        max_attempts: proposals tried per map before giving up on the target.
        retries: ``generate`` only: fresh draws (crop, donors, edits) of a pair whose edits all failed.
    """

    area_fraction: tuple[float, float] = (0.05, 0.3)
    ops: Mapping[str, float] = field(default_factory=lambda: {"remove": 1.0, "insert": 1.0, "convert": 1.0})
    transitions: Mapping[Any, Mapping[Any, float]] | None = None
    min_object_pixels: int = 16
    max_attempts: int = 60
    retries: int = 3

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.area_fraction)
        if not 0.0 <= lo <= hi <= 1.0:
            raise ConfigError(f"area_fraction (--area): expected 0 <= low <= high <= 1, got {lo:g} {hi:g}")
        self.area_fraction = (lo, hi)
        for key, low in (("min_object_pixels", 0), ("max_attempts", 1), ("retries", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"{key}: expected an integer >= {low}, got {value}")
        unknown = set(self.ops) - set(OPS)
        if unknown or not any(float(w) > 0 for w in self.ops.values()):
            raise ConfigError(f"ops: expected positive weights for some of {OPS}, got {dict(self.ops)}")


def transition_matrix(transitions: Mapping[Any, Mapping[Any, float]] | None, names: Sequence[str]) -> np.ndarray:
    """``(K, K)`` weights ``T[from, to]`` (diagonal 0) from a table keyed by class names or indices.

    Raises:
        ConfigError: an unknown class or a negative weight.
    """
    k = len(names)
    if transitions is None:
        return np.ones((k, k)) - np.eye(k)

    def index(c: Any) -> int:
        if isinstance(c, (int, np.integer)) and 0 <= int(c) < k:
            return int(c)
        if isinstance(c, str) and c in names:
            return list(names).index(c)
        raise ConfigError(f"transition table: unknown class {c!r}; classes: {list(names)}")

    table = np.zeros((k, k))
    for src, row in transitions.items():
        for dst, w in row.items():
            if float(w) < 0:
                raise ConfigError(f"transition table: negative weight {w} for {src} -> {dst}")
            table[index(src), index(dst)] = float(w)
    np.fill_diagonal(table, 0.0)
    return table


def _pick_component(m: np.ndarray, valid: np.ndarray, classes: Sequence[int], min_px: int, max_px: float,
                    rng: np.random.Generator) -> tuple[int, np.ndarray] | None:
    """``(class, bool mask)`` of a random connected component of the given classes with ``min_px`` to
    ``max_px`` pixels (``None`` if there is none); only the chosen component's mask is materialised."""
    found: list[tuple[int, np.ndarray, int]] = []
    for k in classes:
        lab, n = ndimage.label((m == k) & valid)
        if n == 0:
            continue
        sizes = np.bincount(lab.ravel())
        found += [(int(k), lab, int(i)) for i in np.flatnonzero((sizes >= min_px) & (sizes <= max_px)) if i > 0]
    if not found:
        return None
    cls, lab, i = found[int(rng.integers(len(found)))]
    return cls, lab == i


def _clip(region: np.ndarray, budget: int, rng: np.random.Generator) -> np.ndarray:
    """The part of ``region`` inside a square of ``budget`` pixels centred on one of its pixels."""
    side = int(np.sqrt(max(budget, 0)))
    if side < 1:
        return np.zeros_like(region)
    ys, xs = np.nonzero(region)
    j = rng.integers(len(ys))
    y0, x0 = max(ys[j] - side // 2, 0), max(xs[j] - side // 2, 0)
    window = np.zeros_like(region)
    window[y0:y0 + side, x0:x0 + side] = True
    return region & window


def _propose(op: str, m: np.ndarray, valid: np.ndarray, table: np.ndarray, donors: Sequence[np.ndarray],
             cfg: EditConfig, rng: np.random.Generator, ignore_index: int) -> tuple[np.ndarray, int, dict] | None:
    """One candidate edit: ``(region, new class, record)`` or ``None`` when the map offers none."""
    k = table.shape[0]
    if op == "insert":
        pool = [d for d in donors if d.shape == m.shape] or [m]
        d_i = int(rng.integers(len(pool)))
        donor = pool[d_i]
        d_valid = donor != ignore_index
        present = [c for c in np.unique(donor[d_valid]) if table[:, c].any()]
        picked = _pick_component(donor, d_valid, present, cfg.min_object_pixels, 0.5 * donor.size, rng)
        if picked is None:
            return None
        cls, obj = picked
        ys, xs = np.nonzero(obj)
        dy = int(rng.integers(-ys.min(), m.shape[0] - ys.max()))
        dx = int(rng.integers(-xs.min(), m.shape[1] - xs.max()))
        region = np.zeros_like(obj)
        region[ys + dy, xs + dx] = True
        return region & valid, cls, {"op": "insert", "to": cls, "donor": d_i if donors else None, "offset": [dy, dx]}
    sources = [c for c in np.unique(m[valid]) if table[c].any()]
    picked = _pick_component(m, valid, sources, cfg.min_object_pixels, np.inf, rng)
    if picked is None:
        return None
    cls, obj = picked
    if op == "convert":
        new = int(rng.choice(k, p=table[cls] / table[cls].sum()))
        return obj, new, {"op": "convert", "from": cls, "to": new}
    ring = ndimage.binary_dilation(obj, iterations=2) & ~obj & valid
    counts = np.bincount(m[ring].astype(np.int64), minlength=k)[:k] * (table[cls] > 0)
    if not counts.any():
        return None
    new = int(np.argmax(counts))
    return obj, new, {"op": "remove", "from": cls, "to": new}


def simulate_change(
    mask: np.ndarray, rng: np.random.Generator, names: Sequence[str], cfg: EditConfig | None = None,
    donors: Sequence[np.ndarray] = (), ignore_index: int = 255,
) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, Any]]:
    """Edit a date-1 class map into a date-2 map.

    Args:
        mask: ``(H, W)`` class indices (``ignore_index`` where unknown).
        rng: the only source of randomness (equal seeds give equal edits).
        names: class names (their count is the number of classes).
        cfg: edit settings.
        donors: other class maps that objects may be inserted from.
        ignore_index: value of unlabelled pixels.

    Returns:
        ``(mask2, edits, info)``: the edited map, one record per accepted edit (op, classes, pixels changed,
        bounding box) and ``{"target_fraction", "changed_fraction", "reached", "attempts"}``.
    """
    cfg = cfg or EditConfig()
    table = transition_matrix(cfg.transitions, names)
    allowed = table > 0
    m1 = np.asarray(mask)
    valid = m1 != ignore_index
    n_valid = int(valid.sum())
    lo, hi = cfg.area_fraction
    target = rng.uniform(lo, hi) * n_valid
    ceiling = int(np.floor(hi * n_valid))
    ops = [o for o in OPS if float(cfg.ops.get(o, 0.0)) > 0]
    weights = np.array([float(cfg.ops[o]) for o in ops])
    m2, changed, edits, attempts = m1.copy(), 0, [], 0
    while changed < target and attempts < cfg.max_attempts:
        attempts += 1
        prop = _propose(str(rng.choice(ops, p=weights / weights.sum())), m2, valid, table, donors, cfg, rng,
                        ignore_index)
        if prop is None:
            continue
        region, new, record = prop
        gain = int((region & (m1 != new)).sum())
        if changed + gain > ceiling:
            region = _clip(region, ceiling - changed, rng)
            record["clipped"] = True
        if not region.any():
            continue
        cand = m2.copy()
        cand[region] = new
        diff = cand != m1
        if not allowed[m1[diff], cand[diff]].all():
            continue
        n_changed = int(diff.sum())
        if n_changed > ceiling or n_changed <= changed:
            continue
        ys, xs = np.nonzero(region)
        record.update(pixels=n_changed - changed, bbox=[int(ys.min()), int(xs.min()), int(ys.max()) + 1,
                                                         int(xs.max()) + 1])
        for key in ("from", "to"):
            if record.get(key) is not None:
                record[key] = {"index": int(record[key]), "name": str(names[int(record[key])])}
        edits.append(record)
        m2, changed = cand, n_changed
    denom = max(n_valid, 1)
    info = {"target_fraction": round(target / denom, 6), "changed_fraction": round(changed / denom, 6),
            "reached": changed >= target, "attempts": attempts}
    return m2, edits, info
