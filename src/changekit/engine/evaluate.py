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

from ..data.bands import check_input_bands, checkpoint_bands, first_image_bands, with_input_bands
from ..data.io import atomic_dir
from ..data.tiling import TILES_JSON, tile_ownership
from ..errors import ConfigError
from ..safety import check_output, removes_new_folders
from .checkpoint import load_checkpoint
from .datamodule import ChangeDataModule
from .finish import decision_threshold
from .options import check_threshold
from .task import ChangeTask
from .validate import validate_run

log = logging.getLogger(__name__)
METRIC_KEYS = ("f1", "iou", "precision", "recall", "oa", "kappa")
#: The semantic-change headline (SECOND protocol): printed by ``test`` and shown first in its report.
SEMANTIC_KEYS = {"sek": "SeK", "fscd": "Fscd", "miou_scd": "mIoU"}


class _TestTask(ChangeTask):
    """Keeps the test split's SCD from-to counts (the report's transition matrix) and, on a tiled set, scores
    each tile's own block only (:func:`~changekit.data.tiling.tile_ownership`), so every source pixel counts once.
    """

    def __init__(self, config: dict[str, Any], owned: dict[str, tuple[int, int]] | None = None) -> None:
        super().__init__(config)
        self.fromto: np.ndarray | None = None
        #: tile stem -> (rows, cols) of its top-left block that it alone counts; ``None``: not a tiled set
        self.owned = owned
        self.unknown_tiles: set[str] = set()

    def _eval_step(self, batch: dict[str, Any], stage: str) -> Any:
        if self.owned is not None:
            batch = self._owned_only(batch, self.owned)
        return super()._eval_step(batch, stage)

    def _owned_only(self, batch: dict[str, Any], owned: dict[str, tuple[int, int]]) -> dict[str, Any]:
        """The batch with every pixel outside a tile's own block set to the ignore values."""
        keep = torch.zeros_like(batch["mask"], dtype=torch.bool)
        for i, stem in enumerate(batch["stem"]):
            if stem not in owned:
                self.unknown_tiles.add(stem)
            h, w = owned.get(stem, keep.shape[-2:])
            keep[i, :h, :w] = True
        batch = dict(batch, mask=batch["mask"].masked_fill(~keep, 255))
        ignore = int(self.config["data"]["ignore_index"])
        for key in ("sem_a", "sem_b"):
            if key in batch:
                batch[key] = batch[key].masked_fill(~keep, ignore)
        return batch

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
    threshold: float | None = None, overwrite: bool = False, bands: Any = None, align: bool = False,
    resampling: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``ckpt`` on ``data`` (or the test split of its config).

    Pixels are normalised as in training (the checkpoint's ``data.resolved_normalize``: bands, scaling,
    ``data.radiometric``); ``bands`` (``--bands 4,3,2``) reads other band indices of the test files, for files
    whose bands are ordered or numbered otherwise than the training files. Test images far outside the training
    statistics are warned about, naming the file. ``align`` (``--align``, ``resampling``) warps each date B onto
    its date A's grid as it is read (``data.align``); outside B's footprint is nodata, not scored.

    ``threshold`` (default: the checkpoint's ``trainer.threshold``) turns change probabilities into the change
    map; the value used is recorded in ``metrics.json``. A folder written by ``changekit data tile`` (it holds
    ``tiles.json``) is scored so that every source pixel counts once: each tile scores only the block up to its
    neighbours' starts, so the overlap of ClearSCD's inward-shifted edge tiles is not counted twice.

    ``tile_tags`` (ChangeCLIP; the seed's ``mm_slide`` test mode): evaluate with the sliding window of
    ``trainer.eval_tile`` / ``eval_stride`` and tag every window with CLIP (``clip_model``, ``clip_weights``,
    ``clip_classes``; see :class:`~changekit.clip_tags.TileTagger`) instead of reading the tag files.

    Returns:
        The metrics written to ``out/metrics.json``: ``precision, recall, f1, iou, oa, kappa`` of the change
        class (fractions), per-class values, ``confusion``, ``threshold``, ``semantic`` metrics for semantic
        models, and ``tiled`` (tiles, source images, counted pixels) for tiled sets.

    Raises:
        OutputError: ``out`` overlaps an input, or exists and ``overwrite`` is not set.
    """
    check_threshold(threshold)
    model, cfg = load_checkpoint(ckpt)
    cfg = copy.deepcopy(cfg)
    if data is not None:
        cfg["data"]["test"] = str(data)
        cfg["data"]["root"] = str(root) if root is not None else None
    if cfg["data"]["test"] is None:
        raise ConfigError(f"{ckpt}: its config has no test split; pass --data DIR")
    if align:
        cfg["data"]["align"] = True
    if resampling is not None:
        from ..config_schema import check_resampling

        cfg["data"]["resampling"] = check_resampling("--resampling", resampling)
    norm = with_input_bands(cfg, bands)
    first = first_image_bands({**cfg["data"], "bands": None}, "test")
    if first is not None:  # a missing band or another band count than the model's: one line naming both
        check_input_bands(first[0], norm, checkpoint_bands(model, cfg), ckpt)
    out = check_output(out, inputs=[ckpt, cfg["data"]["test"], cfg["data"].get("root")], overwrite=overwrite,
                       kind="folder")
    if threshold is not None:
        cfg["trainer"]["threshold"] = float(threshold)
    if batch_size:
        cfg["data"]["val_batch_size"] = batch_size
    if num_workers is not None:
        cfg["data"]["num_workers"] = num_workers
    cfg["trainer"]["ema"]["enabled"] = False  # the checkpoint already holds the evaluated (EMA) weights
    cfg["model"] = {**cfg["model"], **{k: None for k in cfg["model"] if k.endswith("weights")}}
    validate_run(cfg, splits=("test",))  # the test data exists and its labels fit the model, before any write
    tagger = None
    if tile_tags:
        from ..clip_tags import TileTagger

        device = "cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu"
        tagger = TileTagger.for_run(cfg, model, ckpt, clip_model, clip_weights, clip_classes, device)
        cfg["trainer"]["eval_mode"] = "slide"
        cfg["data"]["tags"] = {**(cfg["data"].get("tags") or {}), "enabled": False}  # no tag files needed
    test_dir = Path(cfg["data"]["test"])
    task = _TestTask(cfg, owned=tile_ownership(test_dir) if test_dir.is_dir() else None)
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
    results["threshold"] = decision_threshold(cfg)
    results["checkpoint"] = str(ckpt)
    results["model"] = cfg["model"]["name"]
    if task.owned is not None:
        results["tiled"] = _tiled_summary(test_dir, task.owned, task.unknown_tiles, results)

    with removes_new_folders(out), atomic_dir(out) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(results, indent=2))
        if report:
            _write_test_report(tmp / "report.html", ckpt, cfg, task, results)
    log.info("test metrics: %s", {k: results.get(k) for k in METRIC_KEYS})
    return results


def _tiled_summary(test_dir: Path, owned: dict[str, tuple[int, int]], unknown: set[str],
                   results: dict[str, Any]) -> dict[str, Any]:
    if unknown:
        log.warning("%s: %d image(s) are not tiles of its %s (e.g. %s); they are scored whole", test_dir,
                    len(unknown), TILES_JSON, sorted(unknown)[0])
    sources = {stem.rsplit("_", 2)[0] for stem in owned}
    return {"tiles_json": str(test_dir / TILES_JSON), "source_images": len(sources),
            "counted_pixels": int(np.asarray(results["confusion"]).sum()),
            "note": "each source pixel counted once (overlapping edge tiles score only their own block)"}


def _write_test_report(path: Path, ckpt: str | Path, cfg: dict[str, Any], task: _TestTask,
                       results: dict[str, Any]) -> None:
    from ..report import write_report

    semantic = _semantic_report_args(cfg, task) if task.task_type == "semantic" else {}
    history = Path(ckpt).resolve().parent / "logs" / "metrics.csv"
    if not history.is_file():
        history = Path(ckpt).resolve().parent.parent / "logs" / "metrics.csv"
    metrics = {k: v for k, v in results.items() if not isinstance(v, (list, dict, str))}
    metrics.update({f"semantic/{k}": v for k, v in (results.get("semantic") or {}).items()
                    if isinstance(v, (int, float))})
    info = {"checkpoint": str(ckpt), "data": str(cfg["data"]["test"]), "pairs": results["num_pairs"],
            "threshold": results["threshold"]}
    if "tiled" in results:
        info["tiles"] = f"{results['tiled']['source_images']} source images, each pixel counted once"
    write_report(
        path, title=f"changekit test: {cfg['model']['name']}", metrics=metrics,
        confusion=results.get("confusion"), history=history if history.is_file() else None,
        samples=task.samples, config=cfg, info=info, **semantic,
    )


def format_test_summary(results: dict[str, Any]) -> str:
    """The lines ``changekit test`` prints: binary change figures, the semantic-change headline, tiling."""
    lines = [" ".join(f"{k}={results[k]:.4f}" for k in METRIC_KEYS)
             + f"  (change class, threshold {results.get('threshold', 0.5):g})"]
    sem = results.get("semantic")
    if sem:
        lines.append(" ".join(f"{name}={sem[k]:.4f}" for k, name in SEMANTIC_KEYS.items())
                     + "  (semantic change, SECOND protocol; every key in metrics.json)")
    if "tiled" in results:
        t = results["tiled"]
        lines.append(f"tiled set: {results['num_pairs']} tiles of {t['source_images']} images, "
                     f"{t['counted_pixels']:,} pixels, each source pixel counted once")
    return "\n".join(lines)
