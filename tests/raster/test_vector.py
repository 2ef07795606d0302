"""vectorize: change polygons strip by strip equal the whole-mask polygons; areas sum to the mask's changed area;
GeoPackage, GeoJSON and GeoParquet outputs with CRS, probabilities and from-to classes."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
import shapely.geometry
from scipy import ndimage

from changekit.errors import ConfigError, SizeMismatchError
from changekit.raster import vector
from changekit.raster.vector import pixel_areas_m2, vectorize
from changekit.raster.writer import MASK_NODATA

from .geotiffs import write_tif

pyogrio = pytest.importorskip("pyogrio", reason="pyogrio (changekit[vector]) is not installed")


def _blobs(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A 0/255 mask of irregular regions, many of them spanning several rows (and strips)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.random((h, w)), 3)
    return np.where(field > np.quantile(field, 0.7), 255, 0).astype(np.uint8)


def _read(path: Path) -> tuple[list, dict]:
    _, _, geometry, fields = pyogrio.raw.read(path)
    info = pyogrio.read_info(path)
    return shapely.from_wkb(geometry).tolist(), dict(zip(info["fields"].tolist(), fields, strict=True))


def test_strips_equal_whole_mask_and_areas_sum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mask = _blobs(180, 150)
    mask[50:53, :] = 0  # a band of nodata: never change, never area
    mask[50:53, :40] = MASK_NODATA
    path = write_tif(tmp_path / "m.tif", mask[None], nodata=MASK_NODATA)
    whole = vectorize(path, tmp_path / "whole.gpkg")
    monkeypatch.setattr(vector, "STRIP_PIXELS", 150 * 7)  # 7-row strips: most regions cross several cuts
    strips = vectorize(path, tmp_path / "strips.gpkg")
    g1, f1 = _read(whole)
    g2, f2 = _read(strips)
    changed = int((mask == 255).sum())
    n_regions = ndimage.label(mask == 255, structure=vector._FOUR)[1]
    assert len(g1) == len(g2) == n_regions > 10
    for a, b in zip(g1, g2, strict=True):
        assert a.geom_type == "Polygon" and a.is_valid and shapely.equals(a, b)
    np.testing.assert_array_equal(f1["pixels"], f2["pixels"])
    assert f2["pixels"].sum() == changed
    assert f2["area_m2"].sum() == pytest.approx(changed * 100)  # 10 m pixels
    assert sum(g.area for g in g2) == pytest.approx(changed * 100)
    np.testing.assert_allclose(f2["area_ha"], f2["area_m2"] / 10_000)


def test_geopackage_is_a_real_geopackage_with_the_crs(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "m.tif", _blobs(40, 40)[None])
    out = vectorize(path, tmp_path / "c.gpkg")
    with sqlite3.connect(out) as db:
        assert db.execute("PRAGMA application_id").fetchone()[0] == 0x47504B47  # 'GPKG'
        tables = {r[0] for r in db.execute("SELECT table_name FROM gpkg_contents")}
    assert tables == {"changes"}
    info = pyogrio.read_info(out)
    assert info["crs"] == "EPSG:32633" and info["geometry_type"] == "Polygon"


def test_geojson_and_geoparquet(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    mask = _blobs(40, 50, seed=3)
    path = write_tif(tmp_path / "m.tif", mask[None])
    gj = json.loads(vectorize(path, tmp_path / "c.geojson").read_text())
    assert len(gj["features"]) > 0 and "32633" in json.dumps(gj.get("crs"))
    table = pq.read_table(vectorize(path, tmp_path / "c.parquet"))
    geo = json.loads(table.schema.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    assert geo["columns"]["geometry"]["crs"]["id"]["code"] == 32633
    assert table.num_rows == len(gj["features"])
    assert sum(table.column("pixels").to_pylist()) == int((mask == 255).sum())
    polys = shapely.from_wkb(table.column("geometry").to_pylist())
    assert all(p.is_valid for p in polys)


def test_probabilities_classes_min_area_and_simplify(tmp_path: Path) -> None:
    mask = np.zeros((30, 30), np.uint8)
    mask[2:6, 2:6] = 255  # 16 px
    mask[10:20, 10:25] = 255  # 150 px
    prob = np.where(mask > 0, 0.6, 0.1).astype(np.float32)
    prob[12, 12] = 0.95
    sem_a = np.full((30, 30), 1, np.uint8)
    sem_b = np.where(mask > 0, 4, 1).astype(np.uint8)
    sem_b[10, 10] = 2  # minority inside the big region
    files = [write_tif(tmp_path / f"{k}.tif", v[None]) for k, v in
             (("m", mask), ("p", prob), ("a", sem_a), ("b", sem_b))]
    out = vectorize(files[0], tmp_path / "v.gpkg", prob=files[1], sem=files[2:], min_area=20 * 100)
    geoms, f = _read(out)
    assert len(geoms) == 1 and f["pixels"].tolist() == [150]  # the 16-pixel square is below min_area
    assert f["prob_max"][0] == pytest.approx(0.95)
    assert f["prob_mean"][0] == pytest.approx((149 * 0.6 + 0.95) / 150, rel=1e-6)
    assert (f["class_a"][0], f["class_b"][0], f["from_to"][0]) == (1, 4, "1->4")
    simple, fs = _read(vectorize(files[0], tmp_path / "s.gpkg", simplify=15.0))
    assert fs["pixels"].sum() == 166 and all(g.is_valid for g in simple)


def test_geographic_crs_areas_in_square_metres() -> None:
    t = rasterio.transform.from_origin(10.0, 50.0, 0.0001, 0.0001)  # ~7 m x 11 m pixels at 50 N
    areas = pixel_areas_m2(t, rasterio.crs.CRS.from_epsg(4326), np.array([0, 1000]))
    expected = (6371007.2 * np.radians(0.0001)) ** 2 * np.cos(np.radians(50 - 0.00005))
    assert areas[0] == pytest.approx(expected, rel=1e-4) and areas[1] > areas[0]
    assert pixel_areas_m2(t, None, np.array([0])) is None


def test_refusals(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "m.tif", _blobs(20, 20)[None])
    other = write_tif(tmp_path / "p.tif", np.zeros((1, 10, 10), np.float32))
    with pytest.raises(ConfigError, match=r"\.shp"):
        vectorize(path, tmp_path / "c.shp")
    with pytest.raises(ConfigError, match="--min-area"):
        vectorize(path, tmp_path / "c.gpkg", min_area=-1)
    with pytest.raises(SizeMismatchError, match="one grid"):
        vectorize(path, tmp_path / "c.gpkg", prob=other)
    assert not list(tmp_path.glob("c.*"))


def test_png_mask_uses_pixel_coordinates_and_0_1_masks(tmp_path: Path) -> None:
    from changekit.data.io import write_png

    mask = np.zeros((30, 30), np.uint8)
    mask[2:5, 3:9] = 255
    mask[20:30, 20:30] = 1
    write_png(tmp_path / "mask.png", mask)
    gj = json.loads(vectorize(tmp_path / "mask.png", tmp_path / "c.geojson").read_text())
    geoms = [shapely.geometry.shape(f["geometry"]) for f in gj["features"]]
    assert [g.area for g in geoms] == [18.0, 100.0] and geoms[0].bounds == (3.0, 2.0, 9.0, 5.0)
    assert [f["properties"]["area_m2"] for f in gj["features"]] == [None, None]  # no CRS: pixels only
    assert [f["properties"]["pixels"] for f in gj["features"]] == [18, 100]
