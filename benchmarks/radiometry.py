"""What ``data.radiometric`` buys when the two dates differ in gain and offset: a controlled synthetic measure.

Generated scenes (``changekit data synth``: season, illumination and small misregistration between the dates, exact
change labels) are written as uint16 GeoTIFFs (8-bit values x 40, like reflectance), and every date B gets its
own gain (0.5 to 1.5 per pair, +-10 % per band) and offset (-1,600 to +1,600): the calibration and illumination
differences that separate two real acquisitions. ``fc_siam_diff`` is trained for a fixed number of steps with
each ``data.radiometric`` mode (``data.normalize: auto``, so the uint16 data is standardised with the training
statistics) and scored on held-out pairs with their own gains and offsets.

Usage (numbers go to stdout as a markdown table and to ``--results`` as JSON lines)::

    python benchmarks/radiometry.py                       # 80 steps, 96 training pairs of 64 px, seed 0
    python benchmarks/radiometry.py --steps 300 --seeds 0,1,2
    python benchmarks/radiometry.py --steps 10 --modes none,match_meanstd --train-pairs 8   # smoke run

It runs on CPU (``--threads``); the figures in docs/training.md came from this command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

MODES = ("none", "match_meanstd", "match_histogram", "standardize")


def _tif(path: Path, chw: np.ndarray) -> None:
    import rasterio

    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", driver="GTiff", height=chw.shape[1], width=chw.shape[2], count=chw.shape[0],
                       dtype="uint16", photometric="MINISBLACK") as dst:
        dst.write(chw)


def make_set(root: Path, n: int, size: int, seed: int) -> Path:
    """``n`` uint16 pairs whose date B has its own gain and offset; returns the A|B|label folder."""
    from changekit.data.io import read_image
    from changekit.data.synthetic import synthesize

    png = synthesize(root / "png", n=n, size=size, seed=seed, overwrite=True)
    rng = np.random.default_rng(seed + 1000)
    out = root / "u16"
    for label in sorted((png / "label").glob("*.png")):
        a = np.moveaxis(np.asarray(read_image(png / "A" / label.name)), -1, 0).astype(np.float64) * 40
        b = np.moveaxis(np.asarray(read_image(png / "B" / label.name)), -1, 0).astype(np.float64) * 40
        gain = rng.uniform(0.5, 1.5) * rng.uniform(0.9, 1.1, (b.shape[0], 1, 1))
        b = b * gain + rng.uniform(-1600, 1600)
        _tif(out / "A" / f"{label.stem}.tif", np.clip(a, 0, 65535).astype(np.uint16))
        _tif(out / "B" / f"{label.stem}.tif", np.clip(b, 0, 65535).astype(np.uint16))
        (out / "label").mkdir(parents=True, exist_ok=True)
        (out / "label" / label.name).write_bytes(label.read_bytes())
    return out


def run_mode(mode: str, train: Path, test: Path, work: Path, steps: int, seed: int) -> dict:
    """Train ``fc_siam_diff`` with ``data.radiometric: mode`` and score it on ``test``."""
    from changekit.engine.evaluate import test as evaluate
    from changekit.engine.train import train as fit

    cfg = {"model": {"name": "fc_siam_diff"},
           "data": {"train": str(train), "batch_size": 8, "num_workers": 0, "radiometric": mode,
                    "augment": [{"name": "hflip", "p": 0.5}, {"name": "vflip", "p": 0.5}]},
           "loss": [{"name": "ce", "class_weights": [1.0, 3.0]}],
           "optim": {"name": "adamw", "lr": 1e-3}, "schedule": {"name": "none"},
           "trainer": {"max_steps": steps, "accelerator": "cpu", "devices": 1, "progress_bar": False,
                       "seed": seed, "log_every_n_steps": 50}}
    start = time.monotonic()
    run = fit(cfg, work / f"run_{mode}_{seed}")
    res = evaluate(run["checkpoint"], work / f"eval_{mode}_{seed}", data=test, report=False, accelerator="cpu",
                   overwrite=True)
    return {"mode": mode, "seed": seed, "steps": steps, "f1": res["f1"], "precision": res["precision"],
            "recall": res["recall"], "iou": res["iou"], "seconds": round(time.monotonic() - start, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--seeds", default="0")
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--train-pairs", type=int, default=96)
    p.add_argument("--test-pairs", type=int, default=24)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work", type=Path, default=Path("/tmp") / "changekit-radiometry")
    p.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "radiometry.jsonl")
    args = p.parse_args(argv)
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import shutil

    import torch

    torch.set_num_threads(args.threads)
    shutil.rmtree(args.work, ignore_errors=True)
    train = make_set(args.work / "train", args.train_pairs, args.size, seed=1)
    test = make_set(args.work / "test", args.test_pairs, args.size, seed=2)
    rows = []
    args.results.parent.mkdir(parents=True, exist_ok=True)
    for seed in (int(s) for s in args.seeds.split(",")):
        for mode in args.modes.split(","):
            row = run_mode(mode, train, test, args.work, args.steps, seed)
            rows.append(row)
            with args.results.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    print("\n| data.radiometric | F1 (mean over seeds) | precision | recall | runs |\n|---|---|---|---|---|")
    for mode in args.modes.split(","):
        got = [r for r in rows if r["mode"] == mode]
        mean = {k: np.mean([r[k] for r in got]) for k in ("f1", "precision", "recall")}
        print(f"| {mode} | {mean['f1']:.3f} | {mean['precision']:.3f} | {mean['recall']:.3f} | {len(got)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
