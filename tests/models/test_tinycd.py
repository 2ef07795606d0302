"""TinyCD: contract, exact parameter count, architecture details, backbone weights, released-weight import
(`changekit convert tinycd` -> `changekit test` / `predict` reproduce the model's own probabilities), learning."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from changekit.errors import CheckpointError, ConfigError
from changekit.losses import build_loss
from changekit.models import build_model, count_parameters, model_info
from changekit.models.foreign import convert_foreign
from changekit.models.tinycd import Mix, TinyCD, map_released_keys

from .base import BaseModelTester, train_losses, train_recipe_via_cli

KEYS = Path(__file__).resolve().parents[1] / "data" / "tinycd_keys.json"
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


class TestTinyCD(BaseModelTester):
    model_name = "tinycd"
    change_channels = 1

    def test_channels_last_input_gives_same_output(self) -> None:
        """Run in float64: at random init the InstanceNorms see nearly constant maps and amplify float32 rounding
        to ~1e-3 (float32 and float64 differ that much in one layout, as in the reference code)."""
        before = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)
        try:
            super().test_channels_last_input_gives_same_output()
        finally:
            torch.set_default_dtype(before)


# ---------------------------------------------------------------- sizes and layout
def test_parameter_count_is_the_papers() -> None:
    """285,128 as the released model (and the paper's 0.28 M); open-cd's 2-layer classifier: 128 fewer."""
    assert count_parameters(build_model("tinycd")) == 285_128
    # released 32-16-8-1: (16*32+16+1) + (8*16+8+1) + (8+1); open-cd 32-16-1: (16*32+16+1) + (16+1+1)
    assert model_info("tinycd", classifier=[16], prelu_logit=True)["params"] == 285_128 - (137 + 9) + 18


@pytest.mark.parametrize("size", [256, 512])
def test_large_inputs(size: int) -> None:
    model = build_model("tinycd").eval()
    a, b = torch.randn(1, 3, size, size), torch.randn(1, 3, size, size)
    with torch.no_grad():
        out = model(a, b)
    assert out.change.shape == (1, 1, size, size) and torch.isfinite(out.change).all()


def test_odd_size_names_padding() -> None:
    with pytest.raises(ValueError, match="padding your images to 72x72"):
        build_model("tinycd")(torch.randn(1, 3, 70, 70), torch.randn(1, 3, 70, 70))


def test_backbone_is_torchvisions_efficientnet_b4_head() -> None:
    from torchvision.models import efficientnet_b4

    model = build_model("tinycd")
    ref = efficientnet_b4().features
    assert len(model.backbone) == 4
    for ours, theirs in zip(model.backbone, ref, strict=False):
        assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
               [(k, v.shape) for k, v in theirs.state_dict().items()]
    assert model.backbone[0][0].out_channels == 48


def test_mix_interleaves_the_dates_channel_by_channel() -> None:
    """Output channel i sees exactly (a_i, b_i): a grouped conv over x0, y0, x1, y1, ..."""
    mix = Mix(3).eval()
    a, b = torch.randn(1, 3, 8, 8), torch.randn(1, 3, 8, 8)
    base = mix(a, b)
    b2 = b.clone()
    b2[:, 1] += 1
    changed = (mix(a, b2) - base).abs().amax((0, 2, 3))
    assert changed[1] > 0 and changed[0] == 0 and changed[2] == 0
    assert mix.conv.weight.shape == (3, 2, 3, 3)


def test_the_logit_is_the_released_sigmoid_input() -> None:
    model = build_model("tinycd")
    last = model.classifier.layers[-1]
    assert isinstance(last["act"], torch.nn.Identity) and last["conv"].out_channels == 1
    opencd = build_model("tinycd", classifier=[16], prelu_logit=True)
    assert isinstance(opencd.classifier.layers[-1]["act"], torch.nn.PReLU)


def test_four_bands_rebuild_stem_and_first_mix() -> None:
    model = build_model("tinycd", in_channels=4)
    assert model.backbone[0][0].in_channels == 4 and model.first_mix.mix.conv.in_channels == 8


@pytest.mark.parametrize(("kwargs", "key"), [({"classifier": []}, "classifier"), ({"classifier": [0]}, "classifier"),
                                             ({"backbone_weights": 3}, "backbone_weights"),
                                             ({"in_channels": 0}, "in_channels")])
def test_bad_arguments(kwargs: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_model("tinycd", **kwargs)


def test_freeze_backbone() -> None:
    model = build_model("tinycd", freeze_backbone=True)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone."))


# ---------------------------------------------------------------- backbone weights
def test_backbone_weights_from_a_local_torchvision_file(tmp_path: Path) -> None:
    from torchvision.models import efficientnet_b4

    torch.manual_seed(5)
    full = efficientnet_b4()
    path = tmp_path / "efficientnet_b4.pth"
    torch.save(full.state_dict(), path)
    model = build_model("tinycd", backbone_weights=str(path))
    for i in range(4):
        for k, v in model.backbone[i].state_dict().items():
            assert torch.equal(v, full.features[i].state_dict()[k]), k
    with pytest.raises(ConfigError, match="model.backbone_weights: file .* does not exist"):
        build_model("tinycd", backbone_weights=str(tmp_path / "missing.pth"))


def test_imagenet_weights_offline_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.models

    def offline(**kwargs: object) -> None:
        raise OSError("offline (test)")

    monkeypatch.setattr(torchvision.models, "efficientnet_b4", offline)
    with pytest.raises(CheckpointError, match=r"offline \(test\).*backbone_weights=/path/to/efficientnet_b4"):
        build_model("tinycd", backbone_weights="imagenet")


# ---------------------------------------------------------------- released weights
def _released_state(seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """Random tensors with the names and shapes of TinyCD's released ``levir_best.pth``."""
    gen = torch.Generator().manual_seed(seed)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name, shape in json.loads(KEYS.read_text())["keys"].items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[name] = torch.randn(shape, generator=gen) * 0.3
    return state


def test_key_fixture_maps_onto_our_model() -> None:
    state = _released_state()
    mapped = map_released_keys(state)
    own = build_model("tinycd").state_dict()
    assert sorted(mapped) == sorted(own)
    assert all(mapped[k].shape == own[k].shape for k in own)
    assert mapped["bottom_mix.conv.weight"] is state["_mixing_mask.2._convmix.0.weight"]
    assert mapped["ups.0.dw.weight"] is state["_up.0._convolution.0.weight"]
    assert mapped["classifier.layers.2.conv.bias"] is state["_classify._linears.2.0.bias"]
    # whu_best.pth names the stride-8 mixer as an earlier code version did
    whu = {k.replace("_mixing_mask.2._convmix.", "_mixing_mask.2._mixing._convmix."): v for k, v in state.items()}
    assert any("_mixing_mask.2._mixing." in k for k in whu) and map_released_keys(whu).keys() == mapped.keys()


def test_converter_loads_strictly_and_refuses_other_checkpoints(tmp_path: Path) -> None:
    state = _released_state()
    src = tmp_path / "levir_best.pth"
    torch.save(state, src)
    net, cfg = convert_foreign("tinycd", src)
    mapped = map_released_keys(state)
    for k, v in net.state_dict().items():
        assert torch.equal(v, mapped[k]), k
    assert cfg["model"] == {"name": "tinycd"} and cfg["trainer"]["threshold"] == 0.5
    assert cfg["data"]["mean"] == [0.485, 0.456, 0.406] and cfg["data"]["std"] == [0.229, 0.224, 0.225]
    del state["_classify._linears.2.0.bias"]
    state["_extra.weight"] = torch.zeros(1)
    torch.save(state, src)
    with pytest.raises(CheckpointError, match=r"1 missing \(classifier.layers.2.conv.bias\); 1 unexpected") as exc:
        convert_foreign("tinycd", src)
    assert "\n" not in str(exc.value)


def test_opencd_converter(tmp_path: Path) -> None:
    """open-cd's TinyCD: the same names under ``backbone.``, classifier 32 -> 16 -> 1 with a PReLU logit."""
    state = {f"backbone.{k}": v for k, v in _released_state(1).items() if not k.startswith("_classify.")}
    gen = torch.Generator().manual_seed(2)
    for name, shape in (("0.0.weight", (16, 32, 1, 1)), ("0.0.bias", (16,)), ("0.1.weight", (1,)),
                        ("1.0.weight", (1, 16, 1, 1)), ("1.0.bias", (1,)), ("1.1.weight", (1,))):
        state[f"backbone._classify._linears.{name}"] = torch.randn(shape, generator=gen)
    src = tmp_path / "opencd_tinycd.pth"
    torch.save({"meta": {"mmengine_version": "0.10.7"}, "state_dict": state}, src)
    net, cfg = convert_foreign("opencd", src, "tinycd")
    assert cfg["model"] == {"name": "tinycd", "classifier": [16], "prelu_logit": True}
    assert torch.equal(net.classifier.layers[1]["act"].weight, state["backbone._classify._linears.1.1.weight"])


def _read_set(root: Path) -> tuple[list[str], torch.Tensor, torch.Tensor, np.ndarray]:
    stems = sorted(p.stem for p in (root / "A").glob("*.png"))
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

    def img(folder: str) -> torch.Tensor:
        arr = [(np.asarray(Image.open(root / folder / f"{s}.png").convert("RGB")) / 255.0 - mean) / std
               for s in stems]
        return torch.from_numpy(np.stack(arr).transpose(0, 3, 1, 2)).float()

    labels = np.stack([np.asarray(Image.open(root / "label" / f"{s}.png")) > 127 for s in stems])
    return stems, img("A"), img("B"), labels


def test_convert_then_cli_test_and_predict_reproduce_the_model(synth_root: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture) -> None:
    """Conversion -> `changekit test` (released protocol: A first, ImageNet mean/std, sigmoid > 0.5) gives the
    confusion counts of running the released-weight model directly, and `predict --prob` its probabilities (with
    one tile per image: TinyCD's InstanceNorms see the whole input, so padding to a larger tile changes them)."""
    from changekit.cli import main

    data = synth_root / "val"
    stems, a, b, labels = _read_set(data)
    state = _released_state(3)
    direct = build_model("tinycd").eval()
    direct.load_state_dict(map_released_keys(state))
    with torch.no_grad():  # shift the logit so that the threshold splits the pixels: a strong check of the protocol
        state["_classify._linears.2.0.bias"] -= direct(a, b).change.median()
        direct.load_state_dict(map_released_keys(state))
        prob = direct(a, b).change_prob().numpy()
        swapped = direct(b, a).change_prob().numpy()
    pred = prob > 0.5
    assert 0.2 < pred.mean() < 0.8 and ((swapped > 0.5) != pred).mean() > 0.01  # the A/B order matters
    src, ckpt = tmp_path / "levir_best.pth", tmp_path / "tinycd.ckpt"
    torch.save(state, src)
    assert main(["convert", "tinycd", str(src), "--out", str(ckpt)]) == 0
    assert "285,128 parameters" in capsys.readouterr().out
    assert main(["test", "--ckpt", str(ckpt), "--data", str(data), "--out", str(tmp_path / "test"),
                 "--no-report"]) == 0
    metrics = json.loads((tmp_path / "test" / "metrics.json").read_text())
    tp, fp = int((pred & labels).sum()), int((pred & ~labels).sum())
    fn, tn = int((~pred & labels).sum()), int((~pred & ~labels).sum())
    assert np.array(metrics["confusion"]).tolist() == [[tn, fp], [fn, tp]]
    assert main(["predict", "--ckpt", str(ckpt), "--a", str(data / "A"), "--b", str(data / "B"),
                 "--out", str(tmp_path / "pred"), "--prob", "--tile", "64", "--overlap", "0"]) == 0
    for i, stem in enumerate(stems):  # OUT_prob/<stem>.png (or, in older layouts, OUT/<stem>_prob.png)
        found = [*tmp_path.glob(f"pred_prob/{stem}.png"), *tmp_path.glob(f"pred/{stem}_prob.png")]
        assert len(found) == 1, found
        saved = np.asarray(Image.open(found[0])) / 255.0
        assert np.abs(saved - prob[i]).max() <= 0.5 / 255 + 1e-4  # PNG quantisation x 255


# ---------------------------------------------------------------- learning and recipes
def test_loss_falls_on_generated_scenes() -> None:
    from .test_fc_siam import _synthetic_pairs

    torch.manual_seed(0)
    a, b, mask = _synthetic_pairs(n=4, size=32)
    model = build_model("tinycd").train()
    loss_fn = build_loss([{"name": "bce"}])
    opt = torch.optim.AdamW(model.parameters(), lr=3.5e-3, weight_decay=9.4e-3)
    losses = train_losses(lambda: loss_fn(model(a, b), {"mask": mask})[0], opt, 25)
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3, losses


@pytest.mark.parametrize("config", ["tinycd/levir_cd.yaml", "changeanywhere/models/tinycd.yaml"])
def test_cli_trains_the_recipes(config: str, synth_root: Path, tmp_path: Path) -> None:
    cfg = train_recipe_via_cli(CONFIGS / config, synth_root, tmp_path / "run", "data.root=null",
                               "model.backbone_weights=null")
    assert cfg["model"]["name"] == "tinycd" and cfg["loss"] == [{"name": "bce"}]
    if config.startswith("tinycd/"):
        assert cfg["optim"]["lr"] == pytest.approx(3.568e-3, rel=1e-3) and cfg["schedule"]["name"] == "cosine"
        assert cfg["trainer"]["max_epochs"] == 100
