"""Evaluate saved masks of any method against ground truth, without a model.

Lets results from other code bases (or from ``changekit predict``) be scored with the same metric core as
training, so numbers are comparable. Files are paired by stem; every bad file raises a typed error naming it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data.io import IMAGE_SUFFIXES, atomic_path, read_palette_indices, require_file
from .data.labels import binary_lut, check_binary_values, encoding_from_counts, read_label_band
from .errors import (
    ConfigError,
    DatasetNotFoundError,
    LabelValueError,
    PairingError,
    SizeMismatchError,
    suggest,
)
from .metrics import BINARY_KEYS, ConfusionMatrix, SCDMetrics, binary_metrics
from .safety import check_output

logger = logging.getLogger(__name__)

TASKS = ("binary", "semantic")
#: Names of the binary change folder beside ``label1/`` and ``label2/`` (predict writes ``change/``; SECOND-layout
#: data sets call it ``label/``).
CHANGE_FOLDERS = ("change", "label")
_PALETTE_SUFFIXES = (".png", ".bmp", ".gif")


def list_masks(folder: str | Path) -> dict[str, Path]:
    """Image files of ``folder`` by stem (hidden files skipped), sorted.

    Raises:
        DatasetNotFoundError: the folder does not exist or holds no image.
        PairingError: two files share a stem (``a.png`` and ``a.tif``), so pairing would be ambiguous.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder}: folder not found")
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        require_file(path, "mask image")  # a folder, link loop or unreadable file named like a mask: one line
        if path.stem in found:
            raise PairingError(f"{folder}: stem '{path.stem}' appears twice ({found[path.stem].name}, {path.name})")
        found[path.stem] = path
    if not found:
        raise DatasetNotFoundError(f"{folder}: no mask images ({', '.join(IMAGE_SUFFIXES)}) found")
    return found


#: A GeoTIFF scene's files in a folder ``predict --out OUT`` (``engine.outputs.SCENE_TAGS``): tag -> the semantic
#: layout's folder name.
SCENE_TAGS = {"change": "change", "sem_a": "label1", "sem_b": "label2"}


def scene_masks(folder: str | Path, tag: str = "change") -> dict[str, Path] | None:
    """``OUT/<name>_<tag>.tif`` files (``predict`` on GeoTIFF scenes) by pair name; ``None`` when there are none.

    Raises:
        PairingError: two files give one name (``a_change.tif`` and ``a_change.tiff``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in (".tif", ".tiff"):
            continue
        if not path.stem.endswith(f"_{tag}"):
            continue
        name = path.stem[: -len(tag) - 1]
        if name in found:
            raise PairingError(f"{folder}: pair '{name}' has two {tag} files ({found[name].name}, {path.name})")
        found[name] = require_file(path, "mask image")
    return found or None


def _pair(pred: dict[str, Path], gt: dict[str, Path], pred_dir: Path, gt_dir: Path) -> list[str]:
    """Stems present in both, or a PairingError naming the first orphan and the folder it is missing from."""
    for stem in sorted(pred):
        if stem not in gt:
            raise PairingError(f"prediction '{stem}' ({pred[stem]}) has no ground truth in {gt_dir}")
    for stem in sorted(gt):
        if stem not in pred:
            raise PairingError(f"ground truth '{stem}' ({gt[stem]}) has no prediction in {pred_dir}")
    return sorted(gt)


def _values(arr: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(arr)[:20]]


def read_binary_prediction(path: Path) -> np.ndarray:
    """A predicted change mask as 0/1, and 255 where the file says "no data" (a GeoTIFF's nodata value, e.g. the
    128 that ``predict`` writes where either date had no data): those pixels are not scored. The other pixels must
    hold only {0, 255} or only {0, 1}."""
    arr = read_label_band(path)
    nodata = _nodata_pixels(path, arr)
    vals = set(_values(arr if nodata is None else arr[~nodata]))
    if not (vals <= {0, 255} or vals <= {0, 1}):
        raise LabelValueError(f"{path}: prediction values {sorted(vals)} are not 0/255 or 0/1 (binary mask expected)")
    pred = (arr > 0).astype(np.int64)
    if nodata is not None:
        pred[nodata] = 255
    return pred


def _nodata_pixels(path: Path, arr: np.ndarray) -> np.ndarray | None:
    """Where a GeoTIFF prediction holds its declared nodata value (``None``: none declared or none there)."""
    if Path(path).suffix.lower() not in (".tif", ".tiff"):
        return None
    from .raster.reader import RasterReader

    with RasterReader(path) as reader:
        value = reader.nodata
    if value is None or not np.isfinite(value):
        return None
    bad = arr == value
    return bad if bad.any() else None


def _raw_label(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A change label's single band and its value counts (values outside {0, 1, 255} raise)."""
    arr = read_label_band(path)
    counts = np.bincount(arr.ravel(), minlength=256)
    check_binary_values(counts, path)
    return arr, counts


def label_lut(paths: Iterable[Path]) -> np.ndarray:
    """The ground truth's lookup table raw value -> 0/1/255, decided once for the whole set of ``paths``.

    The same decision as ``data check``, ``train`` and ``test`` (:func:`~changekit.data.labels.encoding_from_counts`
    on the counts of every label): any 1 makes the set 0/1 with 255 = ignore, else 0/255 with 255 = change. A file
    holding only background and ignore (0 and 255) of a 0/1 set therefore keeps its ignored pixels ignored.
    """
    counts = np.zeros(256, np.int64)
    for path in paths:
        counts += _raw_label(path)[1]
    return binary_lut(encoding_from_counts(counts))


def read_binary_label(path: Path, lut: np.ndarray | None = None) -> np.ndarray:
    """A change label as 0/1/255 (255 = ignore), through the set's ``lut`` (:func:`label_lut`).

    Without ``lut`` the file's own values decide (for a single file; a set is always decided as a whole).
    Values outside {0, 1, 255} raise :class:`LabelValueError`.
    """
    arr, counts = _raw_label(path)
    table = lut if lut is not None else binary_lut(encoding_from_counts(counts))
    return table[arr].astype(np.int64)


def read_class_map(path: Path) -> np.ndarray:
    """A class-index map ``(H, W)``: palette or grey PNG indices, or a single-band raster."""
    if path.suffix.lower() in _PALETTE_SUFFIXES:
        return read_palette_indices(path).astype(np.int64)
    return read_label_band(path).astype(np.int64)


def _check_size(a: np.ndarray, b: np.ndarray, path_a: Path, path_b: Path) -> None:
    if a.shape[:2] != b.shape[:2]:
        raise SizeMismatchError(
            f"{path_a} is {a.shape[0]} x {a.shape[1]} but {path_b} is {b.shape[0]} x {b.shape[1]} (H x W)"
        )


def _write_json(out: str | Path, result: dict[str, Any]) -> None:
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    logger.info("wrote %s", out)


def eval_masks(
    pred_dir: str | Path,
    gt_dir: str | Path,
    out: str | Path | None = None,
    task: str = "binary",
    num_classes: int | None = None,
    ignore_index: int = 255,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Score saved prediction masks against ground-truth labels, paired by file stem.

    Args:
        pred_dir: ``binary``: predicted masks (0/255 or 0/1). ``semantic``: folder with ``label1/``,
            ``label2/`` (class-index maps) and optionally ``change/`` (0/255 or 0/1): the layout ``changekit
            predict`` writes for semantic models.
        gt_dir: the same layout for the ground truth (binary labels as in :func:`read_binary_label`); the change
            folder may also be called ``label/`` (the SECOND layout ``im1 im2 label1 label2 label``).
        out: JSON file written atomically with the result, if given; it may not lie in ``pred_dir`` or
            ``gt_dir``, and an existing one needs ``overwrite``.
        task: ``"binary"`` or ``"semantic"``.
        num_classes: semantic only (required): the number of land-cover classes C.
        ignore_index: semantic only: the class-map ignore value (outside ``[0, C)``).
        overwrite: replace an existing ``out``.

    Returns:
        ``binary``: ``precision``, ``recall``, ``f1``, ``iou``, ``oa``, ``kappa``, ``confusion``,
        ``num_images``. ``semantic``: :meth:`SCDMetrics.compute` plus ``num_images``. Without a ``change/``
        folder, change is ``label1 != label2`` (ground truth: ignored where either date is ignored).
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    if task not in TASKS:
        raise ConfigError(f"--task: unknown task '{task}'{suggest(task, TASKS)}; choose one of {', '.join(TASKS)}")
    if task == "semantic" and num_classes is None:
        raise ConfigError("--num-classes: required with --task semantic (the number of land-cover classes)")
    if out is not None:
        check_output(out, inputs=[pred_dir, gt_dir], overwrite=overwrite, kind="file")
    if task == "binary":
        result = _eval_binary(pred_dir, gt_dir)
    else:
        result = _eval_semantic(pred_dir, gt_dir, int(num_classes), int(ignore_index))  # type: ignore[arg-type]
    if out is not None:
        _write_json(out, result)
    return result


def _eval_binary(pred_dir: Path, gt_dir: Path) -> dict[str, Any]:
    preds, gts = scene_masks(pred_dir) or list_masks(pred_dir), list_masks(gt_dir)
    stems = _pair(preds, gts, pred_dir, gt_dir)
    cm = ConfusionMatrix(2, ignore_index=255)
    lut = label_lut(gts[stem] for stem in stems)  # the convention of the whole ground truth, never per file
    for stem in stems:
        pred, gt = read_binary_prediction(preds[stem]), read_binary_label(gts[stem], lut)
        _check_size(pred, gt, preds[stem], gts[stem])
        gt = np.where(pred == 255, 255, gt)  # no data in the prediction: ignored like an ignore label
        cm.update(torch.from_numpy(pred), torch.from_numpy(gt))
    metrics = binary_metrics(cm)
    result: dict[str, Any] = {k: metrics[k] for k in BINARY_KEYS}
    result["confusion"] = metrics["confusion"]
    result["num_images"] = len(stems)
    logger.info("evaluated %d binary masks: F1 %.4f, IoU %.4f", len(stems), result["f1"], result["iou"])
    return result


def _semantic_folders(root: Path) -> dict[str, dict[str, Path]]:
    scenes = {folder: scene_masks(root, tag) for tag, folder in SCENE_TAGS.items()}
    if not (root / "label1").is_dir() and scenes["label1"]:  # predict's GeoTIFF scene files, all in one folder
        folders = {k: v for k, v in scenes.items() if v}
        for name in ("label2", "change"):
            if name in folders:
                _pair(folders[name], folders["label1"], root, root)
        return folders
    change = [root / name for name in CHANGE_FOLDERS if (root / name).is_dir()]
    if len(change) > 1:
        raise PairingError(f"{root}: holds both {change[0].name}/ and {change[1].name}/; keep one change folder")
    dirs = {"label1": root / "label1", "label2": root / "label2", **({"change": change[0]} if change else {})}
    folders = {name: list_masks(folder) for name, folder in dirs.items()}
    for name in ("label2", "change"):
        if name in folders:
            _pair(folders[name], folders["label1"], dirs[name], dirs["label1"])
    return folders


def _eval_semantic(pred_dir: Path, gt_dir: Path, num_classes: int, ignore_index: int) -> dict[str, Any]:
    pred, gt = _semantic_folders(pred_dir), _semantic_folders(gt_dir)
    stems = _pair(pred["label1"], gt["label1"], pred_dir / "label1", gt_dir / "label1")
    metrics = SCDMetrics(num_classes, ignore_index=ignore_index)
    lut = label_lut(gt["change"][stem] for stem in stems) if "change" in gt else None
    for stem in stems:
        paths = {
            f"{side}_{name}": folders[name][stem] for side, folders in (("pred", pred), ("gt", gt)) for name in folders
        }
        maps: dict[str, np.ndarray] = {}
        for key, path in paths.items():
            if key.endswith("change"):
                maps[key] = read_binary_prediction(path) if key.startswith("pred") else read_binary_label(path, lut)
            else:
                maps[key] = read_class_map(path)
            _check_size(maps[key], maps.get("pred_label1", maps[key]), path, paths["pred_label1"])
        for key in ("pred_label1", "pred_label2", "gt_label1", "gt_label2"):
            allowed = () if key.startswith("pred") else (ignore_index,)
            vals = np.unique(maps[key])
            bad = vals[((vals < 0) | (vals >= num_classes)) & ~np.isin(vals, allowed)]
            if bad.size:
                extra = f" and not the ignore value {ignore_index}" if allowed else ""
                raise LabelValueError(
                    f"{paths[key]}: class values {bad[:10].tolist()} outside [0, {num_classes}){extra}"
                )
        t = {k: torch.from_numpy(v) for k, v in maps.items()}
        metrics.update(
            t["pred_label1"], t["pred_label2"], t.get("pred_change"), t["gt_label1"], t["gt_label2"], t.get("gt_change")
        )
    result = metrics.compute()
    result["num_images"] = len(stems)
    logger.info("evaluated %d semantic mask pairs: SeK %.4f, Fscd %.4f", len(stems), result["sek"], result["fscd"])
    return result
