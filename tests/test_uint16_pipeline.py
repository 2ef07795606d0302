"""uint16 multispectral data through train -> test -> predict with the stored normalisation.

One generated scene is written twice: as 4-band 8-bit GeoTIFFs and as uint16 reflectance-like GeoTIFFs (every
value x 64, stored among extra bands in another order). Trained with the same seed, the uint16 run (``normalize:
auto``, bands picked with ``data.bands``) sees bit-identical network input to the 8-bit run (``normalize:
meanstd``): scaling by a power of two commutes with every rounding, so the weights, the test metrics and the
predicted probabilities must be equal, and ``predict`` must read the bands and statistics from the checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from cli_capture import run_main as _run
from rasterio.transform import from_origin

from changekit.data.io import read_image
from changekit.data.synthetic import synthesize
from changekit.engine.checkpoint import read_checkpoint

K = 64  # uint16 = 8-bit x 64 (up to 16,320: a 14-bit sensor's range)


def _tif(path: Path, chw: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=chw.shape[1], width=chw.shape[2], count=chw.shape[0],
                       dtype=chw.dtype.name, crs="EPSG:32631", transform=from_origin(600000, 5400000, 2, 2),
                       photometric="MINISBLACK") as dst:  # no band is alpha: all are data
        dst.write(chw)
    return path


def _four_bands(rgb: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8 -> ``(4, H, W)``: RGB plus a near-infrared-like band."""
    nir = (0.6 * rgb[..., 1] + 0.4 * (255 - rgb[..., 2])).astype(np.uint8)
    return np.concatenate([np.moveaxis(rgb, -1, 0), nir[None]])


def _uint16(chw: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bands 2..5 hold ``chw`` x 64; band 1 is unrelated (it must not be read)."""
    junk = rng.integers(0, 20000, (1, *chw.shape[1:]), dtype=np.uint16)
    return np.concatenate([junk, chw.astype(np.uint16) * K])


@pytest.fixture(scope="module")
def sets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("u16")
    synthesize(root / "png", n=6, size=64, seed=3)
    rng = np.random.default_rng(0)
    for stem in sorted(p.stem for p in (root / "png" / "A").glob("*.png")):
        for date in ("A", "B"):
            four = _four_bands(np.asarray(read_image(root / "png" / date / f"{stem}.png")))
            _tif(root / "u8" / date / f"{stem}.tif", four)
            _tif(root / "u16" / date / f"{stem}.tif", _uint16(four, rng))
        for kind in ("u8", "u16"):
            label = root / kind / "label"
            label.mkdir(parents=True, exist_ok=True)
            (label / f"{stem}.png").write_bytes((root / "png" / "label" / f"{stem}.png").read_bytes())
    synthesize(root / "scene", n=1, size=160, seed=11)  # an unseen, larger scene for predict
    for date in ("A", "B"):
        four = _four_bands(np.asarray(read_image(next((root / "scene" / date).glob("*.png")))))
        _tif(root / "scene_u8" / f"{date}.tif", four)
        _tif(root / "scene_u16" / f"{date}.tif", _uint16(four, rng))
        _tif(root / "scene_u16_4" / f"{date}.tif", four.astype(np.uint16) * K)
    return {"root": root}


def _train(tmp: Path, data: Path, capsys: pytest.CaptureFixture, **data_cfg: object) -> Path:
    cfg = {"model": {"name": "fc_siam_diff"},
           "data": {"train": str(data), "val": str(data), "batch_size": 2, "num_workers": 0, **data_cfg},
           "trainer": {"max_steps": 6, "accelerator": "cpu", "devices": 1, "progress_bar": False, "seed": 7,
                       "deterministic": True, "log_every_n_steps": 1}}
    path = tmp / f"{data.name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rc, _, err = _run(capsys, "train", path, "--out", tmp / f"run_{data.name}")
    assert rc == 0, err
    return tmp / f"run_{data.name}" / "model.ckpt"


def _prob(folder: Path, tag: str = "prob") -> np.ndarray:
    """The ``<name>_<tag>.tif`` raster of the one scene predicted into ``folder``."""
    with rasterio.open(next(folder.glob(f"*_{tag}.tif"))) as src:
        return src.read(1)


def test_uint16_with_stored_normalisation_equals_the_8bit_run(sets: dict[str, Path], tmp_path: Path,
                                                              capsys: pytest.CaptureFixture,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    root = sets["root"]
    ck8 = _train(tmp_path, root / "u8", capsys, normalize="meanstd")
    ck16 = _train(tmp_path, root / "u16", capsys, bands=[2, 3, 4, 5])  # normalize: auto
    w8, cfg8 = read_checkpoint(ck8)
    w16, cfg16 = read_checkpoint(ck16)
    spec = cfg16["data"]["resolved_normalize"]
    assert spec["mode"] == "meanstd" and spec["bands"] == [2, 3, 4, 5] and spec["dtype"] == "uint16"
    assert cfg16["model"]["in_channels"] == 4
    np.testing.assert_allclose(spec["offset"], np.asarray(cfg8["data"]["resolved_normalize"]["offset"]) * K)
    assert all(np.array_equal(w8[k], w16[k]) for k in w8)  # bit-identical input -> identical training

    for ck, kind in ((ck8, "u8"), (ck16, "u16")):
        rc, _, err = _run(capsys, "test", "--ckpt", ck, "--data", root / kind, "--out", tmp_path / f"eval_{kind}",
                          "--no-report")
        assert rc == 0, err
    m8, m16 = (json.loads((tmp_path / f"eval_{k}" / "metrics.json").read_text()) for k in ("u8", "u16"))
    assert m8["confusion"] == m16["confusion"]

    scenes = {"u8": (ck8, root / "scene_u8", ()), "u16": (ck16, root / "scene_u16", ()),  # bands from the ckpt
              "u16_4": (ck16, root / "scene_u16_4", ("--bands", "1,2,3,4"))}  # same bands, numbered otherwise
    caplog.clear()
    for name, (ck, scene, extra) in scenes.items():
        rc, _, err = _run(capsys, "predict", "--ckpt", ck, "--a", scene / "A.tif", "--b", scene / "B.tif",
                          "--out", tmp_path / f"pred_{name}", "--prob", "--tile", 64, "--overlap", 16, *extra)
        assert rc == 0, err
    assert "far outside" not in caplog.text
    p8 = _prob(tmp_path / "pred_u8")
    assert p8.std() > 0  # a trained model, not a constant
    for name in ("u16", "u16_4"):
        np.testing.assert_array_equal(_prob(tmp_path / f"pred_{name}"), p8)
        np.testing.assert_array_equal(_prob(tmp_path / f"pred_{name}", "change"), _prob(tmp_path / "pred_u8", "change"))

    # the 8-bit model given the uint16 scene: not silently rescaled; a warning names the file
    rc, _, err = _run(capsys, "predict", "--ckpt", ck8, "--a", root / "scene_u16_4" / "A.tif", "--b",
                      root / "scene_u16_4" / "B.tif", "--out", tmp_path / "pred_wrong")
    assert rc == 0 and "A.tif: input values lie far outside the training statistics" in caplog.text
    rc, _, err = _run(capsys, "predict", "--ckpt", ck16, "--a", root / "scene_u16_4" / "A.tif", "--b",
                      root / "scene_u16_4" / "B.tif", "--out", tmp_path / "pred_missing")
    assert rc == 2 and "reads bands [2, 3, 4, 5]" in err and "--bands" in err
    rc, _, err = _run(capsys, "predict", "--ckpt", ck16, "--a", root / "scene_u16" / "A.tif", "--b",
                      root / "scene_u16" / "B.tif", "--out", tmp_path / "pred_three", "--bands", "2,3,4")
    assert rc == 2 and "--bands: 3 band(s) [2, 3, 4], but the model was trained on 4" in err
