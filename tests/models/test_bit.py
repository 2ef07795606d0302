"""BIT (open-cd ``bit_r18``) and the shared ResNet-18-v1c backbone: contract, sizes, architecture, weights,
open-cd import, learning and the ChangeAnywhere recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from changekit.errors import CheckpointError, ConfigError
from changekit.losses import build_loss
from changekit.models import build_model, count_parameters
from changekit.models.backbones import ResNetV1c
from changekit.models.backbones import resnet_v1c
from changekit.models.bit import BIT
from changekit.models.foreign import convert_foreign

from .base import BaseModelTester, train_losses, train_recipe_via_cli
from .opencd_keys import check_strict_conversion, opencd_checkpoint, trained_like
from .test_fc_siam import _synthetic_pairs

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "changeanywhere" / "models" / "bit.yaml"
PARAMS = 2_989_638  # = the open-cd definition's count (benchmarks/bit_vs_reference.py)
BACKBONE = 2_802_016  # mmseg ResNetV1c(depth=18, num_stages=3)


class TestBIT(BaseModelTester):
    model_name = "bit"
    # the last decoder layer's output bias is added to both dates alike and cancels in |x_a - x_b| (open-cd too)
    unused_params = ("head.decoder.7.ffn.fc2.bias",)

    def build(self, seed: int = 0, **kwargs: Any) -> BIT:  # type: ignore[override]
        return trained_like(super().build(seed, **kwargs), seed)  # type: ignore[return-value]


class TestBITSigmoidDateBatched(TestBIT):
    model_kwargs = {"num_classes": 1, "date_batched": True}
    change_channels = 1


def test_parameter_count_equals_the_open_cd_definition() -> None:
    model = build_model("bit")
    assert count_parameters(model) == PARAMS
    assert count_parameters(model.backbone) == BACKBONE
    # BIT head by hand: 3x3 conv 256 -> 32 (+bias), 1x1 token conv 32 -> 4 (+bias), position embedding 8 x 32;
    # a layer: q, k, v 32 -> 64 without bias, output 64 -> 32, FFN 32 -> 64 -> 32, LayerNorms (2 encoder, 3 decoder)
    layer = 3 * 32 * 64 + (64 * 32 + 32) + (32 * 64 + 64) + (64 * 32 + 32)
    head = (256 * 32 * 9 + 32) + (32 * 4 + 4) + 8 * 32 + (layer + 2 * 64) + 8 * (layer + 3 * 64) + (32 * 2 + 2)
    assert PARAMS - BACKBONE == head
    assert abs(PARAMS / 1e6 - 2.99) < 0.005


def test_backbone_layout_is_resnet18_v1c_three_stages() -> None:
    model = build_model("bit")
    bb = model.backbone
    assert [m.out_channels for m in bb.stem if isinstance(m, torch.nn.Conv2d)] == [32, 32, 64]
    assert bb.out_channels == (64, 128, 256) and not hasattr(bb, "layer4")
    feats = bb.eval()(torch.randn(1, 3, 64, 64))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (8, 8)]  # strides (1, 2, 1): 1/8 at the end
    assert bb.layer3[0].downsample[0].stride == (1, 1) and bb.layer2[0].conv1.stride == (2, 2)


def test_head_follows_open_cd() -> None:
    head = build_model("bit").head
    assert len(head.encoder) == 1 and len(head.decoder) == 8 and head.token_len == 4
    assert head.pos_embedding.shape == (1, 8, 32)
    attn = head.decoder[0].attn
    assert attn.heads == 8 and attn.to_q.out_features == 64 and attn.scale == 32**-0.5  # token width, not head width
    assert head.encoder[0].norm_ref is None and head.decoder[0].norm_ref is not None
    assert head.dropout.p == 0.1


def test_tokens_are_attention_weighted_feature_sums() -> None:
    head = build_model("bit").head
    x = torch.randn(2, 32, 5, 6)
    att = torch.relu(head.token_att(x)).flatten(2).softmax(-1)  # (2, 4, 30)
    expected = torch.einsum("bln,bcn->blc", att, x.flatten(2))
    torch.testing.assert_close(head.tokens(x), expected)


def test_mmseg_initialisation() -> None:
    model = build_model("bit")
    blocks = [m for m in model.backbone.modules() if isinstance(m, resnet_v1c.BasicBlock)]
    assert len(blocks) == 6 and all(float(b.bn2.weight.abs().sum()) == 0 for b in blocks)  # zero_init_residual
    assert all(float(b.bn1.weight.min()) == 1 for b in blocks)
    assert 0.005 < float(model.head.classifier.weight.std()) < 0.02  # N(0, 0.01)


@pytest.mark.parametrize("size", [256, 512])
def test_full_sizes(size: int) -> None:
    model = build_model("bit").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size), torch.randn(1, 3, size, size))
    assert out.change.shape == (1, 2, size, size) and torch.isfinite(out.change).all()


def test_odd_size_is_padded_and_cropped() -> None:
    model = trained_like(build_model("bit")).eval()
    a, b = torch.randn(1, 3, 61, 67), torch.randn(1, 3, 61, 67)
    with torch.no_grad():
        out = model(a, b).change
        padded = model(*(torch.nn.functional.pad(t, (0, 5, 0, 3), mode="replicate") for t in (a, b))).change
    assert out.shape == (1, 2, 61, 67)
    torch.testing.assert_close(out, padded[..., :61, :67])


@pytest.mark.parametrize("kwargs", [{"num_classes": 3}, {"token_len": 0}, {"embed_dims": 60}, {"date_batched": 1},
                                    {"backbone_weights": 3}])
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs)) if "embed" not in str(kwargs) else "embed_dims"):
        build_model("bit", **kwargs)


# ---------------------------------------------------------------------------------------------- open-cd import
def test_opencd_checkpoint_converts_strictly(tmp_path: Path) -> None:
    model = check_strict_conversion("bit", tmp_path)
    assert isinstance(model, BIT) and not model.training
    with torch.no_grad():  # all-positive random weights overflow: only the shapes are meaningful here
        assert model(torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32)).change.shape == (1, 2, 32, 32)


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "changer.pth"
    opencd_checkpoint("changer_ex", src)
    with pytest.raises(CheckpointError, match=r"not a opencd checkpoint of 'bit': \d+ missing .*\d+ unexpected") as err:
        convert_foreign("opencd", src, "bit")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------- backbone weights
def _v1c_file(path: Path, stages: int = 4) -> dict[str, torch.Tensor]:
    """open-mmlab's resnet18_v1c layout: 4 stages and a classifier (``fc``), as a plain state dict."""
    torch.manual_seed(5)
    state = {k: v + torch.rand_like(v) if v.is_floating_point() else v
             for k, v in ResNetV1c(num_stages=stages).state_dict().items()}
    state |= {"fc.weight": torch.randn(1000, 512), "fc.bias": torch.randn(1000)}
    torch.save({"state_dict": state}, path)
    return state


def test_backbone_weights_from_a_local_file(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    state = _v1c_file(tmp_path / "resnet18_v1c.pth")
    model = build_model("bit", backbone_weights=str(tmp_path / "resnet18_v1c.pth"))
    own = model.backbone.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in own)
    assert "unexpected" in caplog.text and "layer4" in caplog.text  # BIT has 3 stages: layer4 is skipped, loudly
    four = build_model("bit", in_channels=4, backbone_weights=str(tmp_path / "resnet18_v1c.pth"))
    assert four.backbone.stem[0].weight.shape == (32, 4, 3, 3)  # a 3-band stem adapted to 4 bands


def test_bad_backbone_weights_name_the_key_and_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"model.backbone_weights: file '.*nope.pth' does not exist"):
        build_model("bit", backbone_weights=str(tmp_path / "nope.pth"))
    torch.save({"stem.0.weight": torch.randn(32, 3, 3, 3)}, tmp_path / "partial.pth")
    with pytest.raises(ConfigError, match=r"model.backbone_weights: .*partial.pth.* lacks \d+ encoder keys"):
        build_model("bit", backbone_weights=str(tmp_path / "partial.pth"))


def test_imagenet_weights_download_failure_is_one_clear_error(monkeypatch: pytest.MonkeyPatch,
                                                              tmp_path: Path) -> None:
    def offline(url: str, dst: str, **kwargs: Any) -> None:
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CheckpointError, match=r"could not download ResNet-18-v1c .*network unreachable.*null"):
        build_model("bit", backbone_weights="imagenet")
    _v1c_file(tmp_path / "checkpoints" / "resnet18_v1c-b5776b93.pth")  # a cached download is used as is
    assert count_parameters(build_model("bit", backbone_weights="imagenet")) == PARAMS


# ---------------------------------------------------------------------------------------------- training
def test_loss_falls_on_synthetic_squares() -> None:
    torch.manual_seed(0)
    a, b, mask = _synthetic_pairs(n=4, size=32)
    model = build_model("bit").train()
    loss_fn = build_loss([{"name": "ce"}])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = train_losses(lambda: loss_fn(model(a, b), {"mask": mask})[0], opt, 25)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses


def test_recipe_is_the_seed_schedule_with_imagenet_backbone() -> None:
    from changekit.config import load_config

    cfg = load_config(RECIPE)
    assert cfg["model"] == {"name": "bit", "backbone_weights": "imagenet"}
    assert cfg["optim"]["name"] == "adamw" and cfg["optim"]["lr"] == 1e-4 and cfg["optim"]["weight_decay"] == 0.05
    assert cfg["trainer"]["max_epochs"] == 50 and cfg["data"]["batch_size"] == 8 and cfg["loss"] == [{"name": "ce"}]


def test_cli_trains_the_recipe(synth_root: Path, tmp_path: Path) -> None:
    cfg = train_recipe_via_cli(RECIPE, synth_root, tmp_path / "run", "model.backbone_weights=null",
                               "data.augment=flips")
    assert cfg["model"]["name"] == "bit" and cfg["optim"]["lr"] == 1e-4
