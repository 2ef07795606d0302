"""OSCD's 13 Sentinel-2 bands: conversion to one GeoTIFF per date, then train -> test -> predict on 13 bands.

Reads ``../shared/data/oscd_ms`` (never copied into the repository; skipped with a reason when absent).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from cli_capture import run_main as _run

from changekit.cli import main
from changekit.data.oscd import S2_BANDS, band_files

OSCD_MS = Path(__file__).resolve().parents[2] / "shared" / "data" / "oscd_ms"
pytestmark = pytest.mark.skipif(not (OSCD_MS / "hongkong" / "imgs_1").is_dir(),
                                reason=f"OSCD multispectral data not present at {OSCD_MS}")
CITIES = ("bordeaux", "rennes", "hongkong")  # hongkong: date 2 lies on a 2-pixel smaller grid


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("oscd") / "oscd13"
    assert main(["data", "convert", "oscd", str(OSCD_MS), "--out", str(out), "--cities", ",".join(CITIES)]) == 0
    return out


def test_every_band_lands_on_date_1s_10m_grid(converted: Path) -> None:
    meta = json.loads((converted / "oscd.json").read_text())
    assert meta["bands"] == list(S2_BANDS) and [c["city"] for c in meta["cities"]] == list(CITIES)
    assert meta["cities"][2]["dates"] == {"date_1": "20160927", "date_2": "20180323"}
    for city in CITIES:
        ref_file = band_files(OSCD_MS / city / "imgs_1")["B02"]
        with rasterio.open(ref_file) as ref:
            ref_b02, ref_shape, ref_transform, ref_crs = ref.read(1), ref.shape, ref.transform, ref.crs
        for date in ("A", "B"):
            with rasterio.open(converted / date / f"{city}.tif") as src:
                assert (src.count, src.dtypes[0], src.shape) == (13, "uint16", ref_shape)
                assert src.crs == ref_crs and src.transform.almost_equals(ref_transform)
                bands = src.read()
            if date == "A":  # a 10 m band of date 1 is copied as it is; a 20 m band is resampled, not rescaled
                np.testing.assert_array_equal(bands[1], ref_b02)
                with rasterio.open(band_files(OSCD_MS / city / "imgs_1")["B05"]) as b05:
                    assert abs(float(bands[4].mean()) / float(b05.read(1).mean()) - 1) < 0.01
        with rasterio.open(converted / "label" / f"{city}.tif") as lab:
            label = lab.read(1)
            assert lab.crs == ref_crs and label.shape == ref_shape
        assert set(np.unique(label).tolist()) <= {0, 255}
    with rasterio.open(converted / "label" / "bordeaux.tif") as lab:
        assert int((lab.read(1) == 255).sum()) == 2380  # SOURCES.md: 1.00 % (2,380 px)
    with rasterio.open(band_files(OSCD_MS / "hongkong" / "imgs_2")["B02"]) as b2:
        assert b2.shape == (693, 538)  # resampled onto date 1's 695 x 540 above


def test_thirteen_band_pipeline_trains_tests_and_predicts(converted: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    cfg = {"model": {"name": "fc_siam_diff"},
           "data": {"train": str(converted), "val": str(converted), "batch_size": 2, "val_batch_size": 1,
                    "num_workers": 0, "radiometric": "match_meanstd",
                    "augment": [{"name": "random_crop", "size": 64}]},
           "trainer": {"max_steps": 3, "accelerator": "cpu", "devices": 1, "progress_bar": False,
                       "log_every_n_steps": 1, "limit_val_batches": 1}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    rc, _, err = _run(capsys, "train", tmp_path / "cfg.yaml", "--out", tmp_path / "run")
    assert rc == 0, err
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["model"]["in_channels"] == 13
    spec = saved["data"]["resolved_normalize"]
    assert spec["mode"] == "meanstd" and len(spec["offset"]) == 13 and spec["radiometric"] == "match_meanstd"
    assert 8 < spec["offset"][10] < 16  # B10 (cirrus) keeps its own statistics: median about 12
    ckpt = tmp_path / "run" / "model.ckpt"
    rc, _, err = _run(capsys, "test", "--ckpt", ckpt, "--data", converted, "--out", tmp_path / "eval", "--no-report")
    assert rc == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["num_pairs"] == 3 and 0 <= metrics["f1"] <= 1
    rc, _, err = _run(capsys, "predict", "--ckpt", ckpt, "--a", converted / "A" / "hongkong.tif", "--b",
                      converted / "B" / "hongkong.tif", "--out", tmp_path / "hk.tif", "--tile", 128, "--overlap", 16)
    assert rc == 0, err
    with rasterio.open(tmp_path / "hk.tif") as mask, rasterio.open(converted / "A" / "hongkong.tif") as a:
        assert mask.shape == a.shape and mask.crs == a.crs and mask.transform.almost_equals(a.transform)
        assert set(np.unique(mask.read(1)).tolist()) <= {0, 255}


def test_tile_keeps_selected_bands_and_georeferencing(converted: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    rc, _, err = _run(capsys, "data", "tile", converted, "--size", 256, "--bands", "4,3,2", "--out", tmp_path / "t")
    assert rc == 0, err
    with rasterio.open(converted / "A" / "rennes.tif") as src:
        whole = src.read([4, 3, 2], window=((0, 256), (0, 256)))
        transform = src.transform
    with rasterio.open(tmp_path / "t" / "A" / "rennes_0_0.tif") as tile:
        assert tile.count == 3 and tile.crs is not None and tile.transform.almost_equals(transform)
        np.testing.assert_array_equal(tile.read(), whole)
    with rasterio.open(tmp_path / "t" / "label" / "rennes_0_0.tif") as lab:
        assert lab.count == 1
    manifest = json.loads((tmp_path / "t" / "tiles.json").read_text())
    assert manifest["bands"] == {"bands": [4, 3, 2], "folders": ["A", "B"]}
