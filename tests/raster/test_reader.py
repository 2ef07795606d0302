"""RasterReader: windows, 1-based band selection, validity (nodata value, internal mask, alpha band, NaN) and
on-the-fly alignment of a second date onto the first date's grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.warp import Resampling, calculate_default_transform, reproject

from changekit.data.io import write_png
from changekit.errors import ConfigError, DatasetNotFoundError, SizeMismatchError
from changekit.raster import RasterReader, check_pair, same_grid

from .geotiffs import ORIGIN, UTM, smooth, write_tif


def test_windowed_read_and_band_selection(tmp_path: Path) -> None:
    data = smooth(40, 50, bands=4)
    path = write_tif(tmp_path / "a.tif", data)
    with RasterReader(path) as r:
        assert (r.count, r.height, r.width, r.dtype) == (4, 40, 50, np.uint16)
        assert r.crs == CRS.from_string(UTM) and r.transform == ORIGIN and r.nodata is None
        np.testing.assert_array_equal(r.read(), data)
        np.testing.assert_array_equal(r.read((5, 7, 10, 20)), data[:, 5:15, 7:27])
        assert r.valid((0, 0, 3, 4)).all() and r.valid((0, 0, 3, 4)).shape == (3, 4)
    with RasterReader(path, bands=[4, 3, 2]) as r:
        assert r.count == 3 and r.bands == [4, 3, 2]
        np.testing.assert_array_equal(r.read((1, 2, 3, 4)), data[[3, 2, 1], 1:4, 2:6])


@pytest.mark.parametrize("bands", [[0], [5], [1, 9], []])
def test_bad_band_index_is_one_line_naming_file_and_range(tmp_path: Path, bands: list[int]) -> None:
    path = write_tif(tmp_path / "a.tif", smooth(8, 8, bands=4))
    with pytest.raises(ConfigError) as exc:
        RasterReader(path, bands=bands)
    msg = str(exc.value)
    assert "--bands" in msg and "\n" not in msg and (str(path) in msg)
    if bands:
        assert "1..4" in msg


def test_window_outside_raster_raises(tmp_path: Path) -> None:
    with RasterReader(write_tif(tmp_path / "a.tif", smooth(8, 8))) as r, pytest.raises(ValueError, match="outside"):
        r.read((4, 0, 5, 8))


def test_nodata_value_in_any_selected_band(tmp_path: Path) -> None:
    data = smooth(20, 30, bands=3) + 1  # no zeros in the data itself
    data[0, 2, 3] = 0
    data[2, 5, 6] = 0
    path = write_tif(tmp_path / "a.tif", data, nodata=0)
    with RasterReader(path) as r:
        valid = r.valid()
        assert r.nodata == 0
        assert not valid[2, 3] and not valid[5, 6] and valid.sum() == 20 * 30 - 2
        np.testing.assert_array_equal(r.valid((2, 3, 4, 4)), valid[2:6, 3:7])
    with RasterReader(path, bands=[2]) as r:  # band 2 alone has no nodata pixel
        assert r.valid().all()


def test_nan_and_nonfinite_are_invalid_without_a_declared_nodata(tmp_path: Path) -> None:
    data = smooth(10, 10, bands=2, scale=1.0, dtype=np.float32)
    data[1, 4, 4] = np.nan
    data[0, 7, 1] = np.inf
    with RasterReader(write_tif(tmp_path / "f.tif", data)) as r:
        valid = r.valid()
        assert not valid[4, 4] and not valid[7, 1] and valid.sum() == 98


def test_nan_nodata_value(tmp_path: Path) -> None:
    data = smooth(10, 10, bands=1, scale=1.0, dtype=np.float32)
    data[0, :2, :] = np.nan
    with RasterReader(write_tif(tmp_path / "f.tif", data, nodata=np.nan)) as r:
        assert r.valid().sum() == 80 and not r.valid()[:2].any()


def test_internal_mask(tmp_path: Path) -> None:
    data = smooth(16, 16)
    mask = np.ones((16, 16), bool)
    mask[:, :5] = False
    with RasterReader(write_tif(tmp_path / "m.tif", data, mask=mask)) as r:
        np.testing.assert_array_equal(r.valid(), mask)
        np.testing.assert_array_equal(r.valid((0, 3, 16, 4)), mask[:, 3:7])


def test_alpha_band_is_a_mask_not_data(tmp_path: Path) -> None:
    data = smooth(12, 12, dtype=np.uint8, scale=200)
    alpha = np.full((12, 12), 255, np.uint8)
    alpha[6:, :] = 0
    path = write_tif(tmp_path / "rgba.tif", data, alpha=alpha)
    with RasterReader(path) as r:
        assert r.count == 3 and r.bands == [1, 2, 3]
        np.testing.assert_array_equal(r.read(), data)
        assert r.valid()[:6].all() and not r.valid()[6:].any()
    with RasterReader(path, bands=[4]) as r:  # explicitly asked for: read as data
        np.testing.assert_array_equal(r.read()[0], alpha)


def test_plain_png_whole_image_with_band_selection(tmp_path: Path) -> None:
    img = np.random.default_rng(0).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    write_png(tmp_path / "a.png", img)
    with RasterReader(tmp_path / "a.png", bands=[3, 1]) as r:
        assert (r.count, r.height, r.width, r.crs, r.transform) == (2, 9, 11, None, None)
        np.testing.assert_array_equal(r.read(), img.transpose(2, 0, 1)[[2, 0]])
        np.testing.assert_array_equal(r.read((2, 3, 4, 5)), img.transpose(2, 0, 1)[[2, 0], 2:6, 3:8])
        assert r.valid().all()


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError):
        RasterReader(tmp_path / "nope.tif")


def _reprojected(src_path: Path, out: Path, crs: str, res: float, cols: int) -> Path:
    """Date B: the first ``cols`` columns of ``src_path`` warped to ``crs`` at ``res`` (another grid)."""
    with rasterio.open(src_path) as src:
        data = src.read()[:, :, :cols]
        left, top = src.transform.c, src.transform.f
        bounds = (left, top - src.height * 10, left + cols * 10, top)
        transform, w, h = calculate_default_transform(src.crs, crs, cols, src.height, *bounds, resolution=res)
        dst = np.zeros((data.shape[0], h, w), np.float32)
        reproject(data.astype(np.float32), dst, src_transform=src.transform, src_crs=src.crs, dst_transform=transform,
                  dst_crs=crs, resampling=Resampling.bilinear, dst_nodata=np.nan)
    return write_tif(out, dst, crs=crs, transform=transform, nodata=np.nan)


def test_align_onto_another_crs_and_resolution(tmp_path: Path) -> None:
    data = smooth(60, 80, bands=2).astype(np.float32)
    pa = write_tif(tmp_path / "a.tif", data)
    pb = _reprojected(pa, tmp_path / "b.tif", "EPSG:3035", 15.0, cols=50)  # LAEA Europe, 15 m, left part only
    with RasterReader(pa) as a, RasterReader(pb) as b_raw:
        assert not same_grid(a, b_raw)
        with pytest.raises(SizeMismatchError, match="--align"):
            check_pair(a, b_raw)
        with RasterReader(pb, align_to=a, resampling="bilinear") as b:
            assert b.aligned and same_grid(a, b) and b.count == 2
            check_pair(a, b)
            valid = b.valid()
            assert valid[5:-5, 5:45].all()  # inside B's footprint
            assert not valid[:, 53:].any()  # outside it: no data
            got = b.read()
            inner = (slice(None), slice(5, -5), slice(5, 45))
            err = np.abs(got[inner] - data[inner]) / data[inner].mean()
            assert err.max() < 0.02  # warped twice with bilinear resampling: within 2 %
            np.testing.assert_array_equal(b.read((10, 20, 5, 6)), got[:, 10:15, 20:26])
            np.testing.assert_array_equal(b.valid((10, 40, 5, 20)), valid[10:15, 40:60])


def test_align_is_a_no_op_on_the_same_grid(tmp_path: Path) -> None:
    pa = write_tif(tmp_path / "a.tif", smooth(10, 10))
    pb = write_tif(tmp_path / "b.tif", smooth(10, 10, dtype=np.uint16) + 3)
    with RasterReader(pa) as a, RasterReader(pb, align_to=a, resampling="nearest") as b:
        assert not b.aligned
        np.testing.assert_array_equal(b.read(), smooth(10, 10) + 3)


def test_align_refusals(tmp_path: Path) -> None:
    pa = write_tif(tmp_path / "a.tif", smooth(10, 10))
    nocrs = write_tif(tmp_path / "n.tif", smooth(10, 10), crs=None)
    far = write_tif(tmp_path / "far.tif", smooth(10, 10), transform=rasterio.transform.from_origin(0, 100, 10, 10))
    with RasterReader(pa) as a:
        with pytest.raises(ConfigError, match="no CRS"):
            RasterReader(nocrs, align_to=a)
        with pytest.raises(ConfigError, match="does not overlap"):
            RasterReader(far, align_to=a)
        with pytest.raises(ConfigError, match="--resampling"):
            RasterReader(pa, align_to=a, resampling="bicubic")
