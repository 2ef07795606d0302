"""Change regions of a finished mask, counted and measured in one streaming pass (no vectorising).

A pair's summary and scene report need the number of change polygons, their areas and probabilities, and the
changed area in km² — for scenes of tens of thousands of pixels a side. :func:`mask_regions` reads the mask (and
the probability raster, when there is one) strip by strip through :class:`~changekit.raster.reader.RasterReader`,
labels each strip's 4-connected change regions (the connectivity :mod:`changekit.raster.vector` polygonizes
with, so region ``i`` is polygon ``i``), and joins the labels of regions that continue across a strip edge with
a union-find. Memory: one strip of pixels plus a few numbers per region.

Pixel areas are :func:`changekit.raster.vector.pixel_areas_m2`'s (the vector export's), so a scene in EPSG:4326
still gets areas in m² and the summary's changed area equals the polygons' total. Without a CRS areas are
``None``: pixel counts only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Mask value of a changed pixel (the writer's 0 / 255 / nodata convention).
CHANGE = 255
#: Pixels read per strip (rows are chosen so that a strip holds about this many).
STRIP_PIXELS = 1 << 22
_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


@dataclass
class Regions:
    """The change regions of a mask and its pixel tallies.

    Attributes:
        total, valid, changed: pixel counts (``valid``: neither date was nodata).
        valid_m2, changed_m2: the same as areas in m² (``None`` without a CRS).
        crs: the mask's CRS as text (``None`` when absent).
        pixels, area_m2: per region: pixel count and area (``area_m2`` ``None`` without a CRS), ``(R,)``.
        prob_mean, prob_max: per region mean and max change probability (``None`` without a probability raster).
        row, col: per region, the pixel (row, column) of its first pixel in reading order.
        x, y: the map coordinates of that pixel's centre (``None`` without a transform).
        prob_hist: counts of valid probabilities in ``HIST_BINS`` equal bins over [0, 1] (``None`` without one).
    """

    total: int
    valid: int
    changed: int
    valid_m2: float | None
    changed_m2: float | None
    crs: str | None
    pixels: np.ndarray
    area_m2: np.ndarray | None
    prob_mean: np.ndarray | None
    prob_max: np.ndarray | None
    row: np.ndarray
    col: np.ndarray
    x: np.ndarray | None
    y: np.ndarray | None
    prob_hist: np.ndarray | None

    @property
    def count(self) -> int:
        """Number of regions (the polygons a vector export of the whole mask would hold)."""
        return int(len(self.pixels))

    def largest(self, n: int) -> np.ndarray:
        """Indices of the ``n`` largest regions, largest first (ties: reading order)."""
        key = self.area_m2 if self.area_m2 is not None else self.pixels.astype(np.float64)
        return np.argsort(-key, kind="stable")[:n]


HIST_BINS = 20


class _UnionFind:
    """Growable union-find over region labels ``1..n`` (label 0 is background)."""

    def __init__(self) -> None:
        self.parent = np.zeros(1, np.int64)

    def grow(self, n: int) -> None:
        start = len(self.parent)
        self.parent = np.concatenate([self.parent, np.arange(start, start + n, dtype=np.int64)])

    def find(self, i: int) -> int:
        p = self.parent
        root = i
        while p[root] != root:
            root = p[root]
        while p[i] != root:  # path compression
            p[i], i = root, p[i]
        return int(root)

    def union(self, i: int, j: int) -> None:
        ri, rj = self.find(i), self.find(j)
        if ri != rj:
            self.parent[max(ri, rj)] = min(ri, rj)  # the earlier label stays the root: reading order is kept

    def roots(self) -> np.ndarray:
        """The root of every label (vectorised path halving until stable)."""
        p = self.parent.copy()
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q


def mask_regions(mask: str | Path, prob: str | Path | None = None) -> Regions:
    """Label and measure the change regions of a 0 / 255 / nodata mask (see the module docstring).

    Args:
        mask: the change mask (GeoTIFF with its nodata value, or a PNG).
        prob: the change probability raster on the same grid (adds per-region mean / max and a histogram).
    """
    from scipy import ndimage

    from ..raster.reader import RasterReader
    from ..raster.vector import pixel_areas_m2

    readers = [RasterReader(mask)]
    if prob is not None:
        readers.append(RasterReader(prob))
    src = readers[0]
    try:
        h, w = src.height, src.width
        step = max(1, STRIP_PIXELS // max(w, 1))
        uf = _UnionFind()
        stats: dict[str, list[np.ndarray]] = {k: [] for k in ("px", "m2", "psum", "pmax", "first")}
        valid_n = changed_n = 0
        valid_m2 = changed_m2 = 0.0
        hist = np.zeros(HIST_BINS, np.int64) if prob is not None else None
        prev_last: np.ndarray | None = None
        offset = 0
        for r0 in range(0, h, step):
            window = (r0, 0, min(step, h - r0), w)
            data, valid = src.read_valid(window)
            changed = valid & (data[0] == CHANGE)
            valid_n += int(valid.sum())
            changed_n += int(changed.sum())
            areas = pixel_areas_m2(src.transform, src.crs, np.arange(r0, r0 + window[2]))
            if areas is not None:
                valid_m2 += float(valid.sum(1) @ areas)
                changed_m2 += float(changed.sum(1) @ areas)
            labels, n = ndimage.label(changed, structure=_FOUR)
            labels = labels.astype(np.int64)
            labels[labels > 0] += offset
            uf.grow(n)
            idx = labels.ravel()
            fg = idx > 0
            order = idx[fg] - offset - 1  # each changed pixel's label in this strip, 0-based
            stats["px"].append(np.bincount(order, minlength=n))
            pix_area = np.broadcast_to(areas[:, None], labels.shape).ravel()[fg] if areas is not None else None
            stats["m2"].append(np.bincount(order, pix_area, minlength=n) if pix_area is not None else np.zeros(n))
            flat_first = np.full(n, -1, np.int64)
            positions = np.flatnonzero(fg)
            flat_first[order[::-1]] = positions[::-1]  # the first pixel of each label in reading order
            stats["first"].append(flat_first + r0 * w)
            if prob is not None:
                p, pvalid = readers[1].read_valid(window)
                scale = 255.0 if np.issubdtype(p.dtype, np.integer) else 1.0  # a PNG holds probability x 255
                p = np.where(pvalid, p[0] / scale, np.nan)
                pv = p[valid & np.isfinite(p)]
                hist += np.histogram(np.clip(pv, 0, 1), HIST_BINS, (0.0, 1.0))[0]
                pf = np.nan_to_num(p.ravel()[fg])
                stats["psum"].append(np.bincount(order, pf, minlength=n))
                pmax = np.full(n, -np.inf)
                np.maximum.at(pmax, order, pf)
                stats["pmax"].append(pmax)
            if prev_last is not None and n:
                top = labels[0]
                both = (prev_last > 0) & (top > 0)
                for i, j in set(zip(prev_last[both].tolist(), top[both].tolist(), strict=True)):
                    uf.union(i, j)
            prev_last = labels[-1]
            offset += n
        return _merge(uf, stats, offset, valid_n, changed_n, valid_m2, changed_m2, src, hist)
    finally:
        for r in readers:
            r.close()


def _merge(uf: _UnionFind, stats: dict[str, list[np.ndarray]], n: int, valid_n: int, changed_n: int,
           valid_m2: float, changed_m2: float, src: Any, hist: np.ndarray | None) -> Regions:
    """Fold the per-strip label statistics onto their union-find roots."""
    roots = uf.roots()[1 : n + 1] - 1  # label i (1-based) -> root index (0-based)
    uniq, region = np.unique(roots, return_inverse=True)
    k = len(uniq)

    def fold(key: str, how: str = "sum") -> np.ndarray:
        vals = np.concatenate(stats[key]) if stats[key] else np.zeros(0)
        if how == "sum":
            return np.bincount(region, vals, minlength=k)
        out = np.full(k, -np.inf if how == "max" else np.inf)
        (np.maximum if how == "max" else np.minimum).at(out, region, vals)
        return out

    pixels = fold("px").astype(np.int64)
    first = fold("first", "min").astype(np.int64) if k else np.zeros(0, np.int64)
    row, col = first // max(src.width, 1), first % max(src.width, 1)
    geo = src.crs is not None
    x = y = None
    if src.transform is not None:
        t = src.transform
        x = t.a * (col + 0.5) + t.b * (row + 0.5) + t.c
        y = t.d * (col + 0.5) + t.e * (row + 0.5) + t.f
    has_prob = hist is not None
    return Regions(
        total=int(src.height) * int(src.width), valid=valid_n, changed=changed_n,
        valid_m2=valid_m2 if geo else None, changed_m2=changed_m2 if geo else None,
        crs=(src.crs.to_string() or src.crs.to_wkt()) if geo else None,
        pixels=pixels, area_m2=fold("m2") if geo else None,
        prob_mean=fold("psum") / np.maximum(pixels, 1) if has_prob else None,
        prob_max=fold("pmax", "max") if has_prob else None,
        row=row, col=col, x=x, y=y, prob_hist=hist,
    )
