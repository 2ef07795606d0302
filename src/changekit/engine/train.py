"""``train``: fit a model from a config with Lightning, resumable, and export the evaluated weights.

Order of work, so that a refused command leaves nothing and a killed one loses little:
1. resolve and validate the config and the data (nothing is created yet);
2. create the run folder (umask-respecting), take its lock, write ``config.yaml`` atomically;
3. fit: ``last.ckpt`` is rewritten atomically after every validation and epoch (and every
   ``trainer.checkpoint_every_steps``), logs append;
4. export ``model.ckpt``. A fresh run that fails before its first checkpoint removes its folder again.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from ..atomic import atomic_path, make_dirs
from ..config import dump_config, load_config, parse_override, resolve, set_by_path
from ..data.bands import fit_to_data
from ..errors import CheckpointError, ConfigError, DatasetNotFoundError
from ..safety import check_output
from .callbacks import AtomicCheckpointIO, LastCheckpoint, ResumableCSVLogger
from .checkpoint import load_weights, read_checkpoint, save_checkpoint
from .datamodule import ChangeDataModule
from .finish import finish_export
from .runfolder import checkpoint_candidates, is_global_zero, resume_checkpoint, run_lock
from .task import ChangeTask
from .validate import validate_run

log = logging.getLogger(__name__)
ConfigSource = str | Path | list[str | Path] | dict[str, Any] | None


def _as_config(config: ConfigSource, overrides: list[str] | None) -> dict[str, Any]:
    if isinstance(config, dict):
        raw = dict(config)
        for item in overrides or []:
            set_by_path(raw, *parse_override(item))
        return resolve(raw)
    if isinstance(config, (list, tuple)):
        config = list(config)
        if len(config) == 1:
            config = config[0]
    return load_config(config, overrides)  # type: ignore[arg-type]


def _diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [k for key in sorted(set(a) | set(b)) for k in _diff_keys(a.get(key), b.get(key), f"{prefix}{key}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _resume_config(out: Path, config: ConfigSource, overrides: list[str] | None) -> dict[str, Any]:
    """The run's own ``config.yaml`` with ``overrides`` on top (a given config file is only compared)."""
    own = out / "config.yaml"
    if not own.is_file():
        raise DatasetNotFoundError(f"{out}: nothing to resume (no config.yaml in the run folder)")
    cfg = load_config(own, overrides)
    if config is not None:
        given = _as_config(config, overrides)
        differ = _diff_keys(cfg, given)
        if differ:
            log.warning("resuming with the run's own config.yaml; the given config differs in %s (use --set to "
                        "change a key on resume)", ", ".join(differ[:6]) + (" ..." if len(differ) > 6 else ""))
    return cfg


def _data_inputs(cfg: dict[str, Any]) -> list[Any]:
    data = cfg["data"]
    return [data.get(k) for k in ("train", "val", "test", "root")] + [cfg.get("init_from")]


def build_trainer(cfg: dict[str, Any], out: Path, has_val: bool, **extra: Any) -> L.Trainer:
    """A Lightning Trainer from the config's ``trainer`` section, logging and checkpointing under ``out``."""
    t = cfg["trainer"]
    ckpt_dir = out / "checkpoints"
    callbacks: list[Any] = [LearningRateMonitor(logging_interval="step"),
                            LastCheckpoint(ckpt_dir, every_n_steps=t["checkpoint_every_steps"])]
    if has_val:
        callbacks.append(ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor=t["monitor"], mode=t["mode"],
                                         save_top_k=1, save_last=False, enable_version_counter=False))
    if t["progress_bar"]:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, int(t["log_every_n_steps"]) // 2)))
    iter_based = int(t["max_steps"]) > 0
    kwargs: dict[str, Any] = dict(
        accelerator=t["accelerator"], devices=t["devices"], strategy=t["strategy"], num_nodes=t["num_nodes"],
        precision=t["precision"], max_epochs=-1 if iter_based else int(t["max_epochs"]),
        max_steps=int(t["max_steps"]), deterministic=t["deterministic"],
        log_every_n_steps=int(t["log_every_n_steps"]), gradient_clip_val=t["gradient_clip_val"],
        accumulate_grad_batches=int(t["accumulate_grad_batches"]), callbacks=callbacks,
        logger=[ResumableCSVLogger(out, name="", version="logs"), TensorBoardLogger(out, name="", version="tb")],
        enable_progress_bar=bool(t["progress_bar"]), enable_model_summary=False, default_root_dir=out,
        plugins=[AtomicCheckpointIO()],
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


def _prepare(cfg: dict[str, Any], resume: bool) -> tuple[ChangeTask, ChangeDataModule]:
    """Build the model and the validated data sets (raises before anything is written)."""
    fit_to_data(cfg)  # model.in_channels and data.mean/std from the data's band count when not set (in place)
    L.seed_everything(int(cfg["trainer"]["seed"]), workers=True, verbose=False)
    task = ChangeTask(cfg)
    if cfg["init_from"] and not resume:
        weights, src_cfg = read_checkpoint(cfg["init_from"])
        if src_cfg["model"]["name"] != cfg["model"]["name"]:
            raise CheckpointError(f"{cfg['init_from']}: checkpoint holds model '{src_cfg['model']['name']}', "
                                  f"but the config asks for '{cfg['model']['name']}' (init_from)")
        load_weights(task.model, weights, cfg["init_from"])
        if task.ema is not None:
            task.ema.module.load_state_dict(task.model.state_dict())
    dm = ChangeDataModule(cfg["data"], seed=int(cfg["trainer"]["seed"]),
                          extra_inputs=tuple(getattr(task.model, "extra_inputs", ())))
    dm.setup("fit")  # discovers, pairs and checks every file now, not after the run folder exists
    task.resolve_auto_loss(dm.datasets["train"])  # loss weights `auto` -> numbers, before config.yaml is written
    return task, dm


def train(
    config: ConfigSource, out: str | Path, overrides: list[str] | None = None, resume: bool = False,
) -> dict[str, Any]:
    """Train the configured model; write checkpoints, logs and ``model.ckpt`` under ``out``.

    Args:
        config: a YAML path (or several, composed left to right) or a config mapping (see
            :mod:`changekit.config`); optional with ``resume``, which reads the run's own ``config.yaml``.
        out: run folder. It must be new (or empty) unless ``resume`` is set.
        overrides: ``key=value`` strings applied on top of the config (on resume: on top of the run's config).
        resume: continue a killed or finished run from its newest readable checkpoint (``last.ckpt``).

    Returns:
        ``{"out", "checkpoint", "best_score", "monitor", "epochs", "steps"}``.

    Raises:
        ConfigError, DatasetNotFoundError, OutputError, RunLockedError, CheckpointError: before anything is
            written to ``out``.
    """
    out = Path(out)
    if resume:
        cfg = _resume_config(out, config, overrides)
        ckpt_path: Path | None = resume_checkpoint(out)
    else:
        if config is None:
            raise ConfigError("train needs a config file (or --resume to continue the run in --out)")
        cfg = _as_config(config, overrides)
        if checkpoint_candidates(out) or (out / "config.yaml").is_file():
            raise ConfigError(f"{out} already holds a run; pass --resume to continue it or choose another --out")
        check_output(out, inputs=_data_inputs(cfg), what="run folder")
        ckpt_path = None
    validate_run(cfg, resume=resume)  # data paths, labels vs num_classes, model/loss/augment: before any write
    task, dm = _prepare(cfg, resume)
    created = not out.exists()
    make_dirs(out)
    try:
        with run_lock(out):
            if is_global_zero():
                with atomic_path(out / "config.yaml", durable=True) as tmp:
                    tmp.write_text(dump_config(cfg))
            return _fit(cfg, out, task, dm, ckpt_path)
    except BaseException:
        if created and not checkpoint_candidates(out) and is_global_zero():
            shutil.rmtree(out, ignore_errors=True)  # a fresh run that never checkpointed leaves nothing
        raise


def _fit(cfg: dict[str, Any], out: Path, task: ChangeTask, dm: ChangeDataModule, ckpt: Path | None) -> dict[str, Any]:
    trainer = build_trainer(cfg, out, has_val=cfg["data"]["val"] is not None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*sync_dist.*")
        warnings.filterwarnings("ignore", message=".*Checkpoint directory .* exists and is not empty.*")
        # a mid-epoch resume continues the epoch through the data module's state (ResumableShuffleSampler)
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
        trainer.fit(task, datamodule=dm, ckpt_path=str(ckpt) if ckpt is not None else None)

    best_cb = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
    last = out / "checkpoints" / "last.ckpt"
    best = (best_cb.best_model_path if best_cb is not None else "") or str(last)
    score = best_cb.best_model_score if best_cb is not None else None
    result: dict[str, Any] = {
        "out": str(out), "monitor": best_cb.monitor if best_cb is not None else None,
        "epochs": trainer.current_epoch, "steps": trainer.global_step,
        "best_score": float(score) if score is not None else None,
    }
    if trainer.is_global_zero:
        weights, _ = read_checkpoint(best)
        load_weights(task.model, weights, best)
        cfg, facts = finish_export(cfg, out, task, dm)  # trainer.average_last, trainer.threshold: auto
        result.update(facts)
        result["checkpoint"] = str(save_checkpoint(out / "model.ckpt", task.model, cfg,
                                                   best_score=result["best_score"], monitor=result["monitor"]))
    log.info("training finished: %s", result)
    return result
