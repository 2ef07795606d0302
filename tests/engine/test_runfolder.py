"""Run folders: last.ckpt is the last state, logs survive a resume, one owner at a time, refusals leave nothing."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
import yaml

from changekit.cli import main
from changekit.engine.callbacks import read_metrics_rows
from changekit.engine.runfolder import LOCK_NAME, run_lock
from changekit.errors import ChangekitError


def _cfg(tmp: Path, cfg: dict, name: str = "c.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(capsys: pytest.CaptureFixture, *args: object) -> tuple[int, str]:
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


def _step(ckpt: Path) -> int:
    return int(torch.load(ckpt, weights_only=True)["global_step"])


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_last_checkpoint_follows_training_when_the_metric_stays_flat(
    synth_root: Path, tmp_path: Path, tiny_config, capsys: pytest.CaptureFixture  # noqa: ANN001
) -> None:
    cfg = tiny_config(synth_root)
    cfg["optim"] = {"lr": 1e-12}  # the weights barely change: val/f1 is equal every epoch, best stays at epoch 1
    out = tmp_path / "run"
    rc, err = _run(capsys, "train", _cfg(tmp_path, cfg), "--out", out, "--set", "trainer.max_epochs=3")
    assert rc == 0, err
    last, best = out / "checkpoints" / "last.ckpt", out / "checkpoints" / "best.ckpt"
    per_epoch = _step(best)
    assert per_epoch > 0 and _step(last) == 3 * per_epoch


def test_resume_appends_logs_and_reads_the_runs_own_config(
    synth_root: Path, tmp_path: Path, tiny_config, capsys: pytest.CaptureFixture  # noqa: ANN001
) -> None:
    out = tmp_path / "run"
    rc, err = _run(capsys, "train", _cfg(tmp_path, tiny_config(synth_root)), "--out", out,
                   "--set", "trainer.max_epochs=1", "--set", "data.batch_size=3")
    assert rc == 0, err
    first = read_metrics_rows(out / "logs" / "metrics.csv")
    tb_first = sorted(p.name for p in (out / "tb").iterdir())
    assert first
    # no config file and no repeated --set: the run's config.yaml (batch 3) is used, --set changes one key
    rc, err = _run(capsys, "train", "--resume", "--out", out, "--set", "trainer.max_epochs=2")
    assert rc == 0, err
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["trainer"]["max_epochs"] == 2 and cfg["data"]["batch_size"] == 3
    rows = read_metrics_rows(out / "logs" / "metrics.csv")
    assert rows[: len(first)] == first and len(rows) > len(first)
    assert max(int(r["step"]) for r in rows) > max(int(r["step"]) for r in first)
    assert set(tb_first) < set(p.name for p in (out / "tb").iterdir())  # TensorBoard gains an event file


def test_failed_resume_changes_nothing(synth_root: Path, tmp_path: Path, tiny_config,  # noqa: ANN001
                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "run"
    assert _run(capsys, "train", _cfg(tmp_path, tiny_config(synth_root)), "--out", out)[0] == 0
    before = _tree(out)
    rc, err = _run(capsys, "train", "--resume", "--out", out, "--set", "model.dropuot=0.1")
    assert rc == 2 and "dropuot" in err and len(err.strip().splitlines()) == 1
    assert _tree(out) == before


def test_resume_falls_back_to_the_newest_readable_checkpoint(
    synth_root: Path, tmp_path: Path, tiny_config, capsys: pytest.CaptureFixture, caplog  # noqa: ANN001
) -> None:
    out = tmp_path / "run"
    assert _run(capsys, "train", _cfg(tmp_path, tiny_config(synth_root)), "--out", out)[0] == 0
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])  # a disk-level truncation
    rc, err = _run(capsys, "train", "--resume", "--out", out, "--set", "trainer.max_epochs=2")
    assert rc == 0, err
    assert "resuming from best.ckpt" in caplog.text or "resuming from best.ckpt" in err
    assert _step(last) == 2 * _step(out / "checkpoints" / "best.ckpt") or _step(last) > 0
    last.write_bytes(b"")
    (out / "checkpoints" / "best.ckpt").write_bytes(b"garbage")
    rc, err = _run(capsys, "train", "--resume", "--out", out)
    assert rc == 2 and "no readable checkpoint" in err and len(err.strip().splitlines()) == 1


def test_a_live_owner_locks_the_run_folder_and_a_dead_one_does_not(
    synth_root: Path, tmp_path: Path, tiny_config, capsys: pytest.CaptureFixture  # noqa: ANN001
) -> None:
    out = tmp_path / "run"
    assert _run(capsys, "train", _cfg(tmp_path, tiny_config(synth_root)), "--out", out)[0] == 0
    assert not (out / LOCK_NAME).exists()
    with run_lock(out):  # another owner (a second open file description: flock conflicts like a process)
        before = _tree(out)
        rc, err = _run(capsys, "train", "--resume", "--out", out, "--set", "trainer.max_epochs=2")
        assert rc == 2 and "in use by pid" in err and str(os.getpid()) in err
        assert {k: v for k, v in _tree(out).items() if k != LOCK_NAME} == \
            {k: v for k, v in before.items() if k != LOCK_NAME}
    (out / LOCK_NAME).write_text("pid 999999 on elsewhere since 2020-01-01")  # stale: nobody holds the flock
    rc, err = _run(capsys, "train", "--resume", "--out", out, "--set", "trainer.max_epochs=2")
    assert rc == 0, err


def test_refused_train_creates_nothing(synth_root: Path, tmp_path: Path, tiny_config,  # noqa: ANN001
                                       capsys: pytest.CaptureFixture) -> None:
    cfg = tiny_config(synth_root)
    cases = {
        "missing data": {**cfg, "data": {**cfg["data"], "val": str(tmp_path / "nope")}},
        "bad model argument": {**cfg, "model": {"name": "fc_siam_diff", "widht": 3}},
        "out inside the data": cfg,
    }
    for i, (label, c) in enumerate(cases.items()):
        out = synth_root / "train" / "run" if label == "out inside the data" else tmp_path / f"r{i}"
        rc, err = _run(capsys, "train", _cfg(tmp_path, c, f"c{i}.yaml"), "--out", out)
        assert rc == 2 and len(err.strip().splitlines()) == 1, (label, err)
        assert not out.exists(), label


def test_fresh_run_failing_before_its_first_checkpoint_leaves_nothing(
    synth_root: Path, tmp_path: Path, tiny_config, capsys: pytest.CaptureFixture,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from changekit.engine.task import ChangeTask

    def boom(self, *args):  # noqa: ANN001, ANN202, ARG001
        raise ChangekitError("synthetic failure in the first step")

    monkeypatch.setattr(ChangeTask, "training_step", boom)
    out = tmp_path / "run"
    rc, err = _run(capsys, "train", _cfg(tmp_path, tiny_config(synth_root)), "--out", out)
    assert rc == 2 and "synthetic failure" in err
    assert not out.exists()


def test_folders_follow_the_umask(synth_root: Path, tmp_path: Path, tiny_config,  # noqa: ANN001
                                  capsys: pytest.CaptureFixture) -> None:
    old = os.umask(0o022)
    try:
        out = tmp_path / "run"
        assert _run(capsys, "train", _cfg(tmp_path, tiny_config(synth_root)), "--out", out)[0] == 0
        rc, err = _run(capsys, "predict", "--ckpt", out / "model.ckpt", "--a", synth_root / "val" / "A",
                       "--b", synth_root / "val" / "B", "--out", tmp_path / "pred", "--tile", 64, "--overlap", 16)
        assert rc == 0, err
    finally:
        os.umask(old)
    for folder in (out, out / "checkpoints", out / "logs", tmp_path / "pred"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
    for f in (out / "config.yaml", out / "model.ckpt", out / "checkpoints" / "last.ckpt"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_time_budget_covers_the_whole_run_and_says_when_it_is_spent(
    synth_root: Path, tmp_path: Path, tiny_config, capsys: pytest.CaptureFixture, caplog  # noqa: ANN001
) -> None:
    """trainer.max_time_minutes bounds the run, all invocations together (the schedule's plan continues on
    resume); a resume whose budget is used up trains nothing and says so; a larger budget on resume trains on."""
    out = tmp_path / "run"
    rc, err = _run(capsys, "train", _cfg(tmp_path, tiny_config(synth_root)), "--out", out,
                   "--set", "trainer.max_time_minutes=0.0001", "trainer.max_epochs=5")
    assert rc == 0, err
    assert "time budget of" in caplog.text and "is spent" in caplog.text
    first = _step(out / "checkpoints" / "last.ckpt")
    caplog.clear()
    assert _run(capsys, "train", "--resume", "--out", out)[0] == 0
    assert "already spent" in caplog.text
    assert _step(out / "checkpoints" / "last.ckpt") == first
    assert _run(capsys, "train", "--resume", "--out", out, "--set", "trainer.max_time_minutes=30")[0] == 0
    assert _step(out / "checkpoints" / "last.ckpt") > first


def test_resume_in_the_middle_of_an_epoch_continues_it_in_the_same_order(
    synth_root: Path, tmp_path: Path, tiny_config, capsys: pytest.CaptureFixture,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stopped at steps 4 and 7 (mid-epoch) and resumed twice, a run sees the same batches, in the same order, as
    the same run made in one go: no epoch is replayed and the step count is the planned one."""
    from changekit.engine.task import ChangeTask

    seen: list[list[str]] = []
    original = ChangeTask.training_step
    monkeypatch.setattr(ChangeTask, "training_step",
                        lambda self, batch, i: seen.append(list(batch["stem"])) or original(self, batch, i))
    cfg = tiny_config(synth_root)
    cfg["trainer"].update(max_epochs=4, checkpoint_every_steps=1)
    path = _cfg(tmp_path, cfg)
    assert _run(capsys, "train", path, "--out", tmp_path / "one")[0] == 0
    straight, seen[:] = list(seen), []
    out = tmp_path / "cut"
    assert _run(capsys, "train", path, "--out", out, "--set", "trainer.max_steps=4")[0] == 0
    assert _run(capsys, "train", "--resume", "--out", out, "--set", "trainer.max_steps=7")[0] == 0
    assert _run(capsys, "train", "--resume", "--out", out, "--set", "trainer.max_steps=-1")[0] == 0
    assert seen == straight
    assert _step(out / "checkpoints" / "last.ckpt") == _step(tmp_path / "one" / "checkpoints" / "last.ckpt")
