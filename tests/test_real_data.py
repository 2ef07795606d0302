"""Real imagery: fc_siam_diff on 256-pixel tiles of OSCD (read from ../shared/data, never copied)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from changekit.data.tiling import tile_folder
from changekit.engine.evaluate import test as run_test
from changekit.engine.train import train

OSCD = Path(__file__).resolve().parents[2] / "shared" / "data" / "oscd_rgb"
pytestmark = pytest.mark.skipif(not (OSCD / "A").is_dir(), reason=f"real data not present at {OSCD}")


def test_fc_siam_diff_on_oscd_tiles(tmp_path: Path) -> None:
    src = tmp_path / "oscd"
    for sub in ("A", "B", "label"):  # three cities keep the test short; the copy stays in tmp_path
        (src / sub).mkdir(parents=True)
        for city in ("beirut", "bordeaux", "nantes"):
            shutil.copy(OSCD / sub / f"{city}.png", src / sub / f"{city}.png")
    tile_folder(src, tmp_path / "tiles", size=256, stride=256)
    tiles = tmp_path / "tiles"
    assert len(list((tiles / "A").glob("*.png"))) >= 8

    cfg = {
        "model": {"name": "fc_siam_diff"},
        "data": {"train": str(tiles), "val": str(tiles), "test": str(tiles), "batch_size": 4, "num_workers": 0},
        "loss": [{"name": "ce", "weight": 1.0}, {"name": "dice", "weight": 1.0}],
        "optim": {"name": "adamw", "lr": 3e-3},
        "schedule": {"name": "none"},
        "trainer": {"max_steps": 24, "val_every_steps": 12, "accelerator": "cpu", "devices": 1,
                    "progress_bar": False, "log_every_n_steps": 1, "seed": 0},
    }
    run = train(cfg, tmp_path / "run")
    with open(tmp_path / "run" / "logs" / "metrics.csv") as fh:
        losses = [float(r["train/loss_step"]) for r in csv.DictReader(fh) if r.get("train/loss_step")]
    assert len(losses) == 24
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.9 * first, (first, last)

    metrics = run_test(run["checkpoint"], tmp_path / "eval", report=True, samples=2)
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["f1"] == pytest.approx(metrics["f1"])
    for key in ("precision", "recall", "f1", "iou", "oa"):
        assert 0.0 <= saved[key] <= 1.0
    assert saved["oa"] > 0.5  # change is rare in OSCD: a sane model is mostly right
    assert sum(map(sum, saved["confusion"])) > 8 * 256 * 256 * 0.9
    assert (tmp_path / "eval" / "report.html").stat().st_size > 10_000
