"""The data commands and eval-masks through the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_capture import run_main as _run

from changekit.data.io import read_image


def test_synth_check_lists(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, _ = _run(capsys, "data", "synth", "--out", tmp_path / "s", "--n", 3, "--size", 48, "--seed", 5)
    assert rc == 0 and len(list((tmp_path / "s" / "label").glob("*.png"))) == 3
    rc, out, _ = _run(capsys, "data", "check", tmp_path / "s")
    assert rc == 0 and "3" in out and "48" in out
    rc, _, _ = _run(capsys, "data", "lists", tmp_path / "s", "--out", tmp_path / "list.txt")
    lines = (tmp_path / "list.txt").read_text().split("\n")
    assert rc == 0 and len([ln for ln in lines if ln.strip()]) == 3 and len(lines[0].split()) == 3
    (tmp_path / "s" / "B" / "synth_00001.png").unlink()
    rc, out, _ = _run(capsys, "data", "check", tmp_path / "s")
    assert rc == 1 and "synth_00001" in out


def test_tile_and_merge_round_trip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _run(capsys, "data", "synth", "--out", tmp_path / "s", "--n", 2, "--size", 100, "--seed", 1)
    rc, _, _ = _run(capsys, "data", "tile", tmp_path / "s", "--size", 64, "--stride", 48, "--out", tmp_path / "t")
    assert rc == 0 and len(list((tmp_path / "t" / "label").glob("*.png"))) == 2 * 2 * 2  # starts 0 and edge 36
    rc, _, _ = _run(capsys, "data", "merge", tmp_path / "t" / "label", "--tiles-json", tmp_path / "t" / "tiles.json",
                    "--out", tmp_path / "m")
    assert rc == 0
    for src in sorted((tmp_path / "s" / "label").glob("*.png")):
        np.testing.assert_array_equal(read_image(tmp_path / "m" / src.name), read_image(src))


def test_eval_masks_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _run(capsys, "data", "synth", "--out", tmp_path / "s", "--n", 2, "--size", 32, "--seed", 3)
    gt = tmp_path / "s" / "label"
    rc, out, _ = _run(capsys, "eval-masks", "--pred", gt, "--gt", gt, "--out", tmp_path / "m.json")
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert rc == 0 and metrics["f1"] == 1.0 and metrics["oa"] == 1.0
    assert set(metrics) >= {"precision", "recall", "f1", "iou", "oa", "kappa", "confusion"}
    shutil.copytree(gt, tmp_path / "pred")
    (tmp_path / "pred" / "synth_00000.png").unlink()
    rc, _, err = _run(capsys, "eval-masks", "--pred", tmp_path / "pred", "--gt", gt)
    assert rc == 2 and "synth_00000" in err


def test_checkpoint_of_another_model(trained_fc_ef: Path, synth_root: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture, tiny_config) -> None:  # noqa: ANN001
    cfg = {**tiny_config(synth_root), "init_from": str(trained_fc_ef)}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc, _, err = _run(capsys, "train", tmp_path / "c.yaml", "--out", tmp_path / "r")
    assert rc == 2 and "holds model 'fc_ef'" in err and "fc_siam_diff" in err


def test_corrupt_image_is_named(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                tiny_config) -> None:  # noqa: ANN001
    bad = tmp_path / "bad"
    shutil.copytree(synth_root / "val", bad)
    (bad / "A" / "synth_00002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cfg = {**tiny_config(synth_root)}
    cfg["data"] = {**cfg["data"], "train": str(bad)}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc, _, err = _run(capsys, "train", tmp_path / "c.yaml", "--out", tmp_path / "r")
    assert rc == 2 and "synth_00002.png" in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def trained_fc_ef(synth_root: Path, tmp_path_factory: pytest.TempPathFactory, tiny_config) -> Path:  # noqa: ANN001
    from changekit.engine.train import train

    cfg = tiny_config(synth_root, max_steps=1)
    cfg["model"] = {"name": "fc_ef"}
    return Path(train(cfg, tmp_path_factory.mktemp("fcef") / "run")["checkpoint"])
