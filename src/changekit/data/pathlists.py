"""Reading path lists and stem lists (the formats are listed in :mod:`changekit.data.discover`).

Every line is checked: a wrong field count, a missing file or a repeated stem is a problem that names the list
and the line. Stem lists are resolved through a folder layout under ``root``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DatasetNotFoundError, PairingError
from .discover import (Discovery, MissingLabelsError, PairRecord, Problem, _index_layout, _pair_stems,
                       _resolve_layout)
from .io import IMAGE_SUFFIXES


def _read_entries(path: Path) -> list[tuple[int, list[str]]]:
    """Non-comment lines of a list as ``(line number, fields)``; ``a,b,c`` single-field lines are split."""
    entries: list[tuple[int, list[str]]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise PairingError(f"{path}: not a text path list (cannot decode as UTF-8)") from None
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) == 1 and "," in fields[0]:
            entries += [(no, [s]) for s in fields[0].split(",") if s]
        else:
            entries.append((no, fields))
    return entries


def _resolve_path(text: str, base: Path) -> Path:
    p = Path(text)
    if "\\" in text and not (p if p.is_absolute() else base / p).exists():
        p = Path(text.replace("\\", "/"))  # lists written on Windows
    return p if p.is_absolute() else base / p


def read_list(path: Path, base: Path, layout: str, require_labels: bool) -> Discovery:
    """The pairs of a path list or stem list (format detected from the first entry; see :mod:`.discover`)."""
    entries = _read_entries(path)
    if not entries:
        raise DatasetNotFoundError(f"{path}: the list holds no entries")
    first_no, first = entries[0]
    n = len(first)
    for no, fields in entries:
        if len(fields) != n:
            raise PairingError(
                f"{path}, line {no}: {len(fields)} field(s), but the first entry (line {first_no}) has {n}; "
                "every line must have the same format"
            )
    if n > 5:
        raise PairingError(
            f"{path}, line {first_no}: {n} fields; expected 1 (stem), 2 (A B), 3 (A B label), "
            "4 (A B label1 label2) or 5 (ClearSCD: A B mask mask mask)"
        )
    if n == 1:
        return _read_stem_list(path, entries, base, layout, require_labels)
    if n == 2 and require_labels:
        raise MissingLabelsError(
            f"{path}: lines hold 2 paths (A B) and no label; pass require_labels=False to use unlabelled pairs"
        )
    records: list[PairRecord] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for no, fields in entries:
        p = [_resolve_path(f, base) for f in fields]
        if n == 5 and fields[2] == fields[3] == fields[4]:
            rec = PairRecord(p[0].stem, p[0], p[1], p[2], label_kind="hiucd")
        else:
            rec = PairRecord(p[0].stem, p[0], p[1], *p[2:], label_kind="semantic" if n >= 4 else "binary")
        missing = [f for f in rec.files() if not f.is_file()]
        problems += [(DatasetNotFoundError, f"{path}, line {no}: {f} not found") for f in missing]
        if rec.stem in seen:
            problems.append((PairingError, f"{path}, line {no}: stem '{rec.stem}' already used on line "
                                           f"{seen[rec.stem]}"))
        elif not missing:
            seen[rec.stem] = no
            records.append(rec)
    names = {2: "A B", 3: "A B label", 4: "A B label1 label2", 5: "A B label1 label2 change"}
    fmt = "ClearSCD A B mask mask mask" if records and records[0].label_kind == "hiucd" else names[n]
    return Discovery(path, f"paths({fmt})", records, problems)


def _read_stem_list(
    path: Path, entries: list[tuple[int, list[str]]], base: Path, layout: str, require_labels: bool
) -> Discovery:
    if not base.is_dir():
        raise DatasetNotFoundError(f"{path}: stem list needs a dataset folder, but root {base} does not exist")
    try:
        lay, dirs = _resolve_layout(base, layout, require_labels)
    except DatasetNotFoundError as exc:
        raise DatasetNotFoundError(f"{path} is a stem list resolved against root {base}, but {exc} "
                                   "(pass root=the dataset folder)") from None
    problems: list[Problem] = []
    folders, index, required = _index_layout(lay, dirs, require_labels, problems)
    where: dict[str, str] = {}
    stems: list[str] = []
    for no, (token,) in entries:
        stem = Path(token).stem if Path(token).suffix.lower() in IMAGE_SUFFIXES else token
        if stem in where:
            problems.append((PairingError, f"{path}, line {no}: stem '{stem}' listed twice ({where[stem]})"))
            continue
        where[stem] = f"{path}, line {no}"
        stems.append(stem)
    records, missing = _pair_stems(stems, folders, index, required, lay, where)
    return Discovery(path, f"stems({lay.name})", records, problems + missing)
