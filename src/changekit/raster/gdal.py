"""GDAL settings shared by every reader and writer of the raster layer.

GDAL keeps recently read and not yet written blocks in a process-wide cache whose default size is 5 % of the
machine's memory (6.4 GB on a 128 GB node). Strip-wise scene prediction touches every block once, so a large
cache only grows the process: :func:`gdal_env` caps it, which keeps scene prediction and vectorising in
nearly flat memory whatever the scene size.
"""

from __future__ import annotations

from typing import Any

#: GDAL's block cache while the raster layer works (bytes).
GDAL_CACHE_BYTES = 256 * 2**20


def gdal_env(**options: Any) -> Any:
    """A ``rasterio.Env`` with the capped block cache (and any further GDAL ``options``); nests safely."""
    import rasterio

    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES, **options)
