"""Reading change and class labels as uint8 arrays, and deciding how binary change labels are encoded.

Shared by the dataset (:mod:`.datasets`) and ``changekit data check`` (:mod:`.check`). Binary change labels hold
{0, 255} (255 = change) or {0, 1, 255} (1 = change, 255 = ignore); the encoding is decided from the value counts
of the whole dataset, never per file (see :mod:`.check`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import LabelValueError, SizeMismatchError
from .discover import PairRecord
from .io import _RASTERIO_SUFFIXES, read_image, read_palette_indices

HIUCD_SEM_IGNORE = 9  # Hi-UCD masks after ClearSCD's conversion: classes 0..8, 9 = unlabelled


def values_text(values: Sequence[int] | np.ndarray, limit: int = 12) -> str:
    """``{0, 1, 7, ...}``: the first ``limit`` values for an error message."""
    vals = [int(v) if float(v).is_integer() else float(v) for v in list(values)[:limit]]
    more = ", ..." if len(values) > limit else ""
    return "{" + ", ".join(str(v) for v in vals) + more + "}"


def as_uint8_label(arr: np.ndarray, path: Path) -> np.ndarray:
    """A label channel as uint8, refusing values that do not fit (16-bit or float label files)."""
    if arr.dtype == np.uint8:
        return arr
    vals = np.unique(arr)
    if vals.min() < 0 or vals.max() > 255 or not np.array_equal(vals, np.round(vals)):
        raise LabelValueError(f"{path}: label values {values_text(vals)} are not integers in 0..255")
    return arr.astype(np.uint8)


def _read_index_map(path: Path) -> np.ndarray:
    """A semantic class map: palette indices or grey values, never colours."""
    if path.suffix.lower() in _RASTERIO_SUFFIXES:
        return as_uint8_label(read_image(path)[:, :, 0], path)
    arr = read_palette_indices(path)
    return as_uint8_label(arr, path)


def read_raw_labels(rec: PairRecord) -> dict[str, np.ndarray]:
    """Decode a record's labels without interpreting values.

    Returns ``(H, W)`` uint8 arrays: ``change`` (raw binary mask, channel 0 of the file) where the record has
    one, and ``sem_a`` / ``sem_b`` for semantic records. For Hi-UCD masks ``change`` is channel 2 (0/1/255).
    """
    out: dict[str, np.ndarray] = {}
    if rec.label is None:
        return out
    if rec.label_kind == "hiucd":
        mask = read_image(rec.label)
        if mask.shape[2] < 3:
            raise SizeMismatchError(f"{rec.label}: a Hi-UCD mask needs 3 channels (sem A, sem B, change), "
                                    f"found {mask.shape[2]}")
        for i, key in enumerate(("sem_a", "sem_b", "change")):
            out[key] = as_uint8_label(mask[:, :, i], rec.label)
        return out
    if rec.label_kind == "semantic":
        out["sem_a"] = _read_index_map(rec.label)
        if rec.label_b is not None:
            out["sem_b"] = _read_index_map(rec.label_b)
        change = rec.change
    else:
        change = rec.label
    if change is not None:
        out["change"] = as_uint8_label(read_image(change)[:, :, 0], change)
    return out


def derive_change(sem_a: np.ndarray, sem_b: np.ndarray, ignore_index: int) -> np.ndarray:
    """Binary change 0/1 from two class maps, 255 where either date is ``ignore_index``."""
    change = (sem_a != sem_b).astype(np.uint8)
    change[(sem_a == ignore_index) | (sem_b == ignore_index)] = 255
    return change


def binary_lut(encoding: str) -> np.ndarray:
    """Lookup table raw value -> 0/1/255 (254 marks a value the encoding does not allow)."""
    lut = np.full(256, 254, np.uint8)
    lut[0] = 0
    if encoding == "0/255":
        lut[255] = 1
    elif encoding == "0/1":
        lut[1], lut[255] = 1, 255
    else:
        raise ValueError(f"unknown label encoding {encoding!r}; use '0/255' or '0/1'")
    return lut


def encoding_from_counts(counts: np.ndarray) -> str:
    """``"0/1"`` if any pixel holds 1 (then 255 = ignore), else ``"0/255"`` (255 = change)."""
    return "0/1" if counts[1] > 0 else "0/255"


def check_binary_values(counts: np.ndarray, path: Path) -> None:
    """Raise if a binary label holds values outside {0, 1, 255}."""
    bad = np.flatnonzero(counts)
    if np.setdiff1d(bad, (0, 1, 255)).size:
        raise LabelValueError(
            f"{path}: label values {values_text(bad)} are not a binary change mask; expected {{0, 255}} "
            "(255 = change) or {0, 1} (with 255 = ignore); re-save JPEG labels as PNG"
        )
