"""Outputs never destroy inputs or earlier results (issue 11, section 4, for predict, test, eval-masks, generate).

Every refused case runs through ``changekit.cli.main`` and must exit with code 2, print exactly one ``error:``
line naming the path at fault, leave every input byte-identical (hashed before and after) and write nothing:
no output, no hidden temporary, no new parent folder. The model is the pointwise test model
(``tests/pointwise_ckpt.py``): no training needed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pointwise_ckpt import pointwise_checkpoint

from changekit.cli import main
from changekit.data.io import write_png
from changekit.data.synthetic import synthesize

TESTS = Path(__file__).resolve().parents[1]


def _tree_hash(*roots: Path) -> dict[str, str]:
    """Content hash of every file under ``roots`` (and the names of every folder and hidden entry)."""
    out = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(root.rglob("*"))
        for p in paths:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


@pytest.fixture()
def ws(tmp_path: Path) -> Path:
    """A workspace: ``data`` (3 pairs A|B|label of 32 x 32), ``model.ckpt``, and nothing else."""
    synthesize(tmp_path / "data", n=3, size=32, seed=7)
    pointwise_checkpoint(tmp_path / "model.ckpt", tmp_path / "data")
    return tmp_path


def _refused(capsys: pytest.CaptureFixture, ws: Path, args: list[object], names: str, *,
             watch: tuple[Path, ...] = ()) -> str:
    """Run a command that must be refused; returns its error line."""
    inputs = _tree_hash(ws)
    before = {p: sorted(os.listdir(p)) for p in watch if p.is_dir()}
    rc = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert names in lines[0], (names, err)
    assert "Traceback" not in err
    assert _tree_hash(ws) == inputs  # inputs (and any earlier results inside ws) byte-identical, nothing added
    for p, listing in before.items():
        assert sorted(os.listdir(p)) == listing
    return lines[0]


def _predict(ws: Path, out: Path | str, *extra: object) -> list[object]:
    return ["predict", "--ckpt", ws / "model.ckpt", "--a", ws / "data" / "A", "--b", ws / "data" / "B",
            "--out", out, *extra]


# --------------------------------------------------------------------------------------------- predict
def test_predict_out_is_the_input_folder(ws: Path, capsys: pytest.CaptureFixture) -> None:
    line = _refused(capsys, ws, _predict(ws, ws / "data" / "A"), f"{ws / 'data' / 'A'}")
    assert "is the input" in line


def test_predict_out_inside_an_input_folder(ws: Path, capsys: pytest.CaptureFixture) -> None:
    line = _refused(capsys, ws, _predict(ws, ws / "data" / "A" / "masks"), f"{ws / 'data' / 'A' / 'masks'}")
    assert "lies inside the input" in line


def test_predict_out_containing_the_inputs(ws: Path, capsys: pytest.CaptureFixture) -> None:
    line = _refused(capsys, ws, _predict(ws, ws / "data"), f"{ws / 'data'}")
    assert "contains the input" in line or "is the input" in line


def test_predict_out_is_the_checkpoint(ws: Path, capsys: pytest.CaptureFixture) -> None:
    _refused(capsys, ws, _predict(ws, ws / "model.ckpt"), f"{ws / 'model.ckpt'}")


def test_predict_out_file_for_a_folder_of_pairs(ws: Path, capsys: pytest.CaptureFixture) -> None:
    line = _refused(capsys, ws, _predict(ws, ws / "mask.png"), f"{ws / 'mask.png'}")
    assert "3 pairs" in line and not (ws / "mask.png").exists()


def test_predict_into_existing_results_needs_overwrite(ws: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(a) for a in _predict(ws, ws / "pred")]) == 0
    capsys.readouterr()
    (ws / "pred" / "notes.txt").write_text("mine")
    line = _refused(capsys, ws, _predict(ws, ws / "pred"), f"{ws / 'pred'}")
    assert "--overwrite" in line
    assert main([str(a) for a in _predict(ws, ws / "pred", "--overwrite")]) == 0
    assert (ws / "pred" / "notes.txt").read_text() == "mine"  # --overwrite replaces masks, never other files
    assert sorted(p.name for p in ws.iterdir()) == ["data", "model.ckpt", "pred"]


def test_predict_existing_extras_folder_is_refused_before_any_mask(ws: Path, capsys: pytest.CaptureFixture) -> None:
    write_png(ws / "pred_prob" / "old.png", np.zeros((4, 4), np.uint8))
    _refused(capsys, ws, _predict(ws, ws / "pred", "--prob"), f"{ws / 'pred_prob'}")
    assert not (ws / "pred").exists()


def test_predict_existing_out_file(ws: Path, capsys: pytest.CaptureFixture) -> None:
    write_png(ws / "result.png", np.full((4, 4), 7, np.uint8))
    a, b = ws / "data" / "A" / "synth_00000.png", ws / "data" / "B" / "synth_00000.png"
    _refused(capsys, ws, ["predict", "--ckpt", ws / "model.ckpt", "--a", a, "--b", b, "--out", ws / "result.png"],
             f"{ws / 'result.png'}")


def test_predict_into_a_read_only_folder(ws: Path, capsys: pytest.CaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ro = ws / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: let the guard see the folder as a normal user would
        import changekit.safety as safety

        real = os.access
        monkeypatch.setattr(safety.os, "access",
                            lambda p, mode, **kw: False if Path(p) == ro else real(p, mode, **kw))
    try:
        line = _refused(capsys, ws, _predict(ws, ro / "pred"), f"{ro / 'pred'}", watch=(ro,))
        assert "read-only" in line
    finally:
        ro.chmod(0o755)


def test_predict_failing_midway_leaves_nothing(ws: Path, capsys: pytest.CaptureFixture) -> None:
    (ws / "data" / "B" / "synth_00002.png").write_bytes(b"not a png")  # the third pair fails after two are done
    out = ws / "new" / "deeper" / "pred"
    _refused(capsys, ws, _predict(ws, out, "--prob"), "synth_00002.png")
    assert sorted(p.name for p in ws.iterdir()) == ["data", "model.ckpt"]  # no masks, temporaries or folders


def test_killed_predict_leaves_a_temporary_that_the_next_run_sweeps(ws: Path, capsys: pytest.CaptureFixture) -> None:
    out = ws / "out" / "pred"
    out.parent.mkdir()
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "import pointwise_ckpt\n"
        "import changekit.engine.predict as P\n"
        "real = P._PairRunner.__call__\n"
        "def slow(self, *args):\n"
        "    real(self, *args)\n"
        "    time.sleep(300)\n"
        "P._PairRunner.__call__ = slow\n"
        "from changekit.cli import main\n"
        f"main({[str(a) for a in _predict(ws, out)]!r})\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not any(t.is_dir() and any(t.rglob("*.png")) for t in out.parent.iterdir()):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = sorted(p.name for p in out.parent.iterdir())
    assert len(left) == 1 and left[0].startswith(".pred"), left  # the killed run's temporary folder, no output
    assert main([str(a) for a in _predict(ws, out)]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.parent.iterdir()) == ["pred"]  # swept
    assert sorted(p.name for p in out.iterdir()) == [f"synth_0000{i}.png" for i in range(3)]


# --------------------------------------------------------------------------------------------- test
def test_test_out_is_the_data_folder(ws: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["test", "--ckpt", ws / "model.ckpt", "--data", ws / "data", "--out", ws / "data", "--no-report"]
    assert "is the input" in _refused(capsys, ws, args, f"{ws / 'data'}")


def test_test_out_inside_the_data_folder(ws: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["test", "--ckpt", ws / "model.ckpt", "--data", ws / "data", "--out", ws / "data" / "eval"]
    assert "lies inside" in _refused(capsys, ws, args, f"{ws / 'data' / 'eval'}")


def test_test_over_earlier_results_needs_overwrite(ws: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["test", "--ckpt", ws / "model.ckpt", "--data", ws / "data", "--out", ws / "eval", "--no-report"]
    assert main([str(a) for a in args]) == 0
    capsys.readouterr()
    assert "--overwrite" in _refused(capsys, ws, args, f"{ws / 'eval'}")
    assert main([str(a) for a in [*args, "--overwrite", "--threshold", "0.9"]]) == 0
    assert '"threshold": 0.9' in (ws / "eval" / "metrics.json").read_text()


def test_test_threshold_out_of_range(ws: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["test", "--ckpt", ws / "model.ckpt", "--out", ws / "eval", "--threshold", "-0.1"]
    _refused(capsys, ws, args, "--threshold")
    assert not (ws / "eval").exists()


# --------------------------------------------------------------------------------------------- eval-masks
def test_eval_masks_out_inside_the_predictions(ws: Path, capsys: pytest.CaptureFixture) -> None:
    labels = ws / "data" / "label"
    args = ["eval-masks", "--pred", labels, "--gt", labels, "--out", labels / "metrics.json"]
    assert "lies inside" in _refused(capsys, ws, args, f"{labels / 'metrics.json'}")


def test_eval_masks_existing_json_needs_overwrite(ws: Path, capsys: pytest.CaptureFixture) -> None:
    labels = ws / "data" / "label"
    (ws / "m.json").write_text("{}")
    args = ["eval-masks", "--pred", labels, "--gt", labels, "--out", ws / "m.json"]
    assert "--overwrite" in _refused(capsys, ws, args, f"{ws / 'm.json'}")
    assert main([str(a) for a in [*args, "--overwrite"]]) == 0
    assert '"f1": 1.0' in (ws / "m.json").read_text()


def test_eval_masks_mismatched_stems(ws: Path, capsys: pytest.CaptureFixture) -> None:
    pred = ws / "pred"
    shutil.copytree(ws / "data" / "label", pred)
    (pred / "synth_00001.png").rename(pred / "synth_0001.png")
    args = ["eval-masks", "--pred", pred, "--gt", ws / "data" / "label", "--out", ws / "m.json"]
    line = _refused(capsys, ws, args, f"{pred / 'synth_0001.png'}")
    assert "no ground truth" in line and not (ws / "m.json").exists()


# --------------------------------------------------------------------------------------------- generate
def test_generate_into_an_existing_data_set(ws: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["generate", "--generator", ws / "gen", "--masks", ws / "data" / "label", "--out", ws / "data",
            "--n", 2]
    _refused(capsys, ws, args, f"{ws / 'data'}")


def test_generate_into_the_masks_folder(ws: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["generate", "--generator", ws / "gen", "--masks", ws / "data" / "label", "--out",
            ws / "data" / "label" / "ca", "--n", 2]
    assert "lies inside the input" in _refused(capsys, ws, args, f"{ws / 'data' / 'label' / 'ca'}")


def test_generate_over_a_finished_set_needs_overwrite(ws: Path, capsys: pytest.CaptureFixture) -> None:
    (ws / "ca_set" / "A").mkdir(parents=True)
    (ws / "ca_set" / "generation.yaml").write_text("n: 5\n")
    args = ["generate", "--generator", ws / "gen", "--masks", ws / "data" / "label", "--out", ws / "ca_set"]
    assert "--overwrite" in _refused(capsys, ws, args, f"{ws / 'ca_set'}")


# --------------------------------------------------------------------------------------------- file vs folder
def test_predict_folder_output_over_an_existing_file_even_with_overwrite(ws: Path, capsys: pytest.CaptureFixture
                                                                         ) -> None:
    (ws / "results").write_text("a file the user keeps")
    line = _refused(capsys, ws, _predict(ws, ws / "results", "--overwrite"), f"{ws / 'results'}")
    assert "is a file" in line


def test_eval_masks_json_over_an_existing_folder_even_with_overwrite(ws: Path, capsys: pytest.CaptureFixture
                                                                    ) -> None:
    (ws / "m.json").mkdir()
    labels = ws / "data" / "label"
    args = ["eval-masks", "--pred", labels, "--gt", labels, "--out", ws / "m.json", "--overwrite"]
    assert "is a folder" in _refused(capsys, ws, args, f"{ws / 'm.json'}")
