"""``data convert oscd`` on a made-up city in OSCD's published layout (runs without the real data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_bounds

from changekit.cli import main
from changekit.data.oscd import S2_BANDS, convert_oscd, parse_band_names
from changekit.errors import ConfigError, DatasetNotFoundError, LabelValueError

BOUNDS = (2.0, 48.0, 2.006, 48.004)  # lon/lat, as OSCD's approximate EPSG:4326 grids
H, W = 40, 60  # the 10 m grid
SIZES = {10: (H, W), 20: (H // 2, W // 2), 60: (H // 6, W // 6)}
RES = {"B02": 10, "B03": 10, "B04": 10, "B08": 10, "B05": 20, "B06": 20, "B07": 20, "B8A": 20, "B11": 20,
       "B12": 20, "B01": 60, "B09": 60, "B10": 60}


def _band(path: Path, value: np.ndarray, georef: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = value.shape
    geo = {"crs": "EPSG:4326", "transform": from_bounds(*BOUNDS, w, h)} if georef else {}
    with rasterio.open(path, "w", driver="GTiff", height=h, width=w, count=1, dtype=value.dtype.name, **geo) as dst:
        dst.write(value, 1)


def _city(root: Path, name: str = "testville", label: np.ndarray | None = None, shrink: int = 0) -> Path:
    """A city whose band ``Bnn`` holds ``nn * 100`` everywhere plus a ramp; date 2 ``shrink`` pixels smaller."""
    city = root / name
    for date, prefix, cut in (("imgs_1", "S2A_OPER_MSI_L1C_TL_X_T31UDQ", 0), ("imgs_2", "T31UDQ_2017", shrink)):
        for band, res in RES.items():
            h, w = SIZES[res]
            if res == 10:
                h, w = h - cut, w - cut
            base = 100 * (S2_BANDS.index(band) + 1)
            ramp = np.add.outer(np.arange(h), np.arange(w)).astype(np.uint16)
            _band(city / date / f"{prefix}_{band}.tif", (base + ramp).astype(np.uint16))
    cm = label if label is not None else np.where(np.arange(H * W).reshape(H, W) % 7 == 0, 2, 1).astype(np.uint8)
    _band(city / "cm" / f"{name}-cm.tif", cm, georef=False)
    (city / "dates.txt").write_text("date_1: 20150101\ndate_2: 20170101\n")
    return city


def test_bands_stack_on_the_10m_grid_and_labels_become_0_255(tmp_path: Path) -> None:
    _city(tmp_path / "src", shrink=2)
    out = tmp_path / "out"
    assert main(["data", "convert", "oscd", str(tmp_path / "src"), "--out", str(out)]) == 0
    for date in ("A", "B"):
        with rasterio.open(out / date / "testville.tif") as src:
            assert (src.count, src.shape, src.dtypes[0]) == (13, (H, W), "uint16")
            assert src.transform.almost_equals(from_bounds(*BOUNDS, W, H)) and src.crs.to_epsg() == 4326
            stack = src.read().astype(float)
        for i, band in enumerate(S2_BANDS):  # each band's level survives resampling (none is swapped or lost)
            assert abs(np.median(stack[i]) - 100 * (i + 1) - np.median(np.add.outer(np.arange(H), np.arange(W)))
                       ) < 0.25 * (H + W) + (20 if RES[band] == 60 else 2)
    with rasterio.open(out / "A" / "testville.tif") as src:  # a 10 m band of date 1 is copied exactly
        np.testing.assert_array_equal(src.read(2), 200 + np.add.outer(np.arange(H), np.arange(W)))
    with rasterio.open(out / "label" / "testville.tif") as lab:
        label = lab.read(1)
    assert set(np.unique(label).tolist()) == {0, 255} and (label == 255).sum() == (np.arange(H * W) % 7 == 0).sum()


def test_band_choice_and_errors(tmp_path: Path) -> None:
    assert parse_band_names("rgb") == ("B04", "B03", "B02") and parse_band_names("b8a, B02") == ("B8A", "B02")
    with pytest.raises(ConfigError, match="'B13' is not a Sentinel-2 band"):
        parse_band_names("B02,B13")
    _city(tmp_path / "src")
    rgb = convert_oscd(tmp_path / "src", tmp_path / "rgb", bands="rgb")
    with rasterio.open(tmp_path / "rgb" / "A" / "testville.tif") as src:
        assert src.count == 3 and int(src.read(3)[0, 0]) == 200  # B02 last
    assert rgb[0]["dates"] == {"date_1": "20150101", "date_2": "20170101"}
    with pytest.raises(DatasetNotFoundError, match="no city 'paris'"):
        convert_oscd(tmp_path / "src", tmp_path / "x", cities=["paris"])
    with pytest.raises(DatasetNotFoundError, match="no OSCD city folders"):
        convert_oscd(tmp_path / "rgb", tmp_path / "y")
    _city(tmp_path / "bad", label=np.zeros((H, W), np.uint8))
    with pytest.raises(LabelValueError, match=r"found \[0\]; is it already converted"):
        convert_oscd(tmp_path / "bad", tmp_path / "z")
    assert not (tmp_path / "z").exists()  # a failed conversion leaves nothing
    (tmp_path / "src" / "testville" / "imgs_2" / "T31UDQ_2017_B11.tif").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"imgs_2: no file for band\(s\) B11"):
        convert_oscd(tmp_path / "src", tmp_path / "w")
