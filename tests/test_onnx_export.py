"""ONNX export and ``predict --runtime onnx``: onnxruntime agrees with PyTorch (<= 1e-4 on change probabilities)
for every registered binary model that exports; those that do not are listed with the reason (docs/scenes.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pointwise_ckpt import pointwise_checkpoint  # noqa: E402

from changekit.cli import main  # noqa: E402
from changekit.config import resolve  # noqa: E402
from changekit.errors import CheckpointError, ConfigError  # noqa: E402
from changekit.export.onnx_export import TOLERANCE, export_model, max_difference  # noqa: E402
from changekit.export.ort_model import OnnxChangeModel  # noqa: E402
from changekit.models.registry import build_model, list_models  # noqa: E402

pytest.importorskip("onnxruntime", reason="the onnx extra (onnxruntime) is not installed")

#: Registered binary models that do not export, and the words of the reason (kept in docs/scenes.md).
NOT_EXPORTED = {
    "changeclip_rn50": "extra inputs",  # CLIP tags per date
    "changeclip_vitb16": "extra inputs",
    "lightcdnet": "cannot be exported",  # channel shuffle on Python shape values: the tracer cannot map it
    "lightcdnet_s": "cannot be exported",
    "lightcdnet_l": "cannot be exported",
    "tinycd": "differs from PyTorch",  # exports, but 1.4e-4 apart in probability (above the 1e-4 tolerance)
}
#: Exported, but only valid at the traced tile size (shapes computed in Python and frozen by the trace).
FIXED_SIZE = {"changer_ex"}
TILE = 64


PUBLIC = [n for n in list_models() if not n.startswith("_")]  # test-only models start with "_"


@pytest.mark.parametrize("name", PUBLIC)
def test_every_binary_model_exports_or_is_listed(name: str, tmp_path: Path) -> None:
    if name.startswith("changeclip"):  # 117-170 M parameters: the refusal needs no weights, only the class
        from changekit.export.onnx_export import export_model as export

        class Tagged(torch.nn.Module):
            extra_inputs = ("tags_a", "tags_b")

        with pytest.raises(CheckpointError, match=NOT_EXPORTED[name]):
            export(Tagged(), {"model": {"name": name}}, tmp_path / "m.onnx", TILE)
        return
    model = build_model(name).eval()
    if getattr(model, "task", "binary") != "binary":
        pytest.skip("a semantic model: the check covers binary models")
    cfg = resolve({"model": {"name": name}})
    if name in NOT_EXPORTED:
        with pytest.raises(CheckpointError, match=NOT_EXPORTED[name]):
            export_model(model, cfg, tmp_path / "m.onnx", TILE, source=name)
        assert not (tmp_path / "m.onnx").exists()
        return
    res = export_model(model, cfg, tmp_path / "m.onnx", TILE, source=name)
    assert res.dynamic_size == (name not in FIXED_SIZE), res
    ort_model = OnnxChangeModel(res.path)
    assert ort_model.meta["model"] == name and ort_model.in_channels == 3
    t = res.tile
    sizes = [(2, 3, t, t)] + ([] if name in FIXED_SIZE else [(3, 3, t // 2, 3 * t // 2)])
    for i, shape in enumerate(sizes):
        g = torch.Generator().manual_seed(10 + i)
        a, b = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
        with torch.no_grad():
            ref = model(a, b).change_prob()
        got = ort_model(a, b).change_prob()
        assert float((got - ref).abs().max()) <= TOLERANCE, (name, shape)
    if name in FIXED_SIZE:
        with pytest.raises(ConfigError, match=f"use --tile {t}"):
            ort_model(torch.zeros(1, 3, t // 2, t // 2), torch.zeros(1, 3, t // 2, t // 2))
    assert max_difference(model, ort_model.session, (1, 3, t, t)) <= TOLERANCE


def test_cli_export_then_predict_with_onnxruntime_equals_torch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from scene_pairs import write_scene_pair

    write_scene_pair(tmp_path / "a.tif", tmp_path / "b.tif", (150, 130), [(slice(20, 90), slice(10, 70))])
    pointwise_checkpoint(tmp_path / "model.ckpt")
    assert main(["export", "--ckpt", str(tmp_path / "model.ckpt"), "--onnx", str(tmp_path / "m.onnx"),
                 "--tile", "64"]) == 0
    assert "any tile size" in capsys.readouterr().out
    common = ["--a", str(tmp_path / "a.tif"), "--b", str(tmp_path / "b.tif"), "--tile", "64", "--overlap", "16",
              "--prob"]
    assert main(["predict", "--ckpt", str(tmp_path / "m.onnx"), "--runtime", "onnx", "--out",
                 str(tmp_path / "onnx.tif"), *common]) == 0
    assert main(["predict", "--ckpt", str(tmp_path / "model.ckpt"), "--out", str(tmp_path / "torch.tif"),
                 *common]) == 0
    with rasterio.open(tmp_path / "onnx.tif") as o, rasterio.open(tmp_path / "torch.tif") as t:
        assert o.crs == t.crs and o.transform == t.transform
        assert np.array_equal(o.read(1), t.read(1))
    with rasterio.open(tmp_path / "onnx_prob.tif") as o, rasterio.open(tmp_path / "torch_prob.tif") as t:
        assert float(np.nanmax(np.abs(o.read(1) - t.read(1)))) <= TOLERANCE
    capsys.readouterr()
    assert main(["predict", "--ckpt", str(tmp_path / "model.ckpt"), "--runtime", "onnx", "--out",
                 str(tmp_path / "x.tif"), *common[:4]]) == 2
    assert "not a readable ONNX model" in capsys.readouterr().err
    assert main(["predict", "--ckpt", str(tmp_path / "m.onnx"), "--runtime", "onnx", "--amp", "--out",
                 str(tmp_path / "x.tif"), *common[:4]]) == 2
    assert "--amp: not available with --runtime onnx" in capsys.readouterr().err
