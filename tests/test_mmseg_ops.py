"""mmseg's RandomCrop(cat_max_ratio) and PhotoMetricDistortion (ChangeCLIP's recipe), ported exactly."""

from __future__ import annotations

import numpy as np
import pytest

from changekit.data.mmseg_ops import CatMaxRatioCrop, PhotoMetricDistortion
from changekit.data.transforms import build_transforms
from changekit.errors import ConfigError


def _sample(size: int = 64, block: int = 32) -> dict[str, np.ndarray]:
    mask = np.zeros((size, size), np.uint8)
    mask[:block, :block] = 1  # change only in the top-left quarter
    img = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    return {"image_a": img, "image_b": img[::-1].copy(), "mask": mask}


def _balanced_share(ratio: float, n: int = 200) -> float:
    t = build_transforms([{"name": "random_crop", "size": 32, "cat_max_ratio": ratio}], seed=0)
    assert t is not None
    sample, hits = _sample(), 0
    for _ in range(n):
        out = t(sample)
        share = out["mask"].mean()
        hits += 0 < share and max(share, 1 - share) < 0.75
    return hits / n


def test_cat_max_ratio_redraws_crops_dominated_by_one_class() -> None:
    plain, balanced = _balanced_share(1.0), _balanced_share(0.75)
    assert plain < 0.6 and balanced > 0.9  # about 0.35 of all 32-px crops qualify; 11 draws find one


def test_cat_max_ratio_moves_images_and_labels_together_and_ignores_the_ignore_value() -> None:
    t = build_transforms([{"name": "random_crop", "size": 32, "cat_max_ratio": 0.75}], seed=1)
    assert t is not None
    sample = _sample()
    out = t(sample)
    ys, xs = np.nonzero((sample["image_a"] == out["image_a"][0, 0]).all(-1))
    found = [(y, x) for y, x in zip(ys, xs, strict=True) if y + 32 <= 64 and x + 32 <= 64
             and np.array_equal(sample["image_a"][y:y + 32, x:x + 32], out["image_a"])]
    assert len(found) == 1
    y, x = found[0]
    np.testing.assert_array_equal(out["mask"], sample["mask"][y:y + 32, x:x + 32])
    np.testing.assert_array_equal(out["image_b"], sample["image_b"][y:y + 32, x:x + 32])

    crop = CatMaxRatioCrop(height=4, width=4, cat_max_ratio=0.75, ignore_index=255)
    half = np.array([[0, 0, 1, 1]] * 4, np.uint8)
    assert crop._balanced(half, (0, 0, 4, 4))
    mostly_ignored = np.where(np.arange(16).reshape(4, 4) < 12, 255, half).astype(np.uint8)  # 0, 0, 1, 1 left
    assert crop._balanced(mostly_ignored, (0, 0, 4, 4))
    one_class = np.where(np.arange(16).reshape(4, 4) < 14, 255, 0).astype(np.uint8)
    assert not crop._balanced(one_class, (0, 0, 4, 4))
    with pytest.raises(ConfigError, match="cat_max_ratio"):
        CatMaxRatioCrop(height=4, width=4, cat_max_ratio=0)


def test_photometric_steps_follow_mmseg() -> None:
    op = PhotoMetricDistortion(10, (0.8, 1.2), (0.8, 1.2), 10)
    grey = np.full((2, 2, 3), 100, np.uint8)
    assert (op.apply(grey, beta=-0.5) == 99).all()  # mmseg's convert truncates: 99.5 -> 99
    assert (op.apply(grey, beta=200.0) == 255).all()  # and clips
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    np.testing.assert_array_equal(op.apply(red, hue=60), [[[0, 255, 0]]])  # OpenCV hue units: 60 = 120 degrees
    np.testing.assert_array_equal(op.apply(red, hue=-60), [[[0, 0, 255]]])  # mod 180
    np.testing.assert_array_equal(op.apply(red, saturation=0.0), [[[255, 255, 255]]])
    dark = np.full((1, 1, 3), 200, np.uint8)
    dark[..., 0] = 100
    first = op.apply(dark, contrast_first=True, alpha=1.2, beta=None, saturation=0.5)
    last = op.apply(dark, contrast_first=False, alpha=1.2, beta=None, saturation=0.5)
    assert not np.array_equal(first, last)  # contrast before or after the HSV steps, as mmseg's coin decides
    with pytest.raises(ConfigError, match="8-bit 3-band"):
        op.apply(np.zeros((2, 2, 4), np.uint8))


def test_photometric_draws_have_mmsegs_ranges_and_coin_flips() -> None:
    t = build_transforms([{"name": "photometric_mmseg", "brightness": 10, "contrast": [0.8, 1.2],
                           "saturation": [0.8, 1.2], "hue": 10}], seed=0)
    assert t is not None
    op = t.steps[0].op
    op.set_random_seed(0)
    draws = [op.get_params() for _ in range(4000)]
    for key in ("beta", "alpha", "saturation", "hue"):
        applied = [d[key] for d in draws if d[key] is not None]
        assert 0.45 < len(applied) / len(draws) < 0.55, key
    assert all(-10 <= d["beta"] <= 10 for d in draws if d["beta"] is not None)
    assert all(0.8 <= d["alpha"] <= 1.2 for d in draws if d["alpha"] is not None)
    assert {d["hue"] for d in draws if d["hue"] is not None} == set(range(-10, 10))  # numpy randint: [-10, 10)
    assert 0.45 < np.mean([d["contrast_first"] for d in draws]) < 0.55
    sample = _sample()
    out = t(sample)
    np.testing.assert_array_equal(out["mask"], sample["mask"])
    assert not np.array_equal(out["image_a"], sample["image_a"]) or not np.array_equal(out["image_b"],
                                                                                       sample["image_b"])
