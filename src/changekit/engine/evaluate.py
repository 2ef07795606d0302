"""``test``: evaluate a checkpoint on a labelled split; write ``metrics.json`` and ``report.html``."""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L

import numpy as np
import torch

from ..data.io import atomic_path
from ..errors import ConfigError
from .checkpoint import load_checkpoint
from .datamodule import ChangeDataModule
from .task import ChangeTask

log = logging.getLogger(__name__)
METRIC_KEYS = ("precision", "recall", "f1", "iou", "oa", "kappa")


class _TestTask(ChangeTask):
    """Keeps the test split's SCD from-to counts, which the report shows as the transition matrix."""

    fromto: np.ndarray | None = None

    def _eval_epoch_end(self, stage: str) -> dict[str, Any]:
        scd = self._scd.get(stage)
        results = super()._eval_epoch_end(stage)  # syncs and pops the metrics
        if scd is not None:
            self.fromto = scd.fromto.matrix.cpu().numpy()
        return results


def predicted_transitions(fromto: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` pixel counts of predicted change from class i (date A) to j (date B).

    Read from the columns of the SCD from-to confusion matrix (prediction code ``P_A * C + P_B`` where the change
    map says "changed", ``C^2`` elsewhere), so it covers the scored pixels predicted as changed.
    """
    c = int(num_classes)
    return fromto.sum(0)[: c * c].reshape(c, c)


def _semantic_report_args(cfg: dict[str, Any], task: _TestTask) -> dict[str, Any]:
    """Class names, palette, ignore value, transitions and pixel area for a semantic model's report."""
    from ..data.classes import find_classes_for_display

    c = int(getattr(task.model, "num_classes", 0))
    args: dict[str, Any] = {"sem_ignore_index": int(cfg["data"]["ignore_index"])}
    table = find_classes_for_display(cfg, c)
    if table is not None:
        args.update(class_names=list(table.names), palette=table.colors, pixel_area=table.pixel_area)
    else:
        args["class_names"] = [f"class {i}" for i in range(c)]
    if task.fromto is not None and c:
        args["transitions"] = predicted_transitions(task.fromto, c)
    return args


def test(
    ckpt: str | Path, out: str | Path, data: str | Path | None = None, root: str | Path | None = None,
    batch_size: int | None = None, num_workers: int | None = None, report: bool = True, samples: int = 8,
    accelerator: str = "auto", tile_tags: bool = False, clip_model: str = "ViT-B-16",
    clip_weights: str | Path | None = None, clip_classes: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate ``ckpt`` on ``data`` (or the test split of its config).

    ``tile_tags`` (ChangeCLIP; the seed's ``mm_slide`` test mode): evaluate with the sliding window of
    ``trainer.eval_tile`` / ``eval_stride`` and tag every window with CLIP (``clip_model``, ``clip_weights``,
    ``clip_classes``; see :class:`~changekit.clip_tags.TileTagger`) instead of reading the tag files.

    Returns:
        The metrics written to ``out/metrics.json``: ``precision, recall, f1, iou, oa, kappa`` of the change
        class (fractions), per-class values, ``confusion``, and ``semantic`` metrics for semantic models.
    """
    model, cfg = load_checkpoint(ckpt)
    cfg = copy.deepcopy(cfg)
    if data is not None:
        cfg["data"]["test"] = str(data)
        cfg["data"]["root"] = str(root) if root is not None else None
    if cfg["data"]["test"] is None:
        raise ConfigError(f"{ckpt}: its config has no test split; pass --data DIR")
    if batch_size:
        cfg["data"]["val_batch_size"] = batch_size
    if num_workers is not None:
        cfg["data"]["num_workers"] = num_workers
    cfg["trainer"]["ema"]["enabled"] = False  # the checkpoint already holds the evaluated (EMA) weights
    cfg["model"] = {**cfg["model"], **{k: None for k in cfg["model"] if k.endswith("weights")}}
    tagger = None
    if tile_tags:
        from ..clip_tags import TileTagger

        device = "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"
        tagger = TileTagger.for_run(cfg, model, ckpt, clip_model, clip_weights, clip_classes, device)
        cfg["trainer"]["eval_mode"] = "slide"
        cfg["data"]["tags"] = {**(cfg["data"].get("tags") or {}), "enabled": False}  # no tag files needed
    task = _TestTask(cfg)
    task.model.load_state_dict(model.state_dict())
    task.tile_extras = tagger
    task.max_samples = samples if report else 0
    dm = ChangeDataModule(cfg["data"], seed=int(cfg["trainer"]["seed"]),
                          extra_inputs=tuple(getattr(task.model, "extra_inputs", ())))
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        precision=cfg["trainer"]["precision"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.test(task, datamodule=dm, verbose=False)
    results = dict(task.test_results)
    results["num_pairs"] = len(dm.datasets["test"])
    results["checkpoint"] = str(ckpt)
    results["model"] = cfg["model"]["name"]

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "metrics.json") as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    if report:
        from ..report import write_report

        semantic = _semantic_report_args(cfg, task) if task.task_type == "semantic" else {}
        history = Path(ckpt).resolve().parent / "logs" / "metrics.csv"
        if not history.is_file():
            history = Path(ckpt).resolve().parent.parent / "logs" / "metrics.csv"
        write_report(
            out / "report.html", title=f"changekit test: {cfg['model']['name']}",
            metrics={k: v for k, v in results.items() if not isinstance(v, (list, dict, str))},
            confusion=results.get("confusion"), history=history if history.is_file() else None,
            samples=task.samples, config=cfg, info={"checkpoint": str(ckpt), "data": str(cfg["data"]["test"]),
                                                   "pairs": results["num_pairs"]},
            **semantic,
        )
    log.info("test metrics: %s", {k: results.get(k) for k in METRIC_KEYS})
    return results
