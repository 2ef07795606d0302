"""Find image pairs and their labels in a dataset folder or a path-list file.

Pairs are matched by file stem, never by zipping sorted globs: one missing or extra file would silently shift
every later pair and train on garbage. So every unmatched file is an error naming the stem and the folder where
its partner was expected.

Folder layouts (folder names matched case-insensitively, detected in this order):

* ``im1|im2|label1|label2`` (SECOND): semantic class maps per date, optional binary ``label`` folder beside them;
* ``A|B|label`` (LEVIR-CD, WHU-CD), ``A|B|bcd`` (open-cd), ``time1|time2|label`` (SYSU-CD): binary change;
* ``A|B``, ``time1|time2``, ``im1|im2``: unlabelled pairs (prediction; needs ``require_labels=False``).

Path lists (format detected per file; blank lines and ``#`` lines ignored; fields split on any whitespace):

* 1 field: a stem (ChangeAnywhere few-shot lists; ``a,b,c`` on one line also works), looked up in a folder layout
  under ``root`` (default: the list's folder);
* 2 fields ``A B`` (no label); 3 fields ``A B label`` (ChangeCLIP writes two spaces);
* 4 fields ``A B label1 label2`` (semantic);
* 5 fields: ClearSCD ``A B mask mask mask`` with the same path three times, i.e. one Hi-UCD 3-channel mask
  (semantic A, semantic B, change); with three different paths: ``A B label1 label2 change``.

Relative paths are resolved against ``root`` when given, else against the list file's folder. List files are
read by :mod:`changekit.data.pathlists`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ChangekitError, ConfigError, DatasetNotFoundError, PairingError, suggest
from .io import IMAGE_SUFFIXES, require_file

log = logging.getLogger(__name__)

LABEL_KINDS = ("binary", "semantic", "hiucd")
_MAX_LISTED = 5


@dataclass
class PairRecord:
    """One bi-temporal pair and its label files.

    ``label_kind`` says how the label fields are read:

    * ``"binary"``: ``label`` is the change mask (0/255, or 0/1 with 255 = ignore);
    * ``"semantic"``: ``label`` / ``label_b`` are the class-index maps of dates A / B (SECOND ``label1`` /
      ``label2``), ``change`` an optional binary change mask (else change = classes differ);
    * ``"hiucd"``: ``label`` is one 3-channel mask: semantic A, semantic B, change (ClearSCD lists).
    """

    stem: str
    a: Path
    b: Path
    label: Path | None = None
    label_b: Path | None = None
    change: Path | None = None
    label_kind: str = "binary"

    def __post_init__(self) -> None:  # records may be built by hand from strings
        if self.label_kind not in LABEL_KINDS:
            raise ConfigError(f"pair '{self.stem}': label_kind '{self.label_kind}' is not one of {LABEL_KINDS}")
        for name in ("a", "b", "label", "label_b", "change"):
            if isinstance(value := getattr(self, name), str):
                setattr(self, name, Path(value))

    @property
    def has_labels(self) -> bool:
        return self.label is not None

    @property
    def is_semantic(self) -> bool:
        """True when the record carries per-date class maps (not only a change mask)."""
        return self.has_labels and self.label_kind in ("semantic", "hiucd")

    def label_files(self) -> list[Path]:
        """Distinct label files of the pair (empty for unlabelled pairs)."""
        out: list[Path] = []
        for p in (self.label, self.label_b, self.change):
            if p is not None and p not in out:
                out.append(p)
        return out

    def files(self) -> list[Path]:
        return [self.a, self.b, *self.label_files()]


@dataclass(frozen=True)
class Layout:
    """Folder names of one dataset layout (``change``: optional binary folder beside semantic labels)."""

    name: str
    a: str
    b: str
    label: str | None = None
    sem_a: str | None = None
    sem_b: str | None = None
    change: str | None = None

    @property
    def labelled(self) -> bool:
        return self.label is not None or self.sem_a is not None

    def required(self) -> tuple[str, ...]:
        """Folders that must exist for the layout to match."""
        extra = (self.label,) if self.label else (self.sem_a, self.sem_b) if self.sem_a else ()
        return (self.a, self.b, *[e for e in extra if e])


LAYOUTS: tuple[Layout, ...] = (
    Layout("im1|im2|label1|label2", "im1", "im2", sem_a="label1", sem_b="label2", change="label"),
    Layout("A|B|label", "A", "B", label="label"),
    Layout("A|B|bcd", "A", "B", label="bcd"),
    Layout("time1|time2|label", "time1", "time2", label="label"),
    Layout("A|B", "A", "B"),
    Layout("time1|time2", "time1", "time2"),
    Layout("im1|im2", "im1", "im2"),
)
LAYOUT_ALIASES = {
    "levir-cd": "A|B|label", "levir": "A|B|label", "whu-cd": "A|B|label", "whu": "A|B|label",
    "open-cd": "A|B|bcd", "opencd": "A|B|bcd", "sysu-cd": "time1|time2|label", "sysu": "time1|time2|label",
    "second": "im1|im2|label1|label2", "unlabelled": "A|B", "unlabeled": "A|B",
}
_SEARCHED = ", ".join(lay.name for lay in LAYOUTS)

Problem = tuple[type[ChangekitError], str]


class MissingLabelsError(DatasetNotFoundError):
    """Labels were required but the source holds unlabelled pairs only (prediction data)."""


@dataclass
class Discovery:
    """What :func:`discover` found: the pairs, the layout (or list format) and every problem met."""

    source: Path
    layout: str
    records: list[PairRecord]
    problems: list[Problem] = field(default_factory=list)

    @property
    def messages(self) -> list[str]:
        return [msg for _, msg in self.problems]


def get_layout(name: str) -> Layout:
    """Look a layout up by name (``"A|B|label"``) or alias (``"levir"``, ``"second"``), case-insensitively."""
    key = LAYOUT_ALIASES.get(name.lower(), name).lower()
    for lay in LAYOUTS:
        if lay.name.lower() == key:
            return lay
    choices = [lay.name for lay in LAYOUTS] + list(LAYOUT_ALIASES)
    raise ConfigError(f"layout '{name}' is unknown{suggest(name, choices)}; known: auto, {', '.join(choices)}")


def raise_problems(problems: list[Problem], header: str) -> None:
    """Raise one error listing up to five problems (type of the first), then ``and N more``."""
    if not problems:
        return
    msgs = [m for _, m in problems]
    text = "; ".join(msgs[:_MAX_LISTED])
    if len(msgs) > _MAX_LISTED:
        text += f"; and {len(msgs) - _MAX_LISTED} more"
    raise problems[0][0](f"{header}: {text}")


def discover(
    source: str | Path,
    root: str | Path | None = None,
    layout: str = "auto",
    require_labels: bool = True,
    strict: bool = True,
) -> Discovery:
    """Find the pairs of a dataset folder or path-list file; see the module docstring for formats.

    Args:
        source: dataset folder, or a path-list / stem-list text file.
        root: for lists: the folder relative paths and stems resolve against (default: the list's folder).
        layout: ``"auto"`` or a layout name / alias; used for folders and stem lists.
        require_labels: if False, unlabelled pairs are accepted (labels still attached where present).
        strict: raise on the first kind of problem (listing all of them); if False, collect them in
            ``Discovery.problems`` and return the pairs that are complete.

    Raises:
        DatasetNotFoundError: source, a folder or a listed file is missing, or nothing was found.
        PairingError: unmatched files, duplicate stems, malformed list lines.
    """
    src = Path(source).expanduser()
    if src.is_dir():
        lay, dirs = _resolve_layout(src, layout, require_labels)
        problems: list[Problem] = []
        folders, index, required = _index_layout(lay, dirs, require_labels, problems)
        records, unpaired = _pair_stems(sorted(set().union(*(index[r] for r in required))), folders, index,
                                        required, lay, None)
        found = Discovery(src, lay.name, records, problems + unpaired)
    elif src.is_file():
        from .pathlists import read_list  # list files build on this module's layouts and pairing

        found = read_list(src, Path(root).expanduser() if root is not None else src.parent, layout, require_labels)
    else:
        raise DatasetNotFoundError(
            f"{src}: dataset folder or list file not found (layouts searched: {_SEARCHED}; "
            "or a path-list .txt file)"
        )
    found.records.sort(key=lambda r: r.stem)
    if not found.records and not found.problems:
        raise DatasetNotFoundError(f"{src}: no image pairs found (layout {found.layout})")
    if strict:
        raise_problems(found.problems, f"{src}: {len(found.problems)} problem(s)")
    if found.problems:
        log.warning("%s: %d problem(s), e.g. %s", src, len(found.problems), found.problems[0][1])
    return found


def discover_pairs(
    root_or_list: str | Path,
    root: str | Path | None = None,
    layout: str = "auto",
    require_labels: bool = True,
) -> list[PairRecord]:
    """Pairs of a dataset folder or list file, sorted by stem (strict: any unmatched file raises)."""
    return discover(root_or_list, root=root, layout=layout, require_labels=require_labels).records


def pair_folders(a: str | Path, b: str | Path) -> list[PairRecord]:
    """Unlabelled pairs from two separate image folders (prediction inputs), paired by stem and sorted.

    Raises:
        DatasetNotFoundError: a folder is missing or holds no images.
        PairingError: a file has no partner in the other folder, or two files share a stem.
    """
    a, b = Path(a), Path(b)
    for folder in (a, b):
        if not folder.is_dir():
            raise DatasetNotFoundError(f"{folder}: folder not found")
    problems: list[Problem] = []
    index_a, index_b = _index(a, problems), _index(b, problems)
    if not index_a:
        raise DatasetNotFoundError(f"{a}: no images ({', '.join(IMAGE_SUFFIXES)})")
    for own, other, folder in ((index_a, index_b, b), (index_b, index_a, a)):
        for stem in sorted(set(own) - set(other)):
            problems.append((PairingError, f"'{stem}' ({own[stem]}) has no partner in {folder}"))
    raise_problems(problems, f"{a} and {b}")
    return [PairRecord(stem, index_a[stem], index_b[stem]) for stem in sorted(index_a)]


def detect_layout(root: str | Path, require_labels: bool = True) -> Layout:
    """The first layout of :data:`LAYOUTS` whose folders exist under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root}: dataset folder not found (layouts searched: {_SEARCHED})")
    return _resolve_layout(root, "auto", require_labels)[0]


# --------------------------------------------------------------------------------------------- folders


def _subdirs(root: Path) -> dict[str, Path]:
    """Sub-folders by lower-cased name (the exact-case spelling wins a collision: it sorts first)."""
    out: dict[str, Path] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and not entry.name.startswith("."):
            out.setdefault(entry.name.lower(), Path(entry.path))
    return out


def _resolve_layout(root: Path, layout: str, require_labels: bool) -> tuple[Layout, dict[str, Path]]:
    dirs = _subdirs(root)
    found = ", ".join(p.name for p in dirs.values()) or "none"
    if layout != "auto":
        lay = get_layout(layout)
        missing = [n for n in lay.required() if n.lower() not in dirs]
        if missing:
            raise DatasetNotFoundError(
                f"{root}: layout {lay.name} needs folder(s) {', '.join(missing)}; sub-folders found: {found}"
            )
        if require_labels and not lay.labelled:
            raise MissingLabelsError(f"{root}: layout {lay.name} has no labels; pass require_labels=False for "
                                     "prediction")
        return lay, dirs
    for lay in LAYOUTS:
        if all(n.lower() in dirs for n in lay.required()):
            if require_labels and not lay.labelled:
                raise MissingLabelsError(
                    f"{root}: found image folders {lay.a} and {lay.b} but no label folder (label, bcd or "
                    "label1 + label2); pass require_labels=False to use unlabelled pairs"
                )
            return lay, dirs
    hint = ""
    splits = [n for n in ("train", "val", "test") if n in dirs]
    if splits:
        hint = f"; it holds split folders ({', '.join(splits)}): point at one of them"
    raise DatasetNotFoundError(
        f"{root}: no known dataset layout (searched {_SEARCHED}); sub-folders found: {found}{hint}"
    )


def _index(folder: Path, problems: list[Problem]) -> dict[str, Path]:
    """Image files of a folder by stem (hidden and non-image files skipped); duplicate stems are problems, and so
    is an image name that is no readable file (a folder, a symbolic link loop or a broken link)."""
    out: dict[str, Path] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        path = Path(entry.path)
        if entry.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            regular = entry.is_file()
        except OSError:  # a symbolic link loop
            regular = False
        if not regular:
            try:
                require_file(path, "image")
            except ChangekitError as exc:
                problems.append((type(exc), str(exc)))
            continue
        if path.stem in out:
            problems.append((PairingError, f"{folder}: two files share the stem '{path.stem}' "
                                           f"({out[path.stem].name}, {path.name}); keep one"))
            continue
        out[path.stem] = path
    return out


def _index_layout(
    lay: Layout, dirs: dict[str, Path], require_labels: bool, problems: list[Problem]
) -> tuple[dict[str, Path], dict[str, dict[str, Path]], list[str]]:
    """Folder per role, file index per role, and the roles every pair must have."""
    roles = {"a": lay.a, "b": lay.b}
    if lay.label:
        roles["label"] = lay.label
    if lay.sem_a and lay.sem_b:
        roles["label"], roles["label_b"] = lay.sem_a, lay.sem_b
    if lay.change and lay.change.lower() in dirs:
        roles["change"] = lay.change
    folders = {role: dirs[name.lower()] for role, name in roles.items()}
    index = {role: _index(folder, problems) for role, folder in folders.items()}
    required = list(roles) if require_labels else ["a", "b"]
    for role in required:
        if not index[role]:
            raise DatasetNotFoundError(
                f"{folders[role]}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder of layout {lay.name}"
            )
    return folders, index, required


def _pair_stems(
    stems: list[str],
    folders: dict[str, Path],
    index: dict[str, dict[str, Path]],
    required: list[str],
    lay: Layout,
    where: dict[str, str] | None,
) -> tuple[list[PairRecord], list[Problem]]:
    """Build records for ``stems``; ``where`` maps a listed stem to its ``list, line N`` prefix."""
    kind = "semantic" if lay.sem_a else "binary"
    label_roles = [r for r in ("label", "label_b", "change") if r in index]
    records: list[PairRecord] = []
    problems: list[Problem] = []
    for stem in stems:
        missing = [r for r in required if stem not in index[r]]
        if missing:
            expected = " or ".join(str(folders[r]) for r in missing)
            if where is not None:
                problems.append((PairingError, f"{where[stem]}: stem '{stem}' not found in {expected}"))
            else:
                have = next(index[r][stem] for r in required if stem in index[r])
                problems.append((PairingError, f"'{stem}' ({have}) has no partner in {expected}"))
            continue
        labels = {r: index[r].get(stem) for r in label_roles}
        core = [r for r in ("label", "label_b") if r in index]
        if not all(labels[r] is not None for r in core):  # unlabelled use: attach labels only when complete
            labels = {}
        records.append(PairRecord(stem, index["a"][stem], index["b"][stem], label_kind=kind, **labels))
    return records, problems
