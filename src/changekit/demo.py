"""The demo: the whole pipeline on data changekit generates itself, in a few CPU minutes.

Generates a synthetic train/val/test set, trains ``fc_siam_diff`` under a time budget, evaluates it on the
held-out split (metrics + HTML report), and predicts a larger georeferenced synthetic scene.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .data.io import atomic_path

log = logging.getLogger(__name__)

DEMO_SIZE = 128
DEMO_PAIRS = {"train": 240, "val": 24, "test": 48}


def demo_config(data: Path, minutes: float, seed: int) -> dict[str, Any]:
    """The demo's training config (also a readable example of a config)."""
    return {
        "model": {"name": "fc_siam_diff"},
        "data": {
            "train": str(data / "train"), "val": str(data / "val"), "test": str(data / "test"),
            "batch_size": 8, "num_workers": min(2, os.cpu_count() or 1), "augment": "flips",
        },
        "loss": [{"name": "ce"}, {"name": "dice", "weight": 0.5}],
        "optim": {"name": "adamw", "lr": 2e-3, "weight_decay": 1e-4},
        "schedule": {"name": "poly", "power": 0.9, "warmup": 30},
        "trainer": {
            "max_epochs": 11, "max_time_minutes": minutes, "seed": seed, "monitor": "val/f1", "mode": "max",
            "log_every_n_steps": 10, "accelerator": "cpu", "devices": 1, "progress_bar": True,
        },
    }


def run_demo(out: str | Path = "demo_out", minutes: float = 3.0, seed: int = 0) -> dict[str, Any]:
    """Run the demo end to end; returns the test metrics plus the report and scene paths."""
    from .data.synthetic import synthesize, synthesize_geotiff_pair
    from .engine.evaluate import test
    from .engine.predict import predict
    from .engine.train import train

    out = Path(out)
    data = out / "data"
    for i, (split, n) in enumerate(DEMO_PAIRS.items()):
        if not (data / split).is_dir():
            synthesize(data / split, n=n, size=DEMO_SIZE, seed=seed * 1000 + 17 * (i + 1))
    run = out / "run"
    if (run / "checkpoints" / "last.ckpt").exists():  # a fresh demo each time, never a silent resume
        import shutil

        shutil.rmtree(run)
    result = train(demo_config(data, minutes, seed), run)
    metrics = test(result["checkpoint"], out / "test", samples=8, overwrite=True)  # the demo owns its folders

    a_path, b_path, _ = synthesize_geotiff_pair(out / "scene", size=768, seed=seed + 99)
    masks = predict(result["checkpoint"], a_path, b_path, out / "scene_prediction", tile=256, overlap=32,
                    overwrite=True)
    summary = dict(metrics)
    summary.update(report=str(out / "test" / "report.html"), scene_mask=str(masks[0]), checkpoint=result["checkpoint"])
    with atomic_path(out / "summary.txt") as tmp:
        tmp.write_text(f"F1 {metrics['f1']:.4f}\nIoU {metrics['iou']:.4f}\nreport {summary['report']}\n")
    return summary
