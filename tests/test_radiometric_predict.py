"""``data.radiometric`` stored in a checkpoint is applied by ``predict`` on scenes (a streaming pass over the whole
scene) and on plain images (the whole pair), and by ``test`` through the datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from PIL import Image
from rasterio.transform import from_origin

from changekit.data.io import write_png
from changekit.data.normalize import Normalisation
from changekit.engine.predict import predict
from changekit.engine.evaluate import test as evaluate

from pointwise_ckpt import pointwise_checkpoint

SIZE = 96


def _tif(path: Path, chw: np.ndarray, nodata: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=chw.shape[1], width=chw.shape[2], count=chw.shape[0],
                       dtype=chw.dtype.name, crs="EPSG:32631", transform=from_origin(600000, 5400000, 10, 10),
                       photometric="MINISBLACK", nodata=nodata) as dst:
        dst.write(chw)
    return path


def _ckpt(tmp: Path, radiometric: str, dtype: str = "uint16", data: Path | None = None) -> Path:
    norm = Normalisation(mean=(0.0,), std=(1.0,), scale=(1000.0,), offset=(1500.0,), mode="meanstd", dtype=dtype,
                         radiometric=radiometric, request="meanstd")
    if dtype == "uint8":
        norm = Normalisation(scale=(255.0,), mode="dtype", dtype=dtype, radiometric=radiometric, request="auto")
    return pointwise_checkpoint(tmp / f"{radiometric}_{dtype}.ckpt", data, resolved_normalize=norm.to_dict())


def _prob(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


@pytest.mark.parametrize("mode", ["match_meanstd", "match_histogram", "standardize"])
def test_scene_prediction_is_blind_to_a_radiometric_change_of_b(tmp_path: Path, mode: str) -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(500, 2500, (3, SIZE, SIZE)).astype(np.uint16)
    b = a.copy()
    b[:, 30:60, 30:60] = rng.integers(500, 2500, (3, 30, 30))  # a real change
    b2 = (2 * b + 10).astype(np.uint16)  # the same date B, another gain and offset (calibration, illumination)
    b2[:, :5] = 0  # and a nodata border, which must not shift its statistics
    paths = {n: _tif(tmp_path / f"{n}.tif", x, nodata=0 if n == "b2" else None)
             for n, x in (("a", a), ("b", b), ("b2", b2))}
    for radiometric in (mode, "none"):
        ck = _ckpt(tmp_path, radiometric)
        for name in ("b", "b2"):
            predict(ck, paths["a"], paths[name], tmp_path / f"{radiometric}_{name}.tif", save_prob=True, tile=64,
                    overlap=16, overwrite=True)
    prob = {f: _prob(tmp_path / f"{f}_prob.tif") for f in (f"{mode}_b", f"{mode}_b2", "none_b", "none_b2")}
    valid = np.s_[5:]  # B2's nodata rows are nodata in the outputs
    assert np.isnan(prob[f"{mode}_b2"][:5]).all()
    tol = 0.01 if mode == "match_histogram" else 1e-4
    np.testing.assert_allclose(prob[f"{mode}_b2"][valid], prob[f"{mode}_b"][valid], atol=tol)
    assert np.abs(prob["none_b2"][valid] - prob["none_b"][valid]).max() > 0.1  # without it the model sees it


def test_plain_images_and_test_use_the_stored_mode(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(40, 200, (SIZE, SIZE, 3)).astype(np.uint8)
    b2 = (a // 2 + 20).astype(np.uint8)  # no change at all, only another radiometry
    for folder, img in (("A", a), ("B", b2)):
        write_png(tmp_path / "d" / folder / "p.png", img)
    write_png(tmp_path / "d" / "label" / "p.png", np.zeros((SIZE, SIZE), np.uint8))
    probs = {}
    for radiometric in ("match_meanstd", "none"):
        ck = _ckpt(tmp_path, radiometric, "uint8", data=tmp_path / "d")
        predict(ck, tmp_path / "d" / "A" / "p.png", tmp_path / "d" / "B" / "p.png", tmp_path / f"{radiometric}.png",
                save_prob=True, tile=64, overlap=16)
        probs[radiometric] = np.asarray(Image.open(tmp_path / f"{radiometric}_prob.png"))
        res = evaluate(ck, tmp_path / f"eval_{radiometric}", report=False, accelerator="cpu")
        assert res["num_pairs"] == 1
        json.loads((tmp_path / f"eval_{radiometric}" / "metrics.json").read_text())
    # matched: B's pixels are A's again (to a grey level), so the pointwise model answers as for (A, A)
    same = _ckpt(tmp_path, "none", "uint8")
    write_png(tmp_path / "aa" / "a.png", a)
    predict(same, tmp_path / "aa" / "a.png", tmp_path / "aa" / "a.png", tmp_path / "aa_out.png", save_prob=True,
            tile=64, overlap=16)
    want = np.asarray(Image.open(tmp_path / "aa_out_prob.png")).astype(int)
    assert np.abs(probs["match_meanstd"].astype(int) - want).max() <= 3
    assert np.abs(probs["none"].astype(int) - want).max() > 3
