"""``test``: evaluate a checkpoint on a labelled split; write ``metrics.json`` and ``report.html``."""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import lightning as L

from ..data.io import atomic_path
from ..errors import ConfigError
from .checkpoint import load_checkpoint
from .datamodule import ChangeDataModule
from .task import ChangeTask

log = logging.getLogger(__name__)
METRIC_KEYS = ("precision", "recall", "f1", "iou", "oa", "kappa")


def test(
    ckpt: str | Path, out: str | Path, data: str | Path | None = None, root: str | Path | None = None,
    batch_size: int | None = None, num_workers: int | None = None, report: bool = True, samples: int = 8,
    accelerator: str = "auto",
) -> dict[str, Any]:
    """Evaluate ``ckpt`` on ``data`` (or the test split of its config).

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
    task = ChangeTask(cfg)
    task.model.load_state_dict(model.state_dict())
    task.max_samples = samples if report else 0
    dm = ChangeDataModule(cfg["data"], seed=int(cfg["trainer"]["seed"]))
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

        history = Path(ckpt).resolve().parent / "logs" / "metrics.csv"
        if not history.is_file():
            history = Path(ckpt).resolve().parent.parent / "logs" / "metrics.csv"
        write_report(
            out / "report.html", title=f"changekit test: {cfg['model']['name']}",
            metrics={k: v for k, v in results.items() if not isinstance(v, (list, dict, str))},
            confusion=results.get("confusion"), history=history if history.is_file() else None,
            samples=task.samples, config=cfg, info={"checkpoint": str(ckpt), "data": str(cfg["data"]["test"]),
                                                   "pairs": results["num_pairs"]},
        )
    log.info("test metrics: %s", {k: results.get(k) for k in METRIC_KEYS})
    return results
