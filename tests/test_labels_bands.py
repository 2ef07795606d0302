"""Label bands and palettes (data.labels), band-count fitting (data.bands) and the training guards (engine.guards)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from changekit.config import resolve
from changekit.data.bands import check_bands, default_normalisation, fit_to_data
from changekit.data.io import write_geotiff, write_png
from changekit.data.labels import LabelPalette, read_label_band
from changekit.engine.guards import check_loss, check_weights
from changekit.errors import ConfigError, LabelValueError, NonFiniteError, SizeMismatchError


def test_read_label_band_equal_bands_alpha_and_colour(tmp_path: Path) -> None:
    grey = np.zeros((8, 8), np.uint8)
    grey[2:5, 2:5] = 255
    write_png(tmp_path / "rgb.png", np.repeat(grey[:, :, None], 3, 2))
    np.testing.assert_array_equal(read_label_band(tmp_path / "rgb.png"), grey)
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 255)])
    rgba[0, 0, 3] = 0  # transparency is not label
    from PIL import Image

    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_label_band(tmp_path / "rgba.png"), grey)
    write_geotiff(tmp_path / "three.tif", np.repeat(grey[:, :, None], 3, 2))
    np.testing.assert_array_equal(read_label_band(tmp_path / "three.tif"), grey)
    blue = np.zeros((8, 8, 3), np.uint8)
    blue[3, 4] = (0, 0, 255)
    write_png(tmp_path / "blue.png", blue)
    with pytest.raises(LabelValueError, match=r"blue\.png: a colour label .*\(0, 0, 255\) at row 3, column 4"):
        read_label_band(tmp_path / "blue.png")
    palette = LabelPalette.parse({"0,0,0": 0, "(0, 0, 255)": 1})
    decoded = read_label_band(tmp_path / "blue.png", palette)
    assert decoded[3, 4] == 1 and decoded.sum() == 1
    blue[0, 0] = (9, 9, 8)
    write_png(tmp_path / "blue.png", blue)
    with pytest.raises(LabelValueError, match=r"\(9, 9, 8\) are not in .*add them to data.label_palette"):
        read_label_band(tmp_path / "blue.png", palette)


@pytest.mark.parametrize(("spec", "match"), [
    ([1, 2], "expected a mapping"), ({"0,0": 1}, "three values"), ({"0,0,300": 1}, "three values"),
    ({"0,0,0": 2}, "use 0 .*1 .*255"), ({"0,0,0": 0, "0, 0, 0": 1}, "share a colour"),
])
def test_palette_errors_name_the_key(spec: object, match: str) -> None:
    with pytest.raises(ConfigError, match=f"data.label_palette: .*{match}"):
        LabelPalette.parse(spec)


def _set(root: Path, bands: int) -> Path:
    for date in ("A", "B"):
        write_geotiff(root / date / "x.tif", np.zeros((8, 8, bands), np.uint16))
    write_png(root / "label" / "x.png", np.zeros((8, 8), np.uint8))
    return root


def test_fit_to_data_fills_what_is_unset_and_refuses_contradictions(tmp_path: Path) -> None:
    data = _set(tmp_path / "d", 4)
    cfg = fit_to_data(resolve({"data": {"train": str(data)}}))
    assert cfg["model"]["in_channels"] == 4 and cfg["data"]["mean"] == [0.5] * 4 and cfg["data"]["std"] == [0.25] * 4
    three = fit_to_data(resolve({"data": {"train": str(_set(tmp_path / "rgb", 3))}}))
    assert "in_channels" not in three["model"] and three["data"]["mean"] == default_normalisation(3)[0]
    own = fit_to_data(resolve({"data": {"train": str(data), "mean": [0.1] * 4, "std": [0.2] * 4}}))
    assert own["data"]["mean"] == [0.1] * 4  # set by the user: kept
    with pytest.raises(ConfigError, match=r"data.mean: 2 value\(s\), but .*x.tif has 4 band"):
        fit_to_data(resolve({"data": {"train": str(data), "mean": [0.1, 0.2], "std": [0.2, 0.2]}}))
    with pytest.raises(ConfigError, match=r"model.in_channels: 3, but .*x.tif has 4 band"):
        fit_to_data(resolve({"model": {"name": "fc_siam_diff", "in_channels": 3}, "data": {"train": str(data)}}))
    assert fit_to_data(resolve({})) == resolve({})  # no training data: nothing to fit
    check_bands("x.tif", 4, 4, "m.ckpt")
    with pytest.raises(SizeMismatchError, match=r"x.tif: 4 band\(s\), but the checkpoint m.ckpt was trained on 3"):
        check_bands("x.tif", 4, 3, "m.ckpt")


def test_guards_name_the_step_the_batch_and_the_tensor() -> None:
    batch = {"stem": ["a", "b", "c", "d", "e"]}
    check_loss(torch.tensor(0.5), 3, batch)
    with pytest.raises(NonFiniteError, match=r"loss is nan at step 7 \(batch: a, b, c, d, \.\.\.\); non-finite terms: "
                                             r"dice"):
        check_loss(torch.tensor(float("nan")), 7, batch, {"ce": torch.tensor(1.0), "dice": torch.tensor(float("nan"))})
    with pytest.raises(NonFiniteError, match="loss is inf at step 0;"):
        check_loss(torch.tensor(float("inf")), 0, {})
    check_weights({"w": torch.ones(2), "n": torch.tensor(3)}, 5)
    with pytest.raises(NonFiniteError, match=r"by step 5 \(model.w\)"):
        check_weights({"model.w": torch.tensor([1.0, float("-inf")])}, 5)
