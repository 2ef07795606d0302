"""The raster layer from the command line: predict --align --vector on a GeoTIFF pair on two grids, the vector
beside each mask of a folder run, and changekit vectorize."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from changekit.cli import main
from changekit.raster.writer import MASK_NODATA

from pointwise_ckpt import pointwise_checkpoint
from .geotiffs import smooth, write_tif
from .test_reader import _reprojected

pyogrio = pytest.importorskip("pyogrio", reason="pyogrio (changekit[vector]) is not installed")


def _run(capsys: pytest.CaptureFixture, *args: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _areas(path: Path) -> tuple[int, float]:
    _, _, _, fields = pyogrio.raw.read(path)
    names = pyogrio.read_info(path)["fields"].tolist()
    cols = dict(zip(names, fields, strict=True))
    return int(cols["pixels"].sum()), float(cols["area_m2"].sum())


def test_predict_align_vector_and_vectorize(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = pointwise_checkpoint(tmp_path / "model.ckpt")
    pa = write_tif(tmp_path / "a.tif", smooth(64, 80, scale=1.0, dtype=np.float32))
    pb = _reprojected(pa, tmp_path / "b.tif", "EPSG:3035", 15.0, cols=50)
    rc, _, err = _run(capsys, "predict", "--ckpt", ckpt, "--a", pa, "--b", pb, "--out", tmp_path / "m.tif",
                      "--tile", 32, "--overlap", 8)
    assert rc == 2 and "--align" in err and not (tmp_path / "m.tif").exists()
    rc, _, err = _run(capsys, "predict", "--ckpt", ckpt, "--a", pa, "--b", pb, "--out", tmp_path / "m.tif",
                      "--tile", 32, "--overlap", 8, "--align", "--resampling", "nearest", "--threshold", "0.3",
                      "--vector", tmp_path / "poly.gpkg", "--prob")
    assert rc == 0, err
    with rasterio.open(tmp_path / "m.tif") as ds:
        mask = ds.read(1)
        assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and ds.nodata == MASK_NODATA
    assert (mask[:, 53:] == MASK_NODATA).all() and (mask == 255).any()
    changed = int((mask == 255).sum())
    assert _areas(tmp_path / "poly.gpkg") == (changed, pytest.approx(changed * 100.0))
    fields = pyogrio.read_info(tmp_path / "poly.gpkg")["fields"].tolist()
    assert "prob_mean" in fields and "prob_max" in fields
    rc, out, err = _run(capsys, "vectorize", tmp_path / "m.tif", "--out", tmp_path / "again.geojson",
                        "--prob", tmp_path / "m_prob.tif", "--min-area", 0)
    assert rc == 0, err
    assert _areas(tmp_path / "again.geojson") == (changed, pytest.approx(changed * 100.0))
    rc, _, err = _run(capsys, "vectorize", tmp_path / "m.tif", "--out", tmp_path / "again.geojson")
    assert rc == 2 and "exists" in err  # no --overwrite


def test_folder_run_writes_polygons_beside_each_mask(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt = pointwise_checkpoint(tmp_path / "model.ckpt")
    for date, k in (("A", 0), ("B", 1)):
        (tmp_path / date).mkdir()
        for stem in ("s1", "s2"):
            write_tif(tmp_path / date / f"{stem}.tif", smooth(40, 40, scale=200, dtype=np.uint8) + 40 * k)
    rc, _, err = _run(capsys, "predict", "--ckpt", ckpt, "--a", tmp_path / "A", "--b", tmp_path / "B", "--out",
                      tmp_path / "pred", "--tile", 32, "--overlap", 8, "--threshold", "0.1", "--vector", "x.parquet")
    assert rc == 0, err
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["s1_change.parquet", "s1_change.tif",
                                                                    "s2_change.parquet", "s2_change.tif"]


def test_test_command_aligns_b_onto_a(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """test --align: date B on another CRS and resolution is warped onto A's grid (labels lie on A's grid)."""
    from changekit.data.io import write_png

    root = tmp_path / "data"
    for sub in ("A", "B", "label"):
        (root / sub).mkdir(parents=True)
    pa = write_tif(root / "A" / "x.tif", smooth(48, 48, scale=1.0, dtype=np.float32))
    _reprojected(pa, root / "B" / "x.tif", "EPSG:3035", 12.0, cols=48)
    label = np.zeros((48, 48), np.uint8)
    label[10:20, 10:30] = 255
    write_png(root / "label" / "x.png", label)
    ckpt = pointwise_checkpoint(tmp_path / "model.ckpt")
    rc, _, err = _run(capsys, "test", "--ckpt", ckpt, "--data", root, "--out", tmp_path / "e0", "--no-report")
    assert rc == 2 and "x.tif" in err and not (tmp_path / "e0").exists()
    rc, _, err = _run(capsys, "test", "--ckpt", ckpt, "--data", root, "--out", tmp_path / "e1", "--no-report",
                      "--align", "--resampling", "bilinear")
    assert rc == 0, err
    import json

    scored = int(np.sum(json.loads((tmp_path / "e1" / "metrics.json").read_text())["confusion"]))
    assert 0.9 * 48 * 48 < scored <= 48 * 48  # pixels outside B's footprint (its warped edge) are not scored
