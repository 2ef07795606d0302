"""Small georeferenced test rasters (real CRSs) written with rasterio, for the raster-layer tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.transform import from_origin

UTM = "EPSG:32633"
#: 10 m pixels in UTM 33N (central Europe)
ORIGIN = from_origin(500_000, 5_000_000, 10, 10)


def smooth(h: int, w: int, bands: int = 3, scale: float = 10_000, dtype: Any = np.uint16) -> np.ndarray:
    """``(bands, h, w)`` slowly varying values (so resampled pixels stay close to their neighbours)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = [(0.5 + 0.4 * np.sin(xx / 17 + k) * np.cos(yy / 23 - k)) * scale for k in range(bands)]
    return np.stack(out).astype(dtype)


def write_tif(path: Path, data: np.ndarray, crs: Any = UTM, transform: Any = ORIGIN, nodata: Any = None,
              mask: np.ndarray | None = None, alpha: np.ndarray | None = None, **profile: Any) -> Path:
    """Write ``(C, H, W)`` ``data``; ``mask`` (H, W bool, True = valid) as an internal mask, ``alpha`` as an extra
    alpha band."""
    count = data.shape[0] + (alpha is not None)
    prof: dict[str, Any] = dict(driver="GTiff", height=data.shape[1], width=data.shape[2], count=count,
                                dtype=data.dtype.name, **profile)
    if crs is not None:
        prof.update(crs=crs, transform=transform)
    if nodata is not None:
        prof["nodata"] = nodata
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **prof) as dst:
        dst.write(data, indexes=list(range(1, data.shape[0] + 1)))
        if alpha is not None:
            from rasterio.enums import ColorInterp

            dst.write(alpha.astype(data.dtype), count)
            dst.colorinterp = [ColorInterp.gray] * data.shape[0] + [ColorInterp.alpha]
        if mask is not None:
            dst.write_mask(np.where(mask, 255, 0).astype(np.uint8))
    return path
