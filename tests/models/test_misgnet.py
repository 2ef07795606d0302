"""MISGNet: contract, exact parameter counts, the released computation (checked against literal per-node
re-statements of the released code), backbone weights, learning, EMA and the recipe through the CLI."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import changekit.models.misgnet  # noqa: F401  (registers misgnet until changekit.models imports it)
from changekit.errors import ConfigError, DatasetNotFoundError
from changekit.losses import build_loss
from changekit.models import build_model, count_parameters, model_info
from changekit.models.misgnet import CascadeGCNet, GraphNet, MISGNet, MutualModule, MutualNet
from changekit.models.misgnet.decoder import Decode, Translayer

from .base import BaseModelTester, train_losses

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "misgnet"


class TestMISGNet(BaseModelTester):
    model_name = "misgnet"
    size = 64
    odd_size = 70


# ---------------------------------------------------------------- parameter counts (meta device)
def test_parameter_counts() -> None:
    assert model_info("misgnet")["params"] == 9_852_002
    assert model_info("misgnet", keep_stage4=True)["params"] == 17_674_850


def test_parameter_count_per_part() -> None:
    """seed-systems.md 2.3: per-SGM 26C^2 + 16C + 4KC; decoders, translayers and head as tabulated."""
    with torch.device("meta"):
        model = build_model("misgnet", keep_stage4=True)
    assert count_parameters(model.backbone) == 13_496_000
    assert count_parameters(model.backbone.stages[3]) == 7_822_848
    for sgm, (c, k) in zip(model.sgm, ((64, 2), (128, 4), (320, 8)), strict=True):
        assert count_parameters(sgm) == 26 * c * c + 16 * c + 4 * k * c
    dec = model.decoder
    assert [count_parameters(d) for d in (dec.decode1, dec.decode2, dec.decode3)] == [590_464, 147_776, 147_776]
    assert [count_parameters(t) for t in (dec.translayer1, dec.translayer2, dec.translayer3)] == [41_216, 8_320, 8_320]
    assert count_parameters(dec.head) == 19_106


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize("size", [256, 512])
def test_full_model_shapes(size: int) -> None:
    model = build_model("misgnet").eval()
    a = torch.randn(1, 3, size, size)
    with torch.no_grad():
        out = model(a, a.flip(-1))
    assert out.change.shape == (1, 2, size, size)
    assert torch.isfinite(out.change).all()


def test_inference_fast_path_equals_timms_blocks() -> None:
    """The in-place / fused-oneDNN backbone path (no autograd) computes what timm's blocks compute."""
    model = build_model("misgnet").eval()
    a, b = torch.randn(2, 3, 64, 96), torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        fast = model(a, b).change
        model.inplace_inference = False
        try:
            ref = model(a, b).change
        finally:
            model.inplace_inference = True
    torch.testing.assert_close(fast, ref, atol=1e-4, rtol=1e-4)
    model.train()
    x = torch.randn(1, 3, 64, 64)
    model(x, x).change.sum().backward()  # training takes timm's autograd path
    assert model.backbone.stages[0].blocks[0].mlp.fc1.weight.grad is not None


def test_mix_ffn_image_groups_equal_whole_batch() -> None:
    """The Mix-FFN over groups of images (``mlp_chunk_bytes``) computes what the whole-batch pass computes."""
    model = build_model("misgnet").eval()
    a, b = torch.randn(3, 3, 64, 64), torch.randn(3, 3, 64, 64)  # 6 images: groups of 2 in every stage below
    with torch.no_grad():
        model.mlp_chunk_bytes = 0
        whole = model(a, b).change
        model.mlp_chunk_bytes = 2 * 16 * 16 * 512 * 4  # two stage-1 images (16x16 tokens, 512 hidden channels)
        grouped = model(a, b).change
    torch.testing.assert_close(grouped, whole, atol=1e-5, rtol=1e-5)


def test_non_square_and_odd_sizes_are_padded() -> None:
    model = build_model("misgnet").eval()
    a, b = torch.randn(2, 3, 66, 130), torch.randn(2, 3, 66, 130)
    with torch.no_grad():
        out = model(a, b).change
        assert out.shape == (2, 2, 66, 130)
        # padding is replicate on the bottom/right and the logits are cropped: same as padding by hand
        pa, pb = F.pad(a, (0, 2, 0, 2), mode="replicate"), F.pad(b, (0, 2, 0, 2), mode="replicate")
        torch.testing.assert_close(out, model(pa, pb).change[..., :66, :130])


def test_wrong_inputs_raise() -> None:
    model = build_model("misgnet").eval()
    with pytest.raises(ValueError, match="equal shape"):
        model(torch.randn(1, 3, 64, 64), torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize(("kwargs", "key"), [({"keep_stage4": 1}, "keep_stage4"), ({"num_classes": 3}, "num_classes"),
                                             ({"backbone_weights": 3}, "backbone_weights"), ({"dropout": 0.1}, "dropout")])
def test_bad_arguments(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_model("misgnet", **kwargs)


# ---------------------------------------------------------------- unused parameters are frozen, the rest trains
def test_unused_parameters_are_frozen_and_everything_else_gets_gradient() -> None:
    torch.manual_seed(0)
    model = build_model("misgnet", keep_stage4=True).train()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    stage4 = {n for n, _ in model.named_parameters() if n.startswith("backbone.stages.3.")}
    gcn3 = {n for n, _ in model.named_parameters() if n.endswith(".gcn3.weight")}
    assert frozen == stage4 | gcn3 and len(gcn3) == 3 * 2 * 3
    a, b = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    out = model(a, b).change
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        if name in frozen:
            assert p.grad is None, name
        else:
            assert p.grad is not None and bool(p.grad.abs().sum() > 0), name
    unused_gcn = sum(model.get_parameter(n).numel() for n in gcn3)
    assert unused_gcn == 6 * (64**2 + 128**2 + 320**2)
    assert count_parameters(model, trainable_only=True) == 9_852_002 - unused_gcn


# ---------------------------------------------------------------- the released computation, restated literally
def _graphnet_reference(net: GraphNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """basicnet5.GraphNet.forward with its per-node loops."""
    b, c, h, w = x.shape
    sigma = torch.sigmoid(net.sigma)
    flat = x.view(b, c, -1).permute(0, 2, 1)
    assign = torch.zeros(b, net.node_num, h * w)
    for k in range(net.node_num):
        assign[:, k] = -torch.norm((flat - net.anchor[k]).div(sigma[k]), dim=2).pow(2) / 2
    assign = F.softmax(assign, dim=1)
    nodes = torch.zeros(b, net.node_num, c)
    for k in range(net.node_num):
        r = (flat - net.anchor[k]).div(sigma[k])
        nodes[:, k] = r.mul(assign[:, k].unsqueeze(2)).sum(1) / (assign[:, k].sum(1).unsqueeze(1) + 1e-9)
    nodes = F.normalize(F.normalize(nodes, p=2, dim=2).view(b, -1), p=2, dim=1)
    return nodes.view(b, c, net.node_num), assign


def test_graphnet_matches_the_per_node_loops_and_reshapes_not_transposes() -> None:
    torch.manual_seed(0)
    net = GraphNet(4, 16)
    x = torch.randn(2, 16, 6, 5) * 3
    nodes, assign = net(x)
    ref_nodes, ref_assign = _graphnet_reference(net, x)
    torch.testing.assert_close(assign, ref_assign, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(nodes, ref_nodes, atol=1e-5, rtol=1e-5)
    transposed = ref_nodes.reshape(2, 4, 16).transpose(1, 2)  # what a transpose would have given
    assert not torch.allclose(nodes, transposed, atol=1e-3)
    # channels_last input gives the same
    nodes_cl, _ = net(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(nodes_cl, nodes)


def test_cascade_uses_two_of_its_three_weights() -> None:
    torch.manual_seed(0)
    cascade = CascadeGCNet(8)
    x = torch.randn(2, 8, 4)
    ref = x
    for gcn in (cascade.gcn1, cascade.gcn2):
        adj = torch.softmax(ref.permute(0, 2, 1) @ ref, dim=2)
        ref = (adj @ (ref.permute(0, 2, 1) @ gcn.weight)).permute(0, 2, 1)
    torch.testing.assert_close(cascade(x), F.relu(ref))
    with torch.no_grad():
        cascade.gcn3.weight.mul_(5)
    torch.testing.assert_close(cascade(x), F.relu(ref))


def test_mutual_module_is_constructible_and_matches_the_released_order() -> None:
    """MutualModule(dim) builds without the 'dropout' argument; the re-projection applies the 1x1 conv + BN +
    ReLU to the pixels (released) -- here to the nodes first, which must give the same map."""
    torch.manual_seed(0)
    mod = MutualModule(8).eval()
    with torch.no_grad():
        mod.conv.bn.running_mean.uniform_(-1, 1)
        mod.conv.bn.running_var.uniform_(0.5, 2)
    q, k, v = torch.randn(2, 8, 3), torch.randn(2, 8, 3), torch.randn(2, 8, 3)
    assign = torch.softmax(torch.randn(2, 3, 20), dim=1)
    out = mod(q, k, v, assign, torch.Size((2, 8, 4, 5)))
    m = (torch.softmax(q.permute(0, 2, 1) @ k, dim=-1) @ v.permute(0, 2, 1)).permute(0, 2, 1)
    g = mod.gcn2(mod.gcn(mod.gcn3(v) + m))
    pix = (g @ assign).unsqueeze(3)
    ref = F.relu(mod.conv.bn(mod.conv.conv(pix))).squeeze(3).view(2, 8, 4, 5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_mutual_net_residual_and_init() -> None:
    torch.manual_seed(0)
    net = MutualNet(16, 2)
    reset = [net.x1_conv1, net.x2_conv1, net.x2_conv2, net.x2_conv11]
    assert all(float(c.bn.weight.min()) >= 0 and float(c.bn.weight.max()) < 1 and not torch.all(c.bn.weight == 1)
               for c in reset)
    assert all(torch.all(c.bn.weight == 1) for c in (net.x1_conv11, net.x1_conv22))  # default init, as released
    x1, x2 = torch.randn(2, 16, 8, 8), torch.randn(2, 16, 8, 8)
    y1, y2 = net(x1, x2)
    assert y1.shape == x1.shape and y2.shape == x2.shape
    assert float((y1 - x1).min()) >= 0  # residual add of a ReLU output


def test_translayer_has_no_activation_and_decode_uses_the_raw_deep_feature() -> None:
    torch.manual_seed(0)
    t = Translayer(8, 4).train()
    assert float(t(torch.randn(2, 8, 5, 5)).min()) < 0
    d = Decode(4, 4, 4).train()
    left, down = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 4, 4)
    up = F.interpolate(down, size=(8, 8), mode="bilinear", align_corners=False)
    z1 = F.relu(d.conv_l(left) * up)
    z2 = F.relu(F.interpolate(d.conv_d1(down), size=(8, 8), mode="bilinear", align_corners=False) + left)
    ref = F.relu(d.bn3(d.conv3(torch.cat([z1, z2], 1))))
    torch.testing.assert_close(d(left, down), ref)
    d.eval()  # BN folded into conv3 in eval mode
    ref_eval = F.relu(d.bn3(d.conv3(torch.cat([z1, z2], 1))))
    torch.testing.assert_close(d(left, down), ref_eval, atol=1e-5, rtol=1e-5)


def test_decoder_sees_absolute_differences_of_the_sgm_outputs() -> None:
    model = build_model("misgnet").eval()
    seen: list = []
    hook = model.decoder.register_forward_pre_hook(lambda m, args: seen.append(args))
    sgm_out: list = []
    hooks = [s.register_forward_hook(lambda m, args, out: sgm_out.append(out)) for s in model.sgm]
    a, b = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        model(a, b)
    for h in [hook, *hooks]:
        h.remove()
    shapes = [tuple(d.shape) for d in seen[0]]
    assert shapes == [(2, 64, 16, 16), (2, 128, 8, 8), (2, 320, 4, 4)]
    for (fa, fb), d in zip(sgm_out, seen[0], strict=True):
        assert torch.equal(d, (fa - fb).abs())


# ---------------------------------------------------------------- backbone weights
def _official_pvt_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm's PVTv2 key names -> the PVT authors' release (patch_embed1, block1.0, norm1, dwconv.dwconv)."""
    import re

    out = {}
    for k, v in state.items():
        k = k.replace("patch_embed.", "patch_embed1.").replace("mlp.dwconv.", "mlp.dwconv.dwconv.")
        k = re.sub(r"stages\.(\d)\.downsample\.", lambda m: f"patch_embed{int(m.group(1)) + 1}.", k)
        k = re.sub(r"stages\.(\d)\.blocks\.", lambda m: f"block{int(m.group(1)) + 1}.", k)
        k = re.sub(r"stages\.(\d)\.norm\.", lambda m: f"norm{int(m.group(1)) + 1}.", k)
        out[k] = v
    return out


@pytest.mark.parametrize("official_names", [False, True])
def test_backbone_weights_from_a_local_file(tmp_path: Path, official_names: bool) -> None:
    from timm.models.pvt_v2 import pvt_v2_b1

    torch.manual_seed(5)
    state = pvt_v2_b1(num_classes=1000).state_dict()
    path = tmp_path / "pvt_v2_b1.pth"
    torch.save(_official_pvt_names(state) if official_names else state, path)
    model = build_model("misgnet", backbone_weights=str(path))
    own = model.backbone.state_dict()
    assert own.keys() <= state.keys()
    assert all(torch.equal(v, state[k]) for k, v in own.items())
    four = build_model("misgnet", backbone_weights=str(path), in_channels=4)
    assert four.backbone.patch_embed.proj.weight.shape[1] == 4


def test_backbone_weights_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="backbone weights not found"):
        build_model("misgnet", backbone_weights=str(tmp_path / "missing.pth"))
    torch.save({"something": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="not a pvt_v2_b1 checkpoint"):
        build_model("misgnet", backbone_weights=str(tmp_path / "bad.pth"))


def test_timm_hub_unreachable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm.models.pvt_v2 as pvt

    from changekit.errors import CheckpointError

    original = pvt.pvt_v2_b1

    def offline(pretrained: bool = False, **kwargs: Any) -> Any:
        if pretrained:
            raise RuntimeError("offline (test)")
        return original(pretrained=False, **kwargs)

    monkeypatch.setattr(pvt, "pvt_v2_b1", offline)
    with pytest.raises(CheckpointError, match=r"offline \(test\).*backbone_weights=/path/to/pvt_v2_b1.pth"):
        build_model("misgnet", backbone_weights="timm")


# ---------------------------------------------------------------- learning
def _scenes(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from changekit.data.synthetic import make_scene, pair_rng

    scenes = [make_scene(size, pair_rng(3, i)) for i in range(n)]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def img(key: str) -> torch.Tensor:
        x = np.stack([(s[key] / 255.0 - mean) / std for s in scenes]).transpose(0, 3, 1, 2)
        return torch.from_numpy(x).float()

    mask = torch.from_numpy(np.stack([s["label"] // 255 for s in scenes]).astype(np.int64))
    return img("image_a"), img("image_b"), mask


def test_loss_falls_on_generated_scenes() -> None:
    torch.manual_seed(0)
    a, b, mask = _scenes(4, 64)
    model = build_model("misgnet").train()
    loss_fn = build_loss([{"name": "focal", "weight": 0.5, "alpha": 0.2, "gamma": 2},
                          {"name": "dice", "mode": "multiclass"}])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=4e-4, weight_decay=1e-4)
    losses = train_losses(lambda: loss_fn(model(a, b), {"mask": mask})[0], opt, 12)
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses


# ---------------------------------------------------------------- EMA through the engine, and the recipe via the CLI
def _small_run_overrides(root: Path) -> list[str]:
    return [f"data.train={root / 'train'}", f"data.val={root / 'val'}", f"data.test={root / 'val'}",
            "model.backbone_weights=null", "data.batch_size=2", "data.num_workers=0", "trainer.max_steps=3",
            "trainer.limit_val_batches=1", "trainer.accelerator=cpu", "trainer.devices=1",
            "trainer.progress_bar=false", "trainer.log_every_n_steps=1"]


def test_ema_weights_differ_from_raw_and_are_exported(synth_root: Path, tmp_path: Path) -> None:
    from changekit.config import load_config
    from changekit.engine.task import ChangeTask
    from changekit.engine.train import train

    cfg = load_config(CONFIGS / "levir_cd.yaml",
                      [*_small_run_overrides(synth_root), "trainer.ema.update_after_step=1"])
    assert cfg["trainer"]["ema"]["enabled"]
    task = ChangeTask(cfg)
    assert task.eval_model is task.ema.module  # validation/test/export run on the EMA copy
    result = train(cfg, tmp_path / "run")
    assert result["steps"] == 3
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    sd = last["state_dict"]
    ema = {k[len("ema.module."):]: v for k, v in sd.items() if k.startswith("ema.module.")}
    raw = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    exported = torch.load(tmp_path / "run" / "model.ckpt", weights_only=True)["state_dict"]
    assert exported.keys() == ema.keys() == raw.keys()
    assert all(torch.equal(exported[k], ema[k]) for k in ema)
    trained = [k for k, v in raw.items() if v.is_floating_point() and not torch.equal(v, ema[k])]
    assert len(trained) > 100  # EMA lags the raw weights after the copy phase


def test_cli_trains_the_levir_recipe(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from changekit.cli import main

    out = tmp_path / "run"
    args = ["train", str(CONFIGS / "levir_cd.yaml"), "--out", str(out)]
    for item in _small_run_overrides(synth_root):
        args += ["--set", item]
    assert main(args) == 0, capsys.readouterr()
    assert (out / "model.ckpt").is_file()
    import yaml

    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["loss"][0] == {"name": "focal", "weight": 0.5, "alpha": 0.2, "gamma": 2}
    assert cfg["optim"]["lr"] == 4e-4 and cfg["trainer"]["ema"]["update_after_step"] == 32
