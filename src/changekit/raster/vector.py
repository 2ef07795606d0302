"""Change polygons from a change mask: GeoPackage, GeoJSON or GeoParquet, with areas and probabilities.

:func:`vectorize` reads the mask strip by strip (:class:`~changekit.raster.reader.RasterReader`), labels each
strip's 4-connected change regions (``scipy.ndimage.label``), polygonizes the labels (GDAL through
``rasterio.features.shapes``) and measures them (pixels, m², probability, classes) in the same pass. A region that
touches the strip's last row stays open; the next strip's regions that share an edge with it along the cut are
joined to it (connected components over the pairs of labels facing each other across the cut), and when a
region no longer reaches the cut its pieces are dissolved into one polygon. The result equals polygonizing the
whole mask at once.

Memory: one strip of pixels (:data:`STRIP_PIXELS`), the open regions' pieces, and the finished polygons as WKB
(about 16 bytes per vertex) until they are written; a 10,000² mask stays well under 1 GB.

Every polygon carries ``pixels`` (its pixel count), ``area_m2`` and ``area_ha`` (from the pixels, so they sum to
the mask's changed area; ``null`` without a CRS; on geographic CRSs each row's pixel area on the authalic
sphere), with a probability raster ``prob_mean`` / ``prob_max``, and with both class maps of a semantic model
``class_a`` / ``class_b`` (the most frequent class of each date inside the polygon) and ``from_to``
(``"3->5"``). Polygons are in the mask's CRS (pixel coordinates without one), in reading order of their first
pixel.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_path
from ..errors import ConfigError, ImageReadError, SizeMismatchError
from .gdal import gdal_env
from .reader import RasterReader, grid_difference

log = logging.getLogger(__name__)

#: Output suffixes and their formats.
FORMATS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".parquet": "Parquet"}
#: The layer name in GeoPackages (fixed: files are written under temporary names).
LAYER = "changes"
#: Pixels read per strip.
STRIP_PIXELS = 1 << 22
#: Radius of the sphere with the WGS 84 ellipsoid's area (m).
AUTHALIC_RADIUS_M = 6371007.2
_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


@dataclass
class _Region:
    """One change region while it is assembled: its polygon pieces (one per strip) and running tallies."""

    first: int  # reading-order index of its first pixel
    pieces: list[Any] = field(default_factory=list)
    pixels: int = 0
    area_m2: float = 0.0
    prob_sum: float = 0.0
    prob_max: float = -math.inf
    classes: list[dict[int, int]] = field(default_factory=lambda: [{}, {}])

    def absorb(self, other: _Region) -> None:
        self.first = min(self.first, other.first)
        self.pieces += other.pieces
        self.pixels += other.pixels
        self.area_m2 += other.area_m2
        self.prob_sum += other.prob_sum
        self.prob_max = max(self.prob_max, other.prob_max)
        for mine, theirs in zip(self.classes, other.classes, strict=True):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v


def pixel_areas_m2(transform: Any, crs: Any, rows: np.ndarray) -> np.ndarray | None:
    """``(len(rows),)`` area in m² of one pixel of each row; ``None`` without a CRS.

    Projected CRSs: ``|det(transform)|`` times the unit in metres squared. Geographic CRSs (degrees, north-up
    grids): the exact area of the pixel's latitude band on the authalic sphere (within ~0.3 % of the ellipsoid).
    """
    if crs is None or transform is None:
        return None
    det = abs(transform.a * transform.e - transform.b * transform.d)
    if not crs.is_geographic:
        try:
            unit = float(crs.linear_units_factor[1])
        except Exception:  # noqa: BLE001 (a projected CRS without a named unit: metres)
            unit = 1.0
        return np.full(len(rows), det * unit * unit)
    top = np.radians(transform.f + transform.e * rows)
    bottom = np.radians(transform.f + transform.e * (rows + 1))
    return AUTHALIC_RADIUS_M**2 * math.radians(abs(transform.a)) * np.abs(np.sin(top) - np.sin(bottom))


def vectorize(
    mask: str | Path,
    out: str | Path,
    prob: str | Path | None = None,
    sem: Sequence[str | Path] | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
) -> Path:
    """Write the change regions of ``mask`` as polygons (format from ``out``'s suffix, see :data:`FORMATS`).

    Args:
        mask: a change mask (0 = no change, non-zero = change; its nodata value is neither).
        out: ``.gpkg`` (GeoPackage), ``.geojson`` or ``.parquet`` (GeoParquet 1.1, WKB).
        prob: the change probability raster on the same grid (adds ``prob_mean`` / ``prob_max``).
        sem: the class maps of date A and date B (adds ``class_a``, ``class_b``, ``from_to``).
        min_area: drop polygons smaller than this, in map units squared (m² for metric CRSs, pixels without a
            CRS), measured before simplifying.
        simplify: Douglas-Peucker tolerance in map units (topology preserved; 0: exact pixel edges). Areas are
            those of the pixels, whatever the simplification.

    Returns:
        ``out``.

    Raises:
        ConfigError: unknown suffix, negative ``min_area`` / ``simplify``, a missing optional dependency.
        SizeMismatchError: ``prob`` or ``sem`` lie on another grid than ``mask``.
    """
    out = Path(out)
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ConfigError(f"--vector: {out} must end in {', '.join(FORMATS)}, got '{out.suffix}'")
    for key, value in (("--min-area", min_area), ("--simplify", simplify)):
        if not math.isfinite(float(value)) or value < 0:
            raise ConfigError(f"{key}: must be a number >= 0 (map units), got {value!r}")
    if sem is not None and len(sem) != 2:
        raise ConfigError(f"sem: give the class maps of both dates, got {len(sem)} file(s)")
    _require(fmt)
    readers: list[RasterReader] = []
    try:
        with gdal_env():
            readers.append(RasterReader(mask))
            readers.append(RasterReader(prob) if prob is not None else None)  # type: ignore[arg-type]
            readers += [_class_map(p) for p in sem or []]
            src = readers[0]
            if src.count != 1:
                raise ImageReadError(f"{mask}: a change mask must have one band, found {src.count}")
            for other in readers[1:]:
                diff = None if other is None else grid_difference(src, other)
                if diff is not None:
                    raise SizeMismatchError(f"{diff}; the mask, probabilities and class maps must share one grid")
            regions = _regions(src, readers[1], readers[2:] if sem is not None else None)
    finally:
        for r in readers:
            if r is not None:
                r.close()
    features = _finish(regions, min_area, simplify, prob is not None, sem is not None)
    _write(out, fmt, features, src.crs)
    log.info("%s: %d change polygons", out, len(features["geometry"]))
    return out


class _IndexImage:
    """A palette PNG class map read as its class indices (a :class:`RasterReader` would decode its colours)."""

    def __init__(self, path: Path) -> None:
        from ..data.io import read_palette_indices

        self.path, self._arr = path, read_palette_indices(path)
        self.height, self.width = self._arr.shape
        self.count, self.crs, self.transform = 1, None, None

    def read(self, window: tuple[int, int, int, int]) -> np.ndarray:
        r0, c0, h, w = window
        return self._arr[None, r0 : r0 + h, c0 : c0 + w]

    def close(self) -> None:
        """Nothing to release."""


def _class_map(path: str | Path) -> Any:
    path = Path(path)
    return _IndexImage(path) if path.suffix.lower() == ".png" else RasterReader(path)


def _require(fmt: str) -> None:
    mod, extra = ("pyarrow", "pyarrow") if fmt == "Parquet" else ("pyogrio", "pyogrio")
    try:
        __import__(mod)
    except ImportError:
        raise ConfigError(f"--vector: writing {fmt} needs the '{extra}' package; install changekit[vector]") from None


def _regions(src: RasterReader, prob: RasterReader | None, sem: list[RasterReader] | None) -> list[_Region]:
    """Every change region of the mask, assembled strip by strip (see the module docstring)."""
    from affine import Affine
    from scipy import ndimage
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    h, w = src.height, src.width
    step = max(1, STRIP_PIXELS // max(w, 1))
    base = src.transform if src.transform is not None else Affine.identity()
    done: list[_Region] = []
    open_: dict[int, _Region] = {}  # label in the previous strip's last row -> its region
    prev_last: np.ndarray | None = None
    for r0 in range(0, h, step):
        window = (r0, 0, min(step, h - r0), w)
        data, valid = src.read_valid(window)
        changed = valid & (data[0] > 0)
        labels, n = ndimage.label(changed, structure=_FOUR)
        strip = _measure(labels, n, r0, w, src, prob, sem, window)
        _add_pieces(strip, labels, changed, base @ Affine.translation(0, r0))
        # join across the cut: previous open regions and this strip's regions that face each other
        groups: dict[int, _Region] = dict(enumerate(strip, start=1))
        if prev_last is not None and open_:
            uniq = list({id(r): r for r in open_.values()}.values())  # a region may face the cut several times
            node = {id(r): i for i, r in enumerate(uniq)}
            m = len(uniq)
            both = (prev_last > 0) & (labels[0] > 0)
            pairs = np.unique(np.stack([prev_last[both], labels[0][both]], 1), axis=0)
            rows = np.array([node[id(open_[int(p)])] for p in pairs[:, 0]], np.int64)
            cols = pairs[:, 1].astype(np.int64) - 1 + m
            graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(m + n, m + n))
            _, comp = connected_components(graph, directed=False)
            merged: dict[int, _Region] = {}
            for i, region in enumerate(uniq + strip):
                if comp[i] not in merged:
                    merged[comp[i]] = region
                else:
                    merged[comp[i]].absorb(region)
            groups = {lab: merged[comp[m + lab - 1]] for lab in range(1, n + 1)}
            reached = {id(g) for g in groups.values()}
            # open regions that reach nothing in this strip are finished (absorbed ones live on in their group)
            done.extend(r for i, r in enumerate(uniq) if merged[comp[i]] is r and id(r) not in reached)
        last = labels[-1]
        still = {int(lab): groups[int(lab)] for lab in np.unique(last[last > 0])} if r0 + window[2] < h else {}
        still_ids = {id(r) for r in still.values()}
        finished = {id(r): r for r in groups.values() if id(r) not in still_ids}
        done.extend(finished.values())
        open_, prev_last = still, last
    done.sort(key=lambda r: r.first)
    return done


def _measure(labels: np.ndarray, n: int, r0: int, w: int, src: RasterReader, prob: RasterReader | None,
             sem: list[RasterReader] | None, window: tuple[int, int, int, int]) -> list[_Region]:
    """The tallies of a strip's ``n`` labelled regions (without their polygons)."""
    idx = labels.ravel()
    fg = idx > 0
    lab = idx[fg] - 1
    positions = np.flatnonzero(fg)
    first = np.full(n, -1, np.int64)
    first[lab[::-1]] = positions[::-1]
    pixels = np.bincount(lab, minlength=n)
    areas = pixel_areas_m2(src.transform, src.crs, np.arange(r0, r0 + labels.shape[0]))
    area = (np.bincount(lab, np.repeat(areas, w)[fg], minlength=n) if areas is not None else np.full(n, np.nan))
    psum = np.zeros(n)
    pmax = np.full(n, -np.inf)
    if prob is not None:
        p, pvalid = prob.read_valid(window)
        scale = 255.0 if np.issubdtype(p.dtype, np.integer) else 1.0  # a PNG holds probability x 255
        pf = np.where(pvalid, p[0] / scale, 0.0).ravel()[fg]
        psum = np.bincount(lab, pf, minlength=n)
        np.maximum.at(pmax, lab, pf)
    hists: list[list[dict[int, int]]] = [[{}, {}] for _ in range(n)]
    if sem is not None:
        for d, reader in enumerate(sem):
            cls = reader.read(window)[0].ravel()[fg].astype(np.int64)
            k = int(cls.max()) + 1 if len(cls) else 1
            keys, counts = np.unique(lab * k + cls, return_counts=True)
            for key, count in zip(keys.tolist(), counts.tolist(), strict=True):
                hists[key // k][d][key % k] = count
    return [_Region(int(first[i]) + r0 * w, [], int(pixels[i]), float(area[i]), float(psum[i]), float(pmax[i]),
                    hists[i]) for i in range(n)]


def _add_pieces(strip: list[_Region], labels: np.ndarray, changed: np.ndarray, transform: Any) -> None:
    """Polygonize a strip's labels; each piece goes to its region."""
    import rasterio.features
    import shapely.geometry

    if not strip:
        return
    for geom, value in rasterio.features.shapes(labels.astype(np.int32), mask=changed, connectivity=4,
                                                transform=transform):
        strip[int(value) - 1].pieces.append(shapely.geometry.shape(geom))


def _finish(regions: list[_Region], min_area: float, simplify: float, prob: bool, sem: bool) -> dict[str, Any]:
    """Dissolve each region's pieces, filter and simplify, and lay the attributes out as columns."""
    import shapely

    cols: dict[str, list[Any]] = {k: [] for k in ("geometry", "pixels", "area_m2", "area_ha")}
    if prob:
        cols.update(prob_mean=[], prob_max=[])
    if sem:
        cols.update(class_a=[], class_b=[], from_to=[])
    for region in regions:
        geom = region.pieces[0] if len(region.pieces) == 1 else shapely.union_all(region.pieces)
        if geom.area < min_area or geom.area <= 0:
            continue
        if simplify > 0:
            geom = geom.simplify(simplify, preserve_topology=True)
        cols["geometry"].append(shapely.to_wkb(geom))
        cols["pixels"].append(region.pixels)
        cols["area_m2"].append(region.area_m2)
        cols["area_ha"].append(region.area_m2 / 10_000)
        if prob:
            cols["prob_mean"].append(region.prob_sum / max(region.pixels, 1))
            cols["prob_max"].append(region.prob_max)
        if sem:
            a, b = (max(h.items(), key=lambda kv: (kv[1], -kv[0]))[0] if h else -1 for h in region.classes)
            cols["class_a"].append(a)
            cols["class_b"].append(b)
            cols["from_to"].append(f"{a}->{b}")
    return cols


def _write(out: Path, fmt: str, cols: dict[str, Any], crs: Any) -> None:
    """Write the columns atomically in ``fmt``."""
    geometry = np.array(cols["geometry"], dtype=object)
    fields = {k: np.asarray(v, dtype=np.int64 if k in ("pixels", "class_a", "class_b") else
                            object if k == "from_to" else np.float64) for k, v in cols.items() if k != "geometry"}
    if len(geometry):
        import shapely

        kinds = set(shapely.get_type_id(shapely.from_wkb(geometry)).tolist())
        gtype = "Polygon" if kinds == {3} else "MultiPolygon"
    else:
        gtype = "Polygon"
    with atomic_path(out) as tmp:
        if fmt == "Parquet":
            _write_geoparquet(tmp, geometry, fields, crs, gtype)
            return
        import pyogrio.raw

        tmp.unlink(missing_ok=True)  # GDAL creates the file itself
        pyogrio.raw.write(str(tmp), geometry, list(fields.values()), list(fields), driver=fmt,
                          geometry_type=gtype, crs=crs.to_wkt() if crs is not None else None,
                          promote_to_multi=gtype == "MultiPolygon", layer=LAYER)


def _write_geoparquet(path: Path, geometry: np.ndarray, fields: dict[str, np.ndarray], crs: Any, gtype: str) -> None:
    """GeoParquet 1.1: a WKB ``geometry`` column and the ``geo`` file metadata (CRS as PROJJSON, bbox)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely

    columns = {k: pa.array(v.tolist(), type=pa.string() if k == "from_to" else None) for k, v in fields.items()}
    columns["geometry"] = pa.array(geometry.tolist(), type=pa.binary())
    table = pa.table(columns)
    geo_col: dict[str, Any] = {"encoding": "WKB", "geometry_types": [gtype]}
    if len(geometry):
        geo_col["bbox"] = [float(v) for v in shapely.total_bounds(shapely.from_wkb(geometry))]
    geo_col["crs"] = crs.to_dict(projjson=True) if crs is not None else None
    meta = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": geo_col}}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"geo": json.dumps(meta).encode()})
    pq.write_table(table, path)
