"""Evaluation and outputs that can be trusted (issue 11, section 7).

Tiled test sets count every source pixel once; semantic ``test`` reports SeK/Fscd/mIoU and ``predict``'s
semantic layout is what ``eval-masks --task semantic`` scores (the same figures as ``test``); ``--threshold``;
``predict --out FILE.png``; extras beside the mask folder; the from-to table's wording; ``generate`` never
reports success for pairs without change. The model is pointwise (``tests/pointwise_ckpt.py``), so whole-image,
tiled and sliding-window inference see the same probabilities and only counting can differ.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from cli_capture import run_main as _run
from PIL import Image
from pointwise_ckpt import pointwise_checkpoint

from changekit.data.synthetic import CLASS_NAMES, synthesize
from changekit.data.tiling import owned_extents, tile_folder
from changekit.engine.evaluate import test as run_test


@pytest.fixture(scope="module")
def binary_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiled")
    synthesize(root / "whole", n=3, size=100, seed=3)
    tile_folder(root / "whole", root / "tiles", size=40)  # starts 0, 40, 60: the edge tiles overlap by 20 px
    pointwise_checkpoint(root / "model.ckpt", root / "whole")
    return root


@pytest.fixture(scope="module")
def semantic_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sem")
    synthesize(root / "data", n=3, size=48, seed=4, semantic=True)
    pointwise_checkpoint(root / "model.ckpt", root / "data", num_classes=len(CLASS_NAMES),
                         classes=str(root / "data" / "classes.yaml"))
    return root


# ------------------------------------------------------------------------------------------ tiled sets
def test_owned_extents_cover_each_pixel_once() -> None:
    for length, size, stride in ((100, 40, 40), (1000, 256, 256), (100, 40, 30), (30, 40, 40), (100, 20, 30)):
        from changekit.data.tiling import tile_positions

        starts = tile_positions(length, size, stride)
        counts = np.zeros(length, int)
        for s, e in zip(starts, owned_extents(starts, length, size)):
            counts[s:s + e] += 1
        covered = np.zeros(length, bool)
        for s in starts:
            covered[s:s + size] = True
        assert (counts[covered] == 1).all() and (counts[~covered] == 0).all(), (length, size, stride)


def test_tiled_and_whole_image_test_give_the_same_confusion_matrix(binary_set: Path, tmp_path: Path) -> None:
    whole = run_test(binary_set / "model.ckpt", tmp_path / "whole", data=binary_set / "whole", report=False)
    tiled = run_test(binary_set / "model.ckpt", tmp_path / "tiled", data=binary_set / "tiles", report=False)
    assert np.sum(whole["confusion"]) == 3 * 100 * 100
    assert tiled["num_pairs"] == 27  # 9 tiles of 40 x 40 per image: 43,200 tile pixels for 30,000 real ones
    assert tiled["confusion"] == whole["confusion"]
    assert tiled["f1"] == whole["f1"] and tiled["tiled"]["counted_pixels"] == 30000
    assert tiled["tiled"]["source_images"] == 3 and "tiled" not in whole
    saved = json.loads((tmp_path / "tiled" / "metrics.json").read_text())
    assert saved["confusion"] == whole["confusion"] and saved["threshold"] == 0.5


# ------------------------------------------------------------------------------------------ semantic
def test_semantic_test_predict_and_eval_masks_agree(semantic_set: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    data, ckpt = semantic_set / "data", semantic_set / "model.ckpt"
    rc, out, err = _run(capsys, "test", "--ckpt", ckpt, "--data", data, "--out", tmp_path / "test",
                        "--threshold", 0.45)
    assert rc == 0, err
    assert "SeK=" in out and "Fscd=" in out and "mIoU=" in out and "threshold 0.45" in out
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    assert metrics["threshold"] == 0.45
    sem = metrics["semantic"]
    html = (tmp_path / "test" / "report.html").read_text()
    assert "SeK" in html and "Fscd" in html and "mIoU" in html
    assert "marks as changed" in html and "unchanged pixels." not in html  # the from-to table says what it counts

    pred = tmp_path / "pred"
    rc, out, err = _run(capsys, "predict", "--ckpt", ckpt, "--a", data / "im1", "--b", data / "im2", "--out", pred,
                        "--threshold", 0.45)
    assert rc == 0, err
    assert sorted(p.name for p in pred.iterdir()) == ["change", "label1", "label2"]
    im = Image.open(pred / "label1" / "synth_00000.png")
    assert im.mode == "P" and im.size == (48, 48)

    rc, out, err = _run(capsys, "eval-masks", "--pred", pred, "--gt", data, "--task", "semantic",
                        "--num-classes", len(CLASS_NAMES), "--out", tmp_path / "scd.json")
    assert rc == 0, err
    scored = json.loads((tmp_path / "scd.json").read_text())
    for key in ("sek", "fscd", "miou_scd", "score", "bcd_f1", "seg_miou", "clearscd_sek", "miou_sc", "miou_nc"):
        assert scored[key] == pytest.approx(sem[key], abs=1e-12), key
    assert 0 < sem["num_pixels"] == scored["num_pixels"]
    rc, out, err = _run(capsys, "eval-masks", "--pred", pred / "change", "--gt", data / "label", "--out",
                        tmp_path / "bcd.json")
    assert rc == 0, err
    assert json.loads((tmp_path / "bcd.json").read_text())["confusion"] == metrics["confusion"]


# ------------------------------------------------------------------------------------------ threshold
def test_threshold_is_used_and_recorded(binary_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    ckpt, data = binary_set / "model.ckpt", binary_set / "whole"
    never = run_test(ckpt, tmp_path / "t1", data=data, report=False, threshold=1.0)
    assert never["threshold"] == 1.0 and np.asarray(never["confusion"])[:, 1].sum() == 0
    always = run_test(ckpt, tmp_path / "t0", data=data, report=False, threshold=0.0)
    assert np.asarray(always["confusion"])[:, 0].sum() == 0
    rc, _, err = _run(capsys, "predict", "--ckpt", ckpt, "--a", data / "A", "--b", data / "B", "--out",
                      tmp_path / "p0", "--threshold", 0.0)
    assert rc == 0, err
    assert (np.asarray(Image.open(tmp_path / "p0" / "synth_00000.png")) == 255).all()
    rc, _, err = _run(capsys, "test", "--ckpt", ckpt, "--data", data, "--out", tmp_path / "bad", "--threshold", 1.5)
    assert rc == 2 and err.strip() == "error: --threshold: must be within [0, 1], got 1.5"
    assert not (tmp_path / "bad").exists()


# ------------------------------------------------------------------------------------------ predict layout
def test_predict_out_file_and_extras_beside_the_masks(binary_set: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    ckpt, data = binary_set / "model.ckpt", binary_set / "whole"
    a, b = data / "A" / "synth_00001.png", data / "B" / "synth_00001.png"
    rc, out, err = _run(capsys, "predict", "--ckpt", ckpt, "--a", a, "--b", b, "--out", tmp_path / "one.png",
                        "--prob", "--overlay")
    assert rc == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.png", "one_overlay.png", "one_prob.png"]
    assert set(np.unique(np.asarray(Image.open(tmp_path / "one.png"))).tolist()) <= {0, 255}
    rc, out, err = _run(capsys, "predict", "--ckpt", ckpt, "--a", a, "--b", b, "--out", tmp_path / "tif" / "m.tif")
    assert rc == 0, err
    assert [p.name for p in (tmp_path / "tif").iterdir()] == ["m.tif"]

    pred = tmp_path / "folder" / "masks"
    rc, out, err = _run(capsys, "predict", "--ckpt", ckpt, "--a", data / "A", "--b", data / "B", "--out", pred,
                        "--prob", "--overlay")
    assert rc == 0, err
    assert sorted(p.name for p in pred.parent.iterdir()) == ["masks", "masks_overlay", "masks_prob"]
    assert f"prob: {pred.parent / 'masks_prob'}" in out
    for folder in ("masks", "masks_overlay", "masks_prob"):
        assert sorted(p.name for p in (pred.parent / folder).iterdir()) == [f"synth_0000{i}.png" for i in range(3)]
    rc, out, err = _run(capsys, "eval-masks", "--pred", pred, "--gt", data / "label")
    assert rc == 0, err  # the mask folder holds masks only


def test_overlay_on_geotiff_input_says_it_is_not_drawn(binary_set: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from changekit.data.io import read_image, write_geotiff

    for d in ("A", "B"):
        write_geotiff(tmp_path / d / "scene.tif", read_image(binary_set / "whole" / d / "synth_00000.png"))
    rc, out, err = _run(capsys, "predict", "--ckpt", binary_set / "model.ckpt", "--a", tmp_path / "A", "--b",
                        tmp_path / "B", "--out", tmp_path / "pred", "--overlay")
    assert rc == 0, err
    notes = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "--overlay" in r.getMessage()]
    assert len(notes) == 1 and "not drawn for GeoTIFF inputs" in notes[0] and "\n" not in notes[0]
    assert [p.name for p in (tmp_path / "pred").iterdir()] == ["scene_change.tif"]
    assert not (tmp_path / "pred_overlay").exists()


# ------------------------------------------------------------------------------------------ report wording
def test_transition_table_says_what_it_counts() -> None:
    from changekit.report.tables import headline_cards, transition_table

    html = transition_table(np.array([[5, 2], [0, 3]]), ["a", "b"], None, None)
    assert "Marked changed: <b>10</b>" in html and "off-diagonal): <b>2</b>" in html
    assert "pixels predicted unchanged are not" in html and "unchanged pixels." not in html
    cards = headline_cards({"f1": 0.5, "iou": 0.3, "semantic/sek": 0.1, "semantic/fscd": 0.2,
                            "semantic/miou_scd": 0.4})
    assert cards.index("SeK") < cards.index("Fscd") < cards.index("mIoU") < cards.index("F1")


# ------------------------------------------------------------------------------------------ generate
@pytest.fixture()
def tiny_generator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    """An untrained tiny generator and no diffusion (synthesis returns grey images): only the edits matter."""
    from changekit.generation import writer
    from changekit.generation.model import Generator, resolve_settings

    synthesize(tmp_path / "scenes", n=3, size=32, seed=5, semantic=True)
    classes = yaml.safe_load((tmp_path / "scenes" / "classes.yaml").read_text())
    gen = Generator(resolve_settings("tiny", None, ["size=32"]), classes)
    monkeypatch.setattr(writer.Generator, "load", staticmethod(lambda path: gen))
    grey = np.full((32, 32, 3), 128, np.uint8)
    monkeypatch.setattr(writer, "synthesize_pair", lambda *a, **k: (grey, grey))
    return tmp_path / "scenes" / "label1"


def test_generate_retries_pairs_without_change_and_reports_the_rest(
        tiny_generator: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from changekit.generation import writer

    real = writer.simulate_change
    calls: list[int] = []

    def fail_some(m1: np.ndarray, rng: np.random.Generator, *args: object, **kwargs: object) -> tuple:
        calls.append(1)
        m2, records, info = real(m1, rng, *args, **kwargs)
        if len(calls) in (1, 2) or len(calls) >= 5:  # pair 0 changes on its third draw, pair 1 on its first
            return m1.copy(), [], {**info, "changed_fraction": 0.0}
        return m2, records, info

    monkeypatch.setattr(writer, "simulate_change", fail_some)
    rc, out, err = _run(capsys, "generate", "--generator", tmp_path / "gen", "--masks", tiny_generator, "--n", 3,
                        "--out", tmp_path / "set")
    assert rc == 0, err
    records = [json.loads((tmp_path / "set" / "records" / f"ca_0000{i}.json").read_text()) for i in range(3)]
    assert [r["seeds"]["attempt"] for r in records] == [2, 0, 3]  # pair 2: 1 + 3 retries, all failed
    assert err.strip() == (f"warning: 1 of 3 pairs have no change (their edits all failed); their stems are "
                           f"listed in {tmp_path / 'set' / 'generation.yaml'}")
    assert "(2 with change)" in out
    meta = yaml.safe_load((tmp_path / "set" / "generation.yaml").read_text())
    assert meta["pairs_without_change"] == 1 and meta["stems_without_change"] == ["ca_00002"]
    assert not np.asarray(Image.open(tmp_path / "set" / "label" / "ca_00002.png")).any()


def test_generate_without_any_change_fails_and_writes_nothing(tiny_generator: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    edits = tmp_path / "edits.yaml"
    edits.write_text("transitions: {}\nretries: 1\n")  # no transition allowed: no edit can change anything
    rc, out, err = _run(capsys, "generate", "--generator", tmp_path / "gen", "--masks", tiny_generator, "--n", 20,
                        "--edits", edits, "--out", tmp_path / "set")
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "no change in any of the first 8 pair(s) after 2 attempt(s)" in err and str(tiny_generator) in err
    assert not (tmp_path / "set").exists() and not list(tmp_path.glob(".set*"))
