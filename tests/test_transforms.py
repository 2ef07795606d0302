"""Joint augmentations: alignment of dates and labels, fill values, presets, config errors, seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from changekit.data.transforms import PRESETS, build_transforms
from changekit.errors import ConfigError

H, W = 48, 40


def _sample(h: int = H, w: int = W) -> dict:
    """Channels 0/1 hold each pixel's row/column, channel 2 marks real pixels; labels derive from them."""
    rows, cols = np.indices((h, w))
    a = np.stack([rows, cols, np.full_like(rows, 100)], -1).astype(np.uint8)
    b = a.copy()
    b[..., 2] = 150
    return {"image_a": a, "image_b": b, "mask": _mask_of(rows, cols), "sem_a": (rows % 5).astype(np.uint8),
            "sem_b": (cols % 6).astype(np.uint8), "stem": "s1", "tags_a": ["x"], "tags_b": ["y"]}


def _mask_of(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    return ((rows // 4 + cols // 4) % 2).astype(np.uint8)


def _check_aligned(out: dict) -> np.ndarray:
    """Every label must match the coordinates its pixel came from; returns the valid-pixel map."""
    a, b = out["image_a"].astype(int), out["image_b"].astype(int)
    valid = a[..., 2] > 0
    assert np.array_equal(a[..., :2], b[..., :2])
    assert np.array_equal(valid, b[..., 2] > 0)
    rows, cols = a[..., 0], a[..., 1]
    assert np.array_equal(out["mask"][valid], _mask_of(rows, cols)[valid])
    sem_a, sem_b = (rows % 5, cols % 6)
    if (a[..., 2][valid] == 150).all():  # swap_dates swapped the dates (and their semantic maps)
        sem_a, sem_b = sem_b, sem_a
    assert np.array_equal(out["sem_a"][valid], sem_a[valid])
    assert np.array_equal(out["sem_b"][valid], sem_b[valid])
    return valid


@pytest.mark.parametrize("spec, check", [
    ([{"name": "hflip", "p": 1}], lambda o: o["image_a"][0, 0, 1] == W - 1),
    ([{"name": "vflip", "p": 1}], lambda o: o["image_a"][0, 0, 0] == H - 1),
    ([{"name": "rot90", "p": 1, "factors": [1]}], lambda o: o["image_a"].shape[:2] == (W, H)),
    ([{"name": "random_crop", "size": 24}], lambda o: o["mask"].shape == (24, 24)),
    ([{"name": "center_crop", "size": [20, 16]}], lambda o: o["image_a"][0, 0, 0] == (H - 20) // 2),
    ([{"name": "resize", "size": 96, "interpolation": "nearest"}], lambda o: o["sem_b"].shape == (96, 96)),
    (["hflip", "vflip", "rot90", {"name": "random_crop", "size": 30}, "swap_dates"], lambda o: True),
])
def test_geometric_ops_keep_dates_and_labels_aligned(spec: list, check) -> None:
    t = build_transforms(spec, seed=0)
    for _ in range(4):
        out = t(_sample())
        assert _check_aligned(out).all()
        assert check(out)
        assert out["stem"] == "s1" and out["mask"].dtype == np.uint8 and out["mask"].flags.c_contiguous


@pytest.mark.parametrize("expand", [False, True])
def test_rotate_fills_change_and_semantic_labels_with_their_ignore_values(expand: bool) -> None:
    t = build_transforms([{"name": "rotate", "limit": [30, 30], "p": 1, "interpolation": "nearest",
                           "mask_fill": 255, "sem_fill": 9, "expand": expand}], seed=0)
    out = t(_sample())
    assert out["image_a"].shape == (H, W, 3)  # expand shrinks back to the input size
    valid = _check_aligned(out)
    assert 0.05 * H * W < (~valid).sum() < 0.6 * H * W
    assert (out["mask"][~valid] == 255).all()
    assert (out["sem_a"][~valid] == 9).all() and (out["sem_b"][~valid] == 9).all()
    assert not (out["mask"][valid] == 255).any()
    # expand keeps the whole rotated input (each source corner survives, up to resampling); without it the
    # corners are cut off
    src = out["image_a"][..., :2][valid].astype(int)
    gaps = [np.abs(src - corner).max(1).min() for corner in ((0, 0), (0, W - 1), (H - 1, 0), (H - 1, W - 1))]
    assert (max(gaps) <= 2) == expand and min(gaps) > (-1 if expand else 4)


def test_rotate_sem_fill_defaults_to_ignore_index_and_random_crop_pads_with_fill() -> None:
    t = build_transforms([{"name": "random_crop", "size": 64}], ignore_index=7, seed=0)
    out = t(_sample(32, 32))
    valid = _check_aligned(out)
    assert out["mask"].shape == (64, 64) and valid.sum() == 32 * 32
    assert (out["mask"][~valid] == 255).all() and (out["sem_a"][~valid] == 7).all()


def test_swap_dates_swaps_dates_and_keeps_the_change_mask() -> None:
    s = _sample()
    out = build_transforms([{"name": "swap_dates", "p": 1.0}])(s)
    assert np.array_equal(out["image_a"], s["image_b"]) and np.array_equal(out["image_b"], s["image_a"])
    assert np.array_equal(out["sem_a"], s["sem_b"]) and np.array_equal(out["sem_b"], s["sem_a"])
    assert out["tags_a"] == ["y"] and np.array_equal(out["mask"], s["mask"])
    out0 = build_transforms([{"name": "swap_dates", "p": 0.0}])(s)
    assert np.array_equal(out0["image_a"], s["image_a"])


@pytest.mark.parametrize("per_date", [True, False])
def test_photometric_leaves_labels_and_treats_dates_independently_when_per_date(per_date: bool) -> None:
    rng = np.random.default_rng(0)
    img = rng.integers(30, 220, (H, W, 3), dtype=np.uint8)
    s = {**_sample(), "image_a": img, "image_b": img.copy()}
    t = build_transforms([{"name": "photometric", "p": 1, "brightness": 0.4, "contrast": 0.4,
                           "saturation": 0.4, "hue": 0.1, "per_date": per_date}], seed=1)
    out = t(s)
    for key in ("mask", "sem_a", "sem_b"):
        assert np.array_equal(out[key], s[key])
    assert not np.array_equal(out["image_a"], img) and not np.array_equal(out["image_b"], img)
    assert np.array_equal(out["image_a"], out["image_b"]) != per_date


def test_photometric_rejects_multispectral_with_a_config_error() -> None:
    s = {**_sample(), "image_a": np.zeros((H, W, 4), np.uint8), "image_b": np.zeros((H, W, 4), np.uint8)}
    with pytest.raises(ConfigError, match="brightness_contrast"):
        build_transforms([{"name": "photometric", "p": 1}])(s)
    out = build_transforms([{"name": "brightness_contrast", "p": 1}, "hflip"])(s)
    assert out["image_a"].shape == (H, W, 4)


def test_clearscd_preset_builds_and_returns_512() -> None:
    assert [d["name"] for d in PRESETS["clearscd"]] == ["hflip", "vflip", "rot90", "rotate", "resize"]
    t = build_transforms("clearscd", seed=3)
    for _ in range(6):
        out = t(_sample(256, 256))
        assert out["image_a"].shape == (512, 512, 3) and out["mask"].shape == (512, 512)
        assert set(np.unique(out["mask"])) <= {0, 1, 255}
        assert set(np.unique(out["sem_a"])) <= {0, 1, 2, 3, 4, 9}


def test_presets_none_and_none_spec_build_nothing() -> None:
    assert build_transforms(None) is None and build_transforms("none") is None
    assert build_transforms("flips") is not None and build_transforms("standard") is not None


@pytest.mark.parametrize("spec, match", [
    ([{"name": "hlfip"}], "did you mean 'hflip'"),
    ([{"name": "rotate", "limt": 20}], "unknown parameter 'limt'.*did you mean 'limit'"),
    ("clearsdc", "unknown preset.*did you mean 'clearscd'"),
    ([{"name": "random_crop"}], "missing required parameter 'size'"),
    ([{"name": "resize", "size": -3}], "size"),
    ([{"name": "hflip", "p": 2}], r"transforms\[0\] \(hflip\): invalid parameters"),
    ([{"name": "rotate", "interpolation": "bilinaer"}], "did you mean 'bilinear'"),
    ([{"p": 0.5}], "'name'"),
])
def test_config_errors_name_the_problem(spec, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_transforms(spec)


def test_seeding_follows_numpy_global_state_and_explicit_seed() -> None:
    spec = [{"name": "rotate", "limit": 90, "p": 1}, {"name": "random_crop", "size": 20}]
    outs = []
    for _ in range(2):
        np.random.seed(123)
        t = build_transforms(spec)
        outs.append([t(_sample())["image_a"] for _ in range(3)])
    assert all(np.array_equal(x, y) for x, y in zip(*outs))
    assert not np.array_equal(outs[0][0], outs[0][1])  # the stream advances between calls
    t1, t2 = build_transforms(spec, seed=5), build_transforms(spec, seed=5)
    first = t1(_sample())["image_a"]
    assert np.array_equal(first, t2(_sample())["image_a"])
    assert not np.array_equal(first, t1(_sample())["image_a"])
    t1.reseed(5)  # restarts the stream
    assert np.array_equal(first, t1(_sample())["image_a"])


class _Aug(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.t = build_transforms([{"name": "rotate", "limit": 180, "p": 1}])

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> np.ndarray:
        return self.t(_sample(16, 16))["image_a"]


def test_dataloader_workers_differ_and_are_reproducible() -> None:
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        loader = torch.utils.data.DataLoader(_Aug(), batch_size=1, num_workers=2,
                                             multiprocessing_context="fork")
        runs.append([x[0].numpy() for x in loader])
    assert all(np.array_equal(x, y) for x, y in zip(*runs))
    assert not np.array_equal(runs[0][0], runs[0][1])  # first item of worker 0 vs first item of worker 1


@pytest.mark.parametrize("bands", [1, 6])
def test_band_count_survives_geometric_ops(bands: int) -> None:
    s = _sample()
    s["image_a"] = np.ascontiguousarray(np.repeat(s["image_a"][..., :1], bands, -1))
    s["image_b"] = s["image_a"].copy()
    out = build_transforms([{"name": "hflip", "p": 1}, {"name": "rot90", "p": 1, "factors": [3]}])(s)
    assert out["image_a"].shape == (W, H, bands)
    assert np.array_equal(out["image_a"], np.rot90(s["image_a"][:, ::-1], 3))
    assert np.array_equal(out["mask"], np.rot90(s["mask"][:, ::-1], 3))
    out = build_transforms([{"name": "rotate", "p": 1, "expand": True}])(s)
    assert out["image_b"].shape == (H, W, bands)


@pytest.mark.parametrize("name", ["color_jitter", "brightness_contrast", "gaussian_noise", "blur"])
def test_other_image_only_ops_change_images_but_not_labels(name: str) -> None:
    img = np.random.default_rng(5).integers(30, 220, (H, W, 3), dtype=np.uint8)
    s = {**_sample(), "image_a": img, "image_b": img.copy()}
    out = build_transforms([{"name": name, "p": 1}], seed=2)(s)
    assert all(np.array_equal(out[k], s[k]) for k in ("mask", "sem_a", "sem_b"))
    assert not np.array_equal(out["image_a"], img) and not np.array_equal(out["image_a"], out["image_b"])


def test_swap_dates_exchanges_time_with_its_probability() -> None:
    """open-cd's ExchangeTime(prob=0.5): about half of the samples come out with the dates (and maps) swapped."""
    t = build_transforms([{"name": "swap_dates", "p": 0.5}], seed=3)
    swapped = [bool(t(_sample())["image_a"][0, 0, 2] == 150) for _ in range(400)]
    assert 160 < sum(swapped) < 240
    out = next(o for o in (t(_sample()) for _ in range(20)) if o["image_a"][0, 0, 2] == 150)
    assert np.array_equal(out["sem_a"], _sample()["sem_b"]) and np.array_equal(out["mask"], _sample()["mask"])


def _d4_images(img: np.ndarray) -> list[np.ndarray]:
    rots = [np.rot90(img, k) for k in range(4)]
    return rots + [np.flip(r, axis=1) for r in rots]


def test_rot_flip_is_open_cds_random_rot_flip() -> None:
    """rotate (p 0.5), else with p 0.5 one of the square's 8 symmetries (quarter turn then flip), else nothing."""
    t = build_transforms([{"name": "rot_flip", "degree": [10, 20], "interpolation": "nearest", "mask_fill": 255,
                           "sem_fill": 9}], seed=0)
    src = _sample(40, 40)
    counts = {"rotated": 0, "d4": 0, "same": 0}
    for _ in range(600):
        out = t(src)
        valid = _check_aligned(out)
        if not valid.all():  # rotated by 10-20 degrees: corners filled with the ignore values
            counts["rotated"] += 1
            assert (out["mask"][~valid] == 255).all() and (out["sem_a"][~valid] == 9).all()
        elif np.array_equal(out["image_a"], src["image_a"]):
            counts["same"] += 1
        else:
            assert any(np.array_equal(out["image_a"], d) for d in _d4_images(src["image_a"]))
            counts["d4"] += 1
    # expected shares: 0.5 rotated, 0.25 * 7/8 another symmetry, 0.25 + 0.25/8 unchanged
    assert 250 < counts["rotated"] < 350 and 90 < counts["d4"] < 175 and 120 < counts["same"] < 220, counts
    never = build_transforms([{"name": "rot_flip", "rotate_p": 0, "flip_p": 0}], seed=0)
    assert np.array_equal(never(src)["image_a"], src["image_a"])
    always = build_transforms([{"name": "rot_flip", "rotate_p": 1, "degree": [15, 15], "interpolation": "nearest"}],
                              seed=0)
    assert not _check_aligned(always(src)).all()
    with pytest.raises(ConfigError, match="rotate_p"):
        build_transforms([{"name": "rot_flip", "rotate_p": 2}])
