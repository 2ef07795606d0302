"""``train``: fit a model from a config with Lightning, resumable, and export the evaluated weights."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from ..config import dump_config, load_config, resolve
from ..data.bands import fit_to_data
from ..data.io import atomic_path
from ..errors import ConfigError, DatasetNotFoundError
from .checkpoint import load_weights, read_checkpoint, save_checkpoint
from .datamodule import ChangeDataModule
from .task import ChangeTask

log = logging.getLogger(__name__)


def _as_config(config: str | Path | dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    if isinstance(config, dict):
        cfg = resolve(config)
        if overrides:
            raw = dict(config)
            from ..config import parse_override, set_by_path

            for item in overrides:
                set_by_path(raw, *parse_override(item))
            cfg = resolve(raw)
        return cfg
    return load_config(config, overrides)


def build_trainer(cfg: dict[str, Any], out: Path, has_val: bool, **extra: Any) -> L.Trainer:
    """A Lightning Trainer from the config's ``trainer`` section, logging and checkpointing under ``out``."""
    t = cfg["trainer"]
    monitor = t["monitor"] if has_val else None
    callbacks: list[Any] = [
        ModelCheckpoint(dirpath=out / "checkpoints", filename="best", monitor=monitor, mode=t["mode"],
                        save_top_k=1, save_last=True, enable_version_counter=False),
        LearningRateMonitor(logging_interval="step"),
    ]
    if t["checkpoint_every_steps"]:
        callbacks.append(ModelCheckpoint(dirpath=out / "checkpoints", filename="last", save_top_k=0, save_last=True,
                                         every_n_train_steps=int(t["checkpoint_every_steps"]),
                                         enable_version_counter=False))
    if t["progress_bar"]:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, int(t["log_every_n_steps"]) // 2)))
    iter_based = int(t["max_steps"]) > 0
    max_time = None
    if t["max_time_minutes"]:
        secs = int(math.ceil(float(t["max_time_minutes"]) * 60))
        max_time = {"seconds": secs}
    kwargs: dict[str, Any] = dict(
        accelerator=t["accelerator"], devices=t["devices"], strategy=t["strategy"], num_nodes=t["num_nodes"],
        precision=t["precision"], max_epochs=-1 if iter_based else int(t["max_epochs"]),
        max_steps=int(t["max_steps"]), max_time=max_time, deterministic=t["deterministic"],
        log_every_n_steps=int(t["log_every_n_steps"]), gradient_clip_val=t["gradient_clip_val"],
        accumulate_grad_batches=int(t["accumulate_grad_batches"]), callbacks=callbacks,
        logger=[CSVLogger(out, name="", version="logs"), TensorBoardLogger(out, name="", version="tb")],
        enable_progress_bar=bool(t["progress_bar"]), enable_model_summary=False, default_root_dir=out,
    )
    if t["val_every_steps"]:
        kwargs.update(val_check_interval=int(t["val_every_steps"]), check_val_every_n_epoch=None)
    else:
        kwargs.update(check_val_every_n_epoch=int(t["val_every_epochs"]))
    for key in ("limit_train_batches", "limit_val_batches"):
        if t[key] is not None:
            kwargs[key] = t[key]
    kwargs.update(extra)
    return L.Trainer(**kwargs)


def train(
    config: str | Path | dict[str, Any], out: str | Path, overrides: list[str] | None = None, resume: bool = False,
) -> dict[str, Any]:
    """Train the configured model; write checkpoints, logs and ``model.ckpt`` under ``out``.

    Args:
        config: a YAML path or a config mapping (see :mod:`changekit.config`).
        out: run folder. It must be new unless ``resume`` is set.
        overrides: ``key=value`` strings applied on top of the config.
        resume: continue a killed or finished run from ``out/checkpoints/last.ckpt``.

    Returns:
        ``{"out", "checkpoint", "best_score", "monitor", "epochs", "steps"}``.
    """
    cfg = fit_to_data(_as_config(config, overrides))  # in_channels, mean/std from the data's band count if unset
    out = Path(out)
    last = out / "checkpoints" / "last.ckpt"
    if resume and not last.is_file():
        raise DatasetNotFoundError(f"{last}: nothing to resume (no last checkpoint in {out})")
    if not resume and last.exists():
        raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "config.yaml") as tmp:
        tmp.write_text(dump_config(cfg))

    L.seed_everything(int(cfg["trainer"]["seed"]), workers=True, verbose=False)
    task = ChangeTask(cfg)
    if cfg["init_from"] and not resume:
        weights, src_cfg = read_checkpoint(cfg["init_from"])
        if src_cfg["model"]["name"] != cfg["model"]["name"]:
            from ..errors import CheckpointError

            raise CheckpointError(f"{cfg['init_from']}: checkpoint holds model '{src_cfg['model']['name']}', "
                                  f"but the config asks for '{cfg['model']['name']}'")
        load_weights(task.model, weights, cfg["init_from"])
        if task.ema is not None:
            task.ema.module.load_state_dict(task.model.state_dict())
    dm = ChangeDataModule(cfg["data"], seed=int(cfg["trainer"]["seed"]),
                          extra_inputs=tuple(getattr(task.model, "extra_inputs", ())))
    trainer = build_trainer(cfg, out, has_val=cfg["data"]["val"] is not None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*sync_dist.*")
        trainer.fit(task, datamodule=dm, ckpt_path=str(last) if resume else None)

    ckpt_cb = next(c for c in trainer.callbacks if isinstance(c, ModelCheckpoint))
    best = ckpt_cb.best_model_path or str(last)
    result: dict[str, Any] = {
        "out": str(out), "monitor": ckpt_cb.monitor, "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "best_score": float(ckpt_cb.best_model_score) if ckpt_cb.best_model_score is not None else None,
    }
    if trainer.is_global_zero:
        weights, _ = read_checkpoint(best)
        model = task.model
        load_weights(model, weights, best)
        result["checkpoint"] = str(save_checkpoint(out / "model.ckpt", model, cfg, best_score=result["best_score"],
                                                   monitor=ckpt_cb.monitor))
    log.info("training finished: %s", result)
    return result
