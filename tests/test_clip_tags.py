"""Zero-shot CLIP tagging (tiny random CLIP), the tag files' format, reading them back after the data folder
moves, the tags dataset wrapper, the clip-tag CLI, and a short ChangeCLIP training run on tagged data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate
from typer.testing import CliRunner

from changekit.clip_tags import class_probabilities, ranked_entry, read_class_names, tag_dataset
from changekit.data.datasets import ChangeDataset
from changekit.data.synthetic import synthesize
from changekit.data.tags import TaggedDataset, maybe_add_tags, pair_extras, read_tags_file, tags_file
from changekit.errors import ConfigError, DatasetNotFoundError

open_clip = pytest.importorskip("open_clip")

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(autouse=True)
def _one_thread() -> Any:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def clip() -> tuple[Any, Any, Any]:
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP).eval()
    return model, open_clip.image_transform(32, is_train=False), open_clip.get_tokenizer("ViT-B-16")


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    root = tmp_path / "CD"
    synthesize(root / "train", n=5, size=64, seed=1)
    synthesize(root / "val", n=3, size=64, seed=2)
    return root


def test_bundled_classes_are_the_seeds_56() -> None:
    names = read_class_names()
    assert len(names) == 56 and names[:3] == ["airport", "bare land", "basketball court"]
    assert names[-1] == "cabin" and "single-family residential" in names and "impermeable surface" in names


def test_class_file_in_the_seeds_format(tmp_path: Path) -> None:
    f = tmp_path / "rscls.txt"
    f.write_text("airport, 飞机场\nbare land, 裸地\n\n", encoding="utf-8")
    assert read_class_names(f) == ["airport", "bare land"]
    f.write_text("a|b\nc\n")
    with pytest.raises(ConfigError, match="'|'"):
        read_class_names(f)
    with pytest.raises(DatasetNotFoundError):
        read_class_names(tmp_path / "none.txt")


def test_ranked_entry_format() -> None:
    entry = ranked_entry("A/x.png", np.array([0.1, 0.6, 0.3], np.float32), ["a", "b", "c"])
    assert list(entry.items()) == [("image_path", "A/x.png"), ("b", "0.6000"), ("c", "0.3000"), ("a", "0.1000")]


def test_tagging_writes_the_seeds_json_and_survives_moving_the_data(data: Path, clip: Any, tmp_path: Path) -> None:
    names = read_class_names()
    files = tag_dataset(data, *clip, names, batch_size=4, progress=False)
    assert sorted(f.relative_to(data).as_posix() for f in files) == [
        "train/A_clipcls_56_vit16.json", "train/B_clipcls_56_vit16.json",
        "val/A_clipcls_56_vit16.json", "val/B_clipcls_56_vit16.json"]
    entries = json.loads((data / "train" / "B_clipcls_56_vit16.json").read_text())
    assert [e["image_path"] for e in entries] == [f"train/B/synth_{i:05d}.png" for i in range(5)]
    for e in entries:
        keys = list(e)
        assert keys[0] == "image_path" and sorted(keys[1:]) == sorted(names)
        probs = [float(e[k]) for k in keys[1:]]
        assert all(len(e[k]) == 6 and e[k][1] == "." for k in keys[1:])  # "0.xxxx"
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 0.01
    direct = class_probabilities(*clip, [data / "train" / "B" / "synth_00002.png"], names)
    assert list(entries[2])[1] == names[int(direct[0].argmax())]

    moved = tmp_path / "elsewhere" / "CD"
    shutil.move(str(data), moved)
    ds = TaggedDataset(ChangeDataset(moved / "train"))
    item = ds[2]
    assert item["tags_a"].split("|") == list(json.loads((moved / "train/A_clipcls_56_vit16.json").read_text())[2])[1:10]
    assert len(item["tags_b"].split("|")) == 9 and item["stem"] == "synth_00002"
    batch = default_collate([ds[0], ds[1], ds[2]])
    assert isinstance(batch["tags_a"], list) and len(batch["tags_a"]) == 3 and batch["tags_a"][2] == item["tags_a"]


def test_seed_files_with_absolute_paths_are_read(data: Path) -> None:
    folder = data / "train" / "A"
    entries = [{"image_path": f"/home/user/dsj_files/CDdata/X/train/A/synth_{i:05d}.png", "road": "0.5",
                "tree": "0.3", "sea": "0.2"} for i in range(5)]
    tags_file(folder).write_text(json.dumps(entries, indent=4))
    tags = read_tags_file(tags_file(folder), top_k=2)
    assert tags["synth_00003"] == ["road", "tree"]
    b = data / "train" / "B" / "synth_00003.png"
    assert pair_extras(folder / "synth_00003.png", b, allow_missing=True) == {"tags_a": ["road|tree|sea"],
                                                                               "tags_b": [""]}
    with pytest.raises(DatasetNotFoundError, match="B_clipcls_56_vit16.json"):
        pair_extras(folder / "synth_00003.png", b)


def test_missing_tags_are_an_error_unless_allowed(data: Path, caplog: Any) -> None:
    ds = ChangeDataset(data / "val")
    with pytest.raises(DatasetNotFoundError, match="6 of 6 images have no CLIP tags.*clip-tag"):
        TaggedDataset(ds)
    tagged = TaggedDataset(ds, allow_missing=True)
    assert tagged[0]["tags_a"] == "" and "allow_missing" in caplog.text
    assert len(tagged) == 3 and tagged.stems == ds.stems  # other attributes pass through
    entries = [{"image_path": "val/A/synth_00000.png", "road": "1.0000"}]
    tags_file(data / "val" / "A").write_text(json.dumps(entries))
    tags_file(data / "val" / "B").write_text(json.dumps(entries[:0]))
    with pytest.raises(DatasetNotFoundError, match="5 of 6 images.*has no entry"):
        TaggedDataset(ds)
    tags_file(data / "val" / "B").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        TaggedDataset(ds)


def test_maybe_add_tags(data: Path) -> None:
    ds = ChangeDataset(data / "val")
    assert maybe_add_tags(ds, {}, "val") is ds
    assert maybe_add_tags(ds, {"tags": {"enabled": False}}, "val", ("tags_a", "tags_b")) is ds
    with pytest.raises(DatasetNotFoundError, match="data.val: "):
        maybe_add_tags(ds, {}, "val", ("tags_a", "tags_b"))
    wrapped = maybe_add_tags(ds, {"tags": {"enabled": True, "allow_missing": True}}, "val")
    assert isinstance(wrapped, TaggedDataset)
    with pytest.raises(ConfigError, match="enabled"):
        maybe_add_tags(ds, {"tags": {"enabled": "yes"}}, "val")


def test_cli_offline_without_weights_says_how_to_provide_them(data: Path, capsys: Any) -> None:
    from changekit.cli import main

    assert main(["clip-tag", str(data)]) == 2
    err = capsys.readouterr().err
    assert "--weights" in err and "offline" in err
    assert main(["clip-tag", str(data / "nowhere"), "--weights", "x.pt"]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_tags_with_a_local_checkpoint(data: Path, clip: Any, tmp_path: Path) -> None:
    from changekit.cli import app

    cfg = tmp_path / "cfg" / "changekit-tiny-clip.json"
    cfg.parent.mkdir()
    cfg.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg)
    torch.save(clip[0].state_dict(), tmp_path / "tiny.pt")
    classes = tmp_path / "classes.txt"
    classes.write_text("building\nroad\nwater\n")
    res = CliRunner().invoke(app, ["clip-tag", str(data / "val"), "--model", "changekit-tiny-clip", "--weights",
                                   str(tmp_path / "tiny.pt"), "--classes", str(classes), "--workers", "0",
                                   "--device", "cpu"])
    assert res.exit_code == 0, res.output
    out = data / "val" / "A_clipcls_3_changekittinyclip.json"
    assert out.is_file() and str(out) in res.output
    assert json.loads(out.read_text())[0]["image_path"] == "A/synth_00000.png"


def test_load_clip_reads_openai_torchscript_archives(tmp_path: Path, data: Path) -> None:
    """A (tiny) CLIP saved the way OpenAI ships it (a TorchScript archive) loads through --weights."""
    import warnings

    from changekit.clip_tags import load_clip

    torch.manual_seed(1)
    cfg = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1}}
    src = open_clip.CLIP(**cfg, quick_gelu=True).eval()

    class Holder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, child in src.named_children():
                setattr(self, name, child)
            for name in ("positional_embedding", "text_projection", "logit_scale"):
                setattr(self, name, getattr(src, name))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.logit_scale

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(Holder(), torch.ones(1)).save(str(tmp_path / "ViT-B-16.pt"))
        model, preprocess, tokenizer = load_clip("ViT-B-16", tmp_path / "ViT-B-16.pt")
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        # open_clip rounds OpenAI archives through fp16 (as OpenAI's weights are stored)
        torch.testing.assert_close(model.encode_image(image), src.encode_image(image), atol=3e-3, rtol=5e-2)
    assert preprocess(read_pil(data / "val" / "A" / "synth_00000.png")).shape == (3, 32, 32)


def read_pil(path: Path) -> Any:
    from changekit.clip_tags import to_pil_rgb
    from changekit.data.io import read_image

    return to_pil_rgb(read_image(path))


def test_short_training_run_with_tags(data: Path, clip: Any, tmp_path: Path, monkeypatch: Any) -> None:
    """`changekit train` runs tiny ChangeCLIP for 2 steps on tagged generated data (tags reach the model)."""
    import yaml

    import changekit.models.changeclip  # noqa: F401
    from changekit import config as config_mod
    from changekit.cli import main
    from changekit.engine import datamodule
    from changekit.models.changeclip.model import ChangeCLIP

    tag_dataset(data, *clip, read_class_names(), progress=False)
    if "tags" not in config_mod.DEFAULTS["data"]:  # until config.py carries data.tags
        from changekit.data.tags import TAGS_DEFAULTS

        monkeypatch.setitem(config_mod.DEFAULTS["data"], "tags", dict(TAGS_DEFAULTS))
    if "maybe_add_tags" not in Path(datamodule.__file__).read_text():  # until the datamodule wraps datasets
        build = datamodule.build_dataset
        monkeypatch.setattr(datamodule, "build_dataset",
                            lambda cfg, split, augment=False: maybe_add_tags(build(cfg, split, augment), cfg, split))
    cfg = {
        "model": {"name": "changeclip_rn50", "channels": 64, "context_width": 32, "context_heads": 2,
                  "context_layers": 1, "text": {"width": 32, "heads": 2, "layers": 1},
                  "image": {"layers": [1, 1, 1, 1], "width": 8, "output_dim": 32, "heads": 2,
                            "input_resolution": 64}},
        "data": {"train": str(data / "train"), "val": str(data / "val"), "test": str(data / "val"),
                 "batch_size": 2, "num_workers": 0, "tags": {"enabled": True},
                 "augment": [{"name": "hflip", "p": 0.5}, {"name": "random_crop", "size": 64}]},
        "optim": {"name": "adamw", "lr": 1e-4, "weight_decay": 0.01,
                  "no_decay_keys": ["absolute_pos_embed", "relative_position_bias_table", "norm"]},
        "schedule": {"name": "poly", "power": 1.0, "warmup": 1, "warmup_factor": 1e-6},
        "trainer": {"max_steps": 2, "accelerator": "cpu", "devices": 1, "progress_bar": False,
                    "limit_val_batches": 1, "monitor": "val/miou", "log_every_n_steps": 1},
    }
    seen: list[Any] = []
    forward = ChangeCLIP.forward
    monkeypatch.setattr(ChangeCLIP, "forward", lambda self, a, b, **kw: seen.append(kw) or forward(self, a, b, **kw))
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "cfg.yaml"), "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "model.ckpt").is_file()
    assert seen and all(len(kw["tags_a"]) == 2 and len(kw["tags_a"][0].split("|")) == 9 for kw in seen[:2])


def _register_tiny_clip(clip: Any, tmp_path: Path) -> Path:
    """Register the tiny CLIP config with open_clip and save its weights; returns the weights file."""
    cfg = tmp_path / "cfg" / "changekit-tiny-clip.json"
    cfg.parent.mkdir(exist_ok=True)
    cfg.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg)
    torch.save(clip[0].state_dict(), tmp_path / "tiny.pt")
    return tmp_path / "tiny.pt"


def test_tile_tagger_gives_the_tags_clip_tag_writes(data: Path, clip: Any) -> None:
    """Normalised tiles are turned back into the same pixels, so each tile gets the tags of its image file."""
    from changekit.clip_tags import TileTagger
    from changekit.data.io import read_image
    from changekit.data.tags import image_tags
    from changekit.data.normalize import Normalisation

    names = read_class_names()
    tag_dataset(data / "train", *clip, names, progress=False)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    tagger = TileTagger(*clip, names, top_k=9, mean=mean, std=std)
    images = sorted((data / "train" / "A").glob("*.png"))
    norm = Normalisation(tuple(mean), tuple(std), scale=255.0, mode="scale")
    tiles = torch.stack([norm.hwc(read_image(p)) for p in images])
    np.testing.assert_array_equal(tagger.to_uint8(tiles), np.stack([read_image(p) for p in images]))
    got = tagger(tiles, tiles.flip(0))
    assert got["tags_a"] == [image_tags(p) for p in images]
    assert got["tags_b"] == got["tags_a"][::-1]
    assert len(set(got["tags_a"])) > 1  # the tiles are told apart
    with pytest.raises(ConfigError, match="top_k"):
        TileTagger(*clip, ["a", "b"], top_k=3)


def test_predict_and_test_tag_every_tile_through_the_cli(data: Path, clip: Any, tmp_path: Path,
                                                         monkeypatch: Any) -> None:
    """`predict --tile-tags` and `test --tile-tags` give ChangeCLIP each tile's own CLIP tags (the seed's
    mm_slide); without it, the tags of the whole image come from the tag files."""
    import changekit.models.changeclip  # noqa: F401
    from changekit.cli import main
    from changekit.config import resolve
    from changekit.data.io import read_image, write_png
    from changekit.data.tags import image_tags
    from changekit.engine.checkpoint import save_checkpoint
    from changekit.models import build_model
    from changekit.models.changeclip.model import ChangeCLIP

    weights = _register_tiny_clip(clip, tmp_path)
    model_cfg = {"name": "changeclip_rn50", "channels": 64, "context_width": 32, "context_heads": 2,
                 "context_layers": 1, "text": {"width": 32, "heads": 2, "layers": 1},
                 "image": {"layers": [1, 1, 1, 1], "width": 8, "output_dim": 32, "heads": 2, "input_resolution": 64}}
    torch.manual_seed(0)
    model = build_model(**model_cfg)
    ckpt = save_checkpoint(tmp_path / "model.ckpt", model, resolve({"model": model_cfg, "trainer": {
        "eval_mode": "whole", "eval_tile": 64, "eval_stride": 64}}))
    # a 128x128 pair made of four 64x64 images: with 64-px tiles and no overlap, each tile is one image
    tag_dataset(data / "train", *clip, read_class_names(), progress=False)
    files = {d: sorted((data / "train" / d).glob("*.png"))[:4] for d in ("A", "B", "label")}
    for d, paths in files.items():
        (tmp_path / "big" / d).mkdir(parents=True)
        img = [read_image(p) for p in paths]
        rows = [np.concatenate(img[:2], 1), np.concatenate(img[2:], 1)]
        write_png(tmp_path / "big" / d / "scene.png", np.concatenate(rows, 0))
    seen: list[Any] = []
    forward = ChangeCLIP.forward
    monkeypatch.setattr(ChangeCLIP, "forward", lambda self, a, b, **kw: seen.append(kw) or forward(self, a, b, **kw))
    args = ["predict", "--ckpt", str(ckpt), "--a", str(tmp_path / "big" / "A"), "--b", str(tmp_path / "big" / "B"),
            "--tile", "64", "--overlap", "0", "--batch-size", "4", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "tiles"), "--tile-tags", "--clip-model", "changekit-tiny-clip",
                 "--clip-weights", str(weights)]) == 0
    assert (tmp_path / "tiles" / "scene.png").is_file()
    assert len(seen) == 1 and seen[0]["tags_a"] == [image_tags(p) for p in files["A"]]
    assert seen[0]["tags_b"] == [image_tags(p) for p in files["B"]]

    seen.clear()  # test --tile-tags: the sliding window of trainer.eval_tile/eval_stride, no tag files needed
    assert main(["test", "--ckpt", str(ckpt), "--data", str(tmp_path / "big"), "--out", str(tmp_path / "eval"),
                 "--no-report", "--tile-tags", "--clip-model", "changekit-tiny-clip", "--clip-weights",
                 str(weights)]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["num_pairs"] == 1
    assert len(seen) == 1 and seen[0]["tags_a"] == [image_tags(p) for p in files["A"]]
    assert seen[0]["tags_b"] == [image_tags(p) for p in files["B"]]

    seen.clear()  # without --tile-tags: the tag files beside the scene (one entry for the whole image)
    (tmp_path / "big" / "A_clipcls_56_vit16.json").write_text(json.dumps([ranked_entry(
        "A/scene.png", np.linspace(1, 0, 56, dtype=np.float32), read_class_names())]))
    (tmp_path / "big" / "B_clipcls_56_vit16.json").write_text(
        (tmp_path / "big" / "A_clipcls_56_vit16.json").read_text().replace("A/scene", "B/scene"))
    assert main([*args, "--out", str(tmp_path / "file")]) == 0
    assert seen[0]["tags_a"] == ["|".join(read_class_names()[:9])] * 4

    fcd = build_model("fc_siam_diff")
    save_checkpoint(tmp_path / "fc.ckpt", fcd, resolve({"model": {"name": "fc_siam_diff"}}))
    args[2] = str(tmp_path / "fc.ckpt")
    assert main([*args, "--out", str(tmp_path / "fc"), "--tile-tags"]) != 0
    assert not (tmp_path / "fc").exists()
