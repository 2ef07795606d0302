"""Training curves from a Lightning ``CSVLogger`` history, rendered to PNG bytes.

Lightning writes one sparse row per logging event (``train/loss_step`` on some rows, ``val/f1`` on epoch-end rows),
so every column is read as its own (step, value) series and empty cells are skipped. Plots use matplotlib's
object API (``Figure``, Agg) rather than pyplot, so that rendering neither needs a display nor touches global
state of a host application.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

logger = logging.getLogger(__name__)

_X_COLUMNS = ("step", "epoch")
_STAGE_PREFIXES = ("train/", "val/", "valid/", "validation/", "test/")
_STAGE_STYLE = {"train": ("#1f77b4", "-"), "val": ("#d62728", "-"), "test": ("#2ca02c", "--")}

Series = dict[str, tuple[list[float], list[float]]]


def load_history(history: str | Path | Sequence[Mapping[str, object]] | None) -> list[dict[str, object]]:
    """Rows of a training history: a ``metrics.csv`` path, a log folder holding one, or rows as dicts.

    A missing file gives an empty list (logged), because a report without curves is still useful.
    """
    if history is None:
        return []
    if isinstance(history, (str, Path)):
        path = Path(history)
        if path.is_dir():
            found = sorted(path.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
            if not found:
                logger.warning("%s: no metrics.csv found; the report has no training curves", path)
                return []
            path = found[-1]
        if not path.is_file():
            logger.warning("%s: training history not found; the report has no training curves", path)
            return []
        with open(path, newline="", encoding="utf-8") as fh:
            return [dict(row) for row in csv.DictReader(fh)]
    return [dict(row) for row in history]


def _number(value: object) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def history_series(rows: Sequence[Mapping[str, object]]) -> Series:
    """Column name -> (x, y) over rows where that column has a number; x is ``step`` (else epoch, else row)."""
    series: Series = {}
    for i, row in enumerate(rows):
        x = next((v for v in (_number(row.get(c)) for c in _X_COLUMNS) if v is not None), float(i))
        for key, value in row.items():
            if key is None or key in _X_COLUMNS:
                continue
            y = _number(value)
            if y is not None:
                xs, ys = series.setdefault(str(key), ([], []))
                xs.append(x)
                ys.append(y)
    return series


def _split_name(name: str) -> tuple[str, str]:
    """``'val/f1'`` -> ``('val', 'f1')``; ``'train/loss_step'`` -> ``('train', 'loss')``."""
    stage = ""
    for prefix in _STAGE_PREFIXES:
        if name.startswith(prefix):
            stage, name = prefix[:-1], name[len(prefix):]
            break
    stage = {"valid": "val", "validation": "val"}.get(stage, stage)
    for suffix in ("_step", "_epoch"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return stage, name


_KEY_METRICS = ("f1", "iou", "kappa", "precision", "recall", "oa", "sek", "fscd", "miou_scd", "score", "miou_sc")


def group_panels(series: Series, min_points: int = 2, max_panels: int = 9) -> dict[str, list[str]]:
    """Group columns into one panel per quantity (train and val loss share a panel), dropping single points.

    At most ``max_panels`` panels: the total loss, the headline metrics, then the rest (a semantic run logs
    dozens of series; drawing them all costs tens of seconds and hides what matters).
    """
    panels: dict[str, list[str]] = {}
    for name, (xs, _) in series.items():
        if len(xs) < min_points:
            continue
        panels.setdefault(_split_name(name)[1], []).append(name)
    # Losses first, metrics next, learning rates last: the order one reads a training run in.
    chosen = sorted(panels, key=_panel_priority)[:max_panels]
    return {q: panels[q] for q in sorted(chosen, key=_panel_rank)}


def _panel_rank(quantity: str) -> int:
    return 0 if "loss" in quantity else 2 if quantity.startswith("lr") else 1


def _panel_priority(quantity: str) -> tuple[int, int]:
    if quantity == "loss":
        return (0, 0)
    if quantity in _KEY_METRICS:
        return (1, _KEY_METRICS.index(quantity))
    if quantity.startswith("lr"):
        return (2, 0)
    return (3 if "loss" not in quantity else 2, 0)


def plot_history(rows: Sequence[Mapping[str, object]], dpi: int = 100) -> bytes | None:
    """One PNG figure with a panel per quantity, or ``None`` when nothing plottable (or no matplotlib)."""
    series = history_series(rows)
    panels = group_panels(series)
    if not panels:
        return None
    try:
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed; the report has no training curves")
        return None
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.0 * nrows), dpi=dpi, layout="constrained")
    for i, (quantity, names) in enumerate(panels.items()):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for name in sorted(names):
            xs, ys = series[name]
            stage, _ = _split_name(name)
            color, style = _STAGE_STYLE.get(stage, ("#555555", "-"))
            per_step = name.endswith("_step")
            ax.plot(
                xs, ys, style, color=color, label=name,
                linewidth=0.8 if per_step else 1.6, alpha=0.35 if per_step else 1.0,
                marker=None if per_step or len(xs) > 40 else "o", markersize=3,
            )
        if quantity.startswith("lr") and all(v > 0 for n in names for v in series[n][1]):
            ax.set_yscale("log")
        ax.set_title(quantity, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
