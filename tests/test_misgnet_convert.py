"""Import of the authors' MISGNet checkpoints: key mapping from the official module names, restricted
unpickling of whole pickled models (MyNet and ema_pytorch.EMA) without their code, and the CLI command.

The official module tree is re-declared here from the released code (JackLiu-97/MISGNet @ 2c1adb1:
models/mynet/mynet4.py, pvtv2.py, MGL/mGL.py, MGL/basicnet5.py): only names and parameter shapes, under the
official module paths, so that a pickle made from it names the same classes as the authors' files do.
"""

from __future__ import annotations

import copy
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

import changekit.models.misgnet  # noqa: F401
from changekit.errors import CheckpointError
from changekit.models.misgnet.convert import (
    convert_checkpoint,
    extract_state_dict,
    map_official_keys,
    restricted_load,
)

MODULES = ("models", "models.mynet", "models.mynet.mynet4", "models.mynet.pvtv2", "models.mynet.MGL",
           "models.mynet.MGL.mGL", "models.mynet.MGL.basicnet5", "ema_pytorch", "ema_pytorch.ema_pytorch")


def _official(module: str, cls: type) -> type:
    cls.__module__ = module
    return cls


# ---- models/mynet/pvtv2.py (PVTv2-b1: dims 64/128/320/512, heads 1/2/5/8, mlp 8/8/4/4, depths 2x4, sr 8/4/2/1)
PVT = "models.mynet.pvtv2"


@lambda c: _official(PVT, c)
class OverlapPatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int, k: int, s: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, k, s, k // 2)
        self.norm = nn.LayerNorm(dim, eps=1e-6)


@lambda c: _official(PVT, c)
class DWConv(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)


@lambda c: _official(PVT, c)
class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.dwconv, self.act, self.fc2 = nn.Linear(dim, hidden), DWConv(hidden), nn.GELU(), nn.Linear(hidden, dim)
        self.drop = nn.Dropout(0.0)


@lambda c: _official(PVT, c)
class Attention(nn.Module):
    def __init__(self, dim: int, sr: int) -> None:
        super().__init__()
        self.q, self.kv, self.proj = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)
        if sr > 1:
            self.sr, self.norm = nn.Conv2d(dim, dim, sr, sr), nn.LayerNorm(dim)


@lambda c: _official(PVT, c)
class Block(nn.Module):
    def __init__(self, dim: int, sr: int, ratio: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, sr)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, dim * ratio)


@lambda c: _official(PVT, c)
class pvt_v2_b1(nn.Module):  # noqa: N801 - the official class name
    def __init__(self) -> None:
        super().__init__()
        dims, srs, ratios = (64, 128, 320, 512), (8, 4, 2, 1), (8, 8, 4, 4)
        for i in range(4):
            k, s, cin = (7, 4, 3) if i == 0 else (3, 2, dims[i - 1])
            setattr(self, f"patch_embed{i + 1}", OverlapPatchEmbed(cin, dims[i], k, s))
            setattr(self, f"block{i + 1}", nn.ModuleList(Block(dims[i], srs[i], ratios[i]) for _ in range(2)))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(dims[i], eps=1e-6))


# ---- models/mynet/MGL/basicnet5.py and mGL.py
BN5 = "models.mynet.MGL.basicnet5"


@lambda c: _official(BN5, c)
class BasicConv2d(nn.Module):  # basicnet5.BasicConv2d (with ReLU)
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv, self.bn, self.relu = nn.Conv2d(dim, dim, 1, bias=False), nn.BatchNorm2d(dim), nn.ReLU()
        self.stdv = 1.0 / dim**0.5


@lambda c: _official(BN5, c)
class GraphConvNet(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(dim, dim))
        self.register_parameter("bias", None)


@lambda c: _official(BN5, c)
class CascadeGCNet(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gcn1, self.gcn2, self.gcn3 = GraphConvNet(dim), GraphConvNet(dim), GraphConvNet(dim)
        self.gcns = [self.gcn1, self.gcn2]
        self.relu = nn.ReLU()


@lambda c: _official(BN5, c)
class GraphNet(nn.Module):
    def __init__(self, k: int, dim: int) -> None:
        super().__init__()
        self.node_num, self.dim = k, dim
        self.anchor, self.sigma = nn.Parameter(torch.rand(k, dim)), nn.Parameter(torch.rand(k, dim))


@lambda c: _official(BN5, c)
class MutualModule0(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gcn, self.gcn2, self.gcn3 = CascadeGCNet(dim), CascadeGCNet(dim), CascadeGCNet(dim)
        self.conv = nn.Sequential(BasicConv2d(dim))


@lambda c: _official(BN5, c)
class MutualNet(nn.Module):
    def __init__(self, dim: int, k: int) -> None:
        super().__init__()
        self.dim = dim
        self.x1_proj0, self.x2_proj0 = GraphNet(k, dim), GraphNet(k, dim)
        for name in ("x1_conv1", "x2_conv1", "x2_conv2", "x2_conv11", "x1_conv11", "x1_conv22"):
            setattr(self, name, nn.Sequential(BasicConv2d(dim)))
        self.r2e, self.r2e2 = MutualModule0(dim), MutualModule0(dim)


@lambda c: _official("models.mynet.MGL.mGL", c)
class MGLNet(nn.Module):
    def __init__(self, k: int, dim: int) -> None:
        super().__init__()
        self.gamma, self.dim = 1.0, dim
        self.mutualnet0 = MutualNet(dim, k)


# ---- models/mynet/mynet4.py
NET = "models.mynet.mynet4"


@lambda c: _official(NET, c)
class decode(nn.Module):  # noqa: N801
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv_d1, self.conv_l = nn.Conv2d(c, c, 3, padding=1), nn.Conv2d(c, c, 3, padding=1)
        self.conv3, self.bn3 = nn.Conv2d(2 * c, c, 3, padding=1), nn.BatchNorm2d(c)


@lambda c: _official(NET, c)
class Translayer(nn.Module):  # mynet4.BasicConv2d (no ReLU in forward); renamed below
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv, self.bn, self.relu = nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()


Translayer.__name__ = Translayer.__qualname__ = "BasicConv2d"


@lambda c: _official(NET, c)
class Conv(nn.Module):
    def __init__(self, cin: int, cout: int, bn: bool) -> None:
        super().__init__()
        self.inp_dim = cin
        self.conv = nn.Conv2d(cin, cout, 3, padding=1)
        self.relu = nn.ReLU() if bn else None
        self.bn = nn.BatchNorm2d(cout) if bn else None


@lambda c: _official(NET, c)
class MyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.decode1, self.decode2, self.decode3 = decode(128), decode(64), decode(64)
        self.backbone = pvt_v2_b1()
        self.upsample = nn.Upsample(scale_factor=4, mode="bilinear")
        self.Translayer1, self.Translayer2, self.Translayer3 = Translayer(320, 128), Translayer(128, 64), Translayer(128, 64)
        self.MGLNet0, self.MGLNet1, self.MGLNet2 = MGLNet(2, 64), MGLNet(4, 128), MGLNet(8, 320)
        self.final2 = nn.Sequential(Conv(64, 32, True), Conv(32, 2, False))


@lambda c: _official("ema_pytorch.ema_pytorch", c)
class EMA(nn.Module):
    def __init__(self, online: nn.Module, averaged: nn.Module) -> None:
        super().__init__()
        self.online_model = online
        self.ema_model = averaged
        self.register_buffer("initted", torch.tensor(True))
        self.register_buffer("step", torch.tensor(100))


@pytest.fixture(scope="module")
def official() -> nn.Module:
    torch.manual_seed(0)
    net = MyNet()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()
        for name, buf in net.named_buffers():
            if buf.is_floating_point():
                buf.uniform_(0.5, 1.5)
    return net


@pytest.fixture()
def official_modules() -> Iterator[None]:
    """Make the official module paths importable while pickling, and remove them again afterwards."""
    saved = {name: sys.modules.get(name) for name in MODULES}
    for name in MODULES:
        sys.modules[name] = types.ModuleType(name)
    for cls in (OverlapPatchEmbed, DWConv, Mlp, Attention, Block, pvt_v2_b1, BasicConv2d, GraphConvNet,
                CascadeGCNet, GraphNet, MutualModule0, MutualNet, MGLNet, decode, Translayer, Conv, MyNet, EMA):
        setattr(sys.modules[cls.__module__], cls.__name__, cls)
    yield
    for name, mod in saved.items():
        if mod is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = mod


def _check_converted(model: nn.Module, official: nn.Module) -> None:
    ours = model.state_dict()
    off = official.state_dict()
    pairs = {
        "backbone.patch_embed.proj.weight": "backbone.patch_embed1.proj.weight",
        "backbone.stages.1.downsample.norm.bias": "backbone.patch_embed2.norm.bias",
        "backbone.stages.2.blocks.1.mlp.dwconv.weight": "backbone.block3.1.mlp.dwconv.dwconv.weight",
        "backbone.stages.0.blocks.0.attn.sr.weight": "backbone.block1.0.attn.sr.weight",
        "backbone.stages.2.norm.weight": "backbone.norm3.weight",
        "sgm.2.x1_proj0.anchor": "MGLNet2.mutualnet0.x1_proj0.anchor",
        "sgm.1.x2_conv11.bn.running_var": "MGLNet1.mutualnet0.x2_conv11.0.bn.running_var",
        "sgm.0.r2e2.gcn3.gcn2.weight": "MGLNet0.mutualnet0.r2e2.gcn3.gcn2.weight",
        "sgm.0.r2e.conv.conv.weight": "MGLNet0.mutualnet0.r2e.conv.0.conv.weight",
        "decoder.decode1.conv3.weight": "decode1.conv3.weight",
        "decoder.translayer1.bn.weight": "Translayer1.bn.weight",
        "decoder.head.0.conv.bias": "final2.0.conv.bias",
        "decoder.head.0.bn.running_mean": "final2.0.bn.running_mean",
        "decoder.head.1.weight": "final2.1.conv.weight",
    }
    for ours_key, off_key in pairs.items():
        assert torch.equal(ours[ours_key], off[off_key]), ours_key
    # every tensor of ours comes from exactly one official tensor (values are distinct random draws)
    off_values = {(tuple(v.shape), float(v.float().sum())) for k, v in off.items() if v.numel() > 1}
    assert all((tuple(v.shape), float(v.float().sum())) in off_values for v in ours.values() if v.numel() > 1)


def test_official_state_dict_maps_onto_ours(official: nn.Module) -> None:
    from changekit.models import build_model

    for keep in (False, True):
        with torch.device("meta"):
            model = build_model("misgnet", keep_stage4=keep)
        model.load_state_dict(map_official_keys(official.state_dict(), keep_stage4=keep), assign=True)  # strict
        _check_converted(model, official)


def test_whole_pickled_model_loads_without_the_official_code(
    official: nn.Module, official_modules: None, tmp_path: Path
) -> None:
    torch.save(official, tmp_path / "model_best.pth")
    online = copy.deepcopy(official)
    with torch.no_grad():
        for p in online.parameters():
            p.mul_(-1)  # the raw weights differ from the averaged ones; the EMA's must be taken
    torch.save(EMA(online, official), tmp_path / "model_ema_best.pth")
    torch.save({"model": official.state_dict(), "epoch": 3}, tmp_path / "train_ckpt.pth")
    for name in MODULES:  # the official code is gone when converting
        sys.modules.pop(name, None)
    for src in ("model_best.pth", "model_ema_best.pth", "train_ckpt.pth"):
        model, cfg = convert_checkpoint(tmp_path / src)
        assert cfg["model"]["name"] == "misgnet"
        _check_converted(model, official)
    assert "models.mynet.mynet4" not in sys.modules
    state = extract_state_dict(restricted_load(tmp_path / "model_ema_best.pth"))
    assert not any(k.startswith(("online_model.", "ema_model.")) or k in ("step", "initted") for k in state)


class _Evil:
    def __reduce__(self):  # noqa: ANN204
        import os

        return (os.system, ("touch EVIL_MARKER",))


def test_restricted_unpickling_runs_no_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    torch.save({"x": _Evil(), "w": torch.ones(2)}, tmp_path / "evil.pth")
    obj = restricted_load(tmp_path / "evil.pth")
    assert not (tmp_path / "EVIL_MARKER").exists()
    assert torch.equal(obj["w"], torch.ones(2)) and type(obj["x"]).__name__ == "system"
    with pytest.raises(CheckpointError, match="not a MISGNet checkpoint"):
        convert_checkpoint(tmp_path / "evil.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        restricted_load(tmp_path / "junk.pth")


def test_cli_convert(official: nn.Module, official_modules: None, tmp_path: Path,
                     capsys: pytest.CaptureFixture) -> None:
    from changekit.cli import main
    from changekit.engine.checkpoint import load_checkpoint

    torch.save(official, tmp_path / "best.pth")
    assert main(["convert", "misgnet", str(tmp_path / "best.pth"), "--out", str(tmp_path / "m.ckpt")]) == 0
    assert "9,852,002 parameters" in capsys.readouterr().out
    model, cfg = load_checkpoint(tmp_path / "m.ckpt")
    _check_converted(model, official)
    assert main(["convert", "misgnet", str(tmp_path / "best.pth"), "--out", str(tmp_path / "m4.ckpt"),
                 "--keep-stage4"]) == 0
    assert "17,674,850 parameters" in capsys.readouterr().out
    assert main(["convert", "misgnet", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "x.ckpt")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
