"""``changekit data stats`` and how training resolves ``data.bands`` / ``data.normalize`` from the data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from cli_capture import run_main as _run
from rasterio.transform import from_origin

from changekit.config import resolve
from changekit.data.bands import fit_to_data
from changekit.data.datasets import ChangeDataset
from changekit.data.io import write_png
from changekit.data.normalize import Normalisation
from changekit.errors import ConfigError

SIZE = 32


def _tif(path: Path, arr: np.ndarray, nodata: float | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=arr.shape[1], width=arr.shape[2], count=arr.shape[0],
                       dtype=arr.dtype.name, crs="EPSG:32631", transform=from_origin(500000, 5000000, 10, 10),
                       nodata=nodata) as dst:
        dst.write(arr)


def _set(root: Path, n: int = 2, bands: int = 4, border: bool = True) -> list[np.ndarray]:
    """``n`` uint16 pairs whose first 4 rows are nodata (value 0); returns every image written."""
    rng = np.random.default_rng(1)
    images = []
    for i in range(n):
        for date in ("A", "B"):
            img = rng.integers(500, 3000, (bands, SIZE, SIZE)).astype(np.uint16)
            img[1] += 5000  # band 2 is brighter: band selection must show in the figures
            if border:
                img[:, :4] = 0
            _tif(root / date / f"p{i}.tif", img, nodata=0 if border else None)
            images.append(img)
        write_png(root / "label" / f"p{i}.png", np.zeros((SIZE, SIZE), np.uint8))
    return images


def test_stats_exclude_nodata_and_follow_bands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    images = _set(tmp_path / "d")
    out = tmp_path / "d" / "stats.json"  # beside the data (an index file, not an image)
    rc, text, err = _run(capsys, "data", "stats", tmp_path / "d", "--bands", "2,1", "--out", out)
    assert rc == 0, err
    doc = json.loads(out.read_text())
    valid = np.stack([img[:, 4:] for img in images]).astype(np.float64)  # nodata rows excluded
    assert [b["band"] for b in doc["bands"]] == [2, 1] and doc["images"] == 4 and doc["dtype"] == "uint16"
    assert doc["bands"][0]["mean"] == pytest.approx(valid[:, 1].mean())
    assert doc["bands"][1]["std"] == pytest.approx(valid[:, 0].std())
    assert doc["bands"][1]["min"] >= 500 and doc["valid_share"] == pytest.approx((SIZE - 4) / SIZE)
    assert doc["bands"][0]["percentiles"]["50"] == pytest.approx(np.median(valid[:, 1]), abs=1.0)
    assert "band" in text and "p99" in text
    rc, _, err = _run(capsys, "data", "stats", tmp_path / "d", "--out", out)
    assert rc == 2 and "exists" in err  # outputs are guarded like every other
    rc, _, err = _run(capsys, "data", "stats", tmp_path / "d", "--bands", "5")
    assert rc == 2 and "band 5 does not exist" in err


def test_training_resolves_uint16_from_statistics_never_65535(tmp_path: Path) -> None:
    images = _set(tmp_path / "d")
    cfg = fit_to_data(resolve({"data": {"train": str(tmp_path / "d"), "bands": [2, 3]}}))
    assert cfg["model"]["in_channels"] == 2  # the selected bands, not the file's 4
    norm = Normalisation.from_config(cfg)
    valid = np.stack([img[:, 4:] for img in images]).astype(np.float64)
    assert norm.mode == "meanstd" and norm.bands == (2, 3) and norm.dtype == "uint16"
    np.testing.assert_allclose(norm.offset, valid[:, 1:3].mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(norm.scale, valid[:, 1:3].std(axis=(0, 2, 3)))
    item = ChangeDataset(tmp_path / "d", normalisation=norm)[0]
    assert item["image_a"].shape == (2, SIZE, SIZE)
    assert abs(float(item["image_a"][:, 4:].mean())) < 0.2  # standardised, not divided by 65,535
    border = item["image_a"][:, :4]  # nodata: the image's valid mean, near 0 after any normalisation
    assert float(border.abs().max()) < 0.2 and float(border.std()) < 0.1 * float(item["image_a"][:, 4:].std())
    assert (item["mask"][:4] == 255).all() and (item["mask"][4:] == 0).all()  # and ignored by loss and metrics


def test_a_stats_file_is_used_and_checked_against_bands(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _set(tmp_path / "d")
    stats = tmp_path / "s.json"
    assert _run(capsys, "data", "stats", tmp_path / "d", "--bands", "1", "--out", stats)[0] == 0
    doc = json.loads(stats.read_text())
    doc["bands"][0]["mean"], doc["bands"][0]["std"] = 1234.0, 10.0  # the file wins over the data
    stats.write_text(json.dumps(doc))
    cfg = fit_to_data(resolve({"data": {"train": str(tmp_path / "d"), "bands": [1], "stats": str(stats),
                                        "normalize": "meanstd"}}))
    norm = Normalisation.from_config(cfg)
    assert norm.offset == (1234.0,) and norm.scale == (10.0,)
    with pytest.raises(ConfigError, match=r"describes bands \[1\], but data.bands is \[2\]"):
        fit_to_data(resolve({"data": {"train": str(tmp_path / "d"), "bands": [2], "stats": str(stats)}}))
    with pytest.raises(ConfigError, match=r"data.bands: band 7 does not exist in .*p0.tif, which has 4"):
        fit_to_data(resolve({"data": {"train": str(tmp_path / "d"), "bands": [7]}}))


def test_a_resumed_config_keeps_its_resolution_until_the_request_changes(tmp_path: Path) -> None:
    _set(tmp_path / "d", border=False)
    cfg = fit_to_data(resolve({"data": {"train": str(tmp_path / "d"), "normalize": "scale:10000"}}))
    stored = cfg["data"]["resolved_normalize"]
    again = fit_to_data(resolve(cfg))
    assert again["data"]["resolved_normalize"] == stored
    cfg["data"]["normalize"] = "percentile:2,98"
    changed = fit_to_data(resolve(cfg))["data"]["resolved_normalize"]
    assert changed["mode"] == "percentile" and changed["clip"] is not None
