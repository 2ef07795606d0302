"""Semantic change detection end to end through the CLI: train ClearSCD (shipped recipe, tiny sizes) on
generated semantic data, then ``test`` (SCD metrics, report with legend and transitions) and ``predict``
(both dates' class maps as palette PNGs)."""

from __future__ import annotations

import csv
import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import changekit.models.clearscd  # noqa: F401  (registers the model until models/__init__ imports it)
from changekit.cli import main
from changekit.data.synthetic import CLASS_NAMES, PALETTE
from changekit.engine.task import ChangeTask

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "clearscd" / "hiucd_mini.yaml"
HOOKED = "current_epoch" in inspect.getsource(ChangeTask)  # engine sets model.current_epoch per epoch


@pytest.fixture(scope="module")
def semantic_root(synth_semantic_root: Path) -> Path:
    return synth_semantic_root  # the shared generated semantic set (tests/conftest.py)


@pytest.fixture(scope="module")
def run(semantic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    torch.set_num_threads(1)
    sets = [
        f"data.train={semantic_root / 'train'}", f"data.val={semantic_root / 'val'}",
        f"data.test={semantic_root / 'val'}", "data.ignore_index=255", "data.augment=none",
        f"data.classes={semantic_root / 'train' / 'classes.yaml'}", "data.batch_size=4", "data.num_workers=0",
        "model.num_classes=5", "model.pyramid_channels=32", "model.segmentation_channels=32",
        "model.queue_len=8", "model.enqueue_len=4",
        "loss=[{name: bce}, {name: dice, skip_empty: true}, {name: ce, target: sem_a}, {name: ce, target: sem_b}]",
        "trainer.max_epochs=2", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.progress_bar=false",
        "trainer.log_every_n_steps=1",
    ]
    args = ["train", str(CONFIG), "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    return out


def _logged(run: Path) -> dict[str, list[float]]:
    with open(run / "logs" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    keys = {k for r in rows for k, v in r.items() if v}
    return {k: [float(r[k]) for r in rows if r.get(k)] for k in keys}


def test_training_logs_every_loss_term(run: Path) -> None:
    logged = _logged(run)
    for key in ("train/bce", "train/dice", "train/ce_sem_a", "train/ce_sem_b", "train/sacl_local", "train/bscc",
                "val/sek", "val/miou_sc"):
        assert key in logged and all(np.isfinite(logged[key])), key
    assert (run / "model.ckpt").is_file()
    state = torch.load(run / "model.ckpt", weights_only=True)["state_dict"]
    assert any(k.endswith("queues.queue") for k in state)


@pytest.mark.xfail(not HOOKED, reason="engine/task.py does not yet set model.current_epoch", strict=True)
def test_global_sacl_switches_on_after_the_warmup_epoch(run: Path) -> None:
    steps = _logged(run).get("train/sacl_global", [])
    assert len(steps) == 2  # 8 pairs / batch 4: only the 2 steps of epoch 2


def test_test_writes_semantic_metrics_and_report(run: Path, tmp_path: Path) -> None:
    # A copy away from the run's logs: the report then skips the training-history plots (one panel per logged
    # metric, ~40 s of matplotlib for a semantic run on a busy 2-core machine).
    ckpt = tmp_path / "model.ckpt"
    shutil.copy(run / "model.ckpt", ckpt)
    assert main(["test", "--ckpt", str(ckpt), "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    sem = metrics["semantic"]
    for key in ("sek", "fscd", "miou_scd", "clearscd_sek", "miou_sc", "miou_nc", "miou_bc", "bcd_iou_mod",
                "seg_miou", "oa_scd", "overall_score"):
        assert key in sem and np.isfinite(sem[key]), key
    assert sem["num_pixels"] > 0
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "From-to transitions" in html and "Classes" in html
    assert all(name in html for name in CLASS_NAMES)


def test_predict_writes_palette_class_maps(run: Path, semantic_root: Path, tmp_path: Path) -> None:
    val = semantic_root / "val"
    assert main(["predict", "--ckpt", str(run / "model.ckpt"), "--a", str(val / "im1"), "--b", str(val / "im2"),
                 "--out", str(tmp_path / "pred"), "--tile", "64", "--overlap", "16"]) == 0
    stems = sorted(p.stem for p in (val / "im1").iterdir())
    for stem in stems:  # the layout eval-masks --task semantic reads: change/, label1/, label2/
        change = np.asarray(Image.open(tmp_path / "pred" / "change" / f"{stem}.png"))
        assert set(np.unique(change).tolist()) <= {0, 255}
        for key in ("label1", "label2"):
            im = Image.open(tmp_path / "pred" / key / f"{stem}.png")
            assert im.mode == "P" and im.size == (64, 64)
            assert int(np.asarray(im).max()) < 5
            pal = np.asarray(im.getpalette()[:15]).reshape(5, 3)
            np.testing.assert_array_equal(pal, PALETTE)


def test_predict_on_geotiffs_writes_georeferenced_class_maps(run: Path, semantic_root: Path, tmp_path: Path) -> None:
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import Affine

    from changekit.data.io import GeoInfo, read_image, write_geotiff

    stem = sorted(p.stem for p in (semantic_root / "val" / "im1").iterdir())[0]
    geo = GeoInfo(crs=CRS.from_epsg(32633), transform=Affine(0.5, 0.0, 500000.0, 0.0, -0.5, 4000000.0))
    for d in ("im1", "im2"):
        (tmp_path / d).mkdir()
        src = next((semantic_root / "val" / d).glob(f"{stem}.*"))
        write_geotiff(tmp_path / d / f"{stem}.tif", read_image(src), geo)
    assert main(["predict", "--ckpt", str(run / "model.ckpt"), "--a", str(tmp_path / "im1"), "--b",
                 str(tmp_path / "im2"), "--out", str(tmp_path / "pred"), "--tile", "64", "--overlap", "16"]) == 0
    assert sorted(str(p.relative_to(tmp_path / "pred")) for p in (tmp_path / "pred").rglob("*.tif")) == [
        f"{stem}_change.tif", f"{stem}_sem_a.tif", f"{stem}_sem_b.tif"]  # a scene: named after the pair
    for key in ("sem_a", "sem_b"):
        with rasterio.open(tmp_path / "pred" / f"{stem}_{key}.tif") as ds:
            assert str(ds.crs) == "EPSG:32633" and ds.transform.a == 0.5
            assert int(ds.read(1).max()) < 5
            assert ds.colormap(1)[1][:3] == tuple(int(v) for v in PALETTE[1])
