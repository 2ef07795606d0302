"""The self-contained HTML report of one predicted scene: swipe, change overlay, polygons, histogram.

An analyst who gets a change map wants to see it before opening a GIS: the two dates side by side with a swipe,
the changes over them, the largest change polygons with their areas, and how sure the model was. The page has no
external resource at all (inline CSS and JavaScript, images as PNG data URIs), so it opens offline and can be
mailed or archived next to the outputs.

Views are downsampled by block averaging while the rasters are read strip by strip (memory: one strip of
``factor`` rows), so a 20,000² scene gives a ~1,000-pixel view without ever being held whole.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..engine.regions import CHANGE, Regions
from .html import _CSS
from .overlays import png_data_uri

#: Longest side of the downsampled views, pixels.
VIEW_SIDE = 1024
#: Rows of the polygon table.
TABLE_ROWS = 50

_SCENE_CSS = """
.swipe{position:relative;display:block;width:min(100%,960px);line-height:0;user-select:none}
.swipe img{width:100%;height:auto;display:block}
.swipe img.top,.swipe img.overlay{position:absolute;left:0;top:0;width:100%;height:100%}
.swipe img.overlay{pointer-events:none}
.swipe .handle{position:absolute;top:0;bottom:0;width:2px;background:#fff;box-shadow:0 0 3px #000;left:50%}
.controls{margin:10px 0;display:flex;gap:18px;align-items:center;font-size:13px}
.controls input[type=range]{width:320px}
svg.hist rect{fill:var(--accent)}
svg.hist text{font-size:11px;fill:var(--muted)}
"""

_SCRIPT = """
(function(){
  var s=document.getElementById('swipe'), top=document.getElementById('after'),
      h=document.getElementById('handle'), ov=document.getElementById('overlay'),
      show=document.getElementById('show-overlay');
  function set(v){top.style.clipPath='inset(0 0 0 '+v+'%)';h.style.left=v+'%';}
  s.addEventListener('input',function(){set(s.value);});
  show.addEventListener('change',function(){ov.style.display=show.checked?'block':'none';});
  set(s.value);
  document.documentElement.setAttribute('data-swipe','ready');
})();
"""


def _reduce(path: Path, factor: int, bands: Sequence[int] | None, how: str) -> tuple[np.ndarray, np.ndarray]:
    """``(C, h, w)`` block means (``how='mean'``) or maxima (``'max'``) of ``factor`` x ``factor`` blocks over the
    valid pixels, and the ``(h, w)`` share of valid pixels per block; read strip by strip."""
    from ..raster.reader import RasterReader

    with RasterReader(path, bands=bands) as src:
        height, width = src.height, src.width
        oh, ow = math.ceil(height / factor), math.ceil(width / factor)
        out = np.zeros((src.count, oh, ow), np.float32)
        share = np.zeros((oh, ow), np.float32)
        for i, r0 in enumerate(range(0, height, factor)):
            rows = min(factor, height - r0)
            data, valid = src.read_valid((r0, 0, rows, width))
            pad = ow * factor - width
            data = np.pad(data.astype(np.float32), ((0, 0), (0, 0), (0, pad)))
            valid = np.pad(valid, ((0, 0), (0, pad)))
            v = valid.reshape(rows, ow, factor)
            n = v.sum((0, 2)).astype(np.float32)
            share[i] = n / (rows * factor)
            blocks = np.where(v[None], data.reshape(src.count, rows, ow, factor), np.nan)
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-nodata blocks: NaN, shown as black
                red = np.nanmax(blocks, (1, 3)) if how == "max" else np.nanmean(blocks, (1, 3))
            out[:, i] = np.nan_to_num(red)
    return out, share


def _stretch(view: np.ndarray, share: np.ndarray) -> np.ndarray:
    """``(C, h, w)`` float -> ``(h, w, 3)`` uint8 with a 2-98 % stretch per band over valid blocks (nodata black)."""
    bands = view[:3] if view.shape[0] >= 3 else np.repeat(view[:1], 3, 0)
    valid = share > 0
    rgb = np.zeros((*share.shape, 3), np.uint8)
    for c in range(3):
        vals = bands[c][valid]
        if vals.size:
            lo, hi = np.percentile(vals, (2, 98))
            scaled = np.clip((bands[c] - lo) / max(hi - lo, 1e-12), 0, 1)
            rgb[:, :, c] = np.where(valid, np.rint(scaled * 255), 0).astype(np.uint8)
    return rgb


def _overlay(change: np.ndarray, share: np.ndarray) -> np.ndarray:
    """``(h, w, 4)`` RGBA: red where a block holds change (opacity from its changed share), else transparent."""
    rgba = np.zeros((*share.shape, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[..., 3] = np.where(change > 0, np.clip(80 + 175 * change, 0, 255), 0).astype(np.uint8)
    return rgba


def _histogram_svg(counts: Sequence[int], width: int = 480, height: int = 160) -> str:
    """Inline SVG bars of the probability histogram (log-free counts; the 0.5 mark drawn)."""
    counts = list(counts)
    top = max(max(counts), 1)
    bw = width / len(counts)
    bars = "".join(
        f'<rect x="{i * bw + 1:.1f}" y="{height - 20 - (height - 30) * c / top:.1f}" width="{bw - 2:.1f}" '
        f'height="{(height - 30) * c / top:.1f}"><title>{i / len(counts):.2f}-{(i + 1) / len(counts):.2f}: '
        f"{c:,}</title></rect>" for i, c in enumerate(counts))
    ticks = "".join(f'<text x="{x * width:.0f}" y="{height - 5}" text-anchor="middle">{x:.1f}</text>'
                    for x in (0.05, 0.25, 0.5, 0.75, 0.95))
    return (f'<svg class="hist" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'role="img" aria-label="probability histogram">{bars}{ticks}</svg>')


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else escape(str(value))


def _polygon_table(regions: Regions) -> str:
    """The largest change regions, sorted by area (the polygons a vector export holds)."""
    if not regions.count:
        return '<p class="muted">No change.</p>'
    geo = regions.area_m2 is not None
    head = ["#", "area (m²)" if geo else "area (px)", "area (ha)", "pixels", "mean p", "max p",
            "x" if regions.x is not None else "col", "y" if regions.y is not None else "row"]
    rows = []
    for rank, i in enumerate(regions.largest(TABLE_ROWS), 1):
        area = regions.area_m2[i] / 1e4 if geo else int(regions.pixels[i])
        pm = None if regions.prob_mean is None else float(regions.prob_mean[i])
        px = None if regions.prob_max is None else float(regions.prob_max[i])
        x = float(regions.x[i]) if regions.x is not None else int(regions.col[i])
        y = float(regions.y[i]) if regions.y is not None else int(regions.row[i])
        ha = float(area) if geo else None
        cells = [rank, ha * 1e4 if geo else area, ha, int(regions.pixels[i]), pm, px, x, y]
        digits = [0, 1, 4, 0, 2, 2, 2 if geo else 0, 2 if geo else 0]
        rows.append("<tr>" + "".join(f'<td class="num">{_fmt(c, d)}</td>' for c, d in zip(cells, digits, strict=True))
                    + "</tr>")
    more = "" if regions.count <= TABLE_ROWS else (f'<p class="muted">The {TABLE_ROWS} largest of '
                                                   f"{regions.count:,} polygons.</p>")
    heads = "".join(f'<th class="num">{h}</th>' for h in head)
    return f'<table id="polygons"><thead><tr>{heads}</tr></thead><tbody>{"".join(rows)}</tbody></table>{more}'


def _cards(summary: Mapping[str, Any]) -> str:
    items = [
        ("changed area", _fmt(summary.get("changed_ha")), "ha"),
        ("changed area", _fmt(summary.get("changed_km2"), 4), "km²"),
        ("of valid area", _fmt(summary.get("changed_percent_of_valid")), "%"),
        ("polygons", _fmt(summary.get("polygons")), ""),
        ("valid pixels", _fmt(None if summary.get("valid_share") is None else 100 * summary["valid_share"]), "%"),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="card-value">{v}<small>{u}</small></div><div class="card-label">{k}</div>'
        "</div>" for k, v, u in items) + "</div>"


def render_scene_report(summary: Mapping[str, Any], regions: Regions, a: Path, b: Path, mask: Path,
                        bands: Sequence[int] | None = None) -> str:
    """The report page as text (see the module docstring); ``bands`` picks the displayed bands (1-based)."""
    from ..raster.reader import RasterReader

    with RasterReader(mask) as m:
        factor = max(1, math.ceil(max(m.height, m.width) / VIEW_SIDE))
    view_a, share_a = _reduce(a, factor, bands, "mean")
    view_b, share_b = _reduce(b, factor, bands, "mean")
    change, _ = _reduce(mask, factor, None, "mean")
    changed_share = change[0] / CHANGE
    uri_a, uri_b = png_data_uri(_stretch(view_a, share_a)), png_data_uri(_stretch(view_b, share_b))
    uri_ov = png_data_uri(_overlay(changed_share, share_a))
    hist = summary.get("probability_histogram")
    hist_html = _histogram_svg(hist["counts"]) if hist else '<p class="muted">No probabilities.</p>'
    details = {k: summary.get(k) for k in ("model", "normalisation", "options", "timings_s", "outputs", "crs")}
    name = escape(str(summary.get("name", mask.stem)))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>changekit · {name}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{_CSS}{_SCENE_CSS}</style></head>
<body><main>
<header><h1>{name}</h1><div class="sub">{escape(str(a))} → {escape(str(b))} · view 1:{factor}</div></header>
<section id="summary"><h2>Summary</h2>{_cards(summary)}</section>
<section id="views"><h2>Before / after</h2>
<div class="controls"><label>A ◀ <input id="swipe" type="range" min="0" max="100" value="50"> ▶ B</label>
<label><input id="show-overlay" type="checkbox" checked> changes (red)</label></div>
<div class="swipe"><img id="before" class="map" alt="date A" src="{uri_a}">
<img id="after" class="map top" alt="date B" src="{uri_b}">
<img id="overlay" class="map overlay" alt="changes" src="{uri_ov}"><div id="handle" class="handle"></div></div>
</section>
<section id="histogram"><h2>Change probability</h2>{hist_html}</section>
<section id="polygon-table"><h2>Change polygons by area</h2>{_polygon_table(regions)}</section>
<section id="details"><h2>Details</h2><details><summary>model, normalisation, options, timings</summary>
<pre>{escape(json.dumps(details, indent=2))}</pre></details></section>
<footer>changekit scene report · self-contained, no network</footer>
</main><script>{_SCRIPT}</script></body></html>
"""


def write_scene_report(path: str | Path, summary: Mapping[str, Any], regions: Regions, a: Path, b: Path,
                       mask: Path, bands: Sequence[int] | None = None) -> Path:
    """Render :func:`render_scene_report` and write it atomically."""
    html = render_scene_report(summary, regions, Path(a), Path(b), Path(mask), bands)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return path
