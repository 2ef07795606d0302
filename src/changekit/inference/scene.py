"""Change detection over whole scenes that may not fit in memory, and export of change polygons.

:func:`predict_scene` walks the scene one row of tiles at a time: it reads only the rows those tiles need
(rasterio windows), blends the tiles with :class:`~changekit.inference.sliding.TilePredictor`, writes the rows
no later tile can touch with a windowed GeoTIFF write, and carries the overlap rows over to the next strip. The
result is the same as :func:`~changekit.inference.sliding.sliding_window_predict` on the whole scene, but memory
grows with the scene width only. Outputs keep the CRS and transform of date A. Reprojection is out of scope:
both dates must already share one pixel grid.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from torch import nn

from ..data.io import atomic_path, geo_transform, nonfinite_pixels, read_image, write_png
from ..errors import ConfigError, DatasetNotFoundError, ImageReadError, SizeMismatchError
from ..data.normalize import Normalisation
from .sliding import TileExtras, TilePredictor, eval_mode, stride_from

if TYPE_CHECKING:
    from ..engine.options import PredictOptions

log = logging.getLogger(__name__)

_GEOTIFF = (".tif", ".tiff")
_PNG = (".png",)


class _Raster:
    """Reads row windows of a GeoTIFF lazily (rasterio) or of a plain image (decoded once, PNG/JPEG)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetNotFoundError(f"{self.path}: file not found")
        self._ds: Any = None
        self._arr: np.ndarray | None = None
        if self.path.suffix.lower() in _GEOTIFF:
            import rasterio
            from rasterio.errors import RasterioIOError

            try:
                self._ds = rasterio.open(self.path)
            except (RasterioIOError, OSError) as exc:
                raise ImageReadError(f"{self.path}: cannot read raster ({exc})") from None
            self.height, self.width, self.count = self._ds.height, self._ds.width, self._ds.count
            self.crs = self._ds.crs
            self.transform = geo_transform(self._ds)  # kept without a CRS too: outputs stay on the grid
            self.dtype = np.dtype(self._ds.dtypes[0])
        else:
            arr = cast(np.ndarray, read_image(self.path))
            self._arr = np.moveaxis(arr, -1, 0)
            self.count, self.height, self.width = self._arr.shape
            self.crs = self.transform = None
            self.dtype = self._arr.dtype

    def read_rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``[r0, r1)`` of all bands as ``(C, r1 - r0, W)``."""
        if self._arr is not None:
            return self._arr[:, r0:r1]
        from rasterio.windows import Window

        return self._ds.read(window=Window(0, r0, self.width, r1 - r0))

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()


def _crs_name(crs: Any) -> str:
    return "none" if crs is None else crs.to_string() or crs.to_wkt()


def _check_pair(a: _Raster, b: _Raster) -> None:
    """Both dates must share size, band count, CRS and transform (changekit does not reproject)."""
    fix = "reproject B onto A's grid first (changekit does not reproject)"
    if (a.height, a.width) != (b.height, b.width):
        raise SizeMismatchError(
            f"{a.path} is {a.height} x {a.width} but {b.path} is {b.height} x {b.width} pixels (H x W); {fix}"
        )
    if a.count != b.count:
        raise SizeMismatchError(f"{a.path} has {a.count} bands but {b.path} has {b.count}")
    if (a.crs is None) != (b.crs is None) or (a.crs is not None and a.crs != b.crs):
        raise SizeMismatchError(
            f"{a.path} has CRS {_crs_name(a.crs)} but {b.path} has CRS {_crs_name(b.crs)}; {fix}"
        )
    if a.transform is not None and b.transform is not None:
        ta, tb = np.asarray(tuple(a.transform)[:6]), np.asarray(tuple(b.transform)[:6])
        tol = 1e-6 * max(abs(ta[0]), abs(ta[4]), 1e-12)  # a millionth of a pixel
        if not np.allclose(ta, tb, rtol=0, atol=tol):
            raise SizeMismatchError(
                f"{a.path} and {b.path} are on different pixel grids (transforms {tuple(ta)} vs {tuple(tb)}); {fix}"
            )


class _Output:
    """One output raster written strip by strip: windowed GeoTIFF writes, or a PNG assembled in memory."""

    def __init__(self, path: str | Path, key: str, dtype: str, src: _Raster, stack: contextlib.ExitStack,
                 palette: np.ndarray | None = None) -> None:
        self.path = Path(path)
        self.palette = palette
        self.dtype = np.dtype(dtype)
        suffix = self.path.suffix.lower()
        self._ds: Any = None
        self._arr: np.ndarray | None = None
        self.width = src.width
        if suffix in _GEOTIFF:
            import rasterio

            profile: dict[str, Any] = dict(
                driver="GTiff", height=src.height, width=src.width, count=1, dtype=self.dtype.name,
                compress="deflate", BIGTIFF="IF_SAFER",
            )
            if src.crs is not None or src.transform is not None:
                profile.update(crs=src.crs, transform=src.transform)
            tmp = stack.enter_context(atomic_path(self.path))
            self._ds = stack.enter_context(rasterio.open(tmp, "w", **profile))
            if palette is not None:  # class maps: a colour table, so GIS tools show the classes' colours
                self._ds.write_colormap(1, {i: (*map(int, rgb), 255) for i, rgb in enumerate(palette)})
        elif suffix in _PNG:
            if src.crs is not None or src.transform is not None:
                log.warning("%s: PNG output drops the georeferencing of %s; use .tif to keep it", self.path, src.path)
            self._arr = np.zeros((src.height, src.width), np.uint8)
        else:
            raise ConfigError(f"{key}: output {self.path} must end in .tif, .tiff or .png, got '{self.path.suffix}'")

    def write(self, r0: int, data: np.ndarray) -> None:
        """Write ``(h, W)`` rows starting at row ``r0``."""
        if self._arr is not None:
            if self.dtype == np.float32:  # probabilities in a PNG: scale to 0..255
                data = np.rint(data * 255)
            self._arr[r0 : r0 + data.shape[0]] = data.astype(np.uint8)
            return
        from rasterio.windows import Window

        self._ds.write(data.astype(self.dtype)[None], window=Window(0, r0, self.width, data.shape[0]))

    def finish(self) -> None:
        """PNG outputs are written here (atomically); GeoTIFFs are renamed when the exit stack closes."""
        if self._arr is not None:
            write_png(self.path, self._arr, palette=self.palette)


@dataclass
class SceneOutputs:
    """The files one scene prediction writes (``None``: not written).

    Attributes:
        mask: 0 = no change, 255 = change (uint8); ``.tif`` keeps A's georeferencing, ``.png`` has none.
        prob: change probability (float32 GeoTIFF; a PNG is scaled to 0..255).
        sem_a, sem_b: semantic models: class-index maps of each date (uint8, with the palette).
    """

    mask: Path
    prob: Path | None = None
    sem_a: Path | None = None
    sem_b: Path | None = None

    def items(self) -> list[tuple[str, Path]]:
        """``(key, path)`` of every file to write."""
        return [(k, Path(v)) for k, v in vars(self).items() if v is not None]


def predict_scene(
    model: nn.Module,
    a_path: str | Path,
    b_path: str | Path,
    outputs: SceneOutputs | str | Path,
    options: PredictOptions | None = None,
    norm: Normalisation | None = None,
    *,
    extras: dict[str, Any] | None = None,
    palette: np.ndarray | None = None,
    tile_extras: TileExtras | None = None,
) -> Path:
    """Predict the change mask of a (georeferenced) scene pair, strip by strip, and write it.

    Args:
        model: a change model; it runs in eval mode without gradients.
        a_path, b_path: the two dates (GeoTIFF read by windows, or PNG/JPEG decoded whole); they must share
            size, band count, CRS and transform.
        outputs: the files to write (:class:`SceneOutputs`), or just the mask's path.
        options: tile, overlap, batch size, blend, amp, threshold (default 0.5) and device (default: the model's)
            (:class:`~changekit.engine.options.PredictOptions`).
        norm: raw pixels -> model input (default: dtype full scale, then ImageNet mean/std).
        extras: the model's extra forward inputs for this one pair (e.g. ChangeCLIP's tags), one entry each.
        palette: ``(K, 3)`` uint8 class colours for the class maps (a GeoTIFF colour table or a palette PNG).
        tile_extras: forward inputs computed per batch of tiles instead (e.g. a
            :class:`~changekit.clip_tags.TileTagger`: ChangeCLIP's tags from each tile).

    Returns:
        The mask's path.

    Raises:
        SizeMismatchError: A and B differ in size, bands, CRS or transform.
        ConfigError: a setting or an output suffix is invalid, or the bands do not match the model.
    """
    from ..engine.options import PredictOptions

    files = outputs if isinstance(outputs, SceneOutputs) else SceneOutputs(Path(outputs))
    opt = (options or PredictOptions()).validate()
    norm = norm or Normalisation()
    threshold = 0.5 if opt.threshold is None else float(opt.threshold)
    inputs = {Path(a_path).resolve(), Path(b_path).resolve()}
    for key, p in files.items():
        if p.resolve() in inputs:
            raise ConfigError(f"{p}: the {key} output is one of the input images; choose another output path")
    with contextlib.ExitStack() as stack:
        src_a = _Raster(a_path)
        stack.callback(src_a.close)
        src_b = _Raster(b_path)
        stack.callback(src_b.close)
        _check_pair(src_a, src_b)
        in_ch = getattr(model, "in_channels", None)
        if in_ch is not None and in_ch != src_a.count:
            raise ConfigError(f"{src_a.path} has {src_a.count} bands but the model expects {in_ch} input channels")
        predictor = TilePredictor(model, opt.tile, stride_from(opt.tile, opt.overlap, None), opt.batch_size,
                                  opt.blend, opt.device, opt.amp)
        writers = {key: _Output(p, key, "float32" if key == "prob" else "uint8", src_a, stack,
                                palette if key.startswith("sem") else None) for key, p in files.items()}
        with eval_mode(model), torch.inference_mode():
            _run_strips(predictor, src_a, src_b, lambda raw: norm.chw(raw, src_a.path),
                        lambda raw: norm.chw(raw, src_b.path), writers, threshold, extras, tile_extras)
        for out in writers.values():
            out.finish()
    log.info("wrote %s", files.mask)
    return files.mask


def _run_strips(
    predictor: TilePredictor,
    src_a: _Raster,
    src_b: _Raster,
    norm_a: Any,
    norm_b: Any,
    outputs: dict[str, _Output],
    threshold: float,
    extras: dict[str, Any] | None = None,
    tile_extras: TileExtras | None = None,
) -> None:
    """Predict one row of tiles at a time, write the finished rows, carry the overlap rows onward."""
    grid = predictor.grid(src_a.height, src_a.width)
    t = predictor.tile
    rows, cols = grid.row_index().numpy(), grid.col_index().numpy()
    positions = [(0, 0, x) for x in grid.xs]
    carry: tuple[torch.Tensor, torch.Tensor] | None = None
    log.info("scene %dx%d: %d strips of %d tiles", src_a.height, src_a.width, len(grid.ys), len(grid.xs))
    for r, y in enumerate(grid.ys):
        idx = rows[y : y + t]
        lo, hi = int(idx.min()), int(idx.max()) + 1
        a = norm_a(src_a.read_rows(lo, hi)[:, idx - lo][:, :, cols])[None]
        b = norm_b(src_b.read_rows(lo, hi)[:, idx - lo][:, :, cols])[None]
        acc = wsum = None
        if carry is not None:
            acc = torch.zeros(1, carry[0].shape[1], *a.shape[-2:])
            wsum = torch.zeros(1, 1, *a.shape[-2:])
            acc[:, :, : carry[0].shape[2]] = carry[0]
            wsum[:, :, : carry[1].shape[2]] = carry[1]
        acc, wsum = predictor.accumulate(a, b, positions, acc, wsum, extras=extras, tile_extras=tile_extras)
        done = (grid.ys[r + 1] if r + 1 < len(grid.ys) else grid.padded_height) - y  # rows no later tile touches
        carry = (acc[:, :, done:].clone(), wsum[:, :, done:].clone())
        r0, r1 = max(y - grid.pad_top, 0), min(y + done - grid.pad_top, grid.height)
        if r1 <= r0:
            continue
        local = slice(r0 + grid.pad_top - y, r1 + grid.pad_top - y)
        c = slice(grid.pad_left, grid.pad_left + grid.width)
        probs = predictor.split(acc[:, :, local, c] / wsum[:, :, local, c])
        change = probs["change"][0].numpy()
        nodata = _nodata_rows(src_a, src_b, r0, r1)
        if nodata is not None:  # where either date is NaN / Inf: 0 (no change) in the mask and the probability
            change = np.where(nodata, np.float32(0), change)
        outputs["mask"].write(r0, np.where(change > threshold, 255, 0).astype(np.uint8))
        if "prob" in outputs:
            outputs["prob"].write(r0, change.astype(np.float32))
        for key in ("sem_a", "sem_b"):
            if key in outputs:
                if key not in probs:
                    raise ConfigError(f"{key}_path: the model is not semantic (it returns no class maps)")
                outputs[key].write(r0, probs[key][0].argmax(0).numpy().astype(np.uint8))


def _nodata_rows(a: _Raster, b: _Raster, r0: int, r1: int) -> np.ndarray | None:
    """``(r1 - r0, W)`` mask of pixels where a float band of either date is NaN or infinite, or ``None``."""
    bad = None
    for src in (a, b):
        if np.issubdtype(src.dtype, np.floating):
            rows = nonfinite_pixels(np.moveaxis(src.read_rows(r0, r1), 0, -1))
            if rows is not None:
                bad = rows if bad is None else bad | rows
    return bad


def polygonize(mask_path: str | Path, out_geojson: str | Path, min_area: float = 0.0) -> Path:
    """Write the change regions (non-zero pixels) of a mask as GeoJSON polygons in the raster's CRS.

    Regions are 4-connected, so every polygon is valid. Coordinates and ``area`` are in CRS units (pixels for
    rasters without georeferencing); polygons smaller than ``min_area`` are dropped. The whole mask is read
    into memory (one byte per pixel).

    Returns:
        ``out_geojson``.
    """
    import rasterio.features
    import shapely.geometry
    from affine import Affine

    if min_area < 0:
        raise ConfigError(f"min_area: must be >= 0, got {min_area}")
    arr, geo = read_image(mask_path, with_geo=True)
    if arr.shape[2] != 1:
        raise ImageReadError(f"{mask_path}: a change mask must have one band, found {arr.shape[2]}")
    mask = (arr[:, :, 0] > 0).astype(np.uint8)
    transform = geo.transform if geo.transform is not None else Affine.identity()
    features = []
    for geom, _value in rasterio.features.shapes(mask, mask=mask.astype(bool), connectivity=4, transform=transform):
        area = float(shapely.geometry.shape(geom).area)
        if area >= min_area and area > 0:
            features.append({"type": "Feature", "properties": {"id": len(features), "area": area}, "geometry": geom})
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
    if geo.crs is not None:
        epsg = geo.crs.to_epsg()
        name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else geo.crs.to_wkt()
        collection["crs"] = {"type": "name", "properties": {"name": name}}
    out_geojson = Path(out_geojson)
    with atomic_path(out_geojson) as tmp:
        tmp.write_text(json.dumps(collection))
    log.info("%s: %d change polygons", out_geojson, len(features))
    return out_geojson
