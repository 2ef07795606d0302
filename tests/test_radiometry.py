"""Radiometry units: per-band statistics, radiometric modes, the normalisation spec and its resolution."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from changekit.config import resolve
from changekit.data.band_stats import BandStats, image_stats
from changekit.data.norm_config import parse_bands, parse_normalize, resolve_normalisation
from changekit.data.normalize import Normalisation
from changekit.data.radiometric import image_maps, scene_maps
from changekit.errors import ConfigError

RNG = np.random.default_rng(0)


def _image(dtype: type = np.uint8, bands: int = 3, size: int = 48, high: int = 200) -> np.ndarray:
    return RNG.integers(0, high, (bands, size, size)).astype(dtype)


# ------------------------------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_stats_match_numpy_and_exclude_nodata(dtype: type) -> None:
    img = _image(dtype, high=3000 if dtype != np.uint8 else 250)
    valid = np.ones(img.shape[1:], bool)
    valid[:10] = False
    img[:, :10] = 60000 if dtype == np.uint16 else 0  # nodata rows with values that would shift every figure
    stats = image_stats(img, valid)
    kept = img[:, valid].astype(np.float64)
    np.testing.assert_allclose(stats.mean, kept.mean(1), rtol=1e-12)
    np.testing.assert_allclose(stats.std, kept.std(1), rtol=1e-9)
    assert stats.count == valid.sum()
    np.testing.assert_array_equal(stats.min, kept.min(1))
    np.testing.assert_array_equal(stats.max, kept.max(1))
    got = stats.percentiles((1, 50, 99))
    want = np.percentile(kept, (1, 50, 99), axis=1).T
    # integers: each value spread over [v - 0.5, v + 0.5] instead of numpy's interpolation between order
    # statistics; the two differ by at most about the gap between neighbouring values
    span = float(kept.max() - kept.min())
    assert np.abs(got - want).max() <= (max(1.0, 0.002 * span) if dtype != np.float32 else 0.0) + 1e-9


def test_stats_streamed_in_strips_equal_one_pass_and_nan_is_nodata() -> None:
    img = RNG.normal(100, 20, (2, 64, 64)).astype(np.float32)
    img[1, 5, 5] = np.nan  # a non-finite value in one band drops the pixel in every band
    whole = image_stats(img)
    strips = BandStats(2, np.float32, expected_pixels=64 * 64)
    for r in range(0, 64, 7):
        strips.update(img[:, r : r + 7])
    assert whole.count == strips.count == 64 * 64 - 1
    np.testing.assert_allclose(strips.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(strips.std, whole.std, rtol=1e-9)
    np.testing.assert_allclose(strips.percentiles((50,)), whole.percentiles((50,)))


def test_float_quantiles_stay_bounded_by_a_strided_sample() -> None:
    stats = BandStats(1, np.float32, max_samples=1000)
    for _ in range(10):
        stats.update(RNG.uniform(0, 1, (1, 100, 100)).astype(np.float32))
    assert stats.count == 100_000 and stats._kept <= 2000
    assert abs(stats.percentiles((50,))[0, 0] - 0.5) < 0.05


# ------------------------------------------------------------------------------------------ radiometric modes
@pytest.mark.parametrize("mode", ["match_meanstd", "match_histogram"])
def test_matching_is_the_identity_when_b_equals_a(mode: str) -> None:
    a = _image()
    map_a, map_b = image_maps(mode, a, a.copy())
    assert map_a is None
    np.testing.assert_allclose(map_b.apply(a), a, atol=1e-3)


@pytest.mark.parametrize(("mode", "tol"), [("match_meanstd", 1e-3), ("match_histogram", 0.01)])
def test_b_equal_2a_plus_10_is_matched_back(mode: str, tol: float) -> None:
    a = _image(np.uint16, high=3000)
    b = (2 * a + 10).astype(np.uint16)
    _, map_b = image_maps(mode, a, b)
    np.testing.assert_allclose(map_b.apply(b), a, atol=tol * 3000)


def test_matching_excludes_nodata_of_either_date() -> None:
    a = _image(np.uint16, high=3000)
    b = (2 * a + 10).astype(np.uint16)
    b[:, :8] = 0  # nodata border of B only: must not shift B's statistics
    valid = np.ones(a.shape[1:], bool)
    valid[:8] = False
    _, map_b = image_maps("match_meanstd", a, b, valid_b=valid)
    np.testing.assert_allclose(map_b.apply(b)[:, 8:], a[:, 8:], atol=1e-2)


def test_standardize_gives_both_dates_zero_mean_unit_std() -> None:
    a, b = _image(np.uint16, high=3000), _image(np.uint16, high=500)
    map_a, map_b = image_maps("standardize", a, b)
    for img, m in ((a, map_a), (b, map_b)):
        out = m.apply(img).reshape(img.shape[0], -1)
        np.testing.assert_allclose(out.mean(1), 0, atol=1e-4)
        np.testing.assert_allclose(out.std(1), 1, atol=1e-4)
    const = np.full((1, 8, 8), 7, np.uint8)  # a constant band keeps unit scale: no division by zero
    assert np.isfinite(image_maps("standardize", const, const)[0].apply(const)).all()


def test_scene_maps_streamed_equal_whole_image_maps() -> None:
    a = _image(np.uint16, high=3000, size=70)
    b = (a * 3 + 100).astype(np.uint16)
    whole = image_maps("match_histogram", a, b)[1]
    streamed = scene_maps("match_histogram", 70, lambda r0, r1: (a[:, r0:r1], None),
                          lambda r0, r1: (b[:, r0:r1], None), 3, np.dtype(np.uint16), 70, strip_rows=16)[1]
    np.testing.assert_allclose(streamed.apply(b), whole.apply(b), atol=1e-3)


# ---------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(("text", "canonical"), [
    ("auto", "auto"), ("dtype", "dtype"), ("meanstd", "meanstd"), ("scale:10000", "scale:10000"),
    ("scale: 1e4", "scale:10000"), ("percentile", "percentile:1,99"), ("percentile:2,98", "percentile:2,98"),
])
def test_normalize_forms(text: str, canonical: str) -> None:
    assert parse_normalize(text).text() == canonical
    assert resolve({"data": {"normalize": text}})["data"]["normalize"] == canonical


@pytest.mark.parametrize(("key", "value", "match"), [
    ("normalize", "scale:0", "data.normalize: 'scale:0' is not one of"),
    ("normalize", "percentile:99,1", "percentile:<lo>,<hi>"),
    ("normalize", "meanstdd", "did you mean 'meanstd'"),
    ("bands", [0, 1], r"data.bands: \[0, 1\] is not a list of 1-based band indices"),
    ("bands", "4,x", "1-based band indices"),
    ("radiometric", "match_hist", "did you mean 'match_histogram'"),
    ("resolved_normalize", {"mode": "bogus", "mean": [0], "std": [1]}, "data.resolved_normalize: mode 'bogus'"),
])
def test_bad_radiometry_keys_name_key_and_value(key: str, value: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        resolve({"data": {key: value}})


def test_bands_accept_a_list_or_text() -> None:
    assert parse_bands("4, 3,2") == (4, 3, 2) and parse_bands([8]) == (8,) and parse_bands(None) is None
    assert resolve({"data": {"bands": "4,3,2"}})["data"]["bands"] == [4, 3, 2]


# ------------------------------------------------------------------------------------------- resolution
_STATS = [{"band": 1, "mean": 1000.0, "std": 250.0, "min": 0.0, "max": 9000.0,
           "percentiles": {"1": 400.0, "2": 500.0, "98": 2500.0, "99": 3000.0}}]


def _data(**kw: object) -> dict:
    return {"mean": [0.5], "std": [0.25], "bands": None, "normalize": "auto", "radiometric": "none", **kw}


def test_auto_never_divides_uint16_by_65535() -> None:
    assert resolve_normalisation(_data(), np.uint8).to_dict()["scale"] == [255.0]
    assert resolve_normalisation(_data(), np.float32).to_dict()["scale"] == [1.0]
    norm = resolve_normalisation(_data(), np.uint16, _STATS)
    assert norm.mode == "meanstd" and norm.to_dict()["scale"] == [250.0] and norm.to_dict()["offset"] == [1000.0]
    with pytest.raises(ConfigError, match="needs training statistics"):
        resolve_normalisation(_data(), np.uint16)


def test_each_mode_maps_raw_values_as_documented() -> None:
    raw = np.array([[[400, 1000, 3000, 9000]]], np.uint16)
    x = raw[0, 0].astype(np.float64)
    scale = resolve_normalisation(_data(normalize="scale:10000"), np.uint16)
    np.testing.assert_allclose(scale.chw(raw)[0, 0], (x / 10000 - 0.5) / 0.25, rtol=1e-6)
    meanstd = resolve_normalisation(_data(normalize="meanstd"), np.uint16, _STATS)
    np.testing.assert_allclose(meanstd.chw(raw)[0, 0], (x - 1000) / 250, rtol=1e-6)
    pct = resolve_normalisation(_data(normalize="percentile:1,99"), np.uint16, _STATS)
    unit = (np.clip(x, 400, 3000) - 400) / 2600
    np.testing.assert_allclose(pct.chw(raw)[0, 0], (unit - 0.5) / 0.25, rtol=1e-6)
    with pytest.raises(ConfigError, match="has no 5th percentile"):
        resolve_normalisation(_data(normalize="percentile:5,95"), np.uint16, _STATS)
    with pytest.raises(ConfigError, match="cannot be combined with data.radiometric: standardize"):
        resolve_normalisation(_data(normalize="scale:10000", radiometric="standardize"), np.uint16)


def test_spec_round_trips_through_a_dict_and_the_config() -> None:
    norm = resolve_normalisation(_data(normalize="percentile:1,99", bands=[4, 3, 2], radiometric="match_meanstd",
                                       mean=[0.1, 0.2, 0.3], std=[0.2, 0.2, 0.2]), np.uint16, _STATS * 3)
    back = Normalisation.from_dict(norm.to_dict())
    assert back == norm and back.bands == (4, 3, 2) and back.radiometric == "match_meanstd"
    cfg = resolve({"data": {"resolved_normalize": norm.to_dict()}})
    assert Normalisation.from_config(cfg) == norm


def test_nodata_and_non_finite_become_zero_after_normalisation() -> None:
    norm = Normalisation(mean=(0.5,), std=(0.25,), scale=(100.0,), mode="scale")
    raw = np.array([[[10.0, np.nan, 50.0]]], np.float32)
    out = norm.chw(raw, valid=np.array([[True, True, False]]))
    np.testing.assert_allclose(out[0, 0], [(0.1 - 0.5) / 0.25, 0, 0])


def test_radiometric_pair_uses_whole_images_and_spec_scale() -> None:
    norm = Normalisation(mean=(0.0,), std=(1.0,), scale=(255.0,), radiometric="match_meanstd", mode="dtype")
    a = _image()
    b = np.clip(a.astype(np.int32) // 2 + 30, 0, 255).astype(np.uint8)
    ta, tb = norm.pair(a, b)
    assert ta.dtype == tb.dtype == torch.float32
    assert abs(float(ta.mean() - tb.mean())) < 1e-3 and abs(float(ta.std() - tb.std())) < 2e-3


def test_out_of_range_input_is_warned_once_naming_the_file(caplog: pytest.LogCaptureFixture) -> None:
    eight_bit = Normalisation(mean=(0.5,), std=(0.25,), scale=(255.0,), mode="dtype", dtype="uint8")
    assert eight_bit.range_problem(_image(np.uint8, 1)) is None
    uint16 = _image(np.uint16, 1, high=10000)
    with caplog.at_level(logging.WARNING, logger="changekit.data.normalize"):
        assert eight_bit.check_range(uint16, "scene_a.tif")
        assert not eight_bit.check_range(uint16, "scene_a.tif")
    assert len([r for r in caplog.records if "scene_a.tif" in r.getMessage()]) == 1
    assert "far outside the training statistics" in caplog.text
    measured = resolve_normalisation(_data(), np.uint16, _STATS)
    assert measured.range_problem(_image(np.uint16, 1, high=3000) + 400) is None
    assert "band 1" in measured.range_problem(_image(np.uint8, 1, high=255))  # 8-bit given to a reflectance model


def test_legacy_checkpoints_warn_instead_of_silently_scaling_uint16(caplog: pytest.LogCaptureFixture) -> None:
    legacy = Normalisation.from_config(resolve({"data": {"mean": [0.5], "std": [0.25]}}))
    assert legacy.mode == "legacy"
    with caplog.at_level(logging.WARNING, logger="changekit.data.normalize"):
        out = legacy.chw(np.full((1, 2, 2), 65535, np.uint16), "old.tif")
    np.testing.assert_allclose(out, 2.0)
    assert "old.tif: uint16 pixels divided by 65535" in caplog.text


def test_dataset_fits_the_maps_on_whole_images_before_a_crop(tmp_path) -> None:
    """Each crop is standardised with its whole image's statistics (a crop's own would erase its brightness)."""
    from changekit.data.datasets import ChangeDataset
    from changekit.data.io import write_geotiff, write_png
    from changekit.data.transforms import build_transforms

    a = _image(np.uint16, 3, size=64, high=3000)
    a[:, :32] += 2000  # the left half is brighter: a crop's own statistics differ from the image's
    write_geotiff(tmp_path / "A" / "p.tif", np.moveaxis(a, 0, -1))
    write_geotiff(tmp_path / "B" / "p.tif", np.moveaxis((2 * a + 10).astype(np.uint16), 0, -1))
    write_png(tmp_path / "label" / "p.png", np.zeros((64, 64), np.uint8))
    norm = Normalisation(mean=(0.0,), std=(1.0,), scale=(1.0,), offset=(0.0,), mode="standardize",
                         radiometric="standardize")
    whole = (a - a.mean(axis=(1, 2), keepdims=True)) / a.std(axis=(1, 2), keepdims=True)
    windows = np.lib.stride_tricks.sliding_window_view(whole, (24, 24), axis=(1, 2))  # (3, 41, 41, 24, 24)
    crop = build_transforms([{"name": "random_crop", "size": 24}])
    for cache in (False, True):
        ds = ChangeDataset(tmp_path, transform=crop, normalisation=norm, cache=cache)
        for _ in range(3):
            item = ds[0]
            np.testing.assert_allclose(item["image_b"], item["image_a"], atol=1e-3)  # B = 2A + 10 standardised
            got = item["image_a"].numpy()
            err = np.abs(windows - got[:, None, None]).max(axis=(0, 3, 4))
            assert err.min() < 1e-3  # it is a window of the whole image's standardisation
