"""HTML tables of the report: metrics, confusion matrix, class legend and from-to transition matrix.

Every function returns an HTML fragment with all user text escaped. Fractional metrics (precision, F1, ...)
are given as fractions in [0, 1] by ``changekit.metrics`` and shown as percentages with two decimals, the
convention of change-detection papers.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping, Sequence
from html import escape

import numpy as np

logger = logging.getLogger(__name__)

BINARY_KEYS = ("precision", "recall", "f1", "iou", "oa", "kappa")
#: Metrics given as fractions and shown as percentages (matched on the part after the last '/').
PERCENT_KEYS = frozenset(BINARY_KEYS) | {"miou", "mf1", "sek", "fscd", "score", "acc", "accuracy"}
HEADLINE_KEYS = ("f1", "iou", "kappa", "oa", "miou", "sek", "fscd", "score")
#: Cards of a semantic-change evaluation: SeK, Fscd and mIoU (SECOND protocol) before the binary F1.
SEMANTIC_HEADLINE_KEYS = ("sek", "fscd", "miou_scd", "f1")
_PRETTY = {
    "precision": ("Precision", "TP / (TP + FP): share of detected change that is real"),
    "recall": ("Recall", "TP / (TP + FN): share of real change that is detected"),
    "f1": ("F1", "harmonic mean of precision and recall"),
    "iou": ("IoU", "TP / (TP + FP + FN) of the change class"),
    "oa": ("OA", "overall accuracy over all scored pixels"),
    "kappa": ("Kappa", "Cohen's kappa: agreement beyond chance"),
    "miou": ("mIoU", "mean intersection over union over classes"),
    "mf1": ("mF1", "mean F1 over classes"),
    "sek": ("SeK", "separated kappa of semantic change"),
    "fscd": ("Fscd", "F1 of semantic change"),
    "miou_scd": ("mIoU", "mean of the no-change and change IoU (SECOND protocol)"),
    "score": ("Score", "combined score"),
    "loss": ("Loss", "mean loss"),
}
BINARY_CLASS_NAMES = ("no change", "change")


def scalar(value: object) -> float | None:
    """A plain float from Python, numpy or torch scalars; ``None`` for anything else."""
    if isinstance(value, bool):
        return None
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()  # type: ignore[union-attr]
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return None


def _vector(value: object) -> list[float] | None:
    if isinstance(value, (str, bytes, Mapping)):
        return None
    if hasattr(value, "tolist"):
        value = value.tolist()  # type: ignore[union-attr]
    if isinstance(value, Sequence) and value and all(scalar(v) is not None for v in value):
        return [float(scalar(v)) for v in value]  # type: ignore[arg-type]
    return None


def base_key(key: str) -> str:
    return key.rsplit("/", 1)[-1].lower()


def is_percent(key: str) -> bool:
    """Fractional metric? ``f1``, ``val/iou``, ``iou_change``, ``per_class_f1`` yes; anything with ``loss`` no."""
    tokens = base_key(key).split("_")
    return "loss" not in tokens and (base_key(key) in PERCENT_KEYS or any(t in PERCENT_KEYS for t in tokens))


def fmt_value(key: str, value: float) -> str:
    """Percent with two decimals for fractional metrics, a compact plain number otherwise."""
    if math.isnan(value):
        return "n/a"
    if is_percent(key):
        return f"{100.0 * value:.2f}"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:,.4f}" if abs(value) < 1e4 else f"{value:,.1f}"


def pretty_name(key: str) -> str:
    """``'test/f1'`` -> ``'F1 (test)'`` (escaped)."""
    stage, _, base = key.rpartition("/")
    name = _PRETTY.get(base.lower(), (base, ""))[0]
    return escape(f"{name} ({stage})" if stage else name)


def split_metrics(metrics: Mapping[str, object]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Scalars in display order (binary keys first) and per-class vectors; other values are skipped."""
    scalars: dict[str, float] = {}
    vectors: dict[str, list[float]] = {}
    for key, value in metrics.items():
        number = scalar(value)
        if number is not None:
            scalars[str(key)] = number
        elif (vec := _vector(value)) is not None:
            vectors[str(key)] = vec
        else:
            logger.debug("metric %r is neither a number nor a list of numbers; not shown", key)
    rank = {k: i for i, k in enumerate(BINARY_KEYS)}
    order = sorted(scalars, key=lambda k: (rank.get(base_key(k), len(rank)), list(scalars).index(k)))
    return {k: scalars[k] for k in order}, vectors


def headline_cards(scalars: Mapping[str, float]) -> str:
    """Up to four big numbers for a first glance: F1, IoU, kappa, OA, or SeK, Fscd, mIoU, F1 when the metrics
    hold semantic-change figures."""
    picked: list[str] = []
    semantic = any(base_key(k) == "sek" for k in scalars)
    for wanted in SEMANTIC_HEADLINE_KEYS if semantic else HEADLINE_KEYS:
        picked += [k for k in scalars if base_key(k) == wanted and k not in picked][:1]
    cards = [
        f'<div class="card"><div class="card-value">{fmt_value(k, scalars[k])}'
        f'{"<small>%</small>" if is_percent(k) and not math.isnan(scalars[k]) else ""}</div>'
        f'<div class="card-label">{pretty_name(k)}</div></div>'
        for k in picked[:4]
    ]
    return f'<div class="cards">{"".join(cards)}</div>' if cards else ""


def _unit(key: str, value: float) -> str:
    return '<span class="unit">%</span>' if is_percent(key) and not math.isnan(value) else ""


def metrics_table(scalars: Mapping[str, float]) -> str:
    rows = []
    for key, value in scalars.items():
        desc = escape(_PRETTY.get(base_key(key), ("", ""))[1])
        rows.append(
            f'<tr><th scope="row">{pretty_name(key)}</th>'
            f'<td class="num">{fmt_value(key, value)}{_unit(key, value)}</td><td class="muted">{desc}</td></tr>'
        )
    return (
        '<table class="metrics"><thead><tr><th>Metric</th><th class="num">Value</th><th>Definition</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )


def class_labels(k: int, class_names: Sequence[str] | None) -> list[str]:
    """Names for ``k`` classes: the given ones, binary names for two classes, else indices."""
    if class_names is not None and len(class_names) == k:
        return [str(n) for n in class_names]
    if k == 2:
        return list(BINARY_CLASS_NAMES)
    return [str(i) for i in range(k)]


def per_class_table(vectors: Mapping[str, list[float]], class_names: Sequence[str] | None) -> str:
    """One row per class, one column per per-class metric (only vectors of the most common length)."""
    if not vectors:
        return ""
    lengths = [len(v) for v in vectors.values()]
    k = max(set(lengths), key=lengths.count)
    keys = [key for key, v in vectors.items() if len(v) == k]
    names = class_labels(k, class_names)
    head = "".join(f'<th class="num">{pretty_name(key)}</th>' for key in keys)
    body = "".join(
        f'<tr><th scope="row">{escape(names[i])}</th>'
        + "".join(
            f'<td class="num">{fmt_value(key, vectors[key][i])}'
            f'{_unit(key, vectors[key][i])}</td>'
            for key in keys
        )
        + "</tr>"
        for i in range(k)
    )
    return (
        f'<h3>Per class</h3><table class="metrics"><thead><tr><th>Class</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _square_counts(matrix: object, name: str) -> np.ndarray:
    arr = np.asarray(matrix, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"{name}: expected a square (K, K) matrix, got shape {arr.shape}")
    if (arr < 0).any() or not np.isfinite(arr).all():
        raise ValueError(f"{name}: counts must be finite and non-negative")
    return arr


def _count(value: float) -> str:
    return f"{int(round(value)):,}"


def _swatch(color: Sequence[int] | None) -> str:
    if color is None:
        return ""
    r, g, b = (int(c) for c in color)
    return f'<span class="swatch" style="background:rgb({r},{g},{b})"></span>'


def confusion_table(confusion: object, class_names: Sequence[str] | None = None) -> str:
    """Rows ground truth, columns prediction; each cell shows the count and its share of the row."""
    cm = _square_counts(confusion, "confusion")
    names = class_labels(len(cm), class_names)
    row_sum = cm.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pct = np.where(row_sum[:, None] > 0, 100.0 * cm / row_sum[:, None], np.nan)
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    rows = []
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            share = 0.0 if np.isnan(pct[i, j]) else pct[i, j] / 100.0
            rgb = "44,123,182" if i == j else "215,48,39"
            pct_text = "&ndash;" if np.isnan(pct[i, j]) else f"{pct[i, j]:.2f}&#8239;%"
            cells.append(
                f'<td style="background:rgba({rgb},{0.06 + 0.5 * share:.3f})">'
                f'<span class="count">{_count(cm[i, j])}</span><span class="pct">{pct_text}</span></td>'
            )
        rows.append(
            f'<tr><th scope="row">{escape(name)}</th>{"".join(cells)}<td class="total">{_count(row_sum[i])}</td></tr>'
        )
    col_sum = "".join(f'<td class="total">{_count(v)}</td>' for v in cm.sum(axis=0))
    return (
        '<table class="matrix"><thead><tr><th class="corner">ground truth &darr; / prediction &rarr;</th>'
        f'{head}<th>total</th></tr></thead><tbody>{"".join(rows)}'
        f'<tr class="totals"><th scope="row">total</th>{col_sum}<td class="total">{_count(cm.sum())}</td></tr>'
        "</tbody></table>"
    )


def class_legend(class_names: Sequence[str], palette: np.ndarray) -> str:
    items = "".join(
        f'<li>{_swatch(palette[i])}<span class="idx">{i}</span> {escape(str(name))}</li>'
        for i, name in enumerate(class_names)
    )
    return f'<ul class="legend">{items}</ul>'


def _area_unit(max_area_m2: float) -> tuple[str, float]:
    return ("ha", 1e-4) if max_area_m2 >= 1e4 else ("m&sup2;", 1.0)


def transition_table(
    transitions: object, class_names: Sequence[str], palette: np.ndarray | None, pixel_area: float | None
) -> str:
    """From-to matrix of the pixels the model marks as changed, with pixel counts and areas.

    ``transitions[i, j]`` counts the pixels whose change map says "changed" and whose predicted class is ``i``
    at date A and ``j`` at date B (``changekit.engine.evaluate.predicted_transitions``: only pixels labelled at
    both dates are scored). Pixels predicted unchanged are not in the table; a diagonal cell holds pixels marked
    changed although both dates got the same class.
    """
    tm = _square_counts(transitions, "transitions")
    if pixel_area is not None and not (pixel_area > 0 and math.isfinite(pixel_area)):
        raise ValueError(f"pixel_area must be a positive number of square metres, got {pixel_area}")
    names = class_labels(len(tm), class_names)
    colors = [palette[i] if palette is not None and i < len(palette) else None for i in range(len(tm))]
    unit, factor = _area_unit(tm.max() * pixel_area) if pixel_area else ("", 1.0)
    off = ~np.eye(len(tm), dtype=bool)
    changed = tm[off].sum()

    def cell(count: float, cls: str = "", style: str = "") -> str:
        area = f'<span class="pct">{count * pixel_area * factor:,.2f}&#8239;{unit}</span>' if pixel_area else ""
        return f'<td class="{cls}" style="{style}"><span class="count">{_count(count)}</span>{area}</td>'

    head = "".join(f"<th>{_swatch(c)}{escape(n)}</th>" for n, c in zip(names, colors))
    rows = []
    for i, name in enumerate(names):
        cells = []
        for j in range(len(names)):
            if i == j:
                cells.append(cell(tm[i, j], "diag"))
            else:
                share = tm[i, j] / changed if changed > 0 else 0.0
                cells.append(cell(tm[i, j], style=f"background:rgba(230,120,20,{0.04 + 0.6 * share:.3f})"))
        rows.append(
            f'<tr><th scope="row">{_swatch(colors[i])}{escape(name)}</th>{"".join(cells)}'
            f"{cell(tm[i].sum(), 'total')}</tr>"
        )
    totals = "".join(cell(v, "total") for v in tm.sum(axis=0))
    summary = (f"Pixels the model marks as changed, by predicted class at date A (rows) and date B (columns); "
               f"only pixels labelled at both dates are counted, pixels predicted unchanged are not. "
               f"Marked changed: <b>{_count(tm.sum())}</b>, of which with a change of class (off-diagonal): "
               f"<b>{_count(changed)}</b>")
    if pixel_area:
        summary += (
            f" &middot; area <b>{changed * pixel_area:,.0f}&#8239;m&sup2;</b>"
            f" = <b>{changed * pixel_area * 1e-4:,.2f}&#8239;ha</b> (pixel area {pixel_area:g}&#8239;m&sup2;)"
        )
    return (
        f'<p class="muted">{summary}. Grey diagonal cells: marked changed, yet the same class predicted at both '
        "dates.</p>"
        '<table class="matrix transitions"><thead><tr><th class="corner">date A &darr; / date B &rarr;</th>'
        f'{head}<th>total</th></tr></thead><tbody>{"".join(rows)}'
        f'<tr class="totals"><th scope="row">total</th>{totals}{cell(tm.sum(), "total")}</tr></tbody></table>'
    )
