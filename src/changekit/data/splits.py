"""Training / validation splits by image or by site, written as stem lists (``changekit data split``).

A validation split decides things (the best checkpoint, ``trainer.threshold: auto``), so it must hold images
the model does not train on. Tiles cut from one image, or images of one city, share their look and their
change: drawing validation tiles among them measures memory rather than generalisation, and a threshold chosen
there is overconfident. Splits here therefore draw whole *groups*:

* ``by="image"``: every image is its own group (tiles written by ``changekit data tile``, named
  ``{stem}_{row}_{col}``, are grouped by their source image);
* ``by="prefix"``: the part of the stem before the first ``separator`` (``hurricane-florence_00000318`` ->
  ``hurricane-florence``; an OSCD tile ``paris_0_128`` -> ``paris``);
* ``by="regex"``: the first group of ``pattern`` searched in the stem (the whole match when it has none).

Groups are shuffled with ``seed`` and moved to validation until it holds at least ``val_fraction`` of the
stems, or the validation groups are named with ``val_groups``. The lists are read back as ``data.train`` /
``data.val`` with ``data.root`` the dataset folder.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..safety import check_output
from .discover import discover
from .io import atomic_path

log = logging.getLogger(__name__)

GROUPINGS = ("image", "prefix", "regex")
_TILE_SUFFIX = re.compile(r"_\d+_\d+$")  # `changekit data tile` names tiles {stem}_{row}_{col}


def group_of(stem: str, by: str = "image", pattern: str | None = None, separator: str = "_") -> str:
    """The group a stem belongs to (see the module docstring)."""
    if by == "image":
        return _TILE_SUFFIX.sub("", stem)
    if by == "prefix":
        return stem.split(separator, 1)[0]
    if by == "regex":
        if not pattern:
            raise ConfigError("data split --by regex needs --pattern (e.g. '^([a-z]+)_')")
        found = re.search(pattern, stem)
        if found is None:
            raise ConfigError(f"data split: stem '{stem}' does not match --pattern {pattern!r}")
        return found.group(1) if found.groups() else found.group(0)
    raise ConfigError(f"data split: --by {by!r} is not one of {', '.join(GROUPINGS)}")


def split_stems(stems: Sequence[str], val_fraction: float = 0.2, by: str = "image", pattern: str | None = None,
                seed: int = 0, val_groups: Sequence[str] | None = None,
                separator: str = "_") -> tuple[list[str], list[str]]:
    """Split ``stems`` into ``(train, val)`` by whole groups.

    Raises:
        ConfigError: a bad fraction, an unknown validation group, or a split that leaves one side empty.
    """
    if not 0 < val_fraction < 1:
        raise ConfigError(f"data split: --val {val_fraction!r} must be a fraction in (0, 1)")
    try:
        re.compile(pattern or "")
    except re.error as exc:
        raise ConfigError(f"data split: --pattern {pattern!r} is not a regular expression ({exc})") from None
    groups: dict[str, list[str]] = {}
    for stem in sorted(stems):
        groups.setdefault(group_of(stem, by, pattern, separator), []).append(stem)
    if val_groups:
        unknown = sorted(set(val_groups) - set(groups))
        if unknown:
            raise ConfigError(f"data split: validation group(s) {', '.join(unknown)} not found; groups: "
                              f"{', '.join(sorted(groups)[:12])}" + (" ..." if len(groups) > 12 else ""))
        chosen = set(val_groups)
    else:
        order = [sorted(groups)[i] for i in np.random.default_rng(seed).permutation(len(groups))]
        chosen, count = set(), 0
        for name in order:
            if count >= val_fraction * len(stems):
                break
            chosen.add(name)
            count += len(groups[name])
    train = [s for g, members in groups.items() if g not in chosen for s in members]
    val = [s for g, members in groups.items() if g in chosen for s in members]
    if not train or not val:
        raise ConfigError(f"data split: {len(groups)} group(s) cannot give both a training and a validation "
                          f"split (by {by}); choose another grouping or fraction")
    return sorted(train), sorted(val)


def write_split(root: str | Path, out: str | Path, val_fraction: float = 0.2, by: str = "image",
                pattern: str | None = None, seed: int = 0, val_groups: Sequence[str] | None = None,
                separator: str = "_", layout: str = "auto", overwrite: bool = False) -> dict[str, int]:
    """Write ``out/train.txt`` and ``out/val.txt`` (stem lists) for the labelled pairs of ``root``.

    Returns:
        ``{"train": n, "val": m, "groups_val": k}``.
    """
    root = Path(root).expanduser()
    out = Path(out).expanduser()
    paths = {name: out / f"{name}.txt" for name in ("train", "val")}
    for path in paths.values():
        check_output(path, inputs=[root], overwrite=overwrite, what="stem list", kind="file", inside_ok=True)
    stems = [r.stem for r in discover(root, layout=layout).records]
    train, val = split_stems(stems, val_fraction, by, pattern, seed, val_groups, separator)
    for name, members in (("train", train), ("val", val)):
        with atomic_path(paths[name]) as tmp:
            tmp.write_text("\n".join(members) + "\n", encoding="utf-8")
    groups = sorted({group_of(s, by, pattern, separator) for s in val})
    log.info("split %s: %d training and %d validation stems; validation groups: %s", root, len(train), len(val),
             ", ".join(groups))
    return {"train": len(train), "val": len(val), "groups_val": len(groups)}
