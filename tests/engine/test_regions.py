"""Streaming change regions of a mask: equal to whole-mask labelling whatever the strip height, nodata excluded,
areas from the grid (projected and geographic), probabilities per region."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS
from scipy import ndimage

from changekit.data.io import GeoInfo, write_png
from changekit.engine import regions as R
from changekit.raster.writer import MASK_NODATA, write_array

UTM = GeoInfo(crs=CRS.from_epsg(32633), transform=Affine(10, 0, 500000, 0, -10, 5_000_000))


def _mask(seed: int = 0, h: int = 120, w: int = 90) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = np.where(rng.random((h, w)) > 0.55, 255, 0).astype(np.uint8)
    m[:6, :9] = MASK_NODATA
    return m


@pytest.mark.parametrize("strip_rows", [1, 7, 1000])
def test_regions_equal_whole_mask_labelling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strip_rows: int) -> None:
    m = _mask()
    prob = np.random.default_rng(1).random(m.shape).astype(np.float32)
    write_array(tmp_path / "m.tif", m, UTM, nodata=MASK_NODATA)
    write_array(tmp_path / "p.tif", prob, UTM, nodata=float("nan"))
    monkeypatch.setattr(R, "STRIP_PIXELS", strip_rows * m.shape[1])
    r = R.mask_regions(tmp_path / "m.tif", tmp_path / "p.tif")
    labels, n = ndimage.label(m == 255)
    assert r.count == n and r.changed == int((m == 255).sum()) and r.valid == int((m != MASK_NODATA).sum())
    assert r.total == m.size and r.crs == "EPSG:32633"
    assert r.changed_m2 == pytest.approx(r.changed * 100) and r.valid_m2 == pytest.approx(r.valid * 100)
    assert sorted(r.pixels.tolist()) == sorted(np.bincount(labels.ravel())[1:].tolist())
    assert r.area_m2.sum() == pytest.approx(r.changed_m2)
    for i in r.largest(5):  # per region: the label at its first pixel, its size, mean and max probability
        lab = labels[r.row[i], r.col[i]]
        assert lab and r.pixels[i] == (labels == lab).sum()
        assert r.prob_mean[i] == pytest.approx(prob[labels == lab].mean(), rel=1e-6)
        assert r.prob_max[i] == pytest.approx(prob[labels == lab].max())
        assert (r.x[i], r.y[i]) == (500000 + 10 * (r.col[i] + 0.5), 5_000_000 - 10 * (r.row[i] + 0.5))
    valid_probs = prob[m != MASK_NODATA]
    assert r.prob_hist.sum() == valid_probs.size
    assert r.prob_hist.tolist() == np.histogram(valid_probs, R.HIST_BINS, (0, 1))[0].tolist()


def test_geographic_areas_follow_latitude(tmp_path: Path) -> None:
    m = np.zeros((100, 100), np.uint8)
    m[:, :10] = 255
    geo = GeoInfo(crs=CRS.from_epsg(4326), transform=Affine(1e-4, 0, 10.0, 0, -1e-4, 60.0))
    write_array(tmp_path / "m.tif", m, geo, nodata=MASK_NODATA)
    r = R.mask_regions(tmp_path / "m.tif")
    side = 6371007.2 * np.radians(1e-4)  # metres per 1e-4 degree on the authalic sphere
    expected = 1000 * side * side * np.cos(np.radians(60 - 50e-4))
    assert r.changed_m2 == pytest.approx(expected, rel=1e-4) and r.count == 1


def test_png_mask_has_no_areas(tmp_path: Path) -> None:
    m = _mask(3, 40, 30)
    m[m == MASK_NODATA] = 0
    write_png(tmp_path / "m.png", m)
    r = R.mask_regions(tmp_path / "m.png")
    assert r.count == ndimage.label(m == 255)[1] and r.valid == m.size
    assert r.changed_m2 is None and r.area_m2 is None and r.x is None and r.prob_hist is None
