"""Siamese U-Net over smp encoders: contract, fusion modes, parameter counts, local encoder weights."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import segmentation_models_pytorch as smp
import torch
from segmentation_models_pytorch.encoders import get_encoder

from changekit.errors import ConfigError
from changekit.models import build_model, count_parameters, model_info

from .base import BaseModelTester


class TestSiamUnet(BaseModelTester):
    model_name = "siam_unet"


class TestSiamUnetConcatSigmoid(BaseModelTester):
    model_name = "siam_unet"
    model_kwargs = {"fusion": "concat", "num_classes": 1, "encoder_depth": 4, "decoder_channels": (64, 32, 16, 8)}
    change_channels = 1


class TestSiamUnetTimmEncoder(BaseModelTester):
    """A timm encoder with transformer-style strides (4..32): smp inserts an empty 1/2-scale feature."""

    model_name = "siam_unet"
    model_kwargs = {"encoder_name": "tu-convnext_atto", "fusion": "sum", "decoder_channels": (64, 32, 16, 16, 8)}


def test_parameter_count_matches_smp_unet() -> None:
    """With diff/sum fusion the network is exactly smp.Unet's modules; concat widens only the decoder inputs."""
    ours = count_parameters(build_model("siam_unet"))
    assert ours == 14_328_354
    assert ours == count_parameters(smp.Unet("resnet18", encoder_weights=None, classes=2))
    assert count_parameters(build_model("siam_unet", fusion="sum")) == ours
    # concat doubles the head (512) and skips (256, 128, 64, 64) that enter the first conv of each decoder block,
    # whose outputs are 256, 128, 64, 32 wide: 3x3 weights for the extra input channels.
    extra = 9 * ((512 + 256) * 256 + 128 * 128 + 64 * 64 + 64 * 32)
    assert count_parameters(build_model("siam_unet", fusion="concat")) == ours + extra
    assert model_info("siam_unet", encoder_name="efficientnet-b0")["params"] < ours


@pytest.mark.parametrize(("fusion", "symmetric"), [("diff", True), ("sum", True), ("concat", False)])
def test_fusion_symmetry(fusion: str, symmetric: bool) -> None:
    torch.manual_seed(0)
    model = build_model("siam_unet", fusion=fusion).eval()
    a, b = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ab, ba = model(a, b).change, model(b, a).change
    assert torch.allclose(ab, ba, atol=1e-5) is symmetric


def _encoder_keys_equal(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.encoder.state_dict()
    assert set(own) == set(state)
    for key, value in state.items():
        assert torch.equal(own[key], value), key


def test_local_encoder_weights(tmp_path: Path) -> None:
    torch.manual_seed(123)
    enc = get_encoder("resnet18", in_channels=3, depth=5, weights=None)
    state = enc.state_dict()
    torch.save(state, tmp_path / "r18.pth")
    torch.manual_seed(0)
    model = build_model("siam_unet", encoder_weights=str(tmp_path / "r18.pth"))
    _encoder_keys_equal(model, state)
    assert not torch.equal(build_model("siam_unet").encoder.conv1.weight, state["conv1.weight"])


def test_local_weights_from_full_checkpoint_with_prefix(tmp_path: Path) -> None:
    """A Lightning-style checkpoint of a whole siam_unet (keys 'model.encoder.*') also serves as encoder weights."""
    torch.manual_seed(5)
    src = build_model("siam_unet")
    ckpt = {"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}, "epoch": 3}
    torch.save(ckpt, tmp_path / "run.ckpt")
    model = build_model("siam_unet", encoder_weights=str(tmp_path / "run.ckpt"))
    _encoder_keys_equal(model, src.encoder.state_dict())


def test_local_weights_adapt_first_conv_to_more_bands(tmp_path: Path) -> None:
    torch.manual_seed(1)
    state = get_encoder("resnet18", in_channels=3, depth=5, weights=None).state_dict()
    torch.save(state, tmp_path / "r18.pt")
    model = build_model("siam_unet", in_channels=4, encoder_weights=str(tmp_path / "r18.pt"))
    w, w3 = model.encoder.conv1.weight, state["conv1.weight"]
    assert w.shape[1] == 4
    torch.testing.assert_close(w[:, :3], w3 * 0.75)
    torch.testing.assert_close(w[:, 3], w3[:, 0] * 0.75)
    torch.testing.assert_close(model.encoder.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_local_weights_missing_and_unexpected_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = get_encoder("resnet18", in_channels=3, depth=5, weights=None).state_dict()
    extra = dict(state, **{"fc.weight": torch.zeros(2, 512), "fc.bias": torch.zeros(2)})
    torch.save(extra, tmp_path / "extra.pth")
    with caplog.at_level(logging.WARNING):
        build_model("siam_unet", encoder_weights=str(tmp_path / "extra.pth"))
    assert "fc.weight" in caplog.text and "fc.bias" in caplog.text
    state.pop("layer4.1.bn2.running_var")
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match=r"layer4\.1\.bn2\.running_var"):
        build_model("siam_unet", encoder_weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="does not fit"):
        build_model("siam_unet", encoder_name="resnet50", encoder_weights=str(tmp_path / "extra.pth"))


def test_local_weights_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        build_model("siam_unet", encoder_weights=str(tmp_path / "nope.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read"):
        build_model("siam_unet", encoder_weights=str(tmp_path / "junk.pth"))


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [({"fusion": "mul"}, "fusion"), ({"decoder_channels": (64, 32)}, "decoder_channels"),
     ({"encoder_name": "resnet_nope"}, "encoder_name"), ({"num_classes": 0}, "num_classes")],
)
def test_bad_arguments(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_model("siam_unet", **kwargs)


def test_shallow_depth_freezes_unused_encoder_stages() -> None:
    model = build_model("siam_unet", encoder_depth=4, decoder_channels=(128, 64, 32, 16))
    assert not any(p.requires_grad for p in model.encoder.layer4.parameters())
    assert all(p.requires_grad for p in model.encoder.layer3.parameters())
    frozen = count_parameters(model) - count_parameters(model, trainable_only=True)
    assert frozen == sum(p.numel() for p in model.encoder.layer4.parameters())
    assert count_parameters(build_model("siam_unet"), trainable_only=True) == 14_328_354


def test_weight_names_versus_files(tmp_path: Path) -> None:
    """'imagenet' goes to smp (a download, never done in tests); paths and weight-file names are local files."""
    from changekit.models.siam_unet import _is_weight_file

    assert not _is_weight_file("imagenet") and not _is_weight_file("ssl")
    assert _is_weight_file("weights/r18.pth") and _is_weight_file("r18.safetensors")


def test_local_safetensors_weights(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    torch.manual_seed(7)
    state = get_encoder("resnet18", in_channels=3, depth=5, weights=None).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "r18.safetensors"))
    _encoder_keys_equal(build_model("siam_unet", encoder_weights=str(tmp_path / "r18.safetensors")), state)
