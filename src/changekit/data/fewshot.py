"""Systematic few-shot training splits, as ChangeAnywhere's ``dataset_list/*-train-{1,5,10,20,50}%.txt``.

The seed's SYSU-CD lists are systematic samples of the sorted training stems: the p % list holds every
``100 / p``-th stem starting from the first (1 %: 00000, 00100, 00200, ...; 120 of 12,000). For a ``100 / p`` that is
not an integer the ``i``-th selected stem is ``floor(i * 100 / p)``. Like the seed's, the splits are not nested.
Lists are one stem per line, no extension, and are read by :func:`changekit.data.discover.discover` with
``root=`` the training folder (``data.train: list.txt`` plus ``data.root: TRAIN_FOLDER`` in a config); the seed's
own list files are read the same way, as they are.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import ConfigError
from ..safety import check_output
from .discover import discover
from .io import atomic_path

__all__ = ["fewshot_indices", "fewshot_stems", "source_stems", "write_fewshot_lists", "split_name"]


def fewshot_indices(n: int, percent: float) -> list[int]:
    """Indices of the systematic ``percent`` % sample of ``n`` sorted items.

    Raises:
        ConfigError: ``percent`` outside (0, 100].
    """
    p = float(percent)
    if not 0.0 < p <= 100.0:
        raise ConfigError(f"percent: expected a value in (0, 100], got {percent!r}")
    step = 100.0 / p
    count = math.ceil(n / step - 1e-9)
    return [int(math.floor(i * step + 1e-9)) for i in range(count)]


def fewshot_stems(stems: Sequence[str], percent: float) -> list[str]:
    """The systematic ``percent`` % sample of ``stems`` (sorted first, duplicates rejected)."""
    ordered = sorted(stems)
    if len(set(ordered)) != len(ordered):
        raise ConfigError("stem list holds duplicates")
    return [ordered[i] for i in fewshot_indices(len(ordered), percent)]


def source_stems(source: str | Path, root: str | Path | None = None, layout: str = "auto") -> list[str]:
    """Stems of a training folder, or of a stem / path list (only its stems are used)."""
    src = Path(source)
    if src.is_file():
        lines = [ln.split() for ln in src.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if lines and all(len(f) == 1 and "/" not in f[0] and "\\" not in f[0] for f in lines):
            return [f[0] for f in lines]  # a stem list (the seed's format): the stems are all we need
    return [r.stem for r in discover(src, root=root, layout=layout, require_labels=False).records]


def split_name(percent: float, prefix: str = "train") -> str:
    """File name of a split: ``{prefix}-{percent}%.txt`` (``sysucd-train-10%.txt`` with prefix ``sysucd-train``)."""
    text = f"{float(percent):g}"
    if not re.fullmatch(r"[0-9.]+", text):
        raise ConfigError(f"percent: {percent!r}")
    return f"{prefix}-{text}%.txt"


def write_fewshot_lists(source: str | Path, out: str | Path, percents: Sequence[float] = (1, 5, 10, 20, 50),
                        prefix: str = "train", root: str | Path | None = None,
                        overwrite: bool = False) -> list[Path]:
    """Write one stem list per percentage into ``out`` and return their paths (each written atomically).

    ``out`` may lie inside the data set (the seed keeps ``dataset_list/`` there); an existing list is replaced
    only with ``overwrite``.
    """
    for p in percents:
        check_output(Path(out) / split_name(p, prefix), inputs=[source, root], overwrite=overwrite,
                     what="list file", kind="file", inside_ok=True)
    stems = source_stems(source, root=root)
    if not stems:
        raise ConfigError(f"{source}: no stems found")
    paths = []
    for p in percents:
        path = Path(out) / split_name(p, prefix)
        chosen = fewshot_stems(stems, p)
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(chosen) + "\n")
        paths.append(path)
    return paths
