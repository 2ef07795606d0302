"""Assembling the self-contained HTML report and writing it atomically.

The page has no external resources at all (inline CSS, images as base64 PNG data URIs, system fonts), so it can
be mailed, archived next to a checkpoint, or opened offline years later and look the same.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path

import numpy as np

from ..data.io import atomic_path
from .gallery import gallery
from .overlays import as_palette, png_bytes_uri
from .plots import load_history, plot_history
from .tables import (
    class_legend,
    confusion_table,
    headline_cards,
    metrics_table,
    per_class_table,
    split_metrics,
    transition_table,
)

logger = logging.getLogger(__name__)

_CSS = """
:root{--fg:#1d2733;--muted:#6b7785;--line:#dde3ea;--bg:#f5f7fa;--card:#fff;--accent:#2c7bb6}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.5 -apple-system,"Segoe UI",Roboto,
 "Helvetica Neue",Arial,sans-serif}
main{max-width:1200px;margin:0 auto;padding:24px 28px 48px}
header{border-bottom:3px solid var(--accent);padding-bottom:12px;margin-bottom:8px}
h1{font-size:26px;margin:0 0 4px;font-weight:600}
h2{font-size:18px;margin:0 0 12px;font-weight:600}
h3{font-size:15px;margin:18px 0 8px;font-weight:600}
.sub{color:var(--muted);font-size:13px}
nav{margin:10px 0 18px;font-size:13px}
nav a{color:var(--accent);text-decoration:none;margin-right:14px}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:18px 22px;margin:16px 0}
.muted{color:var(--muted)}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:6px 12px;border-bottom:1px solid var(--line);text-align:left;vertical-align:middle}
thead th{font-size:12px;color:var(--muted);font-weight:600}
td.num,th.num{text-align:right}
.unit{color:var(--muted);margin-left:3px;font-size:12px}
table.kv th{color:var(--muted);font-weight:500;padding-right:24px}
table.matrix td{text-align:right;border:1px solid #fff;min-width:110px}
table.matrix th.corner{font-size:11px;font-weight:500}
table.matrix .count{display:block;font-weight:600}
table.matrix .pct{display:block;font-size:11px;color:var(--muted)}
table.matrix td.total{background:var(--bg);color:var(--muted)}
table.matrix td.diag{background:#e4e7eb}
table.matrix tr.totals th{color:var(--muted)}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin-bottom:16px}
.card{flex:1 1 150px;border:1px solid var(--line);border-radius:8px;padding:12px 16px;background:var(--bg)}
.card-value{font-size:28px;font-weight:600;color:var(--accent)}
.card-value small{font-size:15px;margin-left:2px}
.card-label{font-size:12px;color:var(--muted);letter-spacing:.03em}
.legend{list-style:none;padding:0;margin:0 0 14px;display:flex;flex-wrap:wrap;gap:6px 20px;font-size:13px}
.swatch{display:inline-block;width:14px;height:14px;border:1px solid #999;border-radius:2px;
 vertical-align:-2px;margin-right:6px}
.colorbar{display:inline-block;width:90px;height:12px;border:1px solid #999;vertical-align:-1px;margin-right:6px}
.idx{color:var(--muted);font-size:11px;margin-right:2px}
.curves img{max-width:100%;height:auto}
.sample{border-top:1px solid var(--line);padding:12px 0}
.sample-head{display:flex;align-items:center;gap:12px;margin-bottom:8px}
.stem{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:13px;font-weight:600}
.badge{font-size:12px;padding:2px 8px;border-radius:10px;background:var(--bg);border:1px solid var(--line)}
.badge.good{background:#e3f3e6;border-color:#9fd3a9}
.badge.fair{background:#fdf3dc;border-color:#eccd7f}
.badge.poor{background:#fbe3e1;border-color:#eba39c}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(160px,1fr));gap:10px;margin-bottom:8px}
figure{margin:0}
figure img{width:100%;height:auto;display:block;border:1px solid var(--line);border-radius:3px;background:#000}
img.map{image-rendering:pixelated}
figcaption{font-size:12px;color:var(--muted);text-align:center;margin-top:3px}
details pre{background:var(--bg);border:1px solid var(--line);border-radius:6px;padding:12px;overflow:auto;
 font-size:12px;max-height:480px}
summary{cursor:pointer;font-weight:600}
footer{color:var(--muted);font-size:12px;text-align:center;margin-top:24px}
@media print{body{background:#fff}section{break-inside:avoid;border-color:#ccc}nav{display:none}}
"""


def _plain(value: object) -> object:
    """Config values as YAML/JSON-safe plain types (paths, numpy scalars and the like become strings)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()  # type: ignore[union-attr]
    return str(value)


def _dump_config(config: Mapping[str, object]) -> str:
    try:
        import yaml

        return yaml.safe_dump(_plain(config), sort_keys=False, allow_unicode=True, default_flow_style=False)
    except ImportError:
        return json.dumps(_plain(config), indent=2, ensure_ascii=False)


def _info_table(info: Mapping[str, object]) -> str:
    rows = "".join(
        f'<tr><th scope="row">{escape(str(k))}</th><td>{escape(str(v))}</td></tr>'
        for k, v in info.items()
        if v is not None
    )
    return f'<table class="kv">{rows}</table>' if rows else ""


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{body}</section>'


def _version() -> str:
    try:
        from .. import __version__

        return str(__version__)
    except ImportError:
        return ""


def render_report(
    *,
    title: str,
    metrics: Mapping[str, object],
    confusion: Sequence[Sequence[int]] | np.ndarray | None = None,
    history: str | Path | Sequence[Mapping[str, object]] | None = None,
    samples: Sequence[Mapping[str, object]] | None = None,
    config: Mapping[str, object] | None = None,
    info: Mapping[str, object] | None = None,
    class_names: Sequence[str] | None = None,
    palette: np.ndarray | Sequence[Sequence[int]] | None = None,
    transitions: np.ndarray | None = None,
    pixel_area: float | None = None,
    ignore_index: int = 255,
    sem_ignore_index: int | None = 255,
    thumb_size: int = 256,
    now: _dt.datetime | None = None,
) -> str:
    """The report as one HTML string (see :func:`write_report` for the arguments)."""
    sections: list[tuple[str, str, str]] = []
    scalars, vectors = split_metrics(metrics)
    metric_body = headline_cards(scalars) + (metrics_table(scalars) if scalars else "")
    metric_body += per_class_table(vectors, class_names)
    sections.append(("metrics", "Metrics", metric_body or '<p class="muted">No metrics were given.</p>'))
    if confusion is not None:
        note = '<p class="muted">Rows: ground truth. Columns: prediction. Percentages are shares of the row.</p>'
        sections.append(("confusion", "Confusion matrix", note + confusion_table(confusion, class_names)))

    semantic = class_names is not None or palette is not None or transitions is not None
    pal = None
    if semantic:
        if class_names is not None:
            k = len(class_names)
        else:
            k = len(np.asarray(palette if palette is not None else transitions))
        pal = as_palette(palette, k)
        names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(k)]
        body = "<h3>Classes</h3>" + class_legend(names, pal)
        if transitions is not None:
            body += "<h3>From-to transitions</h3>" + transition_table(transitions, names, pal, pixel_area)
        sections.append(("semantic", "Semantic change", body))

    rows = load_history(history)
    png = plot_history(rows) if rows else None
    if png is not None:
        sections.append(("curves", "Training curves",
                         f'<div class="curves"><img src="{png_bytes_uri(png)}" alt="training curves"></div>'))
    elif history is not None:
        sections.append(("curves", "Training curves", '<p class="muted">No plottable training history.</p>'))

    if samples:
        sections.append(("samples", "Samples", gallery(samples, size=thumb_size, ignore_index=ignore_index,
                                                       palette=pal, sem_ignore_index=sem_ignore_index)))
    if config:
        sections.append(("config", "Configuration",
                         f"<details><summary>Show the run configuration</summary>"
                         f"<pre>{escape(_dump_config(config))}</pre></details>"))

    stamp = (now or _dt.datetime.now()).strftime("%Y-%m-%d %H:%M")
    version = _version()
    nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t, _ in sections)
    header = (
        f"<header><h1>{escape(title)}</h1><div class=\"sub\">Generated {stamp}"
        f"{' by changekit ' + escape(version) if version else ''}</div></header>"
        f"{_info_table(info or {})}<nav>{nav}</nav>"
    )
    body = "".join(_section(a, t, b) for a, t, b in sections)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{header}{body}<footer>changekit report &middot; {stamp}</footer></main></body></html>\n"
    )


def write_report(
    path: str | Path,
    *,
    title: str,
    metrics: Mapping[str, object],
    confusion: Sequence[Sequence[int]] | np.ndarray | None = None,
    history: str | Path | Sequence[Mapping[str, object]] | None = None,
    samples: Sequence[Mapping[str, object]] | None = None,
    config: Mapping[str, object] | None = None,
    info: Mapping[str, object] | None = None,
    class_names: Sequence[str] | None = None,
    palette: np.ndarray | Sequence[Sequence[int]] | None = None,
    transitions: np.ndarray | None = None,
    pixel_area: float | None = None,
    **options: object,
) -> Path:
    """Write a self-contained HTML evaluation report and return its path.

    Args:
        path: output file (an existing folder gets ``report.html`` inside it).
        title: page title.
        metrics: name -> value; fractional metrics (precision, recall, f1, iou, oa, kappa, miou, sek, ...) as
            fractions in [0, 1], shown as percentages; lists of numbers become a per-class table.
        confusion: ``(K, K)`` counts, rows ground truth, columns prediction.
        history: Lightning ``metrics.csv`` (or its log folder) or rows as dicts; plotted against step.
        samples: dicts with ``stem``, ``image_a``, ``image_b``, ``label``, ``pred`` and optional ``prob``,
            ``f1`` (fraction) and class maps ``sem_a``, ``sem_b``, ``pred_sem_a``, ``pred_sem_b``.
        config: run configuration, shown collapsed as YAML.
        info: short key/value facts for the header (model, dataset, checkpoint, ...).
        class_names, palette: semantic classes and their ``(K, 3)`` colours (a default palette if omitted).
        transitions: ``(K, K)`` from-to pixel counts (rows date A, columns date B).
        pixel_area: square metres per pixel, to show transition areas.
        **options: ``ignore_index`` (255), ``sem_ignore_index`` (255), ``thumb_size`` (256), ``now``.

    Raises:
        ValueError: a matrix, palette or sample is malformed.
    """
    html = render_report(
        title=title, metrics=metrics, confusion=confusion, history=history, samples=samples, config=config,
        info=info, class_names=class_names, palette=palette, transitions=transitions, pixel_area=pixel_area,
        **options,  # type: ignore[arg-type]
    )
    path = Path(path)
    if path.is_dir():
        path = path / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    logger.info("wrote report %s (%.1f kB)", path, len(html) / 1024)
    return path
