"""Atomic, durable writes and the sweeping of what killed runs left behind.

Every file changekit writes goes through :func:`atomic_path` (one file) or :func:`atomic_dir` (a folder of
outputs): the content is written under a temporary name in the destination folder and renamed when complete, so a
final name only ever holds a complete file. Temporary names carry the writer's PID
(``.<name>.ck<pid>-<random><suffix>``), so a later run can tell the leftovers of a killed process (swept) from the
work of a live one (kept).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_TEMP_TAG = ".ck"


def _temp_prefix(name: str) -> str:
    return f".{name}{_TEMP_TAG}{os.getpid()}-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def sweep_stale_temps(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporary files and folders that killed changekit processes left in ``folder``.

    Only names written by :func:`atomic_path` / :func:`atomic_dir` whose owner process is gone are touched
    (``name`` restricts the sweep to the temporaries of one target). Returns what was removed.
    """
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    pattern = re.compile(r"^\.(?P<name>.+)" + re.escape(_TEMP_TAG) + r"(?P<pid>\d+)-")
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or (name is not None and m.group("name") != name) or _pid_alive(int(m.group("pid"))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            continue
    return removed


def fsync_path(path: str | Path) -> None:
    """Flush a file's (or a folder's entries') data to disk; silently skipped where the OS refuses."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) if Path(path).is_dir() else os.O_RDONLY
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s own folder; rename it to ``path`` only if the block succeeds.

    The temporary file lives beside the target (never in ``TMPDIR``, which may be another filesystem where a
    rename turns into a copy that a kill can cut short), so the final name only ever holds a complete file.
    ``durable`` fsyncs the file before and the folder after the rename (checkpoints, configs, metrics): the
    new content survives a power cut too. Stale temporaries of the same target left by killed runs are swept.
    """
    path = Path(path)
    make_dirs(path.parent)
    sweep_stale_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path.name), suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600 files: give the usual umask-based mode
            os.chmod(tmp_path, 0o666 & ~_umask())
            if durable:
                fsync_path(tmp_path)
        os.replace(tmp_path, path)
        if durable:
            fsync_path(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def make_dirs(path: str | Path) -> Path:
    """``mkdir -p`` with the user's umask (never the 0700 of a temporary folder)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; its content lands in ``path`` only if the block succeeds.

    On failure the temporary folder is removed; a killed run's leftover is swept by the next run writing the
    same target. The result gets the user's umask (``mkdtemp`` alone would make it 0700).
    """
    path = Path(path)
    make_dirs(path.parent)
    sweep_stale_temps(path.parent, path.name)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path.name), dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if not path.exists():
            os.replace(tmp, path)
        else:  # never delete what the user had there: move the new files in, replacing same-named ones
            for item in sorted(tmp.rglob("*")):
                target = path / item.relative_to(tmp)
                if item.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                else:
                    os.replace(item, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
