"""A training run folder: one owner at a time, and the checkpoint a resume starts from.

Layout: ``config.yaml`` (the resolved config), ``checkpoints/`` (``last.ckpt``, ``best.ckpt``), ``logs/metrics.csv``,
``tb/`` (TensorBoard), ``model.ckpt`` (the exported weights) and ``.changekit.lock`` while a process trains in it.

The lock is an ``flock`` on ``.changekit.lock`` holding the owner's PID and host: the kernel releases it when the
owner dies, even by SIGKILL, so a stale lock never blocks a resume, while a live owner always refuses a second
``train`` into the same folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import CheckpointError, DatasetNotFoundError, RunLockedError
from ..safeload import load_tensors

log = logging.getLogger(__name__)
LOCK_NAME = ".changekit.lock"


def is_global_zero() -> bool:
    """Whether this process is the first of a (possibly distributed) launch; only it owns the folder."""
    for key in ("RANK", "SLURM_PROCID"):
        if key in os.environ:
            return int(os.environ[key]) == 0
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[None]:
    """Hold the run folder ``out`` for this process (no-op on ranks other than the first).

    Raises:
        RunLockedError: another live process holds it (its PID and host are named).
    """
    if not is_global_zero():
        yield
        return
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise RunLockedError(f"{out}: the run folder is in use by {owner}; wait for it to finish or choose "
                                 "another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                  .encode(), 0)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
    finally:
        os.close(fd)  # releases the flock


def checkpoint_candidates(out: Path) -> list[Path]:
    """Checkpoints a resume may start from, preferred first: ``last.ckpt``, then the others newest first."""
    folder = out / "checkpoints"
    last = folder / "last.ckpt"
    others = sorted((p for p in folder.glob("*.ckpt") if p != last and not p.name.startswith(".")),
                    key=lambda p: p.stat().st_mtime, reverse=True) if folder.is_dir() else []
    return ([last] if last.exists() else []) + others


def resume_checkpoint(out: Path) -> Path | None:
    """The newest readable checkpoint of the run in ``out``; says so when it is not ``last.ckpt``.

    ``None`` (with a warning) for a run killed before its first checkpoint: it starts again from the beginning.

    Raises:
        DatasetNotFoundError: ``out`` holds no run.
        CheckpointError: no checkpoint of ``out`` can be read (each failure is named).
    """
    candidates = checkpoint_candidates(out)
    if not candidates:
        if (out / "config.yaml").is_file():
            log.warning("%s: the run has no checkpoint yet; starting it from the beginning", out)
            return None
        raise DatasetNotFoundError(f"{out}: nothing to resume (no run in this folder)")
    problems = []
    for path in candidates:
        try:
            obj = load_tensors(path)
        except (CheckpointError, DatasetNotFoundError) as exc:
            problems.append(str(exc))
            continue
        if not isinstance(obj, dict) or "state_dict" not in obj or "loops" not in obj:
            problems.append(f"{path}: not a training checkpoint (no loop state)")
            continue
        if problems:
            log.warning("resuming from %s (step %s): %s", path.name, obj.get("global_step"), "; ".join(problems))
        return path
    raise CheckpointError(f"{out}: no readable checkpoint to resume from ({'; '.join(problems)})")
