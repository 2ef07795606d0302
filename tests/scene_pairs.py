"""Small georeferenced scene pairs for prediction tests: a random date A and a date B with rectangles inverted."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from affine import Affine
from rasterio.crs import CRS

from changekit.data.io import GeoInfo, write_geotiff

#: UTM 33N at 0.5 m
UTM_GEO = GeoInfo(crs=CRS.from_epsg(32633), transform=Affine(0.5, 0, 500000, 0, -0.5, 5_000_000))


def write_scene_pair(pa: Path, pb: Path, shape: tuple[int, int], changed: Sequence[tuple[slice, slice]],
                     rng: np.random.Generator | int = 0, low: int = 0, high: int = 256,
                     geo: GeoInfo = UTM_GEO) -> tuple[Path, Path]:
    """Write ``pa`` (uniform random RGB in ``[low, high)``, ``shape`` = (H, W)) and ``pb``, equal to it except
    inside each ``(rows, cols)`` rectangle of ``changed``, where it is inverted; ``rng`` is a generator (a test
    drawing several pairs from one) or a seed."""
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    a = rng.integers(low, high, (*shape, 3), dtype=np.uint8)
    b = a.copy()
    for rows, cols in changed:
        b[rows, cols] = 255 - b[rows, cols]
    write_geotiff(pa, a, geo)
    write_geotiff(pb, b, geo)
    return pa, pb
