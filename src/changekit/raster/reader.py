"""One reader for every raster changekit takes in: windows, band selection, nodata and on-the-fly alignment.

Training data, ``test``, ``predict`` and export all read pixels through :class:`RasterReader`, so that the bands a
model sees, what counts as "no data" and how a second date is put onto the first date's grid are decided once.

* GeoTIFFs (and anything else rasterio opens by those suffixes) are read lazily by windows; PNG/JPEG/BMP are
  decoded whole once (no georeferencing).
* ``bands`` are 1-based as in GDAL (``--bands 4,3,2``). Without it every band is read except alpha bands, which are
  masks, not data.
* :meth:`RasterReader.valid` says where a pixel holds data: ``False`` where the nodata value of any selected band,
  an internal (per-dataset) mask, an alpha band or a non-finite value says so.
* ``align_to`` warps the raster onto another reader's grid (CRS, resolution and extent) with rasterio's
  ``WarpedVRT`` as windows are read; pixels outside this raster's footprint read as invalid.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..data.io import GeoInfo, geo_transform, nonfinite_pixels, read_image, require_file
from ..errors import ConfigError, ImageReadError, SizeMismatchError

log = logging.getLogger(__name__)

#: Suffixes read lazily with rasterio; everything else is decoded whole (Pillow).
RASTERIO_SUFFIXES = (".tif", ".tiff")
#: Resampling methods ``align_to`` (``--resampling``) accepts (rasterio's names).
RESAMPLINGS = ("nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average", "mode")

#: ``(row_off, col_off, height, width)``: a window in pixels, rows first like numpy.
Window = tuple[int, int, int, int]


class RasterReader:
    """Windowed reads of the selected bands of one raster, with its validity mask and georeferencing.

    Args:
        path: a GeoTIFF (read lazily) or a PNG/JPEG/BMP image (decoded whole).
        bands: 1-based band indices to read, in this order (``None``: every band but alpha bands).
        align_to: another reader whose pixel grid this one is warped onto (``None``: read as stored). When both
            grids already agree, no warping happens at all.
        resampling: how pixels are resampled when warping (:data:`RESAMPLINGS`).

    Attributes:
        path, height, width: the file and the size of the grid read (the reference's grid when aligned).
        count: the number of selected bands; ``bands`` their 1-based indices in the file.
        dtype: numpy dtype of :meth:`read`'s result.
        crs, transform: georeferencing of the grid read (``None`` when absent; a transform without a CRS is kept).
        nodata: the file's nodata value (``None``: none declared).
        aligned: ``True`` when reads are warped onto ``align_to``'s grid.

    Raises:
        DatasetNotFoundError: the file does not exist.
        ImageReadError: the file is not a readable raster.
        ConfigError: a band index is out of range, ``resampling`` is unknown, or ``align_to`` cannot be honoured
            (a grid without a CRS, footprints that do not overlap).
    """

    def __init__(self, path: str | Path, bands: Sequence[int] | None = None, align_to: RasterReader | None = None,
                 resampling: str = "bilinear") -> None:
        self.path = require_file(path)
        self._ds: Any = None  # the opened file
        self._src: Any = None  # what windows are read from: the file, or a WarpedVRT over it
        self._arr: np.ndarray | None = None
        self.aligned = False
        if resampling not in RESAMPLINGS:
            raise ConfigError(f"--resampling: must be one of {', '.join(RESAMPLINGS)}, got {resampling!r}")
        if self.path.suffix.lower() in RASTERIO_SUFFIXES:
            self._open_rasterio(bands)
        else:
            self._open_plain(bands)
        if align_to is not None:
            self._align(align_to, resampling)

    # ------------------------------------------------------------------------------------------------ opening
    def _open_rasterio(self, bands: Sequence[int] | None) -> None:
        import rasterio
        from rasterio.enums import ColorInterp
        from rasterio.errors import RasterioIOError

        try:
            self._ds = rasterio.open(self.path)
        except (RasterioIOError, OSError) as exc:
            raise ImageReadError(f"{self.path}: cannot read raster ({exc})") from None
        ds = self._ds
        self._src = ds
        self._alpha = [i + 1 for i, ci in enumerate(ds.colorinterp) if ci == ColorInterp.alpha]
        default = [i for i in range(1, ds.count + 1) if i not in self._alpha] or list(range(1, ds.count + 1))
        self.bands = _check_bands(self.path, bands, ds.count, default)
        self.count = len(self.bands)
        self.height, self.width = ds.height, ds.width
        self.crs = ds.crs
        self.transform = geo_transform(ds)  # kept without a CRS too: outputs stay on the grid
        self.dtype = np.result_type(*[np.dtype(ds.dtypes[i - 1]) for i in self.bands])
        self.nodata = ds.nodata
        self._nodatavals = [ds.nodatavals[i - 1] for i in self.bands]
        self._mask_kind = _mask_kind([ds.mask_flag_enums[i - 1] for i in self.bands])

    def _open_plain(self, bands: Sequence[int] | None) -> None:
        arr = np.moveaxis(np.asarray(read_image(self.path)), -1, 0)
        self.bands = _check_bands(self.path, bands, arr.shape[0], list(range(1, arr.shape[0] + 1)))
        self._arr = arr if self.bands == list(range(1, arr.shape[0] + 1)) else arr[[i - 1 for i in self.bands]]
        self.count, self.height, self.width = self._arr.shape
        self.crs = self.transform = self.nodata = None
        self.dtype = self._arr.dtype
        self._nodatavals = [None] * self.count
        self._mask_kind = "all_valid"

    def _align(self, ref: RasterReader, resampling: str) -> None:
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        if same_grid(self, ref):
            return
        for reader in (self, ref):
            if reader.crs is None:
                raise ConfigError(f"--align: {reader.path} has no CRS, so {self.path} cannot be warped onto "
                                  f"{ref.path}'s grid; give both dates a CRS (or put them on one grid)")
        _check_overlap(self, ref)
        self._src = WarpedVRT(
            self._ds, crs=ref.crs, transform=ref.transform, width=ref.width, height=ref.height,
            resampling=Resampling[resampling], add_alpha=True,
            **({"src_alpha": self._alpha[0]} if self._alpha else {}),
        )
        log.info("%s: warped onto the grid of %s (%s resampling)", self.path, ref.path, resampling)
        self.height, self.width, self.crs, self.transform = ref.height, ref.width, ref.crs, ref.transform
        self._mask_kind = "alpha"  # the VRT's added alpha band: 0 outside the footprint and where B had no data
        self.aligned = True

    # ------------------------------------------------------------------------------------------------ reading
    @property
    def geo(self) -> GeoInfo:
        """The georeferencing of the grid read (``GeoInfo()`` for plain images)."""
        return GeoInfo(crs=self.crs, transform=self.transform)

    def _window(self, window: Window | None) -> Any:
        if window is None:
            return None
        r0, c0, h, w = (int(v) for v in window)
        if r0 < 0 or c0 < 0 or h < 0 or w < 0 or r0 + h > self.height or c0 + w > self.width:
            raise ValueError(f"{self.path}: window (row {r0}, col {c0}, {h} x {w}) outside the "
                             f"{self.height} x {self.width} raster")
        from rasterio.windows import Window as RioWindow

        return RioWindow(c0, r0, w, h)

    def read(self, window: Window | None = None) -> np.ndarray:
        """Raw pixels of the selected bands, ``(C, h, w)`` in :attr:`dtype` (the whole raster without ``window``).

        Args:
            window: ``(row_off, col_off, height, width)`` in pixels of the grid read.
        """
        if self._arr is not None:
            if window is None:
                return self._arr
            r0, c0, h, w = window
            self._window(window)  # bounds check
            return self._arr[:, r0 : r0 + h, c0 : c0 + w]
        from rasterio.errors import RasterioIOError

        try:
            return self._src.read(self.bands, window=self._window(window))
        except (RasterioIOError, OSError) as exc:  # a truncated or corrupt file shows only when its blocks are read
            raise ImageReadError(f"{self.path}: cannot read raster ({exc})") from None

    def valid(self, window: Window | None = None) -> np.ndarray:
        """``(h, w)`` bool: ``True`` where every selected band holds data (see the module docstring)."""
        return self.read_valid(window)[1]

    def read_valid(self, window: Window | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`read` and :meth:`valid` of one window, reading the pixels once where the file allows."""
        data = self.read(window)
        return data, self._valid_from(data, window)

    def _valid_from(self, data: np.ndarray, window: Window | None) -> np.ndarray:
        valid = np.ones(data.shape[1:], bool)
        if self._mask_kind == "nodata":  # per-band nodata values only: compare the pixels already read
            for band, value in zip(data, self._nodatavals, strict=True):
                if value is not None:
                    valid &= ~(np.isnan(band) if np.isnan(value) else band == value)
        elif self._mask_kind == "mask":  # an internal mask, an alpha band or the VRT's alpha: GDAL's mask band
            masks = self._src.read_masks(self.bands[0], window=self._window(window))
            valid &= masks > 0
        elif self._mask_kind == "alpha":  # the warped view's last band (GDAL does not expose it as a mask band)
            valid &= self._src.read(self._src.count, window=self._window(window)) > 0
        bad = nonfinite_pixels(np.moveaxis(data, 0, -1)) if np.issubdtype(data.dtype, np.floating) else None
        if bad is not None:
            valid &= ~bad
        return valid

    def close(self) -> None:
        """Release the file (and the warped view over it)."""
        if self._src is not None and self._src is not self._ds:
            self._src.close()
        if self._ds is not None:
            self._ds.close()
        self._src = self._ds = None

    def __enter__(self) -> RasterReader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RasterReader({str(self.path)!r}, bands={self.bands}, {self.height}x{self.width}, "
                f"{self.dtype}{', aligned' if self.aligned else ''})")


def _check_bands(path: Path, bands: Sequence[int] | None, count: int, default: list[int]) -> list[int]:
    """The 1-based band list, or one error naming the file, the bad index and the valid range."""
    if bands is None:
        return default
    chosen = list(bands)
    if not chosen:
        raise ConfigError(f"--bands: no band selected for {path}; give 1-based band indices, e.g. 4,3,2")
    for b in chosen:
        if isinstance(b, bool) or not isinstance(b, int | np.integer) or not 1 <= b <= count:
            raise ConfigError(f"--bands: band {b!r} does not exist in {path}, which has {count} band(s) "
                              f"(1-based: 1..{count})")
    return [int(b) for b in chosen]


def _mask_kind(flags: list[list[Any]]) -> str:
    """How validity is found: ``all_valid`` (nothing to check), ``nodata`` (per-band values) or ``mask``."""
    from rasterio.enums import MaskFlags

    if all(f == [MaskFlags.all_valid] for f in flags):
        return "all_valid"
    if all(f == [MaskFlags.nodata] or f == [MaskFlags.all_valid] for f in flags):
        return "nodata"
    return "mask"


def same_grid(a: RasterReader, b: RasterReader) -> bool:
    """Both readers' grids agree in size, CRS and transform (to a millionth of a pixel)."""
    return grid_difference(a, b) is None


def _crs_name(crs: Any) -> str:
    return "none" if crs is None else crs.to_string() or crs.to_wkt()


def grid_difference(a: RasterReader, b: RasterReader) -> str | None:
    """What differs between two readers' pixel grids (size, CRS, transform), as a sentence; ``None``: nothing."""
    if (a.height, a.width) != (b.height, b.width):
        return f"{a.path} is {a.height} x {a.width} but {b.path} is {b.height} x {b.width} pixels (H x W)"
    if (a.crs is None) != (b.crs is None) or (a.crs is not None and a.crs != b.crs):
        return f"{a.path} has CRS {_crs_name(a.crs)} but {b.path} has CRS {_crs_name(b.crs)}"
    if a.transform is not None and b.transform is not None:
        ta, tb = np.asarray(tuple(a.transform)[:6]), np.asarray(tuple(b.transform)[:6])
        tol = 1e-6 * max(abs(ta[0]), abs(ta[4]), 1e-12)  # a millionth of a pixel
        if not np.allclose(ta, tb, rtol=0, atol=tol):
            return f"{a.path} and {b.path} are on different pixel grids (transforms {tuple(ta)} vs {tuple(tb)})"
    return None


def check_pair(a: RasterReader, b: RasterReader) -> None:
    """Both dates must share one grid and band count; a mismatch is one line naming what differs.

    Raises:
        SizeMismatchError: the grids or band counts differ (the message suggests ``--align``).
    """
    diff = grid_difference(a, b)
    if diff is not None:
        raise SizeMismatchError(f"{diff}; put B on A's grid with --align (or reproject it first)")
    if a.count != b.count:
        raise SizeMismatchError(f"{a.path} has {a.count} bands but {b.path} has {b.count}")


def _check_overlap(src: RasterReader, ref: RasterReader) -> None:
    """Refuse an alignment whose footprints do not intersect (the whole result would be nodata)."""
    from rasterio.transform import array_bounds
    from rasterio.warp import transform_bounds

    left, bottom, right, top = transform_bounds(src.crs, ref.crs, *src._ds.bounds)
    west, south, east, north = array_bounds(ref.height, ref.width, ref.transform)
    if left >= east or right <= west or bottom >= north or top <= south:
        raise ConfigError(f"--align: {src.path} does not overlap {ref.path} (bounds in {_crs_name(ref.crs)}: "
                          f"{(left, bottom, right, top)} vs {(west, south, east, north)})")
