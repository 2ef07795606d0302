"""No file a user points at can run code (issue 11, section 3).

A planted pickle (an object whose ``__reduce__`` would create a marker file), a cyclic pickle, an endlessly nested
one, the first half of a real checkpoint and a zero-byte file are put at every place where changekit reads a
weights file, and each is reached through the command line. Every case must: never create the marker, exit with
code 2, print exactly one ``error:`` line that names the planted file, and leave every input byte-identical.
"""

from __future__ import annotations

import builtins
import hashlib
import pickle
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from changekit.cli import main

KINDS = ("payload", "cyclic", "deep", "truncated", "empty")


class Plant:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears if the loader runs code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return builtins.open, (self.marker, "w")


def _rezip(src: Path, dst: Path, data_pkl: bytes) -> None:
    """Copy the zip archive ``src`` to ``dst`` with its ``data.pkl`` replaced."""
    with zipfile.ZipFile(src) as zi, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zo:
        for item in zi.infolist():
            zo.writestr(item, data_pkl if item.filename.endswith("/data.pkl") else zi.read(item.filename))


def plant(kind: str, path: Path, marker: Path, real: Path) -> Path:
    """Write a hostile file of ``kind`` at ``path`` (``real``: a genuine checkpoint to cut or re-pack)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "payload":
        torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {"config": {"model": {"name": "x"}}},
                    "extra": Plant(marker)}, path)
    elif kind == "cyclic":
        obj: dict[str, Any] = {"w": 1}
        obj["state_dict"] = obj  # unpickles into a dict that contains itself
        obj["hyper_parameters"] = {"config": obj}
        torch.save(obj, path)
    elif kind == "deep":  # 100 000 nested lists: built without recursion, walked by nothing
        n = 100_000
        _rezip(real, path, pickle.PROTO + bytes([2]) + b"]" * n + b"a" * (n - 1) + b".")
    elif kind == "truncated":
        raw = real.read_bytes()
        path.write_bytes(raw[: len(raw) // 2])
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "torchscript_payload":  # a TorchScript archive whose data.pkl plants the marker
        _rezip(real, path, pickle.dumps(Plant(marker), protocol=2))
    else:  # pragma: no cover - a typo in a parametrisation
        raise ValueError(kind)
    return path


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under ``roots`` (files or folders)."""
    out = {}
    for root in roots:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


@dataclass
class World:
    """The genuine inputs every case starts from (built once per module)."""

    root: Path
    data: Path  # binary A|B|label set with train/ and val/
    scenes: Path  # semantic scenes (im1, label1, classes.yaml) for the generator
    ckpt: Path  # a real fc_siam_diff checkpoint
    clip_ckpt: Path  # a real tiny ChangeCLIP checkpoint (takes CLIP tags)
    torchscript: Path  # a real (tiny) TorchScript archive
    config: Path  # a fc_siam_diff training config for `data`
    clip_config: Path  # a tiny ChangeCLIP training config


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    from changekit.config import resolve
    from changekit.data.synthetic import synthesize
    from changekit.engine.checkpoint import save_checkpoint
    from changekit.models import build_model

    root = tmp_path_factory.mktemp("load_sites")
    data = root / "data"
    synthesize(data / "train", n=4, size=32, seed=1)
    synthesize(data / "val", n=2, size=32, seed=2)
    scenes = root / "scenes"
    synthesize(scenes, n=2, size=32, seed=3, semantic=True)
    cfg = {"model": {"name": "fc_siam_diff"},
           "data": {"train": str(data / "train"), "val": str(data / "val"), "test": str(data / "val"),
                    "batch_size": 2, "num_workers": 0},
           "trainer": {"max_steps": 1, "accelerator": "cpu", "devices": 1, "progress_bar": False}}
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    torch.manual_seed(0)
    ckpt = save_checkpoint(root / "model.ckpt", build_model("fc_siam_diff"), resolve(cfg))
    clip_model = {"name": "changeclip_rn50", "channels": 64, "context_width": 32, "context_heads": 2,
                  "context_layers": 1, "text": {"width": 32, "heads": 2, "layers": 1},
                  "image": {"layers": [1, 1, 1, 1], "width": 8, "output_dim": 32, "heads": 2,
                            "input_resolution": 64}}
    clip_cfg = {**cfg, "model": clip_model}
    (root / "clip_cfg.yaml").write_text(yaml.safe_dump(clip_cfg))
    clip_ckpt = save_checkpoint(root / "clip.ckpt", build_model(**clip_model), resolve(
        {"model": clip_model, "trainer": {"eval_tile": 32, "eval_stride": 32}}))

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = torch.nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.visual(x)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(Tiny(), torch.ones(1, 2)).save(str(root / "tiny_ts.pt"))
    return World(root, data, scenes, Path(ckpt), Path(clip_ckpt), root / "tiny_ts.pt", root / "cfg.yaml",
                 root / "clip_cfg.yaml")


def _generator_run(w: World, run: Path) -> None:
    """A genuine (untrained) tiny generator saved in ``run``: generator.yaml, autoencoder.pt, unet.pt."""
    from changekit.generation.model import Generator, load_class_table, resolve_settings

    torch.manual_seed(0)
    Generator(resolve_settings("tiny"), load_class_table(w.scenes / "classes.yaml")).save(run)


def _resume_run(w: World, run: Path, last: Path) -> None:
    """A run folder as `train` leaves it (config.yaml), whose last.ckpt is the planted file."""
    from changekit.config import dump_config, load_config

    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(dump_config(load_config(w.config)))


# site -> (where the hostile file goes, relative to the case folder; setup; argv)
Site = tuple[str, Callable[[World, Path, Path], None] | None, Callable[[World, Path, Path], list[str]]]
SITES: dict[str, Site] = {
    "test --ckpt": ("bad.ckpt", None, lambda w, f, c: [
        "test", "--ckpt", str(f), "--data", str(w.data / "val"), "--out", str(c / "eval"), "--no-report"]),
    "predict --ckpt": ("bad.ckpt", None, lambda w, f, c: [
        "predict", "--ckpt", str(f), "--a", str(w.data / "val" / "A"), "--b", str(w.data / "val" / "B"),
        "--out", str(c / "pred")]),
    "train init_from": ("bad.ckpt", None, lambda w, f, c: [
        "train", str(w.config), "--out", str(c / "run"), "--set", f"init_from={f}"]),
    "train --resume": ("run/checkpoints/last.ckpt", lambda w, f, c: _resume_run(w, c / "run", f), lambda w, f, c: [
        "train", "--out", str(c / "run"), "--resume"]),
    "siam_unet encoder_weights": ("enc.pth", None, lambda w, f, c: [
        "train", str(w.config), "--out", str(c / "run"), "--set", "model.name=siam_unet",
        "--set", f"model.encoder_weights={f}"]),
    "misgnet backbone_weights": ("pvt.pth", None, lambda w, f, c: [
        "train", str(w.config), "--out", str(c / "run"), "--set", "model.name=misgnet",
        "--set", f"model.backbone_weights={f}"]),
    "changeclip clip_weights": ("RN50.pt", None, lambda w, f, c: [
        "train", str(w.clip_config), "--out", str(c / "run"), "--set", f"model.clip_weights={f}"]),
    "generator train --resume": ("gen/state.pt", None, lambda w, f, c: [
        "generator", "train", "--images", str(w.scenes / "im1"), "--masks", str(w.scenes / "label1"),
        "--classes", str(w.scenes / "classes.yaml"), "--out", str(c / "gen"), "--preset", "tiny", "--resume",
        "--no-progress"]),
    "generate --generator": ("gen/unet.pt", lambda w, f, c: _generator_run(w, c / "gen"), lambda w, f, c: [
        "generate", "--generator", str(c / "gen"), "--masks", str(w.scenes / "label1"), "--out", str(c / "new"),
        "--n", "1"]),
    "convert misgnet": ("mynet.pth", None, lambda w, f, c: ["convert", "misgnet", str(f), "--out", str(c / "m.ckpt")]),
    "convert opencd": ("bit.pth", None, lambda w, f, c: [
        "convert", "opencd", str(f), "--model", "bit", "--out", str(c / "m.ckpt")]),
    "convert tinycd": ("levir_best.pth", None, lambda w, f, c: [
        "convert", "tinycd", str(f), "--out", str(c / "m.ckpt")]),
    "convert clearscd": ("clearscd.pth", None, lambda w, f, c: [
        "convert", "clearscd", str(f), "--out", str(c / "m.ckpt")]),
    "clip-tag --weights": ("ViT-B-16.pt", None, lambda w, f, c: [
        "clip-tag", str(w.data / "val"), "--weights", str(f), "--device", "cpu"]),
    "predict --tile-tags --clip-weights": ("ViT-B-16.pt", None, lambda w, f, c: [
        "predict", "--ckpt", str(w.clip_ckpt), "--a", str(w.data / "val" / "A"), "--b", str(w.data / "val" / "B"),
        "--out", str(c / "pred"), "--tile-tags", "--clip-weights", str(f), "--device", "cpu"]),
    "test --tile-tags --clip-weights": ("ViT-B-16.pt", None, lambda w, f, c: [
        "test", "--ckpt", str(w.clip_ckpt), "--data", str(w.data / "val"), "--out", str(c / "eval"),
        "--no-report", "--tile-tags", "--clip-weights", str(f)]),
}
CLIP_SITES = ("changeclip clip_weights", "clip-tag --weights", "predict --tile-tags --clip-weights",
              "test --tile-tags --clip-weights")


def _check_refused(world: World, case: Path, site: str, kind: str, capsys: pytest.CaptureFixture) -> str:
    where, setup, argv = SITES[site]
    marker = case / "MARKER"
    target = case / where
    if setup is not None:
        setup(world, target, case)
    real = world.torchscript if kind == "torchscript_payload" else world.ckpt
    plant(kind, target, marker, real)
    before = snapshot(world.root, target.parent)
    capsys.readouterr()
    rc = main(argv(world, target, case))
    err = capsys.readouterr().err
    assert not marker.exists(), f"{site}: the planted pickle ran"
    assert rc == 2, f"{site}/{kind}: exit {rc}\n{err}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), f"{site}/{kind}:\n{err}"
    assert target.name in lines[0], f"{site}/{kind}: the message does not name the file: {lines[0]}"
    assert snapshot(world.root, target.parent) == before, f"{site}/{kind}: an input changed"
    return lines[0]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("site", list(SITES))
def test_hostile_file_is_refused_in_one_line(world: World, site: str, kind: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    line = _check_refused(world, tmp_path, site, kind, capsys)
    if kind == "payload" and site not in ("train --resume",) and not site.startswith("convert"):
        assert "never loaded" in line or "no state dict" in line, line  # refused as code, not misread


@pytest.mark.parametrize("site", CLIP_SITES)
def test_torchscript_archive_with_a_payload_is_read_without_running_it(
        world: World, site: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """OpenAI ships CLIP as TorchScript archives; one whose pickle plants code is read as data, never run."""
    _check_refused(world, tmp_path, site, "torchscript_payload", capsys)


def test_torchscript_tensors_come_back_with_their_names_and_values(tmp_path: Path) -> None:
    """``restricted_load`` reads a real TorchScript archive (scripted and traced) like ``torch.jit.load``'s
    state dict: same names (``visual.…``, ``transformer.…`` as in OpenAI's RN50.pt), same values and dtypes."""
    from changekit.safeload import restricted_load

    class Visual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(3, 4, 3)
            self.bn1 = torch.nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.bn1(self.conv1(x))

    class Clip(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.visual = Visual()
            self.transformer = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
            self.positional_embedding = torch.nn.Parameter(torch.randn(7, 4))
            self.logit_scale = torch.nn.Parameter(torch.tensor(4.6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.visual(x).mean() * self.logit_scale + self.transformer(self.positional_embedding).sum()

    torch.manual_seed(0)
    model = Clip().eval()
    model.visual.bn1.running_mean.uniform_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(model).save(str(tmp_path / "scripted.pt"))
        torch.jit.trace(model.half(), torch.ones(1, 3, 8, 8, dtype=torch.half)).save(str(tmp_path / "RN50.pt"))
    for name in ("scripted.pt", "RN50.pt"):
        expected = torch.jit.load(str(tmp_path / name)).state_dict()
        got = restricted_load(tmp_path / name)
        assert sorted(got) == sorted(expected)
        assert "visual.conv1.weight" in got and "transformer.1.bias" in got and "visual.bn1.running_mean" in got
        for key, value in expected.items():
            assert got[key].dtype == value.dtype and torch.equal(got[key], value), key
