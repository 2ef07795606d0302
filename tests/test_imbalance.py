"""Imbalance and sparse change: ``auto`` loss weights from the training labels and the change-balanced sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from changekit.cli import main
from changekit.data.datasets import ChangeDataset
from changekit.data.io import write_png
from changekit.data.samplers import ChangeBalancedSampler, ChangeIndex
from changekit.data.transforms import build_transforms
from changekit.errors import ConfigError
from changekit.losses import auto_terms, build_loss, class_frequency_weights, resolve_auto_weights


def test_auto_weights_from_the_change_share() -> None:
    spec = [{"name": "bce", "pos_weight": "auto"}, {"name": "ce", "class_weights": "auto"}, {"name": "dice"}]
    assert auto_terms(spec) == [0, 1]
    build_loss(spec)  # `auto` builds (unweighted) until resolved
    lines = resolve_auto_weights(spec, 0.02)
    assert spec[0]["pos_weight"] == pytest.approx(49.0) and spec[1]["class_weights"] == pytest.approx([0.5102, 25.0])
    assert len(lines) == 2 and "loss[0].pos_weight = 49.0" in lines[0] and auto_terms(spec) == []
    loss = build_loss(spec)
    assert loss.terms[0].pos_weight == pytest.approx(49.0)
    assert loss.terms[1].class_weights.tolist() == pytest.approx([0.5102, 25.0])
    with pytest.raises(ConfigError, match=r"loss\[0\].pos_weight: auto needs both changed and unchanged"):
        resolve_auto_weights([{"name": "bce", "pos_weight": "auto"}], 0.0)
    with pytest.raises(ConfigError, match="computed from the change mask"):
        build_loss([{"name": "ce", "target": "sem_a", "class_weights": "auto"}])


def test_auto_sqrt_weights_are_the_square_root_of_inverse_frequency() -> None:
    spec = [{"name": "bce", "pos_weight": "auto_sqrt"}, {"name": "ce", "class_weights": "auto_sqrt"}]
    assert auto_terms(spec) == [0, 1]
    build_loss(spec)
    lines = resolve_auto_weights(spec, 0.02, source="sampled share")
    assert spec[0]["pos_weight"] == pytest.approx(7.0)  # sqrt(0.98 / 0.02)
    w0, w1 = spec[1]["class_weights"]
    assert w1 / w0 == pytest.approx(7.0, rel=1e-3) and 0.98 * w0 + 0.02 * w1 == pytest.approx(1.0, abs=1e-3)
    assert "auto_sqrt; sampled share 0.0200" in lines[1]
    for share in (0.01, 0.3, 0.7):  # any power keeps the loss's scale: the mean pixel weight is 1
        for power in (0.25, 0.5, 1.0):
            c0, c1 = class_frequency_weights(share, power)
            assert (1 - share) * c0 + share * c1 == pytest.approx(1.0, abs=1e-3)
            assert c1 / c0 == pytest.approx(((1 - share) / share) ** power, rel=1e-3)
    with pytest.raises(ConfigError, match=r"loss\[0\].pos_weight: auto_sqrt needs both changed and unchanged"):
        resolve_auto_weights([{"name": "bce", "pos_weight": "auto_sqrt"}], 1.0)
    with pytest.raises(ConfigError, match="class_weights.*auto or auto_sqrt, got .auto_sqr."):  # a typo is named
        build_loss([{"name": "ce", "class_weights": "auto_sqr"}])


def test_sampled_share_counts_what_the_sampler_draws() -> None:
    index = ChangeIndex(np.array([0, 10, 0, 30]), np.full(4, 100), [np.zeros((0, 2), np.int32)] * 4)
    assert index.share == pytest.approx(0.1)
    assert index.sampled_share(0.0) == pytest.approx(0.1)
    assert index.sampled_share(0.5) == pytest.approx(0.15)  # half the samples from the two images with change
    assert index.sampled_share(1.0) == pytest.approx(0.2)
    empty = ChangeIndex(np.zeros(3, np.int64), np.full(3, 100), [np.zeros((0, 2), np.int32)] * 3)
    assert empty.sampled_share(0.5) == 0.0
    # measured against the sampler itself: the drawn samples' change share matches the formula
    changed = np.array([0, 0, 0, 40, 0, 5] * 100)
    index = ChangeIndex(changed, np.full(600, 100), [np.zeros((1, 2), np.int32)] * 600)
    drawn = [i for i, _ in ChangeBalancedSampler(index, seed=0, change_share=0.6).order(0)]
    assert changed[drawn].sum() / (100 * len(drawn)) == pytest.approx(index.sampled_share(0.6), rel=0.1)


def _sparse_set(root: Path, n: int = 4, size: int = 96) -> Path:
    """Pairs whose only change is one 6x6 square at a different place in each image."""
    rng = np.random.default_rng(0)
    for sub in ("A", "B", "label"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        label = np.zeros((size, size), np.uint8)
        r, c = 10 + 17 * i, 80 - 20 * i
        label[r:r + 6, c:c + 6] = 255
        write_png(root / "A" / f"p{i}.png", a)
        write_png(root / "B" / f"p{i}.png", a)
        write_png(root / "label" / f"p{i}.png", label)
    return root


def test_change_index_counts_the_labels(tmp_path: Path) -> None:
    ds = ChangeDataset(_sparse_set(tmp_path / "d"))
    index = ChangeIndex.of(ds)
    assert index.changed.tolist() == [36] * 4 and index.share == pytest.approx(36 / 96**2)
    assert ChangeIndex.of(ds) is index  # read once per dataset
    for i, pts in enumerate(index.points):
        assert all(ds.change_mask(i)[r, c] == 1 for r, c in pts)


def test_sampler_order_is_fixed_by_seed_and_epoch_and_resumes(tmp_path: Path) -> None:
    index = ChangeIndex(np.array([0, 5, 0, 9] * 50), np.full(200, 100), [np.array([[1, 2]] * max(k, 1), np.int32)
                                                                       for k in [0, 5, 0, 9] * 50])
    sampler = ChangeBalancedSampler(index, seed=3, change_share=0.6)
    first = list(sampler)
    assert first == ChangeBalancedSampler(index, seed=3, change_share=0.6).order(0)
    sampler.set_epoch(1)
    assert list(sampler) != first and len(first) == 200
    hinted = [s for s in first if s[1] is not None]
    assert 0.45 < len(hinted) / 200 < 0.75 and all(i % 2 == 1 for i, _ in hinted)  # only images with change
    sampler.set_epoch(0)
    sampler.resume_at(0, 150)
    assert list(sampler) == first[150:]
    with pytest.raises(ConfigError, match="change_share"):
        ChangeBalancedSampler(index, seed=3, change_share=1.5)


@pytest.mark.parametrize("ops", [[], [{"name": "hflip", "p": 1.0}, {"name": "rot90", "p": 1.0}]])
def test_hinted_crop_holds_the_change(tmp_path: Path, ops: list) -> None:
    crop = [{"name": "random_crop", "size": 24}]
    ds = ChangeDataset(_sparse_set(tmp_path / "d"), transform=build_transforms(ops + crop, seed=0))
    index = ChangeIndex.of(ds)
    hits = uniform = 0
    for k in range(40):
        i = k % 4
        r, c = index.points[i][k % len(index.points[i])]
        item = ds[(i, (int(r), int(c)))]
        assert item["mask"].shape == (24, 24) and "_crop_hint" not in item
        hits += bool((item["mask"] == 1).any())
        uniform += bool((ds[i]["mask"] == 1).any())
    assert hits == 40 and uniform < 20  # a uniform 24-px crop of a 96-px image rarely holds the 6-px square


def test_cli_auto_weight_and_change_balanced_run(tmp_path: Path, synth_root: Path, tiny_config) -> None:  # noqa: ANN001
    cfg = tiny_config(synth_root)
    cfg["loss"] = [{"name": "bce", "pos_weight": "auto"}]
    cfg["data"].update(sampler="change_balanced", change_share=0.5,
                       augment=[{"name": "random_crop", "size": 32}, {"name": "hflip"}])
    cfg["trainer"].update(limit_train_batches=2, limit_val_batches=1)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out)]) == 0
    written = yaml.safe_load((out / "config.yaml").read_text())
    index = ChangeIndex.of(ChangeDataset(synth_root / "train"))
    share = index.sampled_share(0.5)  # the share the loss sees under the sampler, not the labels'
    assert written["loss"][0]["pos_weight"] == pytest.approx((1 - share) / share, rel=1e-3)
    assert written["data"]["sampler"] == "change_balanced"
    ckpt = torch.load(out / "model.ckpt", weights_only=True)
    assert ckpt["config"]["loss"][0]["pos_weight"] == written["loss"][0]["pos_weight"]
