"""Decisions made after training, on data the model has not trained on: weight averaging and the threshold.

* ``trainer.average_last: K`` keeps the weights at the end of each of the last ``K`` training epochs
  (``RUN/checkpoints/average/epoch-NNNN.pt``, written by :class:`~changekit.engine.task.ChangeTask`) and exports
  their mean instead of the best checkpoint. Floating-point tensors are averaged (BatchNorm running statistics
  included, an approximation: SWA recomputes them); integer buffers keep the newest value.
* ``trainer.threshold: auto`` picks the change-probability threshold that maximises the change-class F1 on the
  validation split, with the exported weights, and writes it into the exported checkpoint's config, where
  ``test`` and ``predict`` read their default threshold. A validation split cut from the training images
  makes it overconfident; split by image or by site (``changekit data split``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..atomic import atomic_path
from ..errors import ConfigError
from ..safeload import load_tensors

log = logging.getLogger(__name__)

BINS = 1000  # threshold resolution: 0.001
AVERAGE_DIR = "average"


# ------------------------------------------------------------------------------------ weight snapshots

def save_snapshot(folder: Path, epoch: int, model: torch.nn.Module, keep: int) -> None:
    """Write ``model``'s weights as ``folder/epoch-NNNN.pt`` and delete all but the newest ``keep``."""
    with atomic_path(folder / f"epoch-{epoch:04d}.pt", durable=True) as tmp:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, tmp)
    for old in snapshots(folder)[:-keep]:
        old.unlink(missing_ok=True)


def snapshots(folder: Path) -> list[Path]:
    """The snapshot files of ``folder``, oldest first."""
    return sorted(folder.glob("epoch-*.pt")) if folder.is_dir() else []


def average_state(paths: list[Path]) -> dict[str, torch.Tensor]:
    """The mean of the floating-point tensors of several state dicts; other tensors from the newest one."""
    if not paths:
        raise ConfigError("trainer.average_last: no weight snapshots to average (no training epoch finished)")
    states = [load_tensors(p, "weight snapshot") for p in paths]
    out: dict[str, torch.Tensor] = {}
    for key, newest in states[-1].items():
        if newest.is_floating_point():
            out[key] = torch.stack([s[key].float() for s in states]).mean(0).to(newest.dtype)
        else:
            out[key] = newest
    return out


# ------------------------------------------------------------------------------------ threshold

class ProbabilityHistogram:
    """Counts of change probabilities of changed and unchanged pixels in :data:`BINS` bins over [0, 1]."""

    def __init__(self) -> None:
        self.pos = torch.zeros(BINS, dtype=torch.float64)
        self.neg = torch.zeros(BINS, dtype=torch.float64)

    def update(self, prob: torch.Tensor, mask: torch.Tensor) -> None:
        """Add ``prob`` ``(N, H, W)`` against the 0/1/255 ``mask`` ``(N, H, W)`` (255 ignored)."""
        bins = (prob.detach().float().clamp(0, 1) * BINS).long().clamp_max(BINS - 1).cpu()
        mask = mask.cpu()
        self.pos += torch.bincount(bins[mask == 1], minlength=BINS).double()
        self.neg += torch.bincount(bins[mask == 0], minlength=BINS).double()

    def best_f1(self) -> tuple[float, float]:
        """``(threshold, F1)`` of the threshold maximising the change-class F1 (a pixel is change when its
        probability is above the threshold); ``(0.5, 0.0)`` when the split holds no change."""
        tp = self.pos.flip(0).cumsum(0).flip(0)  # tp[k]: changed pixels in bins >= k, i.e. prob >= k / BINS
        fp = self.neg.flip(0).cumsum(0).flip(0)
        fn = self.pos.sum() - tp
        f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1e-12)
        if float(self.pos.sum()) == 0:
            return 0.5, 0.0
        k = int(f1.argmax())
        return k / BINS, float(f1[k])  # probabilities above k / BINS: bin k and above are change


@torch.no_grad()
def validation_histogram(task: Any, loader: Any, net: torch.nn.Module) -> ProbabilityHistogram:
    """Run ``net`` over a validation loader as ``task`` evaluates (padding, sliding window) and collect
    the probabilities."""
    hist = ProbabilityHistogram()
    was_training = net.training
    net.eval()
    try:
        for batch in loader:
            out = task._padded_forward(net, batch)
            hist.update(out.change_prob(), batch["mask"])
    finally:
        net.train(was_training)
    return hist


# ------------------------------------------------------------------------------------ after fit

def finish_export(cfg: dict[str, Any], out: Path, task: Any, datamodule: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Average the last snapshots into ``task.model`` and choose the threshold, as the config asks.

    Args:
        cfg: the run's config (not changed).
        out: the run folder.
        task: the :class:`~changekit.engine.task.ChangeTask` whose ``model`` holds the weights to export.
        datamodule: the run's data module (its validation split chooses the threshold).

    Returns:
        The config to store with the exported weights (``trainer.threshold`` a number) and facts for the
        run's result (``averaged``, ``threshold``, ``threshold_f1``).
    """
    t = cfg["trainer"]
    facts: dict[str, Any] = {}
    export = cfg
    if int(t.get("average_last") or 0) > 1:
        paths = snapshots(out / "checkpoints" / AVERAGE_DIR)[-int(t["average_last"]):]
        task.model.load_state_dict(average_state(paths))
        facts["averaged"] = [p.name for p in paths]
        log.info("exporting the mean of %d snapshots: %s", len(paths), ", ".join(facts["averaged"]))
    if t["threshold"] == "auto":
        export = {**cfg, "trainer": {**t}}
        if "val" not in getattr(datamodule, "datasets", {}):
            log.warning("trainer.threshold: auto needs a validation split (data.val); using 0.5")
            export["trainer"]["threshold"] = 0.5
        else:
            thr, f1 = validation_histogram(task, datamodule.val_dataloader(), task.model).best_f1()
            export["trainer"]["threshold"] = round(thr, 4)
            facts.update(threshold=round(thr, 4), threshold_f1=f1)
            log.info("trainer.threshold: auto -> %.4f (validation F1 %.4f); optimistic when the validation "
                     "images come from the training images", thr, f1)
    return export, facts


def decision_threshold(cfg: dict[str, Any]) -> float:
    """The configured threshold as a number (``auto`` not yet chosen, e.g. in a Lightning checkpoint: 0.5)."""
    value = cfg["trainer"]["threshold"]
    return 0.5 if value == "auto" else float(value)
