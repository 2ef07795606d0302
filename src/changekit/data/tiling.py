"""Cut image pairs into a regular grid of tiles and stitch tile predictions back together.

Grid rule (ClearSCD ``scripts/clip_image.py``): starts ``0, stride, 2*stride, ...`` while ``start + size <= length``,
plus one extra start ``length - size`` when the stride does not reach the end; the product of row and column
starts gives the extra last column, last row and bottom-right corner. An axis shorter than ``size`` gets a
single start 0 and its tiles keep the image's own extent there (no padding, so no fill value has to be chosen
for labels); such tiles are smaller than ``size``.

``tile_folder`` writes ``out/<sub-folder>/{stem}_{row}_{col}{suffix}``, where ``row``/``col`` are the pixel
offsets of the tile's top-left corner, plus ``out/tiles.json`` (source sizes, grids, georeferencing) that
``merge_tiles`` uses to stitch predictions back. PNG and TIFF tiles keep their suffix; JPEG/BMP sources are
written as PNG, because re-encoding a JPEG would lose data. Palette PNGs keep their indices and palette,
1-bit PNGs become 0/255 grey, GeoTIFF tiles keep the CRS with the window's transform.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from itertools import product
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from ..errors import ConfigError, DatasetNotFoundError, PairingError, SizeMismatchError
from .io import (IMAGE_SUFFIXES, GeoInfo, atomic_dir, atomic_path, image_size, read_image,
                 read_palette_indices, write_geotiff, write_png)

log = logging.getLogger(__name__)

TILES_JSON = "tiles.json"
_TIF = (".tif", ".tiff")
IntPair = int | tuple[int, int] | Sequence[int]


def _pair(value: IntPair, what: str) -> tuple[int, int]:
    vals = [value, value] if isinstance(value, (int, np.integer)) else list(value)
    if len(vals) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0
                                 for v in vals):
        raise ConfigError(f"tiling: '{what}' must be a positive integer or (height, width), got {value!r}")
    return int(vals[0]), int(vals[1])


def tile_positions(length: int, size: int, stride: int) -> list[int]:
    """Tile starts along one axis (ClearSCD rule, see the module docstring)."""
    if length <= 0:
        raise ValueError(f"tile_positions: length must be positive, got {length}")
    size, stride = _pair(size, "size")[0], _pair(stride, "stride")[0]
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def tile_grid(shape: Sequence[int], size: IntPair, stride: IntPair | None = None) -> list[tuple[int, int]]:
    """``(row, col)`` tile offsets for an image of ``shape[:2]``, row-major."""
    (sh, sw), (th, tw) = _pair(size, "size"), _pair(size if stride is None else stride, "stride")
    return list(product(tile_positions(int(shape[0]), sh, th), tile_positions(int(shape[1]), sw, tw)))


def tile_array(arr: np.ndarray, size: IntPair, stride: IntPair | None = None) -> list[tuple[int, int, np.ndarray]]:
    """Cut ``arr`` (``(H, W, ...)``) into ``(row, col, tile)`` views on the grid of ``tile_grid``."""
    sh, sw = _pair(size, "size")
    return [(r, c, arr[r:r + sh, c:c + sw]) for r, c in tile_grid(arr.shape, size, stride)]


def merge_arrays(tiles: Iterable[np.ndarray], positions: Iterable[tuple[int, int]], shape: Sequence[int],
                 weights: np.ndarray | None = None, dtype: Any = np.float32) -> np.ndarray:
    """Average overlapping tiles into an array of ``shape`` (``(H, W)`` or ``(H, W, C)``).

    ``weights`` (``(h, w)``, e.g. a window that down-weights tile borders) gives a weighted mean. Pixels no
    tile covers are 0. Sums are kept in ``dtype``; float32 is exact for averaging integer images up to 8 bits.
    """
    shape = tuple(int(s) for s in shape)
    acc = np.zeros(shape, dtype)
    cnt = np.zeros(shape[:2], dtype)
    for tile, (r, c) in zip(tiles, positions, strict=True):
        tile = np.asarray(tile)
        if tile.ndim == len(shape) + 1 and tile.shape[-1] == 1:
            tile = tile[..., 0]
        h, w = tile.shape[:2]
        if tile.shape[2:] != shape[2:] or r < 0 or c < 0 or r + h > shape[0] or c + w > shape[1]:
            raise ValueError(f"merge_arrays: tile {tile.shape} at ({r}, {c}) does not fit into {shape}")
        if weights is None:
            acc[r:r + h, c:c + w] += tile
            cnt[r:r + h, c:c + w] += 1
        else:
            wgt = np.asarray(weights, dtype)[:h, :w]
            acc[r:r + h, c:c + w] += tile * (wgt if tile.ndim == 2 else wgt[..., None])
            cnt[r:r + h, c:c + w] += wgt
    covered = cnt > 0
    if not covered.all():
        log.warning("merge_arrays: %d pixels are covered by no tile (set to 0)", int((~covered).sum()))
    safe = np.where(covered, cnt, 1)
    return acc / (safe if acc.ndim == 2 else safe[..., None])


def vote_arrays(tiles: Sequence[np.ndarray], positions: Sequence[tuple[int, int]],
                shape: Sequence[int]) -> np.ndarray:
    """Per-pixel majority vote of single-band class maps; ties go to the smallest value, uncovered pixels 0."""
    tiles = [np.asarray(t)[..., 0] if np.ndim(t) == 3 and np.shape(t)[2] == 1 else np.asarray(t) for t in tiles]
    if any(t.ndim != 2 for t in tiles):
        raise ValueError("vote_arrays: tiles must be single-band class maps")
    height, width = int(shape[0]), int(shape[1])
    values = np.unique(np.concatenate([np.unique(t) for t in tiles])) if tiles else np.zeros(1, np.uint8)
    counts = np.zeros((len(values), height * width), np.uint16)
    for tile, (r, c) in zip(tiles, positions, strict=True):
        h, w = tile.shape
        flat = (np.arange(r, r + h)[:, None] * width + np.arange(c, c + w)[None, :])
        counts[np.searchsorted(values, tile), flat] += 1  # each pixel once per tile: no duplicate indices
    out = values[counts.argmax(0)].reshape(height, width)
    out[counts.sum(0).reshape(height, width) == 0] = 0
    return out


# ------------------------------------------------------------------------------------------------ files

def _read(path: Path, bands: Sequence[int] | None = None) -> tuple[np.ndarray, GeoInfo, np.ndarray | None]:
    """Image as ``(H, W, C)`` (only ``bands``, 1-based, when given), its geo info and (palette PNGs only) its
    palette, so rewriting is lossless."""
    if bands is not None:
        from ..raster.reader import RasterReader

        with RasterReader(path, bands=bands) as reader:
            return np.moveaxis(reader.read(), 0, -1), reader.geo, None
    if path.suffix.lower() == ".png":
        with Image.open(path) as im:
            pal = im.getpalette() if im.mode == "P" else None
        if pal is not None:
            return read_palette_indices(path)[..., None], GeoInfo(), np.asarray(pal, np.uint8).reshape(-1, 3)
    arr, geo = read_image(path, with_geo=True)  # type: ignore[misc]
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return arr, geo, None


def _write(path: Path, arr: np.ndarray, geo: GeoInfo | None, palette: np.ndarray | None) -> Path:
    """Write losslessly: TIFF for ``.tif`` targets and for non-8-bit data, PNG otherwise."""
    if path.suffix.lower() not in _TIF and arr.dtype != np.uint8:
        log.warning("%s: %s data cannot go into PNG losslessly; writing TIFF", path.name, arr.dtype)
        path = path.with_suffix(".tif")
    if path.suffix.lower() in _TIF:
        write_geotiff(path, arr, geo)
    else:
        write_png(path, arr, palette=palette)
    return path


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _folders(src: Path, layout: str | Sequence[str]) -> list[tuple[str, Path]]:
    if not src.is_dir():
        raise DatasetNotFoundError(f"{src}: folder not found")
    if isinstance(layout, str) and layout != "auto":
        layout = [s.strip() for s in layout.split(",") if s.strip()]
    if isinstance(layout, str):
        subs = [(d.name, d) for d in sorted(src.iterdir())
                if d.is_dir() and not d.name.startswith(".") and _image_files(d)]
        if not subs and _image_files(src):
            subs = [("", src)]
        if not subs:
            raise DatasetNotFoundError(f"{src}: no images in the folder or its immediate sub-folders")
        return subs
    missing = [name for name in layout if not (src / name).is_dir()]
    if missing or not layout:
        raise DatasetNotFoundError(f"{src}: layout folder(s) {missing or layout} not found")
    return [(name, src / name) for name in layout]


def _geo_json(geo: GeoInfo) -> dict[str, Any]:
    """CRS (WKT) and transform of a source; either may be ``None`` (a geotransform without a CRS is kept)."""
    return {"crs": geo.crs.to_wkt() if geo.crs is not None else None,
            "transform": list(geo.transform)[:6] if geo.transform is not None else None}


def _geo_from_json(entry: dict[str, Any]) -> GeoInfo:
    if not entry.get("crs") and not entry.get("transform"):
        return GeoInfo()
    from affine import Affine
    from rasterio.crs import CRS

    return GeoInfo(crs=CRS.from_wkt(entry["crs"]) if entry.get("crs") else None,
                   transform=Affine(*entry["transform"]) if entry.get("transform") else None)


def _prepare_out(out: Path, inputs: Sequence[Path], overwrite: bool) -> None:
    from ..safety import check_output

    check_output(out, inputs=inputs, overwrite=overwrite, kind="folder")


def tile_folder(src: str | Path, out: str | Path, size: IntPair = 512, stride: IntPair | None = None,
                layout: str | Sequence[str] = "auto", overwrite: bool = False,
                bands: Sequence[int] | None = None) -> dict[str, Any]:
    """Tile every image of a pair folder on one grid per stem, so A, B and labels stay paired.

    Args:
        src: folder whose immediate sub-folders hold the images (``A``, ``B``, ``label``; ``im1``, ``im2``,
            ``label1``, ``label2``; ...). A folder holding images directly is tiled as one folder.
        out: output folder, written atomically (same sub-folders plus ``tiles.json``).
        size, stride: tile size and step in pixels (int or (height, width)); ``stride`` defaults to ``size``.
        layout: ``"auto"`` (every sub-folder containing images) or the sub-folder names to tile.
        overwrite: replace a non-empty ``out``.
        bands: 1-based bands to keep from the images of both dates (``A``, ``B``, ``im1``... folders; every folder
            when none has such a name), in this order; labels are tiled whole. GeoTIFF tiles keep their CRS.

    Returns:
        The manifest written to ``tiles.json`` (with ``bands`` when they were selected).
    """
    src, out = Path(src), Path(out)
    size_hw, stride_hw = _pair(size, "size"), _pair(size if stride is None else stride, "stride")
    folders = _folders(src, layout)
    selected = _band_folders(folders, bands)
    _prepare_out(out, [src], overwrite)
    sources: dict[str, dict[str, Any]] = {}
    for name, folder in folders:
        seen: dict[str, Path] = {}
        for path in _image_files(folder):
            if path.stem in seen:
                raise PairingError(f"{folder}: two images share the stem '{path.stem}' ({seen[path.stem].name}, "
                                   f"{path.name})")
            seen[path.stem] = path
            h, w, _ = image_size(path)
            entry = sources.setdefault(path.stem, {"height": h, "width": w, "files": {}, "crs": None,
                                                   "transform": None})
            if (entry["height"], entry["width"]) != (h, w):
                first = next(iter(entry["files"].items()))
                raise SizeMismatchError(f"{path}: {h}x{w} pixels but {src / first[0] / first[1]} is "
                                        f"{entry['height']}x{entry['width']}; tiles would not stay paired")
            entry["files"][name] = path.name
    lonely = [stem for stem, e in sources.items() if len(e["files"]) < len(folders)]
    if lonely:
        log.warning("%s: %d stems are missing from some sub-folders (e.g. '%s'); tiling them anyway",
                    src, len(lonely), lonely[0])
    with atomic_dir(out) as tmp:
        for stem, entry in sources.items():
            entry["rows"] = tile_positions(entry["height"], size_hw[0], stride_hw[0])
            entry["cols"] = tile_positions(entry["width"], size_hw[1], stride_hw[1])
            for name, fname in entry["files"].items():
                arr, geo, palette = _read(src / name / fname if name else src / fname,
                                          bands if name in selected else None)
                if geo.is_geo and entry["crs"] is None and entry["transform"] is None:
                    entry.update(_geo_json(geo))
                suffix = Path(fname).suffix if Path(fname).suffix.lower() in (".png", *_TIF) else ".png"
                for r, c in product(entry["rows"], entry["cols"]):
                    tile = arr[r:r + size_hw[0], c:c + size_hw[1]]
                    tile_geo = _window_geo(geo, r, c, tile.shape)
                    _write(tmp / name / f"{stem}_{r}_{c}{suffix}", tile, tile_geo, palette)
        manifest = {"version": 1, "size": list(size_hw), "stride": list(stride_hw),
                    "folders": [name for name, _ in folders], "sources": sources}
        if bands is not None:
            manifest["bands"] = {"bands": list(bands), "folders": sorted(selected)}
        with atomic_path(tmp / TILES_JSON) as jpath:
            jpath.write_text(json.dumps(manifest, indent=1))
    log.info("tiled %d stems of %s into %s", len(sources), src, out)
    return manifest


def _band_folders(folders: Sequence[tuple[str, Path]], bands: Sequence[int] | None) -> set[str]:
    """The folders whose images ``bands`` select from: the dates' image folders of the known layouts, or every
    folder when none has such a name."""
    if bands is None:
        return set()
    from .discover import LAYOUTS

    dates = {n.lower() for lay in LAYOUTS for n in (lay.a, lay.b)}
    chosen = {name for name, _ in folders if name.lower() in dates}
    return chosen or {name for name, _ in folders}


def _window_geo(geo: GeoInfo, row: int, col: int, shape: Sequence[int]) -> GeoInfo:
    if not geo.is_geo:
        return geo
    from affine import Affine

    return GeoInfo(crs=geo.crs, transform=geo.transform @ Affine.translation(col, row))  # the window's transform


def _load_manifest(tile_dir: Path, tiles_json: str | Path | None) -> dict[str, Any]:
    candidates = [Path(tiles_json)] if tiles_json else [tile_dir / TILES_JSON, tile_dir.parent / TILES_JSON]
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise DatasetNotFoundError(f"{' or '.join(map(str, candidates))}: tile manifest not found")
    try:
        manifest = json.loads(path.read_text())
        sources = manifest["sources"]
        for entry in sources.values():
            entry["height"], entry["width"], entry["rows"], entry["cols"]  # noqa: B018 (schema check)
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a changekit tile manifest ({exc.__class__.__name__}: {exc})") from None
    return manifest


def owned_extents(starts: Sequence[int], length: int, size: int) -> list[int]:
    """Pixels from its start that each tile alone counts along one axis: up to the next tile's start.

    ClearSCD's edge rule shifts the last tile inwards, so it overlaps its neighbour; evaluating every tile whole
    would count the overlap twice. With these extents every pixel of ``[0, length)`` that a tile covers is
    counted exactly once (pixels of a stride larger than ``size`` stay uncounted, as they are untiled).
    """
    starts = sorted(int(s) for s in starts)
    ends = [*starts[1:], int(length)]
    return [min(end, s + int(size), int(length)) - s for s, end in zip(starts, ends)]


def tile_ownership(folder: str | Path) -> dict[str, tuple[int, int]] | None:
    """For a folder written by :func:`tile_folder`: tile stem -> ``(rows, cols)`` of the tile's top-left block
    that it alone counts (see :func:`owned_extents`); ``None`` when ``folder`` holds no ``tiles.json``."""
    folder = Path(folder)
    if not (folder / TILES_JSON).is_file():
        return None
    manifest = _load_manifest(folder, folder / TILES_JSON)
    try:
        size_h, size_w = _pair(manifest["size"], "size")
    except (KeyError, ConfigError):
        raise ConfigError(f"{folder / TILES_JSON}: no valid tile 'size'; rewrite the tiles with `changekit data "
                          "tile`") from None
    owned: dict[str, tuple[int, int]] = {}
    for stem, entry in manifest["sources"].items():
        rows, cols = sorted(entry["rows"]), sorted(entry["cols"])
        hs = owned_extents(rows, entry["height"], size_h)
        ws = owned_extents(cols, entry["width"], size_w)
        for (r, h), (c, w) in product(zip(rows, hs), zip(cols, ws)):
            owned[f"{stem}_{r}_{c}"] = (h, w)
    return owned


def merge_tiles(tile_dir: str | Path, out: str | Path, tiles_json: str | Path | None = None,
                mode: Literal["mean", "vote"] = "mean", rule: Literal["majority", "changeclip"] = "majority",
                overwrite: bool = False) -> list[Path]:
    """Stitch tiles ``{stem}_{row}_{col}.*`` of ``tile_dir`` back into ``out/{stem}{suffix}``.

    ``mode="mean"`` averages overlaps. With ``rule="majority"``, binary masks (values only 0 and one value m,
    e.g. 0/255 or 0/1) are thresholded at m/2: a pixel is change when more than half of its tiles say so;
    other data keeps the average (rounded for integer images). ``rule="changeclip"`` reproduces ChangeCLIP's
    ``merge_data.py``: the mean is cast to uint8 (truncated) and ``> 0`` becomes 255 -- with 0/255 tiles a
    pixel is change when *any* tile says so, with 0/1 tiles only when *all* do. ``mode="vote"`` takes the
    per-pixel majority class of class maps (ties: smallest class). ``tiles_json`` defaults to ``tiles.json``
    in ``tile_dir`` or its parent. Stems without any tile are skipped; a partly missing stem is an error.

    Returns:
        The merged files.
    """
    if mode not in ("mean", "vote") or rule not in ("majority", "changeclip"):
        raise ConfigError(f"merge_tiles: mode must be 'mean' or 'vote' and rule 'majority' or 'changeclip', "
                          f"got mode={mode!r}, rule={rule!r}")
    tile_dir, out = Path(tile_dir), Path(out)
    if not tile_dir.is_dir():
        raise DatasetNotFoundError(f"{tile_dir}: folder not found")
    manifest = _load_manifest(tile_dir, tiles_json)
    files = {p.stem: p for p in _image_files(tile_dir)}
    _prepare_out(out, [tile_dir], overwrite)
    written: list[Path] = []
    with atomic_dir(out) as tmp:
        for stem, entry in manifest["sources"].items():
            grid = list(product(entry["rows"], entry["cols"]))
            paths = [files.get(f"{stem}_{r}_{c}") for r, c in grid]
            if not any(paths):
                continue
            if not all(paths):
                r, c = grid[paths.index(None)]
                raise DatasetNotFoundError(f"{tile_dir / f'{stem}_{r}_{c}'}.*: tile missing (stem '{stem}')")
            merged, geo, palette = _merge_stem(entry, paths, mode, rule)  # type: ignore[arg-type]
            suffix = paths[0].suffix if paths[0].suffix.lower() in (".png", *_TIF) else ".png"  # type: ignore
            final = _write(tmp / f"{stem}{suffix}", merged, geo, palette)
            written.append(out / final.name)
        if not written:
            raise DatasetNotFoundError(f"{tile_dir}: no tiles named after the stems of the tile manifest")
    log.info("merged %d images into %s", len(written), out)
    return written


def _merge_stem(entry: dict[str, Any], paths: list[Path], mode: str,
                rule: str) -> tuple[np.ndarray, GeoInfo, np.ndarray | None]:
    tiles, positions = [], []
    geo, palette = GeoInfo(), None
    height, width = int(entry["height"]), int(entry["width"])
    for path, (r, c) in zip(paths, product(entry["rows"], entry["cols"]), strict=True):
        arr, tile_geo, pal = _read(path)
        if tiles and arr.shape[2:] != tiles[0].shape[2:]:
            raise SizeMismatchError(f"{path}: {arr.shape[2]} bands but {paths[0].name} has {tiles[0].shape[2]}")
        if r + arr.shape[0] > height or c + arr.shape[1] > width:
            raise SizeMismatchError(f"{path}: a {arr.shape[0]}x{arr.shape[1]} tile at ({r}, {c}) exceeds the "
                                    f"{height}x{width} source")
        if (r, c) == (0, 0) and tile_geo.is_geo:
            geo = tile_geo  # the top-left tile's transform is the source transform
        palette = pal if palette is None else palette
        tiles.append(arr)
        positions.append((r, c))
    geo = _geo_from_json(entry) if entry.get("crs") or entry.get("transform") else geo
    shape = (height, width) if tiles[0].shape[2] == 1 else (height, width, tiles[0].shape[2])
    dtype = tiles[0].dtype
    if mode == "vote":
        if tiles[0].shape[2] != 1:
            raise ConfigError(f"{paths[0]}: mode 'vote' needs single-band class maps, got {tiles[0].shape[2]} bands")
        return vote_arrays(tiles, positions, shape).astype(dtype), geo, palette
    mean = merge_arrays(tiles, positions, shape, dtype=np.float64 if dtype == np.float64 else np.float32)
    if rule == "changeclip":
        return ((mean.astype(np.uint8) > 0) * 255).astype(np.uint8), geo, None
    values = np.unique(np.concatenate([np.unique(t) for t in tiles]))
    if len(values) <= 2 and values[0] == 0 and np.issubdtype(dtype, np.integer):
        top = values[-1]
        return np.where(mean > top / 2, top, 0).astype(dtype), geo, palette
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(mean), info.min, info.max).astype(dtype), geo, palette
    return mean.astype(dtype), geo, palette
