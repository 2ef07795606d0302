"""Tests of the synthetic bi-temporal data generator (changekit.data.synthetic)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from changekit.data import synthetic
from changekit.data.io import read_image, read_palette_indices
from changekit.data.synthetic import (
    CLASS_NAMES,
    PALETTE,
    Sensor,
    acquire,
    make_large_scene,
    make_scene,
    pair_rng,
    synthesize,
    synthesize_geotiff_pair,
)
from changekit.data.synthetic_scene import BUILDING, SOIL, VEGETATION, WATER
from changekit.errors import ConfigError, OutputError

SIZE = 64


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _best_f1(scores: np.ndarray, label: np.ndarray) -> float:
    """Best F1 of ``scores > t`` over thresholds (an oracle threshold: the most a fixed cut can do)."""
    best = 0.0
    for t in np.quantile(scores, np.linspace(0.5, 0.995, 100)):
        pred = scores > t
        best = max(best, 2 * np.count_nonzero(pred & label) / (np.count_nonzero(pred) + np.count_nonzero(label)))
    return best


def test_class_table() -> None:
    assert CLASS_NAMES[:5] == ("bare soil", "building", "road", "vegetation", "water")
    assert PALETTE.shape == (len(CLASS_NAMES), 3) and PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in PALETTE.tolist()}) == len(CLASS_NAMES)  # colours tell classes apart


def test_make_scene_contract() -> None:
    s = make_scene(96, pair_rng(0, 0))
    assert set(s) == {"image_a", "image_b", "label", "classes_a", "classes_b"}
    for key in ("image_a", "image_b"):
        assert s[key].shape == (96, 96, 3) and s[key].dtype == np.uint8
    for key in ("label", "classes_a", "classes_b"):
        assert s[key].shape == (96, 96) and s[key].dtype == np.uint8
    assert set(np.unique(s["label"]).tolist()) <= {0, 255}
    np.testing.assert_array_equal(s["label"], np.where(s["classes_a"] != s["classes_b"], 255, 0))
    assert s["classes_a"].max() < len(CLASS_NAMES) and s["classes_b"].max() < len(CLASS_NAMES)


def test_same_rng_same_scene_other_seed_differs() -> None:
    a, b, c = (make_scene(SIZE, pair_rng(seed, 3)) for seed in (5, 5, 6))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["image_a"], c["image_a"])


@pytest.mark.parametrize("size", [64, 128])
def test_change_ratio_and_label_identity(size: int) -> None:
    ratios = []
    for i in range(12):
        s = make_scene(size, pair_rng(11, i))
        np.testing.assert_array_equal(s["label"] == 255, s["classes_a"] != s["classes_b"])
        ratios.append(np.count_nonzero(s["label"]) / size**2)
    assert min(ratios) >= 0.02 and max(ratios) <= 0.30, ratios
    assert np.std(ratios) > 0.01  # the target fraction is drawn per pair, not fixed


def test_change_fraction_is_respected() -> None:
    none = make_scene(SIZE, pair_rng(2, 0), change_fraction=(0.0, 0.0))
    assert not none["label"].any()
    np.testing.assert_array_equal(none["classes_a"], none["classes_b"])
    assert not np.array_equal(none["image_a"], none["image_b"])  # nuisances remain without change
    few = np.mean([np.count_nonzero(make_scene(96, pair_rng(2, i), change_fraction=(0.03, 0.05))["label"])
                   for i in range(6)]) / 96**2
    many = np.mean([np.count_nonzero(make_scene(96, pair_rng(2, i), change_fraction=(0.25, 0.3))["label"])
                    for i in range(6)]) / 96**2
    assert 0.02 < few < 0.08 and 0.15 < many < 0.35 and many > 3 * few


def test_scene_content_is_varied_and_plausible() -> None:
    counts = np.zeros(len(CLASS_NAMES))
    transitions: set[tuple[int, int]] = set()
    colour = {k: [] for k in (SOIL, VEGETATION, WATER)}
    for i in range(10):
        s = make_scene(128, pair_rng(4, i))
        counts += np.bincount(s["classes_a"].ravel(), minlength=len(CLASS_NAMES))
        m = s["label"] > 0
        transitions |= set(zip(s["classes_a"][m].tolist(), s["classes_b"][m].tolist(), strict=True))
        for k in colour:
            if (s["classes_a"] == k).any():
                colour[k].append(s["image_a"][s["classes_a"] == k].astype(float).mean(0))
    assert (counts > 0).all(), counts  # every class occurs
    assert {(SOIL, BUILDING), (BUILDING, SOIL), (VEGETATION, SOIL)} <= transitions, transitions
    veg, soil, water = (np.mean(colour[k], 0) for k in (VEGETATION, SOIL, WATER))
    assert veg[1] > veg[0] and veg[1] > veg[2]  # vegetation is green
    assert soil[0] > soil[2] and soil.mean() > veg.mean()  # soil is brighter and warmer
    assert water.mean() < veg.mean()  # water is dark


def test_nuisance_defeats_thresholded_difference_but_change_is_visible() -> None:
    """|A - B| alone must not solve the task (oracle F1 < 0.8), yet changed pixels differ more."""
    diffs, labels = [], []
    for i in range(8):
        s = make_scene(96, pair_rng(21, i))
        a, b = (s[k].astype(np.float32) for k in ("image_a", "image_b"))
        a = (a - a.mean((0, 1))) / a.std((0, 1))  # even with per-image standardisation
        b = (b - b.mean((0, 1))) / b.std((0, 1))
        diffs.append(np.abs(a - b).mean(2))
        labels.append(s["label"] > 0)
    d, lab = np.concatenate([x.ravel() for x in diffs]), np.concatenate([x.ravel() for x in labels])
    assert _best_f1(d, lab) < 0.8
    assert d[lab].mean() > 1.5 * d[~lab].mean()
    assert np.median(d[~lab]) > 0.1  # unchanged ground does change appearance


def test_misregistration_moves_date_b_content() -> None:
    neutral = Sensor(white=np.ones(3, np.float32), gain=1.0, gamma=1.0, bias=0.0, haze=0.0, noise=0.0)
    img = np.zeros((40, 40, 3), np.float32)
    img[10:20, 15:25] = 1.0
    rng = np.random.default_rng(0)
    moved = acquire(img, neutral, rng, (2.0, -1.0)).astype(bool)[:, :, 0]
    expect = np.zeros((40, 40), bool)
    expect[12:22, 14:24] = True
    np.testing.assert_array_equal(moved, expect)
    half = acquire(img, neutral, rng, (0.5, 0.0))[:, :, 0]
    assert half[10, 20] == 128 and half[20, 20] == 128 and half[15, 20] == 255  # sub-pixel: blended edges


def test_synthesize_binary_layout(tmp_path: Path) -> None:
    out = synthesize(tmp_path / "bin", n=3, size=SIZE, seed=1)
    assert sorted(p.name for p in out.iterdir()) == ["A", "B", "label", "synthetic.yaml"]
    stems = [f"synth_{i:05d}.png" for i in range(3)]
    for d in ("A", "B", "label"):
        assert sorted(p.name for p in (out / d).iterdir()) == stems
    with Image.open(out / "A" / stems[1]) as im:
        assert im.mode == "RGB" and im.size == (SIZE, SIZE)
    with Image.open(out / "label" / stems[1]) as im:
        assert im.mode == "L"
    label = read_image(out / "label" / stems[1])[:, :, 0]
    ref = make_scene(SIZE, pair_rng(1, 1))
    np.testing.assert_array_equal(label, ref["label"])
    np.testing.assert_array_equal(read_image(out / "B" / stems[1]), ref["image_b"])
    meta = yaml.safe_load((out / "synthetic.yaml").read_text())
    assert meta["n"] == 3 and meta["seed"] == 1 and meta["size"] == SIZE


def test_synthesize_is_deterministic_and_pairs_do_not_depend_on_n(tmp_path: Path) -> None:
    one = _files(synthesize(tmp_path / "a", n=2, size=SIZE, seed=3))
    two = _files(synthesize(tmp_path / "b", n=2, size=SIZE, seed=3))
    assert one == two
    other = _files(synthesize(tmp_path / "c", n=2, size=SIZE, seed=4))
    assert other["A/synth_00000.png"] != one["A/synth_00000.png"]
    longer = _files(synthesize(tmp_path / "d", n=4, size=SIZE, seed=3))
    for d in ("A", "B", "label"):
        for i in range(2):
            assert longer[f"{d}/synth_{i:05d}.png"] == one[f"{d}/synth_{i:05d}.png"]


def test_synthesize_semantic_layout(tmp_path: Path) -> None:
    out = synthesize(tmp_path / "sem", n=2, size=SIZE, seed=2, semantic=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "classes.yaml", "im1", "im2", "label", "label1", "label2", "synthetic.yaml"]
    ref = make_scene(SIZE, pair_rng(2, 1))
    stem = "synth_00001.png"
    with Image.open(out / "label1" / stem) as im:
        assert im.mode == "P"
        assert np.array_equal(np.asarray(im.getpalette()[:3 * len(PALETTE)]).reshape(-1, 3), PALETTE)
    c1, c2 = read_palette_indices(out / "label1" / stem), read_palette_indices(out / "label2" / stem)
    np.testing.assert_array_equal(c1, ref["classes_a"])
    np.testing.assert_array_equal(c2, ref["classes_b"])
    np.testing.assert_array_equal(read_image(out / "label" / stem)[:, :, 0], np.where(c1 != c2, 255, 0))
    np.testing.assert_array_equal(read_image(out / "im1" / stem), ref["image_a"])  # same pixels as binary
    table = yaml.safe_load((out / "classes.yaml").read_text())
    assert table["names"] == list(CLASS_NAMES) and table["ignore_index"] == 255
    assert table["colors"] == PALETTE.tolist()


def test_interrupted_run_leaves_nothing_half_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    good = synthesize(tmp_path / "data", n=2, size=SIZE, seed=0)
    before = _files(good)
    real = synthetic.make_scene
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "make_scene", flaky)
    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path / "data", n=5, size=SIZE, seed=9, overwrite=True)
    assert _files(tmp_path / "data") == before  # the earlier complete set survives
    calls["n"] = 0
    with pytest.raises(KeyboardInterrupt):
        synthesize(tmp_path / "fresh", n=5, size=SIZE, seed=9)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no partial folder, no temp leftovers


def test_rerun_leaves_exactly_one_consistent_set(tmp_path: Path) -> None:
    out = synthesize(tmp_path / "d", n=3, size=SIZE, seed=0)
    (out / "A" / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="--overwrite"):  # replacing a set deletes its pairs: only when asked
        synthesize(out, n=1, size=SIZE, seed=7)
    assert len(list((out / "label").iterdir())) == 3
    synthesize(out, n=1, size=SIZE, seed=7, overwrite=True)
    assert sorted(p.name for p in (out / "label").iterdir()) == ["synth_00000.png"]
    assert sorted(p.name for p in (out / "A").iterdir()) == ["notes.txt", "synth_00000.png"]
    expected = make_scene(SIZE, pair_rng(7, 0))["image_b"]
    np.testing.assert_array_equal(read_image(out / "B" / "synth_00000.png"), expected)
    synthesize(out, n=2, size=SIZE, seed=7, semantic=True, overwrite=True)  # binary -> semantic: binary-only goes
    assert sorted(p.name for p in out.iterdir()) == [
        "A", "classes.yaml", "im1", "im2", "label", "label1", "label2", "synthetic.yaml"]
    assert sorted(p.name for p in (out / "A").iterdir()) == ["notes.txt"]
    assert not (out / "B").exists()
    synthesize(out, n=1, size=SIZE, seed=7, overwrite=True)  # and back: the semantic folders and class table go
    assert sorted(p.name for p in out.iterdir()) == ["A", "B", "label", "synthetic.yaml"]


def test_synthesize_refuses_foreign_folder_and_bad_arguments(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "precious.txt").write_text("user data")
    with pytest.raises(OutputError, match="overwrite"):
        synthesize(mine, n=1, size=SIZE)
    assert (mine / "precious.txt").is_file()
    synthesize(mine, n=1, size=SIZE, overwrite=True)
    assert (mine / "precious.txt").read_text() == "user data"  # written into, nothing of the user's deleted
    assert (mine / "A" / "synth_00000.png").is_file()
    with pytest.raises(OutputError, match="overwrite"):  # also a folder it made itself
        synthesize(mine, n=1, size=SIZE)
    with pytest.raises(ConfigError, match="size"):
        make_scene(16, pair_rng(0, 0))
    with pytest.raises(ConfigError, match="change_fraction"):
        synthesize(tmp_path / "x", n=1, size=SIZE, change_fraction=(0.3, 0.1))
    with pytest.raises(ConfigError, match="n:"):
        synthesize(tmp_path / "x", n=0, size=SIZE)
    with pytest.raises(ConfigError, match="seed"):
        synthesize(tmp_path / "x", n=1, size=SIZE, seed=-1)
    with pytest.raises(ConfigError, match="prefix"):
        synthesize(tmp_path / "x", n=1, size=SIZE, prefix="../evil")
    with pytest.raises(ConfigError, match="max_shift"):
        make_scene(SIZE, pair_rng(0, 0), max_shift=20)
    assert not (tmp_path / "x").exists()


def test_geotiff_pair(tmp_path: Path) -> None:
    a_path, b_path, label_path = synthesize_geotiff_pair(tmp_path / "geo", size=SIZE, seed=5)
    a, geo_a = read_image(a_path, with_geo=True)
    b, geo_b = read_image(b_path, with_geo=True)
    label, geo_l = read_image(label_path, with_geo=True)
    assert a.shape == b.shape == (SIZE, SIZE, 3) and label.shape == (SIZE, SIZE, 1)
    assert a.dtype == np.uint8 and set(np.unique(label).tolist()) <= {0, 255}
    assert geo_a.crs.to_epsg() == 32633 and geo_a.transform == geo_b.transform == geo_l.transform
    assert geo_a.transform.a == 0.5 and geo_a.transform.c == 500_000.0
    np.testing.assert_array_equal(a, make_scene(SIZE, pair_rng(5, 0))["image_a"])


def test_large_scene() -> None:
    big = make_large_scene(size=512, seed=1)
    assert big["image_a"].shape == (512, 512, 3)
    np.testing.assert_array_equal(big["label"] == 255, big["classes_a"] != big["classes_b"])
    assert 0.02 <= np.count_nonzero(big["label"]) / 512**2 <= 0.30
    assert (np.bincount(big["classes_a"].ravel(), minlength=5) > 0).sum() >= 4
    np.testing.assert_array_equal(make_large_scene(size=512, seed=1)["image_b"], big["image_b"])
