"""Output rasters written strip by strip that finish as Cloud Optimized GeoTIFFs (or PNGs for plain inputs).

A change map that an analyst opens in QGIS (or streams from object storage) should be a COG: internal tiles,
overviews, compression, the input's CRS and transform, a colour table for masks and class maps, and the nodata
value set. GDAL's COG driver only writes a whole dataset at once, so :class:`RasterWriter` first writes the strips
into a tiled temporary GeoTIFF beside the target (memory: one strip plus GDAL's block cache) and translates that
into the COG when it closes. Both files live under :func:`changekit.atomic.atomic_path` names, so an interrupted
run leaves no file under the final name.

What the pixel values mean (:data:`KINDS`):

* ``mask``: uint8, 0 = no change, 255 = change, :data:`MASK_NODATA` (128) where either date has no data;
  overviews by nearest neighbour.
* ``prob``: float32 change probability, NaN where either date has no data; overviews by averaging.
* ``classes``: uint8 class indices (semantic maps), :data:`CLASS_NODATA` (255) where there is no data.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..data.io import GeoInfo
from ..errors import ConfigError
from .gdal import gdal_env

log = logging.getLogger(__name__)

#: The mask's nodata value: neither "no change" (0) nor "change" (255).
MASK_NODATA = 128
#: Class maps' nodata value (class indices stay below it; the same value as the default ``ignore_index``).
CLASS_NODATA = 255
#: Colours of the mask's values in its colour table (RGBA): no change, change, no data (transparent).
MASK_COLOURS = {0: (0, 0, 0, 255), 255: (255, 255, 255, 255), MASK_NODATA: (128, 128, 128, 0)}
GEOTIFF_SUFFIXES = (".tif", ".tiff")
PNG_SUFFIXES = (".png",)
COMPRESSIONS = ("deflate", "zstd", "lzw")
#: Side of the internal tiles (and the temporary file's blocks), in pixels.
BLOCK = 512


@dataclass(frozen=True)
class RasterKind:
    """What one output holds: its dtype, nodata value and how overviews are resampled."""

    dtype: str
    nodata: float
    overview_resampling: str


KINDS = {
    "mask": RasterKind("uint8", MASK_NODATA, "NEAREST"),
    "prob": RasterKind("float32", float("nan"), "AVERAGE"),
    "classes": RasterKind("uint8", CLASS_NODATA, "NEAREST"),
}


class RasterWriter:
    """One single-band output written by rows, finished as a COG (``.tif``) or a PNG (``.png``) on close.

    Use it as a context manager: the file appears under its final name only when the block ends without an
    exception (an exception removes the temporaries).

    Args:
        path: the output file (``.tif``/``.tiff``: COG; ``.png``: assembled in memory, no georeferencing).
        height, width: the grid's size in pixels.
        kind: ``mask``, ``prob`` or ``classes`` (:data:`KINDS`).
        geo: CRS and transform to write (``None`` or empty: none).
        palette: ``(K, 3)`` uint8 class colours (``classes``); masks always get :data:`MASK_COLOURS`.
        compress: the COG's compression (:data:`COMPRESSIONS`).
        key: the option or output name used in error messages.

    Raises:
        ConfigError: the suffix, kind or compression is not one of those supported.
    """

    def __init__(self, path: str | Path, height: int, width: int, kind: str = "mask", geo: GeoInfo | None = None,
                 palette: np.ndarray | None = None, compress: str = "deflate", key: str = "--out") -> None:
        self.path = Path(path)
        if kind not in KINDS:
            raise ConfigError(f"{key}: unknown raster kind {kind!r}; expected one of {', '.join(KINDS)}")
        if compress not in COMPRESSIONS:
            raise ConfigError(f"--compress: must be one of {', '.join(COMPRESSIONS)}, got {compress!r}")
        suffix = self.path.suffix.lower()
        if suffix not in GEOTIFF_SUFFIXES + PNG_SUFFIXES:
            raise ConfigError(f"{key}: output {self.path} must end in .tif, .tiff or .png, got '{self.path.suffix}'")
        self.kind, self.spec, self.height, self.width = kind, KINDS[kind], int(height), int(width)
        self.geo = geo if geo is not None else GeoInfo()
        self.palette, self.compress = palette, compress
        self._stack = contextlib.ExitStack()
        self._ds: Any = None
        self._arr: np.ndarray | None = None
        self._tmp = self._stack.enter_context(atomic_path(self.path))
        try:
            if suffix in GEOTIFF_SUFFIXES:
                with gdal_env():
                    self._open_strips()
            else:
                if self.geo.is_geo:
                    log.warning("%s: PNG output drops the georeferencing; use .tif to keep it", self.path)
                self._arr = np.zeros((self.height, self.width), np.uint8)
        except BaseException:
            self.abort()
            raise

    def _open_strips(self) -> None:
        import rasterio

        self._strips = self._tmp.with_name(self._tmp.name + ".strips.tif")
        self._stack.callback(self._strips.unlink, missing_ok=True)
        profile: dict[str, Any] = dict(
            driver="GTiff", height=self.height, width=self.width, count=1, dtype=self.spec.dtype,
            nodata=self.spec.nodata, tiled=True, blockxsize=BLOCK, blockysize=BLOCK, compress="zstd", zstd_level=1,
            BIGTIFF="IF_SAFER",
        )
        if self.geo.is_geo:
            profile.update(crs=self.geo.crs, transform=self.geo.transform)
        self._ds = rasterio.open(self._strips, "w", **profile)
        self._stack.callback(self._close_ds)
        colours = self._colour_table()
        if colours is not None:
            self._ds.write_colormap(1, colours)

    def _colour_table(self) -> dict[int, tuple[int, int, int, int]] | None:
        if self.kind == "mask":
            return dict(MASK_COLOURS)
        if self.kind == "classes" and self.palette is not None:
            table = {i: (*map(int, rgb), 255) for i, rgb in enumerate(np.asarray(self.palette)[:CLASS_NODATA])}
            table[CLASS_NODATA] = (0, 0, 0, 0)
            return table
        return None

    def _close_ds(self) -> None:
        if self._ds is not None and not self._ds.closed:
            self._ds.close()

    def write(self, row: int, data: np.ndarray) -> None:
        """Write ``(h, W)`` rows starting at ``row`` (cast to the kind's dtype)."""
        data = np.asarray(data)
        if data.ndim != 2 or data.shape[1] != self.width or not 0 <= row <= self.height - data.shape[0]:
            raise ValueError(f"{self.path}: rows of shape {data.shape} at row {row} do not fit the "
                             f"{self.height} x {self.width} raster")
        if self._arr is not None:
            if self.kind == "prob":  # probabilities in a PNG: 0..255, no data as 0
                data = np.rint(np.nan_to_num(data, nan=0.0) * 255)
            self._arr[row : row + data.shape[0]] = data.astype(np.uint8)
            return
        from rasterio.windows import Window

        with gdal_env():  # each call: GDAL's cache stays capped, and nested environments unwind in order
            self._ds.write(data.astype(self.spec.dtype, copy=False)[None],
                           window=Window(0, row, self.width, data.shape[0]))

    def close(self) -> Path:
        """Finish the file (COG translation or PNG encoding) and move it to its final name."""
        try:
            if self._arr is not None:
                from ..data.io import write_png

                write_png(self._tmp, self._arr, palette=self.palette if self.kind == "classes" else None)
            else:
                with gdal_env():
                    self._ds.close()
                to_cog(self._strips, self._tmp, self.spec.overview_resampling, self.compress)
        except BaseException:
            self.abort()
            raise
        self._stack.close()
        return self.path

    def abort(self) -> None:
        """Drop everything written (no file appears)."""
        self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)

    def __enter__(self) -> RasterWriter:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def to_cog(src: str | Path, dst: str | Path, overview_resampling: str = "NEAREST", compress: str = "deflate") -> None:
    """Translate a (tiled) GeoTIFF into a Cloud Optimized GeoTIFF with GDAL's COG driver.

    Internal tiles of :data:`BLOCK` pixels, overviews down to one tile (``overview_resampling``), ``compress``
    (with the floating-point predictor for float data); CRS, transform, nodata and colour table are copied.
    """
    import rasterio
    import rasterio.shutil

    with rasterio.open(src) as ds:
        floating = np.issubdtype(np.dtype(ds.dtypes[0]), np.floating)
    options: dict[str, Any] = dict(
        COMPRESS=compress.upper(), BLOCKSIZE=BLOCK, OVERVIEWS="AUTO", OVERVIEW_RESAMPLING=overview_resampling,
        BIGTIFF="IF_SAFER", NUM_THREADS=1,
    )
    if compress in ("deflate", "zstd", "lzw"):
        options["PREDICTOR"] = "FLOATING_POINT" if floating else "NO"
    with gdal_env():
        rasterio.shutil.copy(str(src), str(dst), driver="COG", **options)


def write_array(path: str | Path, array: np.ndarray, geo: GeoInfo | None = None, nodata: float | None = None,
                palette: np.ndarray | None = None, compress: str = "deflate") -> Path:
    """Write a whole ``(C, H, W)`` array as a COG atomically (any dtype and band count).

    For rasters that fit in memory (tiles, labels, converted bands); scene outputs use :class:`RasterWriter`.
    """
    import rasterio

    arr = np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    geo = geo if geo is not None else GeoInfo()
    path = Path(path)
    with atomic_path(path) as tmp:
        strips = tmp.with_name(tmp.name + ".strips.tif")
        # bands are data, never alpha: GDAL would otherwise take a 4-band 8-bit array for RGBA (and its 4th band,
        # e.g. near infrared, for a mask)
        rgb = arr.shape[0] == 3 and arr.dtype == np.uint8
        profile: dict[str, Any] = dict(driver="GTiff", height=arr.shape[1], width=arr.shape[2], count=arr.shape[0],
                                       dtype=arr.dtype.name, tiled=True, blockxsize=BLOCK, blockysize=BLOCK,
                                       photometric="RGB" if rgb else "MINISBLACK")
        if nodata is not None:
            profile["nodata"] = nodata
        if geo.is_geo:
            profile.update(crs=geo.crs, transform=geo.transform)
        try:
            with rasterio.open(strips, "w", **profile) as dst:
                dst.write(arr)
                if palette is not None:
                    dst.write_colormap(1, {i: (*map(int, rgb), 255) for i, rgb in enumerate(np.asarray(palette))})
            to_cog(strips, tmp, "NEAREST" if not np.issubdtype(arr.dtype, np.floating) else "AVERAGE", compress)
        finally:
            strips.unlink(missing_ok=True)
    return path
