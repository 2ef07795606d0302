"""SNUNet-CD with ECAM (c32 and c16): contract, parameter counts, the reference's structure, open-cd import,
learning, and a short CLI run of the recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from changekit.errors import CheckpointError, ConfigError
from changekit.losses import build_loss
from changekit.models import build_model, count_parameters
from changekit.models.foreign import convert_foreign
from changekit.models.snunet import SNUNet

from .base import BaseModelTester, train_losses, train_recipe_via_cli
from .opencd_keys import check_strict_conversion, opencd_checkpoint
from .test_fc_siam import _synthetic_pairs

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "changeanywhere" / "models" / "snunet.yaml"
# = open-cd's SNUNet_ECAM + FCNHead(num_convs=0) (benchmarks/snunet_vs_reference.py)
EXPECTED = {"snunet": 12_034_978, "snunet_c16": 3_012_178}


class TestSNUNet(BaseModelTester):
    model_name = "snunet"


class TestSNUNetC16(BaseModelTester):
    model_name = "snunet_c16"


class TestSNUNetSigmoid(BaseModelTester):
    model_name = "snunet"
    model_kwargs = {"num_classes": 1, "base_channel": 8, "dropout": 0}
    change_channels = 1


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts(name: str) -> None:
    assert count_parameters(build_model(name)) == EXPECTED[name]


def test_parameter_count_by_hand() -> None:
    """c16 from the layer list: residual double 3x3 convs (with bias) + BN per node, 2x2 transposed convs, the
    two ECAM MLPs (1x1, no bias) and the 1x1 classifier."""
    w = [16 * 2**i for i in range(5)]

    def block(cin: int, cout: int) -> int:
        return cin * cout * 9 + cout + 2 * cout + cout * cout * 9 + cout + 2 * cout

    total = sum(block(w[i - 1] if i else 3, w[i]) for i in range(5))
    total += sum(w[i] * w[i] * 4 + w[i] for i in range(1, 5) for _ in range(5 - i))
    total += sum(block(w[i] * (j + 1) + w[i + 1], w[i]) for j in range(1, 5) for i in range(5 - j))
    total += 2 * 64 * 4 + 2 * 16 * 4 + 64 * 2 + 2
    assert total == EXPECTED["snunet_c16"]
    assert build_model("snunet_c16").state_dict().keys() == build_model("snunet", base_channel=16).state_dict().keys()


@pytest.mark.parametrize("size", [256, 512])
def test_full_sizes(size: int) -> None:
    model = build_model("snunet_c16").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size), torch.randn(1, 3, size, size)).change
    assert out.shape == (1, 2, size, size) and torch.isfinite(out).all()


def test_odd_size_is_padded_to_32_and_cropped() -> None:
    model = build_model("snunet_c16").eval()
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 3, 40, 40, generator=gen), torch.randn(1, 3, 40, 40, generator=gen)
    pad = torch.nn.ReplicationPad2d((0, 24, 0, 24))
    with torch.no_grad():
        torch.testing.assert_close(model(a, b).change, model(pad(a), pad(b)).change[..., :40, :40])


def test_structure_follows_the_reference() -> None:
    """Date A never reaches level 4; ECAM sits before the dropout and the 2-class classifier."""
    model = build_model("snunet").eval()
    assert isinstance(model, SNUNet) and model.siamese_bn == "per_date"
    assert model.classifier.in_channels == 128 and model.classifier.out_channels == 2
    assert model.dropout.p == 0.1 and isinstance(build_model("snunet", dropout=0).dropout, torch.nn.Identity)
    assert (model.ca.fc1.out_channels, model.ca1.fc1.out_channels) == (8, 8)  # ratios 16 and 4
    seen: list[int] = []
    hook = model.get_submodule("conv4_0").register_forward_hook(lambda m, args, out: seen.append(out.shape[0]))
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32))
        model.train()(torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32))
    hook.remove()
    assert seen == [2, 2]  # only date B's two images, in eval (batched) and in training (per date)
    ecam: list[torch.Tensor] = []
    hook = model.dropout.register_forward_pre_hook(lambda m, args: ecam.append(args[0]))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32))
    hook.remove()
    assert ecam[0].shape == (1, 128, 32, 32)


def test_eval_batches_both_dates_exactly() -> None:
    """The batched eval encoder equals separate per-date passes (BatchNorm uses running statistics)."""
    model = build_model("snunet_c16").eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
        a = torch.randn(2, 3, 32, 32)
        joint = model._encode(torch.cat([a, a * 2]), 4)
        alone = model._encode(a, 4)
    for j, s in zip(joint, alone, strict=True):
        torch.testing.assert_close(j[:2], s)


@pytest.mark.parametrize(("kwargs", "key"), [({"base_channel": 2}, "base_channel"), ({"dropout": 1}, "dropout"),
                                             ({"num_classes": 3}, "num_classes"), ({"in_channels": 0}, "in_channels")])
def test_bad_arguments(kwargs: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_model("snunet", **kwargs)


# ------------------------------------------------------------------------------------------ open-cd checkpoints
def test_opencd_checkpoint_converts_strictly(tmp_path: Path) -> None:
    model = check_strict_conversion("snunet", tmp_path)
    assert isinstance(model, SNUNet) and not model.training
    state = opencd_checkpoint("snunet", tmp_path / "again.pth")
    own = model.state_dict()
    assert torch.equal(own["up1_0.weight"], state["backbone.Up1_0.up.weight"])
    assert torch.equal(own["classifier.bias"], state["decode_head.conv_seg.bias"])
    assert torch.equal(own["ca1.fc2.weight"], state["backbone.ca1.fc2.weight"])


def test_c16_checkpoint_needs_the_c16_model(tmp_path: Path) -> None:
    src = tmp_path / "snunet_c32.pth"
    opencd_checkpoint("snunet", src)
    with pytest.raises(CheckpointError, match=r"not a opencd checkpoint of 'snunet_c16': \d+ wrong shape"):
        convert_foreign("opencd", src, "snunet_c16")
    other = tmp_path / "changeformer.pth"
    opencd_checkpoint("changeformer", other)
    with pytest.raises(CheckpointError, match=r"of 'snunet': 234 missing \(ca.fc1.weight.*unexpected \(decode_head"):
        convert_foreign("opencd", other, "snunet")


# ------------------------------------------------------------------------------------------------- learning
def test_loss_falls_on_synthetic_squares() -> None:
    torch.manual_seed(0)
    a, b, mask = _synthetic_pairs(n=4, size=32)
    model = build_model("snunet_c16").train()
    loss_fn = build_loss([{"name": "ce"}])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = train_losses(lambda: loss_fn(model(a, b), {"mask": mask})[0], opt, 15)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses


def test_cli_trains_the_recipe(synth_root: Path, tmp_path: Path) -> None:
    cfg = train_recipe_via_cli(RECIPE, synth_root, tmp_path / "run", "model.name=snunet_c16")
    assert cfg["model"] == {"name": "snunet_c16"} and cfg["optim"]["weight_decay"] == 0.05
