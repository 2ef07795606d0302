"""Lightning plug-ins that make a run folder safe to kill and to resume.

* :class:`AtomicCheckpointIO` writes every checkpoint under a temporary name in its own folder, fsyncs it and
  renames it (Lightning's default stages the file in ``TMPDIR``; across filesystems the final "rename" is a copy
  that a kill cuts short, leaving a truncated ``last.ckpt``), and reads checkpoints with ``weights_only=True``.
* :class:`LastCheckpoint` rewrites ``last.ckpt`` after every validation, every training epoch, every
  ``every_n_steps`` steps and at the end: always the last state (Lightning's ``save_last`` only follows the
  monitored checkpoint, so a run whose metric stays flat would keep stale weights).
* :class:`ResumableCSVLogger` appends to ``logs/metrics.csv`` (Lightning's deletes it when the folder exists).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..atomic import atomic_path
from ..safeload import load_tensors

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint files that are complete or absent, read without unpickling code."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:  # noqa: D102
        with atomic_path(path, durable=True) as tmp:
            torch.save(checkpoint, tmp)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:  # noqa: D102
        return load_tensors(path)


class LastCheckpoint(Checkpoint):
    """Keep ``dirpath/last.ckpt`` equal to the latest training state."""

    def __init__(self, dirpath: str | Path, every_n_steps: int | None = None) -> None:
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_steps = int(every_n_steps) if every_n_steps else None
        self._saved_step = -1

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.sanity_checking or trainer.global_step == self._saved_step and self.path.exists():
            return
        trainer.save_checkpoint(self.path)
        self._saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:  # noqa: D102
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        if not trainer.sanity_checking and trainer.state.fn == "fit":
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:  # noqa: D102
        self._save(trainer)


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, appending to an existing ``metrics.csv`` instead of deleting it.

    A row torn by a kill is cut off before appending, and a header change rewrites the file atomically (Lightning
    rewrites it in place, where a kill would lose the history).
    """

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        path = Path(self.metrics_file_path)
        if path.is_file():
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):  # a torn last row of a killed run
                with atomic_path(path, durable=True) as tmp:
                    tmp.write_bytes(data[: data.rfind(b"\n") + 1])
            with path.open(newline="") as f:
                self.metrics_keys = list(next(csv.reader(f), []))

    def _check_log_dir_exists(self) -> None:
        pass

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        rows = read_metrics_rows(self.metrics_file_path)
        with atomic_path(self.metrics_file_path, durable=True) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose rows survive a resume (see :class:`_AppendingWriter`)."""

    @property
    def experiment(self) -> ExperimentWriter:  # noqa: D102
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


def read_metrics_rows(path: str | Path) -> list[dict[str, str]]:
    """The rows of a ``metrics.csv`` (a torn last line of a killed run is dropped)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    return [r for r in rows if None not in r and None not in r.values()]

