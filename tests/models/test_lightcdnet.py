"""LightCDNet (S / B / L): contract, exact parameter counts, architecture details (criss-cross attention, taps,
padding, deep supervision), open-cd checkpoint import, learning and the ChangeAnywhere recipe."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from changekit.errors import CheckpointError, ConfigError
from changekit.losses import build_loss
from changekit.models import ChangeModel, build_model, count_parameters, model_info
from changekit.models.foreign import convert_foreign
from changekit.models.lightcdnet import CrissCrossAttention, LightCDNet
from changekit.models.lightcdnet.backbone import channel_shuffle, tap_indices
from changekit.models.lightcdnet.convert import lightcdnet_from_opencd

from .base import BaseModelTester, train_losses, train_recipe_via_cli

KEYS = Path(__file__).resolve().parents[1] / "data" / "opencd_keys" / "lightcdnet.json"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
UNUSED = ("backbone.stages.2.blocks.2.", "backbone.stages.2.blocks.3.", "backbone.stages.2.attn.")


class _AttentionOn(BaseModelTester):
    """The criss-cross ``gamma`` starts at 0 (attention off; CCNet's init), so on the very first step its
    projections get no gradient: the contract runs with the attention switched on, as after some training."""

    def build(self, seed: int = 0, **kwargs: Any) -> ChangeModel:
        model = super().build(seed, **kwargs)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, CrissCrossAttention):
                    m.gamma.fill_(0.5)
        return model


class TestLightCDNet(_AttentionOn):
    model_name = "lightcdnet"


class TestLightCDNetS(_AttentionOn):
    model_name = "lightcdnet_s"


class TestLightCDNetSigmoid(_AttentionOn):
    model_name = "lightcdnet_s"
    model_kwargs = {"num_classes": 1}
    change_channels = 1


# ---------------------------------------------------------------- sizes
# Exact counts (all registered parameters, as open-cd's README counts them: 0.35 / 1.32 / 2.82 M).
EXPECTED = {"lightcdnet_s": 347_771, "lightcdnet": 1_318_433, "lightcdnet_l": 2_821_019}
TRAINABLE = {"lightcdnet_s": 261_706, "lightcdnet": 826_476, "lightcdnet_l": 1_694_442}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts(name: str) -> None:
    assert model_info(name)["params"] == EXPECTED[name]
    published = {"lightcdnet_s": 0.35, "lightcdnet": 1.32, "lightcdnet_l": 2.82}[name]
    assert round(EXPECTED[name] / 1e6, 2) == published


def test_only_the_never_run_tail_is_frozen() -> None:
    """open-cd's taps stop at unit 2 of stage 3: units 3-4 and the attention of stage 3 never reach the output."""
    assert tap_indices((4, 8, 4)) == [3, 11, 15]
    model = build_model("lightcdnet")
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(UNUSED) for n in frozen)
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith(UNUSED))
    assert count_parameters(model, trainable_only=True) == TRAINABLE["lightcdnet"]


@pytest.mark.parametrize(("name", "widths", "units"), [("lightcdnet_s", [24, 48, 96, 192], 4),
                                                       ("lightcdnet", [24, 116, 232, 464], 8),
                                                       ("lightcdnet_l", [24, 176, 352, 704], 16)])
def test_sizes_are_data(name: str, widths: list[int], units: int) -> None:
    with torch.device("meta"):
        model = build_model(name)
    assert isinstance(model, LightCDNet)
    assert [lat.in_channels for lat in model.neck.lateral] == widths
    assert len(model.backbone.fusion.blocks) == units
    assert [len(s.blocks) for s in model.backbone.stages] == [4, 8, 4]


@pytest.mark.parametrize("size", [(256, 256), (512, 512), (250, 190)])
def test_any_size_in_eval(size: tuple[int, int]) -> None:
    model = build_model("lightcdnet_s").eval()
    a, b = torch.randn(1, 3, *size), torch.randn(1, 3, *size)
    with torch.no_grad():
        out = model(a, b)
    assert out.change.shape == (1, 2, *size) and torch.isfinite(out.change).all() and not out.aux


def test_padding_is_open_cds_zero_padding_to_32() -> None:
    model = build_model("lightcdnet_s").eval()
    a, b = torch.randn(1, 3, 70, 45), torch.randn(1, 3, 70, 45)
    pad = torch.nn.functional.pad
    with torch.no_grad():
        out = model(a, b).change
        padded = model(pad(a, (0, 19, 0, 26)), pad(b, (0, 19, 0, 26))).change
    torch.testing.assert_close(out, padded[..., :70, :45])


# ---------------------------------------------------------------- parts
def _cca_by_loops(m: CrissCrossAttention, x: torch.Tensor) -> torch.Tensor:
    """One criss-cross pass written pixel by pixel: softmax over the column (pixel excluded) and the row."""
    q, k, v = m.query(x), m.key(x), m.value(x)
    out = torch.empty_like(x)
    _, _, h, w = x.shape
    for i in range(h):
        for j in range(w):
            cross_k = torch.cat([k[0, :, [r for r in range(h) if r != i], j], k[0, :, i, :]], 1)
            cross_v = torch.cat([v[0, :, [r for r in range(h) if r != i], j], v[0, :, i, :]], 1)
            attn = (q[0, :, i, j] @ cross_k).softmax(0)
            out[0, :, i, j] = m.gamma * (cross_v @ attn) + x[0, :, i, j]
    return out


def test_criss_cross_attention_matches_its_definition() -> None:
    torch.manual_seed(0)
    m = CrissCrossAttention(16, recurrence=1)
    x = torch.randn(1, 16, 5, 7)
    with torch.no_grad():
        assert torch.equal(m(x), x)  # gamma starts at 0: the identity
        m.gamma.fill_(0.8)
        torch.testing.assert_close(m(x), _cca_by_loops(m, x), atol=1e-5, rtol=1e-5)


def test_channel_shuffle_interleaves_the_halves() -> None:
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_deep_supervision_term() -> None:
    model = build_model("lightcdnet_s").train()
    a, b = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    mask = torch.randint(0, 2, (2, 64, 64))
    out = model(a, b)
    assert out.aux["aux_change"].shape == (2, 2, 64, 64)
    term = model.extra_losses(out, {"mask": mask})["aux_ce"]
    ce = build_loss([{"name": "ce"}])(type(out)(out.aux["aux_change"]), {"mask": mask})[0]
    torch.testing.assert_close(term, 0.4 * ce)
    assert build_model("lightcdnet_s", aux_weight=0).extra_losses(out, {"mask": mask}) == {}
    assert model.eval().extra_losses(model(a, b), {"mask": mask}) == {}


def test_a_single_pair_trains_on_running_statistics() -> None:
    """open-cd fails on a training batch of one pair (batch norm of one pooled vector); ours normalises it with
    the running statistics of the time attention and leaves them as they are."""
    model = build_model("lightcdnet_s").train()
    bn = model.backbone.fusion.time_attn.bn
    before = bn.running_mean.clone()
    out = model(torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64))
    assert torch.isfinite(out.change).all() and torch.equal(bn.running_mean, before)
    model(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64))
    assert not torch.equal(bn.running_mean, before)


@pytest.mark.parametrize(("kwargs", "key"), [({"num_classes": 3}, "num_classes"), ({"aux_weight": -1}, "aux_weight"),
                                             ({"widths": [24, 48, 96]}, "widths"), ({"widths": [20, 48, 96, 192]},
                                                                                   "widths"),
                                             ({"stage_repeats": [4, 1, 4]}, "stage_repeats"),
                                             ({"fusion_blocks": 0}, "fusion_blocks")])
def test_bad_arguments(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_model("lightcdnet", **kwargs)


# ---------------------------------------------------------------- open-cd checkpoints
def _opencd_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the names and shapes of open-cd's LightCDNet-B (backbone, neck, heads)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in json.loads(KEYS.read_text())["keys"].items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(11)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[name] = torch.randn(shape, generator=gen)
    return state


def test_opencd_checkpoint_converts_strictly(tmp_path: Path) -> None:
    state = _opencd_state()
    src = tmp_path / "lightcdnet_b.pth"
    torch.save({"meta": {"mmengine_version": "0.10.7", "epoch": 50}, "state_dict": state}, src)
    net, cfg = convert_foreign("opencd", src, "lightcdnet")
    assert cfg["model"] == {"name": "lightcdnet"}
    mapped = lightcdnet_from_opencd(state)
    own = net.state_dict()
    assert sorted(own) == sorted(mapped)
    for k, v in own.items():
        assert torch.equal(v, mapped[k]), k
    assert torch.equal(own["backbone.stages.1.attn.gamma"], state["backbone.stages.13.cca.gamma.scale"])
    assert torch.equal(own["backbone.stages.1.blocks.0.shortcut.1.bn.running_var"],
                       state["backbone.stages.5.branch1.3.running_var"])
    assert torch.equal(own["backbone.fusion.blocks.7.main.2.conv.weight"],
                       state["backbone.fusion_conv.stages.8.branch2.5.weight"])


def test_other_checkpoints_are_refused_in_one_line(tmp_path: Path) -> None:
    src = tmp_path / "x.pth"
    torch.save({"meta": {}, "state_dict": _opencd_state()}, src)
    with pytest.raises(CheckpointError, match=r"not a opencd checkpoint of 'lightcdnet_s'.*wrong shape") as exc:
        convert_foreign("opencd", src, "lightcdnet_s")
    assert "\n" not in str(exc.value)
    state = _opencd_state()
    del state["decode_head.conv_seg.bias"]
    state["decode_head.extra.weight"] = torch.zeros(1)
    torch.save({"meta": {}, "state_dict": state}, src)
    with pytest.raises(CheckpointError, match=r"1 missing \(head.classifier.bias\); 1 unexpected \(decode_head.extra"):
        convert_foreign("opencd", src, "lightcdnet")


def test_cli_convert(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from changekit.cli import main

    src, out = tmp_path / "lightcdnet_b.pth", tmp_path / "lightcdnet.ckpt"
    torch.save({"meta": {}, "state_dict": _opencd_state()}, src)
    assert main(["convert", "opencd", str(src), "--model", "lightcdnet", "--out", str(out)]) == 0
    assert "1,318,433 parameters" in capsys.readouterr().out and out.is_file()


# ---------------------------------------------------------------- learning and the recipe
def test_loss_falls_on_generated_scenes() -> None:
    from .test_fc_siam import _synthetic_pairs

    torch.manual_seed(0)
    a, b, mask = _synthetic_pairs(n=4, size=64)
    model = build_model("lightcdnet_s").train()
    loss_fn = build_loss([{"name": "ce"}])

    def step() -> torch.Tensor:
        out = model(a, b)
        return loss_fn(out, {"mask": mask})[0] + sum(model.extra_losses(out, {"mask": mask}).values())

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.05)
    losses = train_losses(step, opt, 20)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses


def test_cli_trains_the_changeanywhere_recipe(synth_root: Path, tmp_path: Path) -> None:
    cfg = train_recipe_via_cli(CONFIGS / "changeanywhere" / "models" / "lightcdnet.yaml", synth_root,
                               tmp_path / "run", "model.name=lightcdnet_s")
    assert cfg["loss"] == [{"name": "ohem_ce", "thresh": 0.7, "min_kept": 100000}]
    assert cfg["model"]["aux_weight"] == 0.4 and cfg["optim"]["lr"] == 1e-4
