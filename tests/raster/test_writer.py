"""Scene outputs finish as Cloud Optimized GeoTIFFs: tiles, overviews, compression, CRS and transform, colour
tables and nodata, written strip by strip under temporary names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from changekit.data.io import GeoInfo, read_image
from changekit.errors import ConfigError
from changekit.raster.writer import BLOCK, CLASS_NODATA, MASK_NODATA, RasterWriter, write_array

from .geotiffs import ORIGIN, UTM

GEO = GeoInfo(crs=rasterio.crs.CRS.from_string(UTM), transform=ORIGIN)


def _assert_cog(path: Path, overviews: bool = True) -> rasterio.DatasetReader:
    ds = rasterio.open(path)
    assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
    assert ds.profile["tiled"] and ds.block_shapes[0] == (BLOCK, BLOCK)
    assert ds.compression is not None
    if overviews:
        assert ds.overviews(1), "a raster larger than one tile has overviews"
    assert ds.crs == GEO.crs and ds.transform == GEO.transform
    return ds


def _strips(writer: RasterWriter, data: np.ndarray, rows: int = 300) -> None:
    for r in range(0, data.shape[0], rows):
        writer.write(r, data[r : r + rows])


def test_mask_written_by_strips_is_a_cog_with_colours_and_nodata(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    mask = rng.choice(np.array([0, 255, MASK_NODATA], np.uint8), (1100, 1300))
    with RasterWriter(tmp_path / "m.tif", 1100, 1300, "mask", GEO) as w:
        _strips(w, mask)
        assert not (tmp_path / "m.tif").exists()  # only complete files carry the final name
    with _assert_cog(tmp_path / "m.tif") as ds:
        np.testing.assert_array_equal(ds.read(1), mask)
        assert ds.nodata == MASK_NODATA and ds.dtypes[0] == "uint8"
        cmap = ds.colormap(1)
        assert cmap[255][:3] == (255, 255, 255) and cmap[0][:3] == (0, 0, 0) and cmap[MASK_NODATA][3] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tif"]  # no temporary left


def test_probability_is_float_with_nan_nodata(tmp_path: Path) -> None:
    prob = np.random.default_rng(1).random((700, 600), dtype=np.float32)
    prob[:10] = np.nan
    with RasterWriter(tmp_path / "p.tif", 700, 600, "prob", GEO, compress="zstd") as w:
        _strips(w, prob, rows=256)
    with _assert_cog(tmp_path / "p.tif") as ds:
        got = ds.read(1)
        assert ds.dtypes[0] == "float32" and np.isnan(ds.nodata) and ds.compression.name.lower() == "zstd"
        np.testing.assert_array_equal(np.isnan(got), np.isnan(prob))
        np.testing.assert_array_equal(got[10:], prob[10:])


def test_class_map_gets_the_palette_and_255_nodata(tmp_path: Path) -> None:
    palette = np.array([[0, 0, 0], [200, 10, 10], [10, 200, 10]], np.uint8)
    classes = np.random.default_rng(2).integers(0, 3, (100, 90)).astype(np.uint8)
    classes[0, 0] = CLASS_NODATA
    with RasterWriter(tmp_path / "c.tif", 100, 90, "classes", GEO, palette=palette) as w:
        w.write(0, classes)
    with _assert_cog(tmp_path / "c.tif", overviews=False) as ds:
        np.testing.assert_array_equal(ds.read(1), classes)
        assert ds.nodata == CLASS_NODATA and ds.colormap(1)[1][:3] == (200, 10, 10)


def test_interrupted_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), RasterWriter(tmp_path / "m.tif", 64, 64, "mask", GEO) as w:
        w.write(0, np.zeros((32, 64), np.uint8))
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_png_output_and_bad_arguments(tmp_path: Path) -> None:
    prob = np.linspace(0, 1, 20, dtype=np.float32).reshape(4, 5)
    prob[0, 0] = np.nan
    with RasterWriter(tmp_path / "p.png", 4, 5, "prob") as w:
        w.write(0, prob)
    got = read_image(tmp_path / "p.png")[:, :, 0]
    assert got[0, 0] == 0 and got[-1, -1] == 255
    with pytest.raises(ConfigError, match=r"\.jpg"):
        RasterWriter(tmp_path / "m.jpg", 4, 5)
    with pytest.raises(ConfigError, match="--compress"):
        RasterWriter(tmp_path / "m.tif", 4, 5, compress="jpeg")
    with RasterWriter(tmp_path / "m.tif", 4, 5) as w, pytest.raises(ValueError, match="do not fit"):
        w.write(3, np.zeros((2, 5), np.uint8))
    assert not list(tmp_path.glob("*.ck*"))


def test_write_array_multiband(tmp_path: Path) -> None:
    arr = np.random.default_rng(3).integers(0, 10_000, (4, 40, 30)).astype(np.uint16)
    write_array(tmp_path / "x.tif", arr, GEO, nodata=0)
    with _assert_cog(tmp_path / "x.tif", overviews=False) as ds:
        np.testing.assert_array_equal(ds.read(), arr)
        assert ds.nodata == 0 and ds.count == 4
