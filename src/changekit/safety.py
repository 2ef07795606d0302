"""Guards every command runs before it writes: never destroy what the user brought.

:func:`check_output` is called once per output path, before any work starts (so a refused command leaves
nothing behind). It refuses an output that is, contains, or lies inside one of the command's inputs, an output
that already exists (unless ``overwrite``: the ``--overwrite`` flag), and an output whose folder cannot be
written. Errors are one :class:`~changekit.errors.OutputError` line naming the path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import OutputError

OVERWRITE_HINT = "pass --overwrite to replace it, or choose another --out"


def _resolved(path: str | Path) -> Path:
    try:
        return Path(path).expanduser().resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # symlink loops
        raise OutputError(f"{path}: cannot resolve the path ({exc})") from None


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def overlaps_input(out: str | Path, inputs: Iterable[str | Path | None]) -> Path | None:
    """The first input that ``out`` is, contains, or lies inside (``None`` when they are apart)."""
    o = _resolved(out)
    for src in inputs:
        if src is None:
            continue
        s = _resolved(src)
        if _is_within(o, s) or _is_within(s, o):
            return Path(src)
    return None


def writable_parent(path: str | Path) -> None:
    """Raise when the nearest existing ancestor of ``path`` is not a writable folder."""
    p = _resolved(path)
    ancestor = p.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{path}: cannot create it, {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: cannot write there, {ancestor} is read-only for this user")


def _replaceable_inside(out: Path) -> bool:
    """Whether an output inside an input folder may take the place of what is at ``out`` now."""
    from .data.io import IMAGE_SUFFIXES

    if not out.exists():
        return True
    if out.is_dir():
        return not any(out.iterdir())
    return out.suffix.lower() not in IMAGE_SUFFIXES


def check_output(
    out: str | Path,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
    allow_existing_empty_dir: bool = True,
    what: str = "output",
    kind: str | None = None,
    inside_ok: bool = False,
) -> Path:
    """Validate an output path before a command starts working; returns it as a ``Path``.

    Args:
        out: file or folder the command will write.
        inputs: the command's input files and folders; ``out`` may not be, contain or lie inside any of them.
        overwrite: allow replacing an existing ``out`` (the user's ``--overwrite``).
        allow_existing_empty_dir: an existing empty folder counts as new.
        what: the word used in messages (``"output"``, ``"run folder"``...).
        kind: ``"file"`` or ``"folder"``: an existing ``out`` of the other kind is refused, even with
            ``overwrite`` (a file is never replaced by a folder, nor a folder by a file).
        inside_ok: tools that add an index to a data set (path lists, few-shot lists, class maps) may write a
            new file or folder inside an input folder; it still may not be or contain an input, and what exists
            there may be replaced only if it is a non-image file (an earlier list) or an empty folder.

    Raises:
        OutputError: one line naming ``out`` and the problem.
    """
    out = Path(out)
    clash = overlaps_input(out, inputs)
    if clash is not None:
        o, s = _resolved(out), _resolved(clash)
        relation = "is" if o == s else "lies inside" if _is_within(o, s) else "contains"
    if clash is not None and not (inside_ok and relation == "lies inside" and Path(clash).is_dir()
                                  and _replaceable_inside(out)):
        raise OutputError(f"{out}: the {what} {relation} the input {clash}; choose an --out apart from the inputs")
    if out.is_symlink() and not out.exists():
        raise OutputError(f"{out}: the {what} is a broken symbolic link")
    if kind is not None and out.exists() and out.is_dir() != (kind == "folder"):
        found = "folder" if out.is_dir() else "file"
        raise OutputError(f"{out}: is a {found}, but the {what} is a {kind}; choose another --out")
    if out.exists() and not overwrite:
        if out.is_dir():
            try:
                empty = not any(out.iterdir())
            except PermissionError:
                raise OutputError(f"{out}: the {what} folder is not readable") from None
            if not (empty and allow_existing_empty_dir):
                raise OutputError(f"{out}: the {what} folder exists and is not empty; {OVERWRITE_HINT}")
        else:
            raise OutputError(f"{out}: the {what} exists; {OVERWRITE_HINT}")
    if out.exists():
        if not os.access(out, os.W_OK):
            raise OutputError(f"{out}: the {what} is read-only for this user")
    else:
        writable_parent(out)
    return out


@contextlib.contextmanager
def removes_new_folders(*paths: str | Path) -> Iterator[None]:
    """On failure, remove the (still empty) folders that did not exist above ``paths`` when the block began.

    Writers create the parents of their outputs; a failed or refused command should not leave them behind.
    """
    missing: set[Path] = set()
    for p in paths:
        ancestor = _resolved(p).parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            missing.add(ancestor)
            ancestor = ancestor.parent
    try:
        yield
    except BaseException:
        for d in sorted(missing, key=lambda q: len(q.parts), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()  # only if empty
        raise
