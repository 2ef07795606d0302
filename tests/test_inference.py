"""Sliding-window inference and strip-wise scene prediction on GeoTIFF/PNG pairs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS
from torch import nn

from changekit.data.io import GeoInfo, read_image, read_palette_indices, write_geotiff, write_png
from changekit.data.normalize import IMAGENET_MEAN, IMAGENET_STD
from changekit.engine.options import PredictOptions
from changekit.errors import ConfigError, SizeMismatchError
from changekit.inference.scene import SceneOutputs, predict_scene
from changekit.inference.sliding import (
    TilePredictor,
    blend_window,
    plan_grid,
    reflect_indices,
    sliding_window_predict,
)
from changekit.models.base import ChangeModel
from changekit.models.outputs import ChangeOutput

GEO = GeoInfo(crs=CRS.from_epsg(32633), transform=Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0))

P32 = PredictOptions(tile=32, overlap=8)


class Pointwise(ChangeModel):
    """1x1 convolutions: translation-equivariant, so any tiling must reproduce the whole-image output."""

    def __init__(self, in_channels: int = 3, num_classes: int = 0, divisor: int = 1, two_channel: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.task = "semantic" if num_classes else "binary"  # type: ignore[misc]
        self.input_divisor = divisor  # type: ignore[misc]
        self.change_head = nn.Conv2d(2 * in_channels, 2 if two_channel else 1, 1)
        self.sem_head = nn.Conv2d(in_channels, num_classes, 1) if num_classes else None

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:
        self.check_input(a, b)
        change = self.change_head(torch.cat([a, b], 1))
        if "bias" in extras:
            change = change + extras["bias"].view(-1, 1, 1, 1)
        if self.sem_head is None:
            return ChangeOutput(change)
        return ChangeOutput(change, self.sem_head(a), self.sem_head(b))


class Local3x3(ChangeModel):
    """A 3x3 zero-padded convolution: its output depends on where the tile borders are."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(6, 1, 3, padding=1)

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:
        return ChangeOutput(self.conv(torch.cat([a, b], 1)))


class TileMean(ChangeModel):
    """Predicts one logit per tile (the mean of ``a - b``): a strongly tiling-dependent model."""

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:
        m = (a - b).mean(dim=(1, 2, 3), keepdim=True)
        return ChangeOutput(m.expand(-1, 1, *a.shape[-2:]))


def _pair(n: int, c: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, h, w, generator=g), torch.randn(n, c, h, w, generator=g)


# ----------------------------------------------------------------------------------------- sliding window


@pytest.mark.parametrize("blend", ["gaussian", "mean"])
def test_sliding_equals_whole_image_for_pointwise_model(blend: str) -> None:
    model = Pointwise()
    a, b = _pair(2, 3, 70, 45)  # 70 and 45 are not multiples of the stride
    out = sliding_window_predict(model, a, b, tile=32, overlap=8, batch_size=3, blend=blend)
    assert set(out) == {"change"}
    assert out["change"].shape == (2, 70, 45) and out["change"].dtype == torch.float32
    torch.testing.assert_close(out["change"], model.predict(a, b), atol=1e-5, rtol=1e-5)


def test_sliding_semantic_single_image_and_two_channel_logits() -> None:
    model = Pointwise(num_classes=4, two_channel=True)
    a, b = _pair(1, 3, 40, 50, seed=3)
    out = sliding_window_predict(model, a[0], b[0], tile=16, stride=10, batch_size=5)
    assert out["change"].shape == (40, 50)
    assert out["sem_a"].shape == out["sem_b"].shape == (4, 40, 50)
    with torch.no_grad():
        whole = model(a, b)
    torch.testing.assert_close(out["change"], whole.change_prob()[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["sem_a"], whole.sem_a.softmax(1)[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out["sem_b"], whole.sem_b.softmax(1)[0], atol=1e-5, rtol=1e-5)


def test_tiny_image_is_padded_to_one_tile_and_cropped_back() -> None:
    model = Pointwise()
    a, b = _pair(1, 3, 5, 7)
    out = sliding_window_predict(model, a, b, tile=32, overlap=8)
    assert out["change"].shape == (1, 5, 7)
    torch.testing.assert_close(out["change"], model.predict(a, b), atol=1e-5, rtol=1e-5)
    grid = plan_grid(5, 7, 32, 24)
    assert grid.ys == grid.xs == (0,) and grid.padded_height == grid.padded_width == 32


def test_input_divisor_is_honoured() -> None:
    model = Pointwise(divisor=16)  # check_input raises on sizes that are not multiples of 16
    a, b = _pair(1, 3, 37, 53)
    with pytest.raises(ValueError, match="not divisible by 16"):
        model(a, b)
    assert TilePredictor(model, tile=50, stride=40).tile == 64
    out = sliding_window_predict(model, a, b, tile=50, overlap=10)
    same_weights = Pointwise(divisor=1)  # same seed, no divisor check
    torch.testing.assert_close(out["change"], same_weights.predict(a, b), atol=1e-5, rtol=1e-5)


def test_per_image_extras_are_indexed_per_tile() -> None:
    model = Pointwise()
    a, b = _pair(3, 3, 40, 40)
    bias = torch.tensor([-3.0, 0.0, 3.0])
    out = sliding_window_predict(model, a, b, tile=16, overlap=4, batch_size=4, extras={"bias": bias})
    with torch.no_grad():
        expected = model(a, b, bias=bias).change_prob()
    torch.testing.assert_close(out["change"], expected, atol=1e-5, rtol=1e-5)


def _reference_blend(a: np.ndarray, b: np.ndarray, tile: int, stride: int, blend: str) -> np.ndarray:
    """Naive per-tile reference (numpy reflect padding, explicit loops over tiles) for the TileMean model."""
    h, w = a.shape[-2:]
    grid = plan_grid(h, w, tile, stride)
    pad = ((0, 0), (grid.pad_top, grid.pad_bottom), (grid.pad_left, grid.pad_right))
    ap, bp = np.pad(a, pad, mode="reflect"), np.pad(b, pad, mode="reflect")
    win = blend_window(tile, blend).numpy().astype(np.float64)
    num = np.zeros(ap.shape[-2:])
    den = np.zeros(ap.shape[-2:])
    for y in grid.ys:
        for x in grid.xs:
            m = (ap[:, y : y + tile, x : x + tile] - bp[:, y : y + tile, x : x + tile]).mean()
            num[y : y + tile, x : x + tile] += win / (1 + np.exp(-m))
            den[y : y + tile, x : x + tile] += win
    return (num / den)[grid.pad_top : grid.pad_top + h, grid.pad_left : grid.pad_left + w]


@pytest.mark.parametrize("blend", ["gaussian", "mean"])
def test_blending_matches_naive_reference(blend: str) -> None:
    a, b = _pair(1, 2, 45, 38, seed=5)
    out = sliding_window_predict(TileMean(), a, b, tile=16, overlap=6, blend=blend, batch_size=7)
    expected = _reference_blend(a[0].double().numpy(), b[0].double().numpy(), 16, 10, blend)
    np.testing.assert_allclose(out["change"][0].numpy(), expected, atol=1e-5)
    assert out["change"].std() > 0.01  # the tiling-dependent model really produces varying output


def test_gaussian_and_mean_blends_differ_for_tiling_dependent_model() -> None:
    a, b = _pair(1, 2, 40, 40, seed=6)
    g = sliding_window_predict(TileMean(), a, b, tile=16, overlap=8, blend="gaussian")["change"]
    m = sliding_window_predict(TileMean(), a, b, tile=16, overlap=8, blend="mean")["change"]
    assert (g - m).abs().max() > 1e-3


@pytest.mark.parametrize("length,before,after", [(5, 2, 3), (4, 9, 11), (1, 3, 2), (10, 0, 0)])
def test_reflect_indices_match_numpy(length: int, before: int, after: int) -> None:
    expected = np.pad(np.arange(length), (before, after), mode="reflect" if length > 1 else "edge")
    np.testing.assert_array_equal(reflect_indices(length, before, after).numpy(), expected)


def test_invalid_settings_raise_config_errors() -> None:
    a, b = _pair(1, 3, 20, 20)
    with pytest.raises(ConfigError, match="overlap"):
        sliding_window_predict(Pointwise(), a, b, tile=16, overlap=16)
    with pytest.raises(ConfigError, match="blend"):
        sliding_window_predict(Pointwise(), a, b, tile=16, overlap=4, blend="max")
    with pytest.raises(ValueError, match="equal shape"):
        sliding_window_predict(Pointwise(), a, b[:, :, :10])


def test_model_mode_is_restored() -> None:
    model = Pointwise().train()
    a, b = _pair(1, 3, 20, 20)
    sliding_window_predict(model, a, b, tile=16, overlap=4)
    assert model.training


# ------------------------------------------------------------------------------------------------- scenes


def _write_pair(tmp_path: Any, h: int = 150, w: int = 130, geo_b: GeoInfo = GEO, suffix: str = ".tif",
                hw_b: tuple[int, int] | None = None) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (*(hw_b or (h, w)), 3), dtype=np.uint8)
    pa, pb = tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"
    if suffix == ".tif":
        write_geotiff(pa, a, GEO)
        write_geotiff(pb, b, geo_b)
    else:
        write_png(pa, a)
        write_png(pb, b)
    return pa, pb, a, b


def _normalise(img: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)
    return (x - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)


def test_predict_scene_geotiff_keeps_georeferencing_and_equals_whole_image(tmp_path: Any) -> None:
    pa, pb, a, b = _write_pair(tmp_path)
    model = Pointwise()
    out = predict_scene(model, pa, pb, SceneOutputs(tmp_path / "out" / "mask.tif", tmp_path / "out" / "prob.tif"),
                        PredictOptions(tile=64, overlap=16))
    assert out == tmp_path / "out" / "mask.tif"
    with rasterio.open(out) as ds:
        assert ds.crs == GEO.crs and ds.transform == GEO.transform
        assert ds.dtypes[0] == "uint8" and (ds.height, ds.width) == (150, 130)
        mask = ds.read(1)
    with rasterio.open(tmp_path / "out" / "prob.tif") as ds:
        assert ds.crs == GEO.crs and ds.dtypes[0] == "float32"
        prob = ds.read(1)
    expected = model.predict(_normalise(a)[None], _normalise(b)[None])[0].numpy()
    np.testing.assert_allclose(prob, expected, atol=1e-5)
    np.testing.assert_array_equal(mask, np.where(prob > 0.5, 255, 0))
    assert 0 < (mask == 255).mean() < 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mask.tif", "prob.tif"]  # no temp files


def test_strip_processing_equals_in_memory_sliding_window(tmp_path: Any) -> None:
    pa, pb, a, b = _write_pair(tmp_path, h=131, w=97)
    model = Local3x3()
    predict_scene(model, pa, pb, SceneOutputs(tmp_path / "m.tif", tmp_path / "p.tif"),
                  PredictOptions(tile=32, overlap=12, batch_size=3))
    prob = read_image(tmp_path / "p.tif")[:, :, 0]
    expected = sliding_window_predict(model, _normalise(a), _normalise(b), tile=32, overlap=12)["change"]
    np.testing.assert_allclose(prob, expected.numpy(), atol=1e-5)
    whole = model.predict(_normalise(a)[None], _normalise(b)[None])[0].numpy()
    assert np.abs(prob - whole).max() > 1e-4  # tiling matters for this model, so the check above has teeth


def test_predict_scene_calls_tile_extras_with_every_tile(tmp_path: Any) -> None:
    """Per-tile forward inputs (ChangeCLIP's tags per tile) see each strip's tiles of both dates, in order."""
    pa, pb, a, b = _write_pair(tmp_path, h=64, w=96)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    predict_scene(Pointwise(), pa, pb, tmp_path / "m.tif", PredictOptions(tile=32, overlap=0, batch_size=2),
                  tile_extras=lambda ta, tb: seen.append((ta, tb)) or {})
    tiles_a = torch.cat([ta for ta, _ in seen])
    tiles_b = torch.cat([tb for _, tb in seen])
    assert tiles_a.shape == (6, 3, 32, 32) and len(seen) == 4  # two strips of three tiles, batches of two
    for i, (y, x) in enumerate((y, x) for y in (0, 32) for x in (0, 32, 64)):
        torch.testing.assert_close(tiles_a[i], _normalise(a[y:y + 32, x:x + 32]))
        torch.testing.assert_close(tiles_b[i], _normalise(b[y:y + 32, x:x + 32]))


def test_predict_scene_semantic_class_maps(tmp_path: Any) -> None:
    pa, pb, a, b = _write_pair(tmp_path, h=70, w=60)
    model = Pointwise(num_classes=5)
    palette = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 9, 9]], np.uint8)
    predict_scene(model, pa, pb, SceneOutputs(tmp_path / "m.tif", sem_a=tmp_path / "sa.tif", sem_b=tmp_path / "sb.png"),
                  PredictOptions(tile=32, overlap=8), palette=palette)
    with rasterio.open(tmp_path / "sa.tif") as ds:  # a colour table for GIS tools
        assert ds.colormap(1)[2] == (0, 255, 0, 255)
    from PIL import Image

    assert Image.open(tmp_path / "sb.png").mode == "P"
    with torch.no_grad():
        whole = model(_normalise(a)[None], _normalise(b)[None])
    sa, geo = read_image(tmp_path / "sa.tif", with_geo=True)
    assert geo.crs == GEO.crs
    np.testing.assert_array_equal(sa[:, :, 0], whole.sem_a.argmax(1)[0].numpy())
    np.testing.assert_array_equal(read_palette_indices(tmp_path / "sb.png"), whole.sem_b.argmax(1)[0].numpy())


def test_crs_mismatch_names_both_files_and_crss(tmp_path: Any) -> None:
    other = GeoInfo(crs=CRS.from_epsg(4326), transform=GEO.transform)
    pa, pb, _, _ = _write_pair(tmp_path, h=40, w=40, geo_b=other)
    with pytest.raises(SizeMismatchError) as err:
        predict_scene(Pointwise(), pa, pb, tmp_path / "m.tif", P32)
    msg = str(err.value)
    for part in (str(pa), str(pb), "EPSG:32633", "EPSG:4326", "put B on A's grid with --align"):
        assert part in msg
    assert not (tmp_path / "m.tif").exists()


def test_size_and_transform_mismatch(tmp_path: Any) -> None:
    pa, pb, _, _ = _write_pair(tmp_path, h=40, w=40, hw_b=(40, 41))
    with pytest.raises(SizeMismatchError, match="40 x 41 pixels \(H x W\).*--align"):
        predict_scene(Pointwise(), pa, pb, tmp_path / "m.tif", P32)
    shifted = GeoInfo(crs=GEO.crs, transform=Affine(10.0, 0.0, 500005.0, 0.0, -10.0, 5000000.0))
    pa, pb, _, _ = _write_pair(tmp_path, h=40, w=40, geo_b=shifted)
    with pytest.raises(SizeMismatchError, match="different pixel grids"):
        predict_scene(Pointwise(), pa, pb, tmp_path / "m.tif", P32)


def test_predict_scene_png_pair(tmp_path: Any) -> None:
    pa, pb, a, b = _write_pair(tmp_path, h=45, w=70, suffix=".png")
    model = Pointwise()
    out = predict_scene(model, pa, pb, tmp_path / "mask.png", PredictOptions(tile=32, overlap=8, threshold=0.4))
    mask = read_image(out)[:, :, 0]
    expected = model.predict(_normalise(a)[None], _normalise(b)[None])[0].numpy()
    confident = np.abs(expected - 0.4) > 1e-4  # ignore pixels within float noise of the threshold
    np.testing.assert_array_equal(mask[confident], np.where(expected > 0.4, 255, 0)[confident])
    assert set(np.unique(mask)) == {0, 255}
    with pytest.raises(ConfigError, match="mask: output"):
        predict_scene(model, pa, pb, tmp_path / "mask.jpg", P32)
    with pytest.raises(ConfigError, match="input images"):
        predict_scene(model, pa, pb, pa, P32)


def test_predict_scene_passes_extras(tmp_path: Any) -> None:
    """Per-pair forward inputs (ChangeCLIP's tags) reach every tile of a scene."""
    pa, pb, a, b = _write_pair(tmp_path, h=40, w=50)
    model = Pointwise()
    plain = predict_scene(model, pa, pb, SceneOutputs(tmp_path / "p0.tif", tmp_path / "q0.tif"), P32)
    shifted = predict_scene(model, pa, pb, SceneOutputs(tmp_path / "p1.tif", tmp_path / "q1.tif"), P32,
                            extras={"bias": torch.tensor([3.0])})
    assert plain.is_file() and shifted.is_file()
    p0, p1 = read_image(tmp_path / "q0.tif")[:, :, 0], read_image(tmp_path / "q1.tif")[:, :, 0]
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    np.testing.assert_allclose(logit(p1.astype(np.float64)) - logit(p0.astype(np.float64)), 3.0, atol=1e-3)


def test_band_count_must_match_model(tmp_path: Any) -> None:
    pa, pb, _, _ = _write_pair(tmp_path, h=40, w=40)
    with pytest.raises(ConfigError, match="expects 4 input channels"):
        predict_scene(Pointwise(in_channels=4), pa, pb, tmp_path / "m.tif", P32)
