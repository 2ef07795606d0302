"""Sample gallery: per pair a row of thumbnails (A, B, label, prediction, errors, probability, class maps).

Thumbnails are downsized before encoding (photos with Lanczos, label-like maps with nearest neighbour so that
their colours stay exact) to keep the self-contained HTML small.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

import numpy as np

from .overlays import (
    ERROR_LEGEND,
    binary_to_rgb,
    colorize,
    overlay_errors,
    png_data_uri,
    probability_to_rgb,
    thumbnail,
    to_rgb8,
)

_SEM_KEYS = (("sem_a", "GT classes A"), ("sem_b", "GT classes B"), ("pred_sem_a", "pred. classes A"),
             ("pred_sem_b", "pred. classes B"))


def sample_f1(pred: np.ndarray, label: np.ndarray, ignore_index: int = 255) -> float | None:
    """F1 of the change class on one image; ``None`` when neither label nor prediction holds change."""
    pred = np.asarray(pred).squeeze() != 0
    label = np.asarray(label).squeeze()
    valid = label != ignore_index
    gt = (label == 1) & valid
    tp = int((pred & gt).sum())
    fp = int((pred & ~gt & valid).sum())
    fn = int((~pred & gt).sum())
    denom = 2 * tp + fp + fn
    return 2 * tp / denom if denom else None


def _tile(rgb: np.ndarray, caption: str, size: int, nearest: bool) -> str:
    img = thumbnail(rgb, size, nearest=nearest)
    cls = ' class="map"' if nearest else ""
    return (
        f'<figure><img{cls} src="{png_data_uri(img)}" width="{img.shape[1]}" height="{img.shape[0]}" '
        f'alt="{escape(caption)}"><figcaption>{escape(caption)}</figcaption></figure>'
    )


def _f1_badge(f1: float | None) -> str:
    if f1 is None:
        return '<span class="badge muted">F1 n/a (no change in label or prediction)</span>'
    tone = "good" if f1 >= 0.8 else "fair" if f1 >= 0.5 else "poor"
    return f'<span class="badge {tone}">F1 {100.0 * f1:.2f}&#8239;%</span>'


def sample_row(
    sample: Mapping[str, object],
    index: int,
    *,
    size: int = 256,
    ignore_index: int = 255,
    palette: np.ndarray | None = None,
    sem_ignore_index: int | None = 255,
) -> str:
    """HTML of one sample; missing optional entries simply leave their tile out.

    Raises:
        ValueError: the sample has no ``pred`` or its arrays are malformed.
    """
    stem = str(sample.get("stem", f"sample {index}"))
    if sample.get("pred") is None:
        raise ValueError(f"samples[{index}] ({stem}): missing key 'pred'")
    pred = np.asarray(sample["pred"]).squeeze()
    label = None if sample.get("label") is None else np.asarray(sample["label"]).squeeze()
    tiles = []
    for key, caption in (("image_a", "image A"), ("image_b", "image B")):
        if sample.get(key) is not None:
            tiles.append(_tile(to_rgb8(np.asarray(sample[key])), caption, size, nearest=False))
    if label is not None:
        tiles.append(_tile(binary_to_rgb(label, ignore_index), "label", size, nearest=True))
    tiles.append(_tile(binary_to_rgb(pred, None), "prediction", size, nearest=True))
    if label is not None:
        tiles.append(_tile(overlay_errors(pred, label, ignore_index), "errors", size, nearest=True))
    if sample.get("prob") is not None:
        tiles.append(_tile(probability_to_rgb(np.asarray(sample["prob"])), "P(change)", size, nearest=False))
    sem_tiles = []
    if palette is not None:
        for key, caption in _SEM_KEYS:
            if sample.get(key) is not None:
                rgb = colorize(np.asarray(sample[key]).squeeze(), palette, sem_ignore_index)
                sem_tiles.append(_tile(rgb, caption, size, nearest=True))
    given = sample.get("f1")
    f1 = float(given) if given is not None else (sample_f1(pred, label, ignore_index) if label is not None else None)
    badge = _f1_badge(f1) if label is not None or given is not None else ""
    sem_html = f'<div class="tiles">{"".join(sem_tiles)}</div>' if sem_tiles else ""
    return (
        f'<div class="sample"><div class="sample-head"><span class="stem">{escape(stem)}</span>{badge}</div>'
        f'<div class="tiles">{"".join(tiles)}</div>{sem_html}</div>'
    )


def error_legend() -> str:
    """Legend of the error-overlay colours and of the probability colour bar."""
    items = "".join(
        f'<li><span class="swatch" style="background:rgb{color}"></span><b>{name}</b> {escape(text)}</li>'
        for name, color, text in ERROR_LEGEND
    )
    bar = probability_to_rgb(np.linspace(0, 1, 11)[None, :])[0]
    stops = ",".join(f"rgb({r},{g},{b})" for r, g, b in bar.tolist())
    prob = (
        f'<li><span class="colorbar" style="background:linear-gradient(to right,{stops})"></span>'
        "<b>P(change)</b> 0 &rarr; 1</li>"
    )
    return f'<ul class="legend">{items}{prob}</ul>'


def gallery(
    samples: Sequence[Mapping[str, object]],
    *,
    size: int = 256,
    ignore_index: int = 255,
    palette: np.ndarray | None = None,
    sem_ignore_index: int | None = 255,
) -> str:
    rows = "".join(
        sample_row(s, i, size=size, ignore_index=ignore_index, palette=palette, sem_ignore_index=sem_ignore_index)
        for i, s in enumerate(samples)
    )
    return error_legend() + rows
