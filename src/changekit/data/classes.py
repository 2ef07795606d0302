"""Semantic class tables: names, display colours and the ignore value of a semantic change data set.

A table is a small YAML file (the synthetic generator writes one as ``classes.yaml``)::

    names: [water, grass, building]
    colors: [[0, 153, 255], [202, 255, 122], [255, 0, 0]]
    ignore_index: 9          # label value that is not scored (optional, default 255)
    pixel_size: 0.1          # metres per pixel (optional): reports show transition areas

Built-in tables: ``hiucd`` (Hi-UCD series after ClearSCD's ``deal_hiucd.py``: 9 classes, unlabeled = 9,
colours of ClearSCD's ``test.py``), ``second`` (SECOND: 0 = no change plus the six land-cover classes, with the
dataset's RGB label colours) and ``synthetic`` (changekit's generator). The colours decode RGB-coded label images
(SECOND, LsSCD-style sets) into class indices and colour predicted class maps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ChangekitError, ConfigError, DatasetNotFoundError, LabelValueError


@dataclass(frozen=True)
class ClassTable:
    """Names, ``(K, 3)`` uint8 colours, the ignore value and (optionally) the pixel size of ``K`` classes."""

    names: tuple[str, ...]
    colors: np.ndarray
    ignore_index: int = 255
    pixel_size: float | None = None

    def __post_init__(self) -> None:
        colors = np.asarray(self.colors)
        if colors.shape != (len(self.names), 3) or colors.min(initial=0) < 0 or colors.max(initial=0) > 255:
            raise ConfigError(f"class table: expected one RGB colour (0..255) per class name, got {len(self.names)} "
                              f"names and colours of shape {colors.shape}")
        if len({tuple(c) for c in colors.tolist()}) != len(colors):
            raise ConfigError("class table: two classes share a colour, so RGB labels cannot be decoded")
        if not 0 <= int(self.ignore_index) <= 255:
            raise ConfigError(f"class table: ignore_index must be in 0..255, got {self.ignore_index}")
        object.__setattr__(self, "colors", colors.astype(np.uint8))

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def to_dict(self) -> dict[str, Any]:
        """The YAML form (``names``, ``colors``, ``ignore_index``)."""
        out: dict[str, Any] = {"names": list(self.names), "colors": self.colors.tolist(),
                               "ignore_index": int(self.ignore_index)}
        if self.pixel_size is not None:
            out["pixel_size"] = float(self.pixel_size)
        return out

    @property
    def pixel_area(self) -> float | None:
        """Square metres per pixel, when the pixel size is known."""
        return None if self.pixel_size is None else float(self.pixel_size) ** 2

    def encode_rgb(self, rgb: np.ndarray, where: str = "label", fix: str = "pass the right --classes table"
                   ) -> np.ndarray:
        """Class indices ``(H, W)`` uint8 of an RGB-coded label ``(H, W, 3)`` (one lookup, no per-class loop).

        Raises:
            LabelValueError: a pixel has a colour that is not in the table (the message lists a few).
        """
        arr = np.asarray(rgb)
        if arr.ndim != 3 or arr.shape[2] < 3:
            raise LabelValueError(f"{where}: expected an RGB label image, got shape {arr.shape}")
        code = (arr[..., 0].astype(np.int64) << 16) | (arr[..., 1].astype(np.int64) << 8) | arr[..., 2]
        col = self.colors.astype(np.int64)
        keys = (col[:, 0] << 16) | (col[:, 1] << 8) | col[:, 2]
        order = np.argsort(keys)
        pos = np.clip(np.searchsorted(keys[order], code), 0, len(keys) - 1)
        found = keys[order][pos] == code
        if not found.all():
            bad = np.unique(code[~found])[:5]
            colours = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in bad.tolist())
            raise LabelValueError(f"{where}: colours {colours} are not in the class table "
                                  f"({', '.join(self.names)}); {fix}")
        return order[pos].astype(np.uint8)


HIUCD = ClassTable(
    names=("water", "grass", "building", "greenhouse", "road", "bridge", "others", "bare land", "woodland"),
    colors=np.array([[0, 153, 255], [202, 255, 122], [255, 0, 0], [230, 0, 255], [255, 230, 0], [255, 181, 197],
                     [0, 255, 230], [175, 122, 255], [0, 255, 0]]),
    ignore_index=9,
    pixel_size=0.1,  # Hi-UCD: 0.1 m aerial imagery of Tallinn
)
# SECOND label colours (label1/label2 RGB PNGs); index 0 = no change, as in the SECOND benchmark code.
SECOND = ClassTable(
    names=("no change", "water", "ground", "low vegetation", "tree", "building", "sports field"),
    colors=np.array([[255, 255, 255], [0, 0, 255], [128, 128, 128], [0, 128, 0], [0, 255, 0], [128, 0, 0],
                     [255, 0, 0]]),
    ignore_index=255,
)


def _synthetic() -> ClassTable:
    from .synthetic import class_table

    return table_from_dict(class_table(), "synthetic")


BUILTIN = {"hiucd": lambda: HIUCD, "hi-ucd": lambda: HIUCD, "second": lambda: SECOND, "synthetic": _synthetic}


def table_from_dict(data: Any, where: str) -> ClassTable:
    """A :class:`ClassTable` from the YAML mapping; ``ConfigError`` names ``where`` and the problem."""
    if not isinstance(data, dict) or "names" not in data:
        raise ConfigError(f"{where}: a class table needs 'names' (and 'colors', optional 'ignore_index')")
    unknown = set(data) - {"names", "colors", "colours", "ignore_index", "pixel_size"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: names, colors, ignore_index, pixel_size")
    names = tuple(str(n) for n in data["names"])
    colors = data.get("colors", data.get("colours"))
    if colors is None:
        from ..report.overlays import default_palette

        colors = default_palette(len(names))
    try:
        size = data.get("pixel_size")
        return ClassTable(names, np.asarray(colors, dtype=np.int64), int(data.get("ignore_index", 255)),
                          None if size is None else float(size))
    except (ConfigError, ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_classes(spec: str | Path | ClassTable) -> ClassTable:
    """A class table from a built-in name (``hiucd``, ``second``, ``synthetic``) or a YAML file path."""
    if isinstance(spec, ClassTable):
        return spec
    key = str(spec).lower()
    if key in BUILTIN and not Path(spec).is_file():
        return BUILTIN[key]()
    path = Path(spec)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: class table not found (or use one of: hiucd, second, synthetic)")
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return table_from_dict(data, str(path))


def find_classes(config: dict[str, Any]) -> ClassTable | None:
    """The class table of a run: ``data.classes``, else a ``classes.yaml`` next to the data, else ``None``."""
    data = config.get("data", {})
    if data.get("classes"):
        return load_classes(data["classes"])
    for key in ("test", "train", "val"):
        src = data.get(key)
        if not src:
            continue
        base = Path(data["root"]) / src if data.get("root") and not Path(src).is_absolute() else Path(src)
        for folder in (base if base.is_dir() else base.parent, (base if base.is_dir() else base.parent).parent):
            if (folder / "classes.yaml").is_file():
                return load_classes(folder / "classes.yaml")
    return None


def find_classes_for_display(config: dict[str, Any], num_classes: int) -> ClassTable | None:
    """The run's class table when it fits a model with ``num_classes`` classes, else ``None`` (logged).

    For outputs that can fall back to default names and colours (reports, palette PNGs): an unreadable or
    mismatching table must not stop a prediction.
    """
    try:
        table = find_classes(config)
    except ChangekitError as exc:
        logging.getLogger(__name__).warning("class table unavailable (%s); using default names and colours", exc)
        return None
    return table if table is not None and table.num_classes == num_classes else None
