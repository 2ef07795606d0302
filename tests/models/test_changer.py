"""ChangerEx (open-cd ``changer_ex_r18``): contract, sizes, exchanges, FDAF, open-cd import, learning, recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from changekit.errors import CheckpointError, ConfigError
from changekit.losses import build_loss
from changekit.models import build_model, count_parameters
from changekit.models.changer import FDAF, ChangerEx, exchange
from changekit.models.foreign import convert_foreign

from .base import BaseModelTester, train_losses, train_recipe_via_cli
from .opencd_keys import check_strict_conversion, opencd_checkpoint, trained_like
from .test_fc_siam import _synthetic_pairs

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "changeanywhere" / "models" / "changer_ex.yaml"
PARAMS = 11_390_946  # = the open-cd definition's count (benchmarks/changer_ex_vs_reference.py)
BACKBONE = 11_195_744  # mmseg ResNetV1c(depth=18); the exchange layers have no parameters


class TestChangerEx(BaseModelTester):
    model_name = "changer_ex"

    def build(self, seed: int = 0, **kwargs: Any) -> ChangerEx:  # type: ignore[override]
        return trained_like(super().build(seed, **kwargs), seed)  # type: ignore[return-value]


class TestChangerExSigmoidDateBatched(TestChangerEx):
    model_kwargs = {"num_classes": 1, "date_batched": True}
    change_channels = 1


def test_parameter_count_equals_the_open_cd_definition() -> None:
    model = build_model("changer_ex")
    assert count_parameters(model) == PARAMS
    assert count_parameters(model.backbone) == BACKBONE
    # Changer head by hand: 1x1 conv-BN per stage to 128, fusion 512 -> 64 conv-BN, FDAF (depth-wise 5x5 over 128
    # with bias, 1x1 128 -> 4 without), MixFFN (1x1, depth-wise 3x3, 1x1, all with bias), classifier 128 -> 2
    head = (sum(c * 128 + 2 * 128 for c in (64, 128, 256, 512)) + (512 * 64 + 2 * 64) + (128 * 25 + 128 + 128 * 4)
            + 2 * (128 * 128 + 128) + (128 * 9 + 128) + (128 * 2 + 2))
    assert PARAMS - BACKBONE == head


def test_exchanges_follow_open_cd() -> None:
    a, b = torch.randn(2, 6, 3, 5), torch.randn(2, 6, 3, 5)
    x = torch.cat([a, b])
    spatial = exchange(x, 2, "spatial", 2)
    cols = torch.arange(5) % 2 == 0  # open-cd SpatialExchange(p=1/2): columns 0, 2, 4 swap
    assert torch.equal(spatial[:2][..., cols], b[..., cols]) and torch.equal(spatial[:2][..., ~cols], a[..., ~cols])
    assert torch.equal(spatial[2:][..., cols], a[..., cols]) and torch.equal(spatial[2:][..., ~cols], b[..., ~cols])
    channel = exchange(x, 2, "channel", 3)  # p=1/3: channels 0 and 3
    assert torch.equal(channel[:2, [0, 3]], b[:, [0, 3]]) and torch.equal(channel[:2, [1, 2, 4, 5]], a[:, [1, 2, 4, 5]])
    assert torch.equal(channel[2:, [0, 3]], a[:, [0, 3]])
    assert exchange(x, 2, "none", 2) is x


def test_backbone_stages_exchange_as_configured() -> None:
    model = build_model("changer_ex").eval()
    assert model.interactions == ("none", "spatial", "channel", "channel") and model.periods == (2, 2, 2, 2)
    a, b = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    raw: list[torch.Tensor] = []
    hooks = [s.register_forward_hook(lambda m, i, o: raw.append(o)) for s in model.backbone.stages]
    with torch.no_grad():
        feats = model.features(a, b)
    for h in hooks:
        h.remove()
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512]
    assert torch.equal(feats[0], raw[0])
    for got, out, mode in zip(feats[1:], raw[1:], ("spatial", "channel", "channel"), strict=True):
        assert torch.equal(got, exchange(out, 1, mode, 2)) and not torch.equal(got, out)


def test_fdaf_with_zero_flow_is_the_plain_difference() -> None:
    fdaf = FDAF(4)
    xa, xb = torch.randn(2, 4, 6, 7), torch.randn(2, 4, 6, 7)
    torch.testing.assert_close(FDAF.warp(xa, torch.zeros(2, 2, 6, 7)), xa, atol=1e-6, rtol=0)
    with torch.no_grad():
        fdaf.flow[-1].weight.zero_()
        torch.testing.assert_close(fdaf(xa, xb), torch.cat([xa - xb, xb - xa], 1), atol=1e-6, rtol=0)
    # a flow of (W - 1) / 2 pixels in x moves the sampling grid by one unit: the left half samples the right half
    shift = torch.zeros(1, 2, 1, 3)
    shift[:, 0] = 3.0 / 2  # scaled by W = 3 and added to the [-1, 1] grid: +0.5
    row = torch.tensor([[[[1.0, 2.0, 3.0]]]])
    torch.testing.assert_close(FDAF.warp(row, shift), torch.tensor([[[[1.5, 2.5, 1.5]]]]))


def test_mmseg_initialisation_and_head_layout() -> None:
    model = build_model("changer_ex")
    assert len([m for m in model.modules() if isinstance(m, torch.nn.InstanceNorm2d)]) == 1
    assert float(model.backbone.layer4[1].bn2.weight.abs().sum()) == 0  # zero_init_residual
    assert 0.005 < float(model.head.classifier.weight.std()) < 0.02 and model.head.dropout.p == 0.1
    assert model.head.fuse[0].out_channels == 64 and model.head.project.fc1.in_channels == 128


@pytest.mark.parametrize("size", [256, 512])
def test_full_sizes(size: int) -> None:
    model = build_model("changer_ex").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size), torch.randn(1, 3, size, size))
    assert out.change.shape == (1, 2, size, size) and torch.isfinite(out.change).all()


def test_odd_size_is_padded_to_32_and_cropped() -> None:
    model = trained_like(build_model("changer_ex")).eval()
    a, b = torch.randn(1, 3, 50, 70), torch.randn(1, 3, 50, 70)
    with torch.no_grad():
        out = model(a, b).change
        padded = model(*(torch.nn.functional.pad(t, (0, 26, 0, 14), mode="replicate") for t in (a, b))).change
    assert out.shape == (1, 2, 50, 70)
    # the logits are bilinearly resized from 1/4 of the padded size, so only the crop matches, not a resize
    torch.testing.assert_close(out, padded[..., :50, :70])


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"interactions": ["none", "spatial"]}, "interactions"), ({"interactions": ["x"] * 4}, "interactions"),
    ({"exchange_p": [0.5, 0.5, 0.5, 0]}, "exchange_p"), ({"num_classes": 3}, "num_classes"),
    ({"date_batched": "yes"}, "date_batched"), ({"channels": 1}, "channels"),
])
def test_bad_arguments(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_model("changer_ex", **kwargs)


# ---------------------------------------------------------------------------------------------- open-cd import
def test_opencd_checkpoint_converts_strictly(tmp_path: Path) -> None:
    model = check_strict_conversion("changer_ex", tmp_path)
    assert isinstance(model, ChangerEx)
    own = model.state_dict()
    state = opencd_checkpoint("changer_ex", tmp_path / "again.pth")  # same seed: same tensors
    assert torch.equal(own["head.fuse.1.running_var"], state["decode_head.fusion_conv.bn.running_var"])
    assert torch.equal(own["head.project.dwconv.weight"], state["decode_head.discriminator.layers.1.weight"])


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "bit.pth"
    opencd_checkpoint("bit", src)
    with pytest.raises(CheckpointError, match=r"not a opencd checkpoint of 'changer_ex': \d+ missing \(backbone"):
        convert_foreign("opencd", src, "changer_ex")


# ---------------------------------------------------------------------------------------------- training
def test_loss_falls_with_the_recipe_loss() -> None:
    torch.manual_seed(0)
    a, b, mask = _synthetic_pairs(n=4, size=32)
    model = build_model("changer_ex").train()
    loss_fn = build_loss([{"name": "ohem_ce", "thresh": 0.7, "min_kept": 100}])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = train_losses(lambda: loss_fn(model(a, b), {"mask": mask})[0], opt, 20)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses


def test_recipe_has_the_changer_ex_deviations() -> None:
    from changekit.config import load_config
    from changekit.data.transforms import build_transforms

    cfg = load_config(RECIPE)
    assert cfg["model"] == {"name": "changer_ex", "backbone_weights": None}  # ChangeAnywhere: pretrained=None
    assert cfg["loss"] == [{"name": "ohem_ce", "thresh": 0.7, "min_kept": 100000}]
    assert [op["name"] for op in cfg["data"]["augment"]] == ["rot_flip", "random_crop", "swap_dates",
                                                             "photometric_mmseg"]
    assert cfg["optim"]["lr"] == 1e-4 and cfg["optim"]["weight_decay"] == 0.05 and cfg["trainer"]["max_epochs"] == 50
    assert build_transforms(cfg["data"]["augment"]) is not None


def test_cli_trains_the_recipe(synth_root: Path, tmp_path: Path) -> None:
    cfg = train_recipe_via_cli(RECIPE, synth_root, tmp_path / "run",
                               "data.augment=[{name: rot_flip}, {name: swap_dates}]")
    assert cfg["loss"][0]["name"] == "ohem_ce" and cfg["model"]["name"] == "changer_ex"
