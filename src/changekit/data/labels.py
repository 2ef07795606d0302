"""Reading change and class labels as uint8 arrays, and deciding how binary change labels are encoded.

Shared by the dataset (:mod:`.datasets`), ``changekit data check`` (:mod:`.check`) and ``eval-masks``
(:mod:`changekit.evaluation`). Binary change labels hold {0, 255} (255 = change) or {0, 1, 255} (1 = change,
255 = ignore); :func:`encoding_from_counts` decides the encoding from the value counts of the whole dataset,
never per file: a 0/1/255 file that holds only background and ignore would otherwise read its ignored pixels as
change.

A label saved as RGB (or RGBA, or a colour palette) is read as one band when its colour bands are equal (grey
saved as colour). When they differ the change was drawn in colour, and reading one band would silently turn
blue or green change into "no change": that is an error naming the file, unless ``data.label_palette`` maps
the colours (:class:`LabelPalette`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, LabelValueError, SizeMismatchError
from .classes import ClassTable
from .discover import PairRecord
from .io import _RASTERIO_SUFFIXES, read_image, read_palette_indices

BINARY_VALUES = (0, 1, 255)  # what a palette may map a colour to: no change, change, ignore

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


@dataclass(frozen=True)
class LabelPalette:
    """Colour -> change-label value for masks drawn in colour (config key ``data.label_palette``).

    Written as ``{"0,0,0": 0, "255,0,0": 1, "255,255,255": 255}``: ``"R,G,B"`` to 0 (no change), 1 (change) or
    255 (ignore). With a palette the labels are read as 0/1/255, so the data set's encoding is ``0/1``. The
    colour lookup is :meth:`ClassTable.encode_rgb`'s.
    """

    table: ClassTable
    values: np.ndarray  # (K,) uint8, the value of the table's k-th colour

    @classmethod
    def parse(cls, spec: Any, key: str = "data.label_palette") -> LabelPalette | None:
        """A palette from the config value (``None`` stays ``None``).

        Raises:
            ConfigError: naming ``key``, the entry found and what is expected.
        """
        if spec is None or isinstance(spec, LabelPalette):
            return spec
        if not isinstance(spec, Mapping) or not spec:
            raise ConfigError(f"{key}: expected a mapping of \"R,G,B\" colours to 0, 1 or 255, e.g. "
                              f"{{\"0,0,0\": 0, \"255,0,0\": 1}}; got {spec!r}")
        colours, values = [], []
        for colour, value in spec.items():
            parts = str(colour).replace("(", "").replace(")", "").split(",")
            try:
                rgb = [int(p) for p in parts]
            except ValueError:
                rgb = []
            if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
                raise ConfigError(f"{key}: colour {colour!r} is not \"R,G,B\" with three values in 0..255")
            if value not in BINARY_VALUES:
                raise ConfigError(f"{key}: colour {colour!r} maps to {value!r}; use 0 (no change), 1 (change) or "
                                  "255 (ignore)")
            colours.append(rgb)
            values.append(int(value))
        try:
            table = ClassTable(tuple(",".join(map(str, c)) for c in colours), np.asarray(colours))
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}") from None
        return cls(table, np.asarray(values, np.uint8))

    def decode(self, rgb: np.ndarray, path: Path) -> np.ndarray:
        """``(H, W)`` 0/1/255 values of an ``(H, W, 3)`` colour label.

        Raises:
            LabelValueError: a colour of the file is not in the palette (names the file and the colours).
        """
        index = self.table.encode_rgb(rgb[..., :3], where=str(path),
                                      fix="add them to data.label_palette")
        return self.values[index]


def read_label_band(path: Path, palette: LabelPalette | None = None) -> np.ndarray:
    """A change mask (or a prediction) as one ``(H, W)`` uint8 band.

    The alpha band of a grey+alpha or RGBA PNG is dropped. A file whose colour bands are equal (grey saved as
    RGB) gives its first band; one whose bands differ is decoded with ``palette``, or refused.

    Raises:
        LabelValueError: colour bands that differ and no palette (names the file, an example pixel and the fix),
            or values that are not integers in 0..255.
    """
    path = Path(path)
    arr = read_image(path)
    if arr.shape[2] in (2, 4) and path.suffix.lower() not in _RASTERIO_SUFFIXES:
        arr = arr[:, :, :-1]  # LA / RGBA: the last band is transparency, not label
    if arr.shape[2] == 1:
        return as_uint8_label(arr[:, :, 0], path)
    differ = (arr != arr[:, :, :1]).any(axis=2)
    if not differ.any():
        return as_uint8_label(arr[:, :, 0], path)
    if palette is not None and arr.shape[2] == 3:
        return palette.decode(arr, path)
    row, col = (int(v[0]) for v in np.nonzero(differ))
    example = tuple(int(v) if float(v).is_integer() else float(v) for v in arr[row, col])
    raise LabelValueError(
        f"{path}: a colour label (its {arr.shape[2]} bands differ, e.g. {example} at row {row}, column {col}); "
        "reading one band would turn change drawn in colour into 'no change'. Save a single-band mask (0/255), "
        "or map the colours with data.label_palette, e.g. {\"0,0,0\": 0, \"255,0,0\": 1}"
    )


def _read_index_map(path: Path) -> np.ndarray:
    """A semantic class map: palette indices or grey values, never colours."""
    if path.suffix.lower() in _RASTERIO_SUFFIXES:
        return as_uint8_label(read_image(path)[:, :, 0], path)
    arr = read_palette_indices(path)
    return as_uint8_label(arr, path)


def read_raw_labels(rec: PairRecord, palette: LabelPalette | None = None) -> dict[str, np.ndarray]:
    """Decode a record's labels without interpreting values.

    Returns ``(H, W)`` uint8 arrays: ``change`` (raw binary mask, read by :func:`read_label_band`; 0/1/255 when
    ``palette`` decodes a colour mask) where the record has one, and ``sem_a`` / ``sem_b`` for semantic records.
    For Hi-UCD masks ``change`` is channel 2 (0/1/255).
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
        out["change"] = read_label_band(change, palette)
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


def encoding_from_counts(counts: np.ndarray, palette: LabelPalette | None = None) -> str:
    """The binary label encoding of a whole data set from the value counts of all its change labels.

    The one place the convention is decided (``data check``, ``train``, ``test`` and ``eval-masks`` call it with
    the counts of the whole set): ``"0/1"`` if any pixel holds 1 (then 255 = ignore), else ``"0/255"`` (255 =
    change). Labels decoded by a ``palette`` are 0/1/255 by construction.
    """
    return "0/1" if palette is not None or counts[1] > 0 else "0/255"


def label_counts(labels: Sequence[np.ndarray]) -> np.ndarray:
    """Summed ``bincount`` (256 bins) of uint8 label arrays: the input of :func:`encoding_from_counts`."""
    counts = np.zeros(256, np.int64)
    for arr in labels:
        counts += np.bincount(np.asarray(arr, np.uint8).ravel(), minlength=256)
    return counts


def check_binary_values(counts: np.ndarray, path: Path) -> None:
    """Raise if a binary label holds values outside {0, 1, 255}."""
    bad = np.flatnonzero(counts)
    if np.setdiff1d(bad, (0, 1, 255)).size:
        raise LabelValueError(
            f"{path}: label values {values_text(bad)} are not a binary change mask; expected {{0, 255}} "
            "(255 = change) or {0, 1} (with 255 = ignore); re-save JPEG labels as PNG"
        )
