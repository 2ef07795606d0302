"""Reading and writing images and labels, with one clear error per bad file.

PNG/JPEG/BMP go through Pillow (fast); GeoTIFF and other rasters through rasterio, which also returns the
georeferencing so that predictions can be written back on the same grid. Every writer writes to a
temporary name in the target folder and renames on success, so a killed run never leaves a half-written file.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..atomic import atomic_dir, atomic_path, fsync_path, make_dirs, sweep_stale_temps  # noqa: F401 (re-exported)
from ..errors import ChangekitError, DatasetNotFoundError, ImageReadError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_RASTERIO_SUFFIXES = (".tif", ".tiff")


@dataclass
class GeoInfo:
    """Georeferencing of a raster (``None`` fields for plain images)."""

    crs: Any = None
    transform: Any = None

    @property
    def is_geo(self) -> bool:
        """A CRS or a geotransform is known (a transform without a CRS still places pixels on a grid)."""
        return self.crs is not None or self.transform is not None


def require_file(path: str | Path, what: str = "file", error: type[ChangekitError] = ImageReadError) -> Path:
    """``path`` as a readable regular file, or one error line saying what it is instead.

    Every reader calls this first, so a missing file, a broken link, a symbolic link loop, a folder named like an
    image, a FIFO or device (which would block or never end) and a file without read permission each give one
    line naming the path.

    Raises:
        DatasetNotFoundError: nothing (or a broken link) at ``path``.
        ChangekitError: ``error`` for everything else that is not a readable file.
    """
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise DatasetNotFoundError(f"{path}: {what} is a broken symbolic link "
                                       f"(its target {os.readlink(path)} does not exist)") from None
        raise DatasetNotFoundError(f"{path}: {what} not found") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{path}: {what} is a symbolic link loop (the link points back at itself)") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise error(f"{path}: {what} cannot be read (permission denied on a folder of its path)") from None
        if exc.errno == errno.ENOTDIR:
            raise DatasetNotFoundError(f"{path}: {what} not found (a part of the path is a file)") from None
        raise error(f"{path}: cannot access the {what} ({exc.strerror})") from None
    article = "an" if what[:1].lower() in "aeiou" else "a"
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{path}: is a folder, but {article} {what} is expected here")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{path}: is not a regular file (a pipe, socket or device), but {article} {what} is expected "
                    "here")
    if not os.access(path, os.R_OK, effective_ids=os.access in os.supports_effective_ids):
        raise error(f"{path}: {what} cannot be read (permission denied)")
    return path


def size_text(shape: tuple[int, ...] | list[int], label: str | None = None) -> str:
    """An image size as messages write it: ``1024 x 1024 x 3 (A)`` (height x width [x bands], then a label)."""
    text = " x ".join(str(int(v)) for v in shape)
    return f"{text} ({label})" if label else text


def nonfinite_pixels(arr: np.ndarray) -> np.ndarray | None:
    """``(H, W)`` bool mask of pixels with a NaN or infinite value in any band, or ``None`` when there are none
    (integer images never have any)."""
    if not np.issubdtype(arr.dtype, np.floating):
        return None
    bad = ~np.isfinite(arr)
    if bad.ndim == 3:
        bad = bad.any(axis=2)
    return bad if bad.any() else None


def zero_nonfinite(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``arr`` with NaN and infinite values set to 0 (a copy; the original is untouched), and the mask of
    :func:`nonfinite_pixels`. Non-finite pixels are nodata: they never reach a network."""
    bad = nonfinite_pixels(arr)
    if bad is None:
        return arr, None
    return np.where(np.isfinite(arr), arr, 0).astype(arr.dtype, copy=False), bad


def read_image(path: str | Path, with_geo: bool = False) -> np.ndarray | tuple[np.ndarray, GeoInfo]:
    """Read an image as an ``(H, W, C)`` array (uint8 for 8-bit files, the file's dtype otherwise).

    Raises:
        DatasetNotFoundError: the file does not exist.
        ImageReadError: the file is not a readable image.
    """
    path = require_file(path)
    geo = GeoInfo()
    if path.suffix.lower() in _RASTERIO_SUFFIXES:
        arr, geo = _read_rasterio(path)
    else:
        try:
            with Image.open(path) as im:
                im.load()
                if im.mode == "P":
                    im = im.convert("RGB") if _palette_is_colour(im) else im.convert("L")
                elif im.mode in ("I;16", "I;16B", "I"):
                    im = im.convert("I")
                arr = np.asarray(im)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise ImageReadError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from None
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return (arr, geo) if with_geo else arr


def _palette_is_colour(im: Image.Image) -> bool:
    pal = im.getpalette() or []
    rgb = np.asarray(pal[: 3 * 256]).reshape(-1, 3) if pal else np.zeros((0, 3))
    return bool(len(rgb) and (np.ptp(rgb, axis=1) > 0).any())


def read_palette_indices(path: str | Path) -> np.ndarray:
    """Read a palette ('P' mode) or grey PNG as its raw index values ``(H, W)``."""
    path = require_file(path)
    try:
        with Image.open(path) as im:
            im.load()
            return np.asarray(im if im.mode in ("P", "L") else im.convert("L"))
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from None


def _read_rasterio(path: Path) -> tuple[np.ndarray, GeoInfo]:
    """The whole raster through :class:`~changekit.raster.reader.RasterReader` (every band but alpha bands)."""
    from ..raster.reader import RasterReader

    with RasterReader(path) as reader:
        return np.moveaxis(reader.read(), 0, -1), reader.geo


def geo_transform(src: Any) -> Any:
    """The geotransform of an open rasterio dataset, or ``None`` when the file has none.

    A file without a geotransform reads as the identity (and rasterio warns); one with a transform but no CRS
    keeps it, so outputs stay on the same pixel grid.
    """
    from affine import Affine

    transform = src.transform
    return None if src.crs is None and transform == Affine.identity() else transform


def image_size(path: str | Path) -> tuple[int, int, int]:
    """``(H, W, C)`` of an image without decoding its pixels where the format allows."""
    path = require_file(path)
    if path.suffix.lower() in _RASTERIO_SUFFIXES:  # the bands a RasterReader reads (alpha bands are masks)
        from ..raster.reader import RasterReader

        with RasterReader(path) as reader:
            return reader.height, reader.width, reader.count
    try:
        with Image.open(path) as im:
            bands = len(im.getbands())
            if im.mode == "P":
                bands = 3 if _palette_is_colour(im) else 1
            return im.height, im.width, bands
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"{path}: cannot read image ({exc.__class__.__name__}: {exc})") from None


def write_png(path: str | Path, array: np.ndarray, palette: np.ndarray | None = None) -> None:
    """Write ``(H, W)`` or ``(H, W, 3)`` uint8 data as PNG atomically; ``palette`` (K, 3) makes a 'P' image."""
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    im = Image.fromarray(arr.astype(np.uint8))
    if palette is not None:
        im = im.convert("P") if im.mode != "L" else Image.fromarray(arr.astype(np.uint8), mode="L").convert("P")
        flat = np.zeros((256, 3), np.uint8)
        flat[: len(palette)] = np.asarray(palette, np.uint8)
        im.putpalette(flat.reshape(-1).tolist())
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


def write_geotiff(path: str | Path, array: np.ndarray, geo: GeoInfo | None = None) -> None:
    """Write ``(H, W)`` or ``(H, W, C)`` data as a Cloud Optimized GeoTIFF atomically, keeping CRS and transform
    (:func:`changekit.raster.writer.write_array`)."""
    from ..raster.writer import write_array

    arr = np.asarray(array)
    write_array(path, arr if arr.ndim == 2 else np.moveaxis(arr, -1, 0), geo)


def write_image(path: str | Path, array: np.ndarray, geo: GeoInfo | None = None) -> None:
    """Write by suffix: ``.tif``/``.tiff`` as GeoTIFF, anything else as PNG."""
    if Path(path).suffix.lower() in _RASTERIO_SUFFIXES:
        write_geotiff(path, array, geo)
    else:
        write_png(path, array)
