"""ChangeCLIP: contract at tiny width, exact full-size parameter counts, prompts, text path, tags switch, CLIP
weight loading, optimiser groups, configs, sliding-window inference with tags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import changekit.models.changeclip  # noqa: F401  (registers the builders until models/__init__ imports it)
from changekit.errors import CheckpointError, ConfigError, DatasetNotFoundError
from changekit.models import build_model, count_parameters
from changekit.models.changeclip.model import ChangeCLIP
from changekit.models.changeclip.text import BACKGROUND, prompts, tokenize
from changekit.models.changeclip.weights import load_clip_weights

from .base import BaseModelTester, train_losses

TEXT = {"width": 32, "heads": 2, "layers": 1}
SMALL = {"text": TEXT, "context_width": 32, "context_heads": 2, "context_layers": 1, "channels": 64}
TINY = {
    "changeclip_rn50": {**SMALL, "image": {"layers": (1, 1, 1, 1), "width": 8, "output_dim": 32, "heads": 2,
                                           "input_resolution": 64}},
    "changeclip_vitb16": {**SMALL, "image": {"width": 32, "layers": 4, "heads": 2, "output_dim": 32,
                                             "out_indices": (0, 1, 2, 3), "input_resolution": 64}},
}
TAGS = ["building", "road", "tree", "farmland", "bare land", "river", "parking lot", "dense residential", "meadow"]
OTHER = ["sea", "beach", "harbor", "ship", "island", "bridge", "lake", "river", "pond"]


# Contract tests call model(a, b) without tags (allow_untagged) and check gradients on single samples, so
# stochastic depth is off there (it drops a whole branch per sample).
class TestChangeCLIPRN50(BaseModelTester):
    model_name = "changeclip_rn50"
    model_kwargs = {**TINY["changeclip_rn50"], "allow_untagged": True, "decoder_drop_path": 0.0}


class TestChangeCLIPViTB16(BaseModelTester):
    model_name = "changeclip_vitb16"
    model_kwargs = {**TINY["changeclip_vitb16"], "allow_untagged": True, "decoder_drop_path": 0.0,
                    "image": {**TINY["changeclip_vitb16"]["image"], "drop_path_rate": 0.0}}


def tiny(name: str = "changeclip_rn50", seed: int = 0, **kw: Any) -> ChangeCLIP:
    torch.manual_seed(seed)
    return build_model(name, **{**TINY[name], **kw})  # type: ignore[return-value]


def pair(n: int = 2, size: int = 64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g), torch.randn(n, 3, size, size, generator=g)


# Exact counts of the original (seed-systems.md 3.3), per part.
PARTS = {
    "changeclip_rn50": {"backbone": 38_740_832, "text_encoder": 63_690_240, "context_decoder": 3_948_800,
                        "neck": 4_328_448, "minus_conv": 984_576, "channel_att": 1_085_632,
                        "decode_head": 4_754_030, "total": 117_540_238},
    "changeclip_vitb16": {"backbone": 93_326_592, "text_encoder": 63_428_096, "context_decoder": 3_553_024,
                          "neck": 3_935_232, "minus_conv": 787_968, "channel_att": 1_085_632,
                          "decode_head": 4_622_958, "total": 170_746_670},
}


@pytest.mark.parametrize("name", sorted(PARTS))
def test_full_size_parameter_counts(name: str) -> None:
    with torch.device("meta"):
        model = build_model(name)
    parts = PARTS[name]
    assert count_parameters(model) == parts["total"]
    for part, expected in parts.items():
        if part != "total":
            assert count_parameters(getattr(model, part)) == expected, part
    dim = 1024 if name.endswith("rn50") else 512
    assert model.contexts2.shape == (1, 1, 13, 512) and model.gamma.shape == (dim,)
    assert model.text_encoder.positional_embedding.shape == (77, 512)
    assert count_parameters(model, trainable_only=True) == parts["total"]  # nothing is frozen


def test_prompts_and_tokens() -> None:
    back, fore = prompts(TAGS + ["extra"], 9)
    assert back == BACKGROUND == "remote sensing image background objects"
    assert fore == "remote sensing image foreground objects, " + ", ".join(TAGS)
    assert prompts("building|road", 9)[1] == "remote sensing image foreground objects, building, road"
    assert prompts("", 9)[1] == "remote sensing image foreground objects"
    ids = tokenize(fore, 64)
    assert len(ids) == 64 and ids[0] == 49406 and max(ids) == 49407 and ids[-1] == 0
    with pytest.raises(ValueError, match="context length"):
        tokenize(", ".join(["single-family residential"] * 20), 64)


def test_distinct_prompts_are_encoded_once_with_context_after_sot() -> None:
    """The batched text path equals encoding every image's prompts on their own, and the encoder input is
    [SOT, 13 context vectors, prompt tokens] with the EOT read 13 positions later."""
    model = tiny().eval()
    ta, tb = [TAGS, OTHER], [OTHER, TAGS[:3]]
    with torch.no_grad():
        emb_a, emb_b = model.encode_prompts(ta, tb, torch.device("cpu"))
        for tags, got in ((ta[0], emb_a[0]), (ta[1], emb_a[1]), (tb[1], emb_b[1])):
            toks = torch.tensor([tokenize(p, 64) for p in prompts(tags, 9)])
            torch.testing.assert_close(model.text_encoder(toks, model.contexts2[0]), got, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(emb_a[0, 0], emb_b[1, 0])  # the background prompt is shared
        enc = model.text_encoder
        toks = torch.tensor([tokenize("remote sensing image foreground objects, road", 64)])
        x = enc.token_embedding(toks)
        x = torch.cat([x[:, :1], model.contexts2[0], x[:, 1:]], 1) + enc.positional_embedding
        x = enc.ln_final(enc.transformer(x, enc.attn_mask))
        eot = int(toks.argmax()) + 13
        torch.testing.assert_close(enc(toks, model.contexts2[0]), x[:, eot] @ enc.text_projection)


def test_tags_change_the_output_and_list_or_string_forms_agree() -> None:
    model = tiny().eval()
    a, b = pair()
    with torch.no_grad():
        ref = model(a, b, tags_a=[TAGS, TAGS], tags_b=[OTHER, OTHER]).change
        joined = model(a, b, tags_a=["|".join(TAGS)] * 2, tags_b=["|".join(OTHER)] * 2).change
        other = model(a, b, tags_a=[TAGS, TAGS], tags_b=[TAGS, TAGS]).change
    torch.testing.assert_close(ref, joined)
    assert not torch.allclose(ref, other)


def test_released_inference_switch_builds_b_prompt_from_a_tags() -> None:
    released = tiny(text_tags_b_from_a=True).eval()
    a, b = pair()
    with torch.no_grad():
        out = released(a, b, tags_a=[TAGS] * 2, tags_b=[OTHER] * 2).change
        same = released(a, b, tags_a=[TAGS] * 2, tags_b=[TAGS] * 2).change
        own = tiny(text_tags_b_from_a=False).eval()(a, b, tags_a=[TAGS] * 2, tags_b=[OTHER] * 2).change
    torch.testing.assert_close(out, same)
    assert not torch.allclose(out, own)
    released.train()  # training always uses each date's own tags
    text_a, text_b = released.encode_prompts([TAGS], [OTHER], torch.device("cpu"))
    assert not torch.allclose(text_a, text_b)


def test_missing_tags_are_an_error_unless_allowed() -> None:
    a, b = pair(1)
    with pytest.raises(ValueError, match="clip-tag"):
        tiny()(a, b)
    with pytest.raises(ValueError, match="one entry per image"):
        tiny()(a, b, tags_a=[TAGS, TAGS], tags_b=[TAGS, TAGS])
    assert tiny(allow_untagged=True)(a, b).change.shape == (1, 2, 64, 64)


@pytest.mark.parametrize("name", sorted(TINY))
def test_date_batched_equals_two_passes_in_eval(name: str) -> None:
    a, b = pair()
    fast, slow = tiny(name, date_batched=True).eval(), tiny(name, date_batched=False).eval()
    slow.load_state_dict(fast.state_dict())
    ex = fast.example_extras(2)
    with torch.no_grad():
        torch.testing.assert_close(fast(a, b, **ex).change, slow(a, b, **ex).change, atol=1e-4, rtol=1e-4)


def test_score_map_is_concatenated_to_the_embedding_stage() -> None:
    model = tiny()
    shapes = [m[0].in_channels for m in model.minus_conv]
    assert shapes == [32 + 0, 64, 128, 256 + 2]  # width 8: 32/64/128/256 channels, score map on stage 4
    vit = tiny("changeclip_vitb16")
    assert [m[0].in_channels for m in vit.minus_conv] == [32, 32, 34, 32]
    with torch.device("meta"):
        assert [c.in_channels for c in build_model("changeclip_rn50").neck.lateral_convs] == [512, 1024, 2048, 4100]
        assert [c.in_channels for c in build_model("changeclip_vitb16").neck.lateral_convs] == [1536, 1536, 1540, 1536]


def test_no_weight_decay_groups_follow_the_original_names() -> None:
    from changekit.engine.schedules import build_optimizer

    model = tiny()
    opt = build_optimizer(model, {"name": "adamw", "lr": 1e-4, "weight_decay": 0.01, "betas": [0.9, 0.999],
                                  "no_decay_keys": ["absolute_pos_embed", "relative_position_bias_table", "norm"]})
    no_decay = {id(p) for p in opt.param_groups[1]["params"]}
    names = sorted(n for n, p in model.named_parameters() if id(p) in no_decay)
    # context decoder: 1 layer x norm1-3 (weight, bias); Swin decoder: 3 stages x 2 blocks x (norm1, norm2, table)
    assert len(names) == 6 + 3 * 2 * 5
    assert not any(n.startswith(("backbone.", "text_encoder.")) for n in names)  # CLIP's ln_* are decayed


def _fake_clip_state(model: ChangeCLIP, grid: int) -> dict[str, torch.Tensor]:
    """A CLIP-format state dict made from a tiny model's towers, with a ``grid x grid`` attention-pool table."""
    state = {f"visual.{k}": v.clone() for k, v in model.backbone.state_dict().items()}
    pos = state["visual.attnpool.positional_embedding"]
    state["visual.attnpool.positional_embedding"] = torch.randn(grid * grid + 1, pos.shape[1])
    text = model.text_encoder.state_dict()
    state.update({k: v.clone() for k, v in text.items() if k != "attn_mask"})
    state["positional_embedding"] = torch.cat([text["positional_embedding"], torch.randn(3, TEXT["width"])])
    state["logit_scale"] = torch.tensor(4.6)
    return state


def test_clip_weights_load_resize_and_check(tmp_path: Path) -> None:
    src = tiny(seed=3)
    state = _fake_clip_state(src, grid=1)
    torch.save({"state_dict": state}, tmp_path / "clip.pt")
    model = tiny(seed=4, clip_weights=str(tmp_path / "clip.pt"), in_channels=4)
    torch.testing.assert_close(model.text_encoder.text_projection, src.text_encoder.text_projection)
    torch.testing.assert_close(model.text_encoder.positional_embedding, src.text_encoder.positional_embedding)
    torch.testing.assert_close(model.backbone.layer4[0].conv3.weight, src.backbone.layer4[0].conv3.weight)
    pos = model.backbone.attnpool.positional_embedding  # 1x1 grid bilinearly resized to the model's 2x2
    torch.testing.assert_close(pos[1:], state["visual.attnpool.positional_embedding"][1:].expand(4, -1))
    w = model.backbone.conv1.weight  # the extra band gets the mean RGB filter
    torch.testing.assert_close(w[:, 3], src.backbone.conv1.weight.mean(1))
    with pytest.raises(CheckpointError, match="does not fit"):
        tiny("changeclip_vitb16", clip_weights=str(tmp_path / "clip.pt"))
    with pytest.raises(DatasetNotFoundError, match="clip_weights"):
        tiny(clip_weights=str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="offline"):
        load_clip_weights(tiny(), "openai")  # tests run with HF_HUB_OFFLINE=1: never downloads


def test_sliding_window_inference_passes_tags_per_tile() -> None:
    from changekit.inference.sliding import sliding_window_predict

    model = tiny().eval()
    a, b = pair(2, size=96)
    ex = {"tags_a": ["|".join(TAGS), "|".join(OTHER)], "tags_b": ["|".join(OTHER), "|".join(TAGS)]}
    res = sliding_window_predict(model, a, b, tile=64, stride=32, extras=ex)
    assert res["change"].shape == (2, 96, 96) and torch.isfinite(res["change"]).all()
    one = sliding_window_predict(model, a[1], b[1], tile=64, stride=32,
                                 extras={"tags_a": ex["tags_a"][1:], "tags_b": ex["tags_b"][1:]})
    torch.testing.assert_close(res["change"][1], one["change"], atol=1e-4, rtol=1e-4)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("changeclip_rn50", num_classes=3)
    with pytest.raises(ConfigError, match="channels"):
        build_model("changeclip_rn50", **{**TINY["changeclip_rn50"], "channels": 66})


def test_loss_falls_when_training_a_few_steps() -> None:
    torch.manual_seed(0)
    model = tiny().train()
    a, b = pair(2)
    b[:, :, 16:48, 16:48] += 3
    mask = torch.zeros(2, 64, 64, dtype=torch.long)
    mask[:, 16:48, 16:48] = 1
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ex = model.example_extras(2)
    losses = train_losses(lambda: torch.nn.functional.cross_entropy(model(a, b, **ex).change, mask), opt, 8)
    assert losses[-1] < 0.7 * losses[0], losses


CONFIG_TABLE = {  # seed-systems.md 3.5: (lr, iterations, validation interval) per dataset and backbone
    "sysu_cd_rn50": (3e-5, 20000, 500), "sysu_cd_vitb16": (3e-5, 20000, 500),
    "whu_cd_rn50": (1e-4, 20000, 500), "whu_cd_vitb16": (3e-5, 20000, 500),
    "levir_cd_rn50": (1e-4, 30000, 1000), "levir_cd_vitb16": (1e-4, 40000, 1000),
    "levir_cd_plus_rn50": (1e-4, 40000, 1000), "levir_cd_plus_vitb16": (3e-5, 30000, 1000),
    "cdd_rn50": (1e-4, 40000, 2000), "cdd_vitb16": (1e-4, 40000, 2000),
}


@pytest.mark.parametrize("stem", sorted(CONFIG_TABLE))
def test_configs_follow_the_released_recipe(stem: str, monkeypatch: Any) -> None:
    from changekit import config as config_mod
    from changekit.data.tags import TAGS_DEFAULTS

    if "tags" not in config_mod.DEFAULTS["data"]:  # until config.py carries data.tags
        monkeypatch.setitem(config_mod.DEFAULTS["data"], "tags", dict(TAGS_DEFAULTS))
    path = Path(__file__).resolve().parents[2] / "configs" / "changeclip" / f"{stem}.yaml"
    cfg = config_mod.load_config(path)
    lr, steps, every = CONFIG_TABLE[stem]
    rn50 = stem.endswith("rn50")
    assert cfg["model"]["name"] == ("changeclip_rn50" if rn50 else "changeclip_vitb16")
    assert cfg["optim"]["lr"] == lr and cfg["trainer"]["max_steps"] == steps
    assert cfg["trainer"]["val_every_steps"] == every and cfg["data"]["batch_size"] == (20 if rn50 else 12)
    assert cfg["optim"]["weight_decay"] == 0.01 and cfg["optim"]["betas"] == [0.9, 0.999]
    assert cfg["optim"]["no_decay_keys"] == ["absolute_pos_embed", "relative_position_bias_table", "norm"]
    sched = cfg["schedule"]
    assert (sched["name"], sched["power"], sched["warmup"], sched["warmup_factor"]) == ("poly", 1.0, 1500, 1e-6)
    assert {"name": "random_crop", "size": 256, "cat_max_ratio": 0.75} in cfg["data"]["augment"]
    assert {"name": "photometric_mmseg", "brightness": 10, "contrast": [0.8, 1.2], "saturation": [0.8, 1.2],
            "hue": 10, "per_date": True} in cfg["data"]["augment"] and cfg["loss"] == [{"name": "ce"}]
    from changekit.data.transforms import build_transforms

    assert build_transforms(cfg["data"]["augment"]) is not None  # the ops and their parameters exist
    assert cfg["data"]["tags"]["enabled"] is True and cfg["data"]["tags"]["allow_missing"] is False
    kwargs = {k: v for k, v in cfg["model"].items() if k not in ("name", "clip_weights")}
    with torch.device("meta"):
        assert count_parameters(build_model(cfg["model"]["name"], **kwargs)) == PARTS[cfg["model"]["name"]]["total"]


def test_openai_torchscript_archive_loads(tmp_path: Path) -> None:
    """OpenAI ships CLIP as fp16 TorchScript archives whose state dict has ``visual.*`` and the text keys."""
    src = tiny(seed=5)
    enc = src.text_encoder

    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual, self.transformer, self.token_embedding = src.backbone, enc.transformer, enc.token_embedding
            self.positional_embedding, self.text_projection = enc.positional_embedding, enc.text_projection
            self.ln_final = enc.ln_final
            self.logit_scale = torch.nn.Parameter(torch.ones([]))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.logit_scale

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(Holder().half(), torch.ones(1, dtype=torch.half)).save(str(tmp_path / "RN50.pt"))
        model = tiny(seed=6, clip_weights=str(tmp_path / "RN50.pt"))
    assert model.backbone.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(model.backbone.conv1.weight, src.backbone.conv1.weight.float())
    torch.testing.assert_close(model.text_encoder.ln_final.weight, enc.ln_final.weight.float())
