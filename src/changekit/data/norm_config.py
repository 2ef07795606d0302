"""``data.bands``, ``data.normalize`` and ``data.radiometric``: parsed, then resolved against the training data.

``data.normalize`` says how raw pixels become the network's input:

=========================  ============================================================================
``auto`` (default)         8-bit data: divided by 255; float data: taken as is (already 0..1); any other
                           integer data (uint16 reflectance...): ``meanstd`` from the training statistics.
                           Never a silent division of uint16 by 65,535.
``dtype``                  divided by the dtype's full scale (255, 65,535, 1 for floats), as asked.
``scale:<N>``              divided by N, e.g. ``scale:10000`` for Sentinel-2 L1C/L2A reflectance.
``percentile:<lo>,<hi>``   clipped per band to the training data's lo-th and hi-th percentiles and scaled to 0..1.
``meanstd``                standardised per band with the training data's mean and standard deviation.
=========================  ============================================================================

After ``dtype``, ``scale`` and ``percentile`` the values are normalised with ``data.mean`` / ``data.std`` (ImageNet's
for 3 bands by default, 0.5 / 0.25 otherwise). Statistics come from ``data.stats`` (a ``changekit data stats``
JSON file) or are computed from the training split when a mode needs them. ``data.radiometric: standardize``
standardises each image by its own statistics, so it stands alone (``data.normalize`` must stay ``auto``).

:func:`resolve_normalisation` turns the request into a :class:`~changekit.data.normalize.Normalisation` with every
number filled in; training stores it as ``data.resolved_normalize`` and every later reader applies exactly it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config_types import config_error, show
from ..errors import ConfigError
from .radiometric import RADIOMETRIC_MODES

log = logging.getLogger(__name__)

NORMALIZE_MODES = ("auto", "dtype", "scale", "percentile", "meanstd")
DEFAULT_PERCENTILES = (1.0, 99.0)
_USAGE = "auto, dtype, meanstd, scale:<N> (e.g. scale:10000) or percentile:<lo>,<hi> (e.g. percentile:1,99)"


@dataclass(frozen=True)
class NormalizeRequest:
    """A parsed ``data.normalize`` value."""

    mode: str = "auto"
    scale: float | None = None
    low: float = DEFAULT_PERCENTILES[0]
    high: float = DEFAULT_PERCENTILES[1]

    def text(self) -> str:
        """The canonical spelling (``scale:10000``, ``percentile:1,99``)."""
        if self.mode == "scale":
            return f"scale:{self.scale:g}"
        if self.mode == "percentile":
            return f"percentile:{self.low:g},{self.high:g}"
        return self.mode

    @property
    def needs_stats(self) -> bool:
        return self.mode in ("percentile", "meanstd")


def parse_normalize(value: Any, key: str = "data.normalize") -> NormalizeRequest:
    """Parse ``auto | dtype | meanstd | scale:<N> | percentile:<lo>,<hi>``.

    Raises:
        ConfigError: naming ``key``, the value and the accepted forms.
    """
    if not isinstance(value, str) or not value.strip():
        raise config_error(key, f"{show(value)} is not one of {_USAGE}")
    name, _, arg = (p.strip() for p in value.strip().partition(":"))
    name = name.lower()
    try:
        if name in ("auto", "dtype", "meanstd") and not arg:
            return NormalizeRequest(name)
        if name == "scale" and arg:
            scale = float(arg)
            if not np.isfinite(scale) or scale <= 0:
                raise ValueError
            return NormalizeRequest("scale", scale=scale)
        if name == "percentile":
            lo, hi = (float(v) for v in arg.split(",")) if arg else DEFAULT_PERCENTILES
            if not 0 <= lo < hi <= 100:
                raise ValueError
            return NormalizeRequest("percentile", low=lo, high=hi)
    except ValueError:
        pass
    from ..errors import suggest

    raise config_error(key, f"{show(value)} is not one of {_USAGE}{suggest(name, NORMALIZE_MODES)}")


def parse_bands(value: Any, key: str = "data.bands") -> tuple[int, ...] | None:
    """``null``, a list of 1-based band indices, or ``"4,3,2"`` -> a tuple (``None``: all bands).

    Raises:
        ConfigError: not positive integers (names ``key`` and the value).
    """
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else value
    try:
        if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not items:
            raise ValueError
        bands = tuple(int(str(v).strip()) if isinstance(v, str) else v for v in items)
        if not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in bands):
            raise ValueError
    except ValueError:
        raise config_error(key, f"{show(value)} is not a list of 1-based band indices (e.g. [4, 3, 2] or "
                                "'4,3,2')") from None
    return bands


def check_radiometric(value: Any, key: str = "data.radiometric") -> str:
    """``data.radiometric``: one of :data:`~changekit.data.radiometric.RADIOMETRIC_MODES`."""
    if value not in RADIOMETRIC_MODES:
        from ..errors import suggest

        raise config_error(key, f"{show(value)} is not one of {', '.join(RADIOMETRIC_MODES)}"
                                f"{suggest(str(value), RADIOMETRIC_MODES)}")
    return value


# ---------------------------------------------------------------------------------------------- statistics
def load_stats(path: str | Path, bands: Sequence[int] | None, key: str = "data.stats") -> list[dict[str, Any]]:
    """The per-band rows of a ``changekit data stats`` JSON file, checked against the selected ``bands``.

    Raises:
        ConfigError: the file is not such a JSON, or it describes other bands.
    """
    from .io import require_file

    path = require_file(path, "statistics file")
    try:
        doc = json.loads(path.read_text())
        rows = doc["bands"]
        for row in rows:
            float(row["mean"]), float(row["std"]), dict(row["percentiles"])  # noqa: B018 - shape check
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{key}: {path} is not a `changekit data stats` file ({exc.__class__.__name__}: "
                          f"{exc})") from None
    found = [int(r["band"]) for r in rows]
    if bands is not None and found != list(bands):
        raise ConfigError(f"{key}: {path} describes bands {found}, but data.bands is {list(bands)}; run `changekit "
                          f"data stats --bands {','.join(map(str, bands))}`")
    return rows


def _percentile(rows: list[dict[str, Any]], p: float, source: str) -> np.ndarray:
    out = []
    for row in rows:
        table = {float(k): float(v) for k, v in row["percentiles"].items()}
        if float(p) not in table:
            raise ConfigError(f"data.stats: {source} has no {p:g}th percentile (it has {sorted(table)}); choose "
                              "one of those in data.normalize, or remove data.stats to compute them")
        out.append(table[float(p)])
    return np.asarray(out, np.float64)


def _kept(row: dict[str, Any], percents: set[float]) -> dict[str, Any]:
    """A statistics row with only the percentiles a resolved normalisation uses (the checkpoint stays small)."""
    kept = {k: v for k, v in row["percentiles"].items() if float(k) in percents}
    return {**{k: v for k, v in row.items() if k != "percentiles"}, "percentiles": kept}


# ---------------------------------------------------------------------------------------------- resolution
def resolve_normalisation(data: dict[str, Any], dtype: Any, stats: list[dict[str, Any]] | None = None,
                          stats_source: str = "the training data") -> Any:
    """The full :class:`~changekit.data.normalize.Normalisation` a ``data`` section asks for.

    Args:
        data: the resolved ``data`` section (``bands``, ``normalize``, ``radiometric``, ``mean``, ``std``).
        dtype: the training images' dtype.
        stats: per-band statistics rows (``data stats`` format) when the request needs or has them.
        stats_source: where ``stats`` came from, for messages.

    Raises:
        ConfigError: a combination that cannot work (``radiometric: standardize`` with another normalisation,
            statistics missing for a mode that needs them).
    """
    from .normalize import Normalisation, dtype_scale

    req = parse_normalize(data.get("normalize", "auto"))
    dtype = np.dtype(dtype)
    bands = parse_bands(data.get("bands"))
    radiometric = check_radiometric(data.get("radiometric") or "none")
    keep = {1.0, 50.0, 99.0} | ({req.low, req.high} if req.mode == "percentile" else set())
    common = dict(bands=bands, radiometric=radiometric, dtype=dtype.name, request=req.text(),
                  stats=None if stats is None else tuple(_kept(row, keep) for row in stats))
    if radiometric == "standardize":
        if req.mode != "auto":
            raise ConfigError(f"data.normalize: '{req.text()}' cannot be combined with data.radiometric: "
                              "standardize (each image is standardised by its own statistics, nothing else is "
                              "applied); set data.normalize: auto")
        return Normalisation(mean=(0.0,), std=(1.0,), scale=(1.0,), offset=(0.0,), mode="standardize", **common)
    mode = req.mode
    if mode == "auto":
        integer = np.issubdtype(dtype, np.integer) and dtype != np.uint8
        mode = "meanstd" if integer else "dtype"
    if mode in ("dtype", "scale"):
        scale = req.scale if mode == "scale" else dtype_scale(dtype)
        return Normalisation(mean=tuple(data["mean"]), std=tuple(data["std"]), scale=(float(scale),),
                             offset=(0.0,), mode=mode, **common)
    if stats is None:
        raise ConfigError(f"data.normalize: '{req.text() if req.mode != 'auto' else 'auto'}' on {dtype.name} data "
                          "needs training statistics; set data.train (or data.stats to a `changekit data stats` "
                          "file)")
    if mode == "meanstd":
        mean = np.asarray([float(r["mean"]) for r in stats])
        std = np.asarray([float(r["std"]) for r in stats])
        std = np.where(std > 0, std, 1.0)
        n = len(stats)
        return Normalisation(mean=(0.0,) * n, std=(1.0,) * n, scale=tuple(std), offset=tuple(mean), mode="meanstd",
                             **common)
    lo, hi = _percentile(stats, req.low, stats_source), _percentile(stats, req.high, stats_source)
    span = np.where(hi > lo, hi - lo, 1.0)
    return Normalisation(mean=tuple(data["mean"]), std=tuple(data["std"]), scale=tuple(span), offset=tuple(lo),
                         clip=(tuple(lo), tuple(hi)), mode="percentile", **common)

