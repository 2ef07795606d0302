"""Kill tests: a training run SIGKILLed at any moment, also in the middle of a checkpoint write and with ``TMPDIR``
on another filesystem, resumes every time, loses at most one checkpoint interval and keeps its logs.

The trainer runs in a child process. A wrapper around ``torch.save`` (installed by the child before it starts)
announces each checkpoint write on stderr and writes it slowly in chunks, so the parent can kill the child while a
checkpoint is being written, not only between writes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from changekit.engine.callbacks import read_metrics_rows

CHILD = textwrap.dedent("""
    import io, sys, time, torch
    import changekit.engine.callbacks as cb

    real_save = torch.save

    def slow_save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        sys.stderr.write("SAVING\\n"); sys.stderr.flush()
        with open(f, "wb") as out:
            step = max(1, len(data) // 8)
            for i in range(0, len(data), step):
                out.write(data[i:i + step]); out.flush(); time.sleep(0.05)

    cb.torch.save = slow_save
    from changekit.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _child(args: list[str], tmpdir: str) -> subprocess.Popen:
    env = {**os.environ, "TMPDIR": tmpdir, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            env=env, text=True)


def _other_filesystem_tmpdir(root: Path) -> str:
    """A TMPDIR on another filesystem than ``root`` (``/dev/shm`` where it exists), else a plain one."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != root.stat().st_dev:
        return tempfile.mkdtemp(dir=shm)
    return tempfile.mkdtemp()


def _kept(old: list[dict[str, str]], new: list[dict[str, str]]) -> bool:
    """Every earlier row is still there, in order, with its values (later columns may have been added)."""
    return len(new) >= len(old) and all({k: n.get(k) for k in o} == o for o, n in zip(old, new, strict=False))


def _kill_after(proc: subprocess.Popen, saves: int, delay: float) -> bool:
    """SIGKILL ``proc`` ``delay`` s after its ``saves``-th checkpoint write began; False if it ended first."""
    seen = 0
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("SAVING"):
            seen += 1
            if seen >= saves:
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
    proc.wait()
    return False


def test_training_killed_at_random_moments_resumes_every_time(
    synth_root: Path, tmp_path: Path, tiny_config  # noqa: ANN001
) -> None:
    rng = random.Random(0)
    cfg = tiny_config(synth_root)
    cfg["trainer"].update(max_epochs=4, checkpoint_every_steps=1)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    tmpdir = _other_filesystem_tmpdir(tmp_path)
    last = out / "checkpoints" / "last.ckpt"
    rows_seen: list[dict[str, str]] = []
    args = ["train", str(path), "--out", str(out)]
    killed = 0
    for attempt in range(3):
        # mid-write kills (a delay shorter than the 8 x 0.05 s write) and kills between writes
        proc = _child(args, tmpdir)
        delay = rng.choice([0.02, 0.12, 0.3, 0.6])
        if not _kill_after(proc, saves=rng.randint(1, 3), delay=delay):
            break  # finished before the kill
        killed += 1
        if last.exists():
            state = torch.load(last, weights_only=True)  # never truncated: loads every time
            assert state["global_step"] > 0
            rows = read_metrics_rows(out / "logs" / "metrics.csv")
            assert _kept(rows_seen, rows)  # earlier rows are never lost
            rows_seen = rows
            args = ["train", "--resume", "--out", str(out)]
    assert killed >= 2
    proc = _child(args, tmpdir)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    final = torch.load(last, weights_only=True)
    per_epoch = len(list((synth_root / "train" / "A").glob("*.png"))) // 4 + bool(
        len(list((synth_root / "train" / "A").glob("*.png"))) % 4)
    assert final["global_step"] == 4 * per_epoch
    rows = read_metrics_rows(out / "logs" / "metrics.csv")
    assert _kept(rows_seen, rows) and len(rows) > len(rows_seen)
    assert (out / "model.ckpt").is_file()
    leftovers = [p for p in out.rglob("*") if ".ck" in p.name and p.name.startswith(".")]
    assert not leftovers, leftovers
    assert not list(Path(tmpdir).iterdir())  # nothing was staged in TMPDIR


@pytest.mark.parametrize("delay", [0.0, 0.1])
def test_kill_during_the_first_checkpoint_write_never_leaves_a_partial_file(
    synth_root: Path, tmp_path: Path, tiny_config, delay: float  # noqa: ANN001
) -> None:
    cfg = tiny_config(synth_root)
    cfg["trainer"].update(checkpoint_every_steps=1)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    proc = _child(["train", str(path), "--out", str(out)], _other_filesystem_tmpdir(tmp_path))
    assert _kill_after(proc, saves=1, delay=delay)
    assert not (out / "checkpoints" / "last.ckpt").exists()  # the final name never holds a partial file
    proc = _child(["train", "--resume", "--out", str(out)], tempfile.gettempdir())
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "no checkpoint yet" in err, err[-2000:]  # starts again from the beginning
    assert torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] > 0
