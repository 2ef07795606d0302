"""ChangeFormer (open-cd / ChangeAnywhere configuration): contract, parameter count, open-cd import, MiT weights,
the recipe's optimiser groups, learning, and a short CLI run of the recipe."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from segmentation_models_pytorch.encoders import get_encoder

from changekit.config import load_config
from changekit.engine.schedules import build_optimizer
from changekit.errors import CheckpointError, ConfigError
from changekit.losses import build_loss
from changekit.models import build_model, count_parameters
from changekit.models.changeformer import ChangeFormer, MiTEncoder, mit_from_mmseg
from changekit.models.foreign import convert_foreign

from .base import BaseModelTester, train_losses, train_recipe_via_cli
from .opencd_keys import KEYS, opencd_checkpoint
from .test_fc_siam import _synthetic_pairs

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "changeanywhere" / "models" / "changeformer.yaml"
PARAMS = 13_940_930  # = the open-cd definition's count (benchmarks/changeformer_vs_reference.py)
MIT_B1 = 13_151_424  # mmseg MixVisionTransformer(embed_dims=64, num_layers=[2, 2, 2, 2], num_heads=[1, 2, 5, 8])


class TestChangeFormer(BaseModelTester):
    model_name = "changeformer"


class TestChangeFormerSigmoid(BaseModelTester):
    model_name = "changeformer"
    model_kwargs = {"num_classes": 1, "backbone": "mit_b0"}
    change_channels = 1


def test_parameter_count_equals_the_open_cd_definition() -> None:
    model = build_model("changeformer")
    assert count_parameters(model) == PARAMS
    assert count_parameters(model.backbone) == MIT_B1
    # SegFormer head by hand: four 1x1 convs (no bias) from the doubled widths to 256 + BN, a 1x1 fusion conv
    # 1024 -> 256 + BN, the 1x1 classifier 256 -> 2 with bias
    head = sum(2 * c * 256 + 2 * 256 for c in (64, 128, 320, 512)) + 1024 * 256 + 2 * 256 + 256 * 2 + 2
    assert count_parameters(model.decode_head) == head == PARAMS - MIT_B1
    fixture = json.loads((KEYS / "changeformer.json").read_text())["keys"]
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    assert sum(torch.Size(s).numel() for k, s in fixture.items() if not k.endswith(buffers)) == PARAMS


def test_encoder_is_mit_b1_with_mmseg_settings() -> None:
    model = build_model("changeformer")
    assert isinstance(model, ChangeFormer) and isinstance(model.backbone, MiTEncoder)
    assert model.backbone.out_channels == (64, 128, 320, 512)
    assert [len(stage[1]) for stage in model.backbone.layers] == [2, 2, 2, 2]
    assert [stage[1][0].attn.num_heads for stage in model.backbone.layers] == [1, 2, 5, 8]
    assert [stage[1][0].attn.sr_ratio for stage in model.backbone.layers] == [8, 4, 2, 1]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 4 + 8 * 2 + 6 + 4 and {m.eps for m in norms} == {1e-6}  # mmseg: every LN at 1e-6
    blocks = [block for stage in model.backbone.layers for block in stage[1]]
    drop_path = [float(getattr(block.drop_path, "drop_prob", 0.0)) for block in blocks]  # the first is Identity
    assert drop_path == pytest.approx(torch.linspace(0, 0.1, 8).tolist())
    assert model.decode_head.dropout.p == 0.1
    assert count_parameters(build_model("changeformer", backbone="mit_b0")) < PARAMS / 3


@pytest.mark.parametrize("size", [256, 512])
def test_full_sizes(size: int) -> None:
    model = build_model("changeformer").eval()
    a, b = torch.randn(1, 3, size, size), torch.randn(1, 3, size, size)
    with torch.no_grad():
        out = model(a, b).change
    assert out.shape == (1, 2, size, size) and torch.isfinite(out).all()


def test_odd_size_is_padded_to_32_and_cropped() -> None:
    """A 70x70 pair gives the same logits as the top-left of the same pair replicate-padded to 96x96."""
    model = build_model("changeformer").eval()
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 3, 70, 70, generator=gen), torch.randn(1, 3, 70, 70, generator=gen)
    pad = torch.nn.ReplicationPad2d((0, 26, 0, 26))
    with torch.no_grad():
        small = model(a, b).change
        padded = model(pad(a), pad(b)).change
    torch.testing.assert_close(small, padded[..., :70, :70])


@pytest.mark.parametrize("kwargs", [{"backbone": "mit_b9"}, {"dropout": 1.0}, {"num_classes": 3},
                                    {"channels": 0}, {"backbone_weights": 3}])
def test_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match=next(iter(kwargs))):
        build_model("changeformer", **kwargs)


# ------------------------------------------------------------------------------------------ open-cd checkpoints
def test_opencd_checkpoint_converts_strictly(tmp_path: Path) -> None:
    src = tmp_path / "best_mIoU_iter_480000.pth"
    state = opencd_checkpoint("changeformer", src)
    model, cfg = convert_foreign("opencd", src, "changeformer")
    assert isinstance(model, ChangeFormer) and not model.training and cfg["model"]["name"] == "changeformer"
    own = model.state_dict()
    assert len(state) == 192 and len(own) == 208  # 16 packed q/k/v tensors -> q and kv
    for key, value in state.items():  # every open-cd tensor lands where the mapping says, with its values
        stage = "backbone.layers.0.1.0."
        if key == stage + "attn.attn.in_proj_weight":
            assert torch.equal(own[stage + "attn.q.weight"], value[:64])
            assert torch.equal(own[stage + "attn.kv.weight"], value[64:])
        elif key == stage + "ffn.layers.0.weight":
            assert torch.equal(own[stage + "mlp.fc1.weight"], value[:, :, 0, 0])
        elif key.startswith("decode_head."):
            assert torch.equal(own[key], value)
    assert torch.equal(own["backbone.layers.3.2.weight"], state["backbone.layers.3.2.weight"])
    assert torch.equal(own["backbone.layers.2.1.1.mlp.dwconv.dwconv.bias"],
                       state["backbone.layers.2.1.1.ffn.layers.1.bias"])
    assert torch.equal(own["backbone.layers.1.0.proj.weight"], state["backbone.layers.1.0.projection.weight"])
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)).change
    assert torch.isfinite(out).all()


def test_checkpoint_of_another_model_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "snunet.pth"
    opencd_checkpoint("snunet", src)
    with pytest.raises(CheckpointError, match=r"not a opencd checkpoint of 'changeformer': \d+ missing \(backbone"):
        convert_foreign("opencd", src, "changeformer")


# ------------------------------------------------------------------------------------- ImageNet MiT weights
def _mmseg_mit_b1(path: Path) -> dict[str, torch.Tensor]:
    """mmseg's ImageNet MiT-b1 file layout: the backbone part of an open-cd checkpoint, without the prefix."""
    full = opencd_checkpoint("changeformer", path.with_suffix(".full"), seed=3)
    state = {k[len("backbone."):]: v for k, v in full.items() if k.startswith("backbone.")}
    torch.save({"meta": {"note": "converted from NVlabs"}, "state_dict": state}, path)
    return state


def test_backbone_weights_from_mmseg_file(tmp_path: Path) -> None:
    path = tmp_path / "mit_b1_20220624-02e5a6a1.pth"
    state = _mmseg_mit_b1(path)
    model = build_model("changeformer", backbone_weights=str(path))
    own = model.backbone.state_dict()
    assert all(torch.equal(own[k], v) for k, v in mit_from_mmseg(state).items())
    four = build_model("changeformer", backbone_weights=str(path), in_channels=4)
    assert four.backbone.layers[0][0].proj.weight.shape[1] == 4  # the 3-band stem adapted to 4 bands


def test_backbone_weights_from_nvlabs_names(tmp_path: Path) -> None:
    """NVlabs / smp names (``patch_embed1``, ``block1.0``, ``norm1``, plus the ImageNet ``head``) load too."""
    torch.manual_seed(5)
    smp_encoder = get_encoder("mit_b1", weights=None)
    state = {**smp_encoder.state_dict(), "head.weight": torch.zeros(1000, 512), "head.bias": torch.zeros(1000)}
    torch.save(state, tmp_path / "mit_b1.pth")
    model = build_model("changeformer", backbone_weights=str(tmp_path / "mit_b1.pth")).eval()
    for module in smp_encoder.modules():  # the only setting changekit changes (mmseg's eps)
        if isinstance(module, torch.nn.LayerNorm):
            module.eps = 1e-6
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone(x), smp_encoder.eval()(x)[2:], atol=1e-5, rtol=1e-5)


def test_bad_backbone_weights_name_the_file_and_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.backbone_weights: file .*nope.pth' does not exist"):
        build_model("changeformer", backbone_weights=str(tmp_path / "nope.pth"))
    path = tmp_path / "mit_b0.pth"
    torch.save(build_model("changeformer", backbone="mit_b0").backbone.state_dict(), path)
    with pytest.raises(ConfigError, match=r"model.backbone_weights: .*mit_b0.pth' does not fit .*layers\.0\.0"):
        build_model("changeformer", backbone_weights=str(path))


def test_imagenet_weights_need_the_hub_or_fail_clearly() -> None:
    try:
        model = build_model("changeformer", backbone_weights="imagenet")
    except CheckpointError as exc:  # offline without a cached copy (the usual case here)
        assert "model.backbone_weights=/path/to/mit_b1.pth" in str(exc)
    else:
        assert count_parameters(model) == PARAMS


# ------------------------------------------------------------------------------------- the recipe's optimiser
def _mmengine_groups(name: str) -> tuple[float, float]:
    """(lr_mult, decay_mult) of an open-cd parameter under ChangeAnywhere's paramwise_cfg: custom_keys sorted by
    name then by length (longest first), the first key contained in the name wins."""
    custom = {"pos_block": (1.0, 0.0), "norm": (1.0, 0.0), "head": (10.0, 1.0)}
    for key in sorted(sorted(custom), key=len, reverse=True):
        if key in name:
            return custom[key]
    return 1.0, 1.0


def test_recipe_reproduces_open_cd_optimiser_groups() -> None:
    cfg = load_config(RECIPE)
    assert cfg["optim"]["weight_decay"] == 0.01 and cfg["optim"]["lr"] == 1e-4
    assert cfg["schedule"]["warmup"] == 10 and cfg["trainer"]["max_epochs"] == 50  # the common schedule
    model = build_model("changeformer")
    opt = build_optimizer(model, cfg["optim"])
    got = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            got[names[id(p)]] = (group["lr"], group["weight_decay"])
    fixture = json.loads((KEYS / "changeformer.json").read_text())["keys"]
    expected = {}
    for key, shape in fixture.items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        lr_mult, decay_mult = _mmengine_groups(key)
        for ours in mit_from_mmseg({key: torch.empty(shape)}):
            expected[ours] = (pytest.approx(1e-4 * lr_mult), 0.01 * decay_mult)
    assert got == expected
    assert got["backbone.layers.0.2.weight"][1] == 0.01  # mmseg's stage-closing norms keep their decay
    assert re.fullmatch(r"decode_head\..*", max(got, key=lambda k: got[k][0]))


# ------------------------------------------------------------------------------------------------- learning
def test_loss_falls_on_synthetic_squares() -> None:
    torch.manual_seed(0)
    a, b, mask = _synthetic_pairs(n=4, size=64)
    model = build_model("changeformer").train()
    loss_fn = build_loss([{"name": "ce"}])
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    losses = train_losses(lambda: loss_fn(model(a, b), {"mask": mask})[0], opt, 10)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses


def test_cli_trains_the_recipe(synth_root: Path, tmp_path: Path) -> None:
    cfg = train_recipe_via_cli(RECIPE, synth_root, tmp_path / "run")
    assert cfg["model"]["name"] == "changeformer" and cfg["optim"]["lr_mult"] == {"decode_head": 10.0}
