"""Write path lists or stem lists of a dataset folder (for splits, few-shot subsets and other tools).

``fmt="paths"`` writes one pair per line, fields separated by one space: ``A B label`` (binary),
``A B label1 label2`` or ``A B label1 label2 change`` (semantic), ``A B`` (unlabelled); paths are relative to
``root`` (read the list back with ``root=`` that folder, or keep the list inside it) unless ``absolute``.
``fmt="stems"`` writes one stem per line (the ChangeAnywhere / open-cd few-shot format). Both formats are read
back by :func:`changekit.data.discover.discover_pairs`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ConfigError
from ..safety import check_output
from .discover import PairRecord, discover
from .io import atomic_path

log = logging.getLogger(__name__)

FORMATS = ("paths", "stems")


def _line(rec: PairRecord, root: Path, absolute: bool) -> str:
    if rec.label_kind == "hiucd" and rec.label is not None:
        files = [rec.a, rec.b, rec.label, rec.label, rec.label]  # ClearSCD's 5-path form
    elif rec.label_kind == "semantic" and rec.label is not None:
        files = [rec.a, rec.b, rec.label, rec.label_b, *([rec.change] if rec.change else [])]
    else:
        files = [rec.a, rec.b, *([rec.label] if rec.label else [])]
    texts = []
    for f in files:
        if f is None:
            continue
        path = f.absolute() if absolute else _relative(f, root)
        text = path.as_posix()
        if any(ch.isspace() for ch in text):
            raise ConfigError(f"{f}: path contains whitespace and cannot be written to a space-separated list; "
                              "rename the file or folder")
        texts.append(text)
    return " ".join(texts)


def _relative(path: Path, root: Path) -> Path:
    for p, r in ((path, root), (path.absolute(), root.absolute()), (path.resolve(), root.resolve())):
        try:
            return p.relative_to(r)
        except ValueError:
            continue
    raise ConfigError(f"{path} is outside {root}; write the list with absolute=True")


def write_lists(
    root: str | Path,
    out: str | Path,
    layout: str = "auto",
    fmt: str = "paths",
    absolute: bool = False,
    require_labels: bool = True,
    stems: list[str] | None = None,
    overwrite: bool = False,
) -> int:
    """Write the pairs of ``root`` (a dataset folder) to the list file ``out``, atomically.

    Args:
        root: dataset folder (any layout of :mod:`changekit.data.discover`).
        out: list file to write (its folder is created).
        layout: ``"auto"`` or a layout name.
        fmt: ``"paths"`` or ``"stems"``.
        absolute: write absolute paths instead of paths relative to ``root``.
        require_labels: False also lists unlabelled pairs.
        stems: write only these stems (e.g. one split); unknown stems raise ``ConfigError``.
        overwrite: replace an existing list file (``--overwrite``); it may lie inside ``root``, never replace a
            file of the data set.

    Returns:
        The number of lines written.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"list format '{fmt}' is unknown; use one of {', '.join(FORMATS)}")
    root_path = Path(root).expanduser()
    check_output(out, inputs=[root_path], overwrite=overwrite, what="list file", kind="file", inside_ok=True)
    records = discover(root_path, layout=layout, require_labels=require_labels).records
    if stems is not None:
        by_stem = {r.stem: r for r in records}
        unknown = [s for s in stems if s not in by_stem]
        if unknown:
            raise ConfigError(f"{root_path}: stem(s) {', '.join(unknown[:5])} not found"
                              + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))
        records = [by_stem[s] for s in sorted(set(stems))]
    base = root_path if root_path.is_dir() else root_path.parent
    if fmt == "stems":
        lines = [r.stem for r in records]
    else:
        lines = [_line(r, base, absolute) for r in records]
    out_path = Path(out).expanduser()
    with atomic_path(out_path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if fmt == "paths" and not absolute and out_path.resolve().parent != base.resolve():
        log.info("%s: paths are relative to %s; read it back with root=%s", out_path, base, base)
    return len(lines)
