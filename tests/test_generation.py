"""The ChangeAnywhere generator at toy size on CPU: training, sampling, mixing, pair writing and the protocol."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_capture import run_main as _run

from changekit.cli import main
from changekit.data.discover import discover
from changekit.data.io import read_image, read_palette_indices, write_png
from changekit.errors import ConfigError
from changekit.generation import train as gtrain
from changekit.generation.diffusion import ddim_sample, mask_condition
from changekit.generation.model import Generator, load_class_table, resolve_settings
from changekit.generation.synthesis import keep_mask
from changekit.generation.writer import generate_dataset

TINY = ["--preset", "tiny", "--no-progress", "--set", "train.ae_steps=3", "--set", "train.ldm_steps=3",
        "--set", "train.sample_every=2"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six 32x32 semantic scenes made by ``changekit data synth --semantic``: date-1 images and class maps."""
    root = tmp_path_factory.mktemp("gen") / "scenes"
    assert main(["data", "synth", "--out", str(root), "--n", "6", "--size", "32", "--seed", "5", "--semantic"]) == 0
    return root


@pytest.fixture(scope="module")
def generator(scenes: Path) -> Path:
    run = scenes.parent / "generator"
    assert main(["generator", "train", "--images", str(scenes / "im1"), "--masks", str(scenes / "label1"),
                 "--classes", str(scenes / "classes.yaml"), "--out", str(run), *TINY]) == 0
    return run


def test_training_writes_a_loadable_generator_and_sample_grids(generator: Path) -> None:
    assert sorted(p.name for p in (generator / "samples").iterdir()) == [
        "ae_0000002.png", "ae_0000003.png", "ldm_0000002.png", "ldm_0000003.png"]
    grid = read_image(generator / "samples" / "ldm_0000003.png")
    assert grid.shape == (3 * 36, 4 * 36, 3)  # class maps / real / samples, 4 columns, 2-pixel gutters
    gen = Generator.load(generator)
    assert gen.classes["names"][1] == "building" and gen.scale > 0
    masks = torch.from_numpy(read_palette_indices(sorted((generator.parent / "scenes" / "label1").iterdir())[0]))
    img, z = gen.sample(masks[None].long(), torch.Generator().manual_seed(0))
    assert img.shape == (1, 3, 32, 32) and z.shape == (1, 4, 16, 16) and torch.isfinite(img).all()
    assert img.min() >= -1 and img.max() <= 1


def test_training_resumes_exactly(scenes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    args = dict(images=scenes / "im1", masks=scenes / "label1", classes=load_class_table(scenes / "classes.yaml"),
                progress=False)
    settings = resolve_settings("tiny", overrides=["train.ae_steps=1", "train.ldm_steps=3", "train.save_every=2",
                                                   "train.sample_every=3", "sample.steps=2"])
    ref = gtrain.train_generator(out=tmp_path / "ref", settings=settings, **args)

    real = gtrain._write_samples

    def crash(out: Path, gen: Generator, stage: str, step: int, *rest: object) -> None:
        if stage == "ldm" and step == 3:
            raise KeyboardInterrupt
        real(out, gen, stage, step, *rest)

    monkeypatch.setattr(gtrain, "_write_samples", crash)
    with pytest.raises(KeyboardInterrupt):
        gtrain.train_generator(out=tmp_path / "cut", settings=settings, **args)
    assert not (tmp_path / "cut" / "unet.pt").exists()
    with pytest.raises(ConfigError, match="already holds"):
        gtrain.train_generator(out=tmp_path / "cut", settings=settings, **args)
    monkeypatch.setattr(gtrain, "_write_samples", real)
    resumed = gtrain.train_generator(out=tmp_path / "cut", settings=settings, resume=True, **args)
    for a, b in zip(ref.unet.state_dict().values(), resumed.unet.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_with_more_steps_trains_them(scenes: Path, tmp_path: Path) -> None:
    """A finished run resumed with a larger train.ldm_steps trains the extra diffusion steps (and says so in
    generator.yaml); the same counts train nothing; a larger train.ae_steps after the diffusion stage is refused."""
    import yaml

    args = dict(images=scenes / "im1", masks=scenes / "label1", classes=load_class_table(scenes / "classes.yaml"),
                progress=False, out=tmp_path / "run")
    base = ["train.ae_steps=1", "train.sample_every=100", "sample.steps=2"]
    first = gtrain.train_generator(settings=resolve_settings("tiny", overrides=[*base, "train.ldm_steps=2"]), **args)
    w2 = {k: v.clone() for k, v in first.unet.state_dict().items()}
    same = gtrain.train_generator(settings=resolve_settings("tiny", overrides=[*base, "train.ldm_steps=2"]),
                                  resume=True, **args)
    assert all(torch.equal(w2[k], v) for k, v in same.unet.state_dict().items())
    more = gtrain.train_generator(settings=resolve_settings("tiny", overrides=[*base, "train.ldm_steps=4"]),
                                  resume=True, **args)
    assert any(not torch.equal(w2[k], v) for k, v in more.unet.state_dict().items())
    meta = yaml.safe_load((tmp_path / "run" / "generator.yaml").read_text())
    assert meta["settings"]["train"]["ldm_steps"] == 4
    assert torch.load(tmp_path / "run" / "state.pt", weights_only=True)["step"] == 4
    with pytest.raises(ConfigError, match="train.ae_steps=3 cannot be added"):
        gtrain.train_generator(settings=resolve_settings("tiny", overrides=[*base, "train.ldm_steps=4",
                                                                            "train.ae_steps=3"]),
                               resume=True, **args)


def test_condition_and_latent_mixing() -> None:
    masks = torch.tensor([[[0, 0, 1, 255], [0, 0, 1, 1]]])
    cond = mask_condition(masks, 3, (1, 2))
    assert torch.allclose(cond[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(cond[0, :, 0, 1], torch.tensor([0.0, 0.75, 0.0]))  # the ignore pixel counts 0
    with pytest.raises(ConfigError, match="outside"):
        mask_condition(torch.tensor([[[3]]]), 3, (1, 1))
    m1 = torch.zeros(1, 8, 8, dtype=torch.long)
    m2 = m1.clone()
    m2[0, 5, 1] = 1
    keep = keep_mask(m1, m2, 4)
    assert keep.tolist() == [[[[1.0, 1.0], [0.0, 1.0]]]]

    settings = resolve_settings("tiny")
    gen = Generator(settings, {"names": ["a", "b"], "colors": [[0, 0, 0], [9, 9, 9]], "ignore_index": 255}).eval()
    cond = gen.condition(torch.zeros(1, 32, 32, dtype=torch.long))
    anchor = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    keep = torch.ones(1, 1, 16, 16)
    keep[..., :8, :8] = 0

    def sample(strength: float, guidance: float = 1.0, seed: int = 0) -> torch.Tensor:
        return ddim_sample(gen.unet, gen.scheduler, cond, 4, steps=2, guidance=guidance, anchor=anchor, keep=keep,
                           strength=strength, generator=torch.Generator().manual_seed(seed))

    z0, z1 = sample(0.0), sample(1.0)
    assert torch.equal(z0 * keep, anchor * keep)  # strength 0: unchanged cells are date 1's latent
    assert not torch.allclose(z1 * keep, anchor * keep)
    assert not torch.allclose(z0 * (1 - keep), anchor * (1 - keep))  # changed cells are generated afresh
    assert torch.equal(sample(0.5), sample(0.5)) and not torch.equal(sample(0.5), sample(0.5, seed=1))
    assert not torch.equal(sample(1.0, guidance=1.0), sample(1.0, guidance=4.0))
    with pytest.raises(ConfigError, match="strength"):
        sample(1.5)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_generate_writes_consistent_reproducible_pairs(generator: Path, scenes: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture) -> None:
    def gen(out: str, n: int, seed: int, *extra: object) -> Path:
        rc, _, err = _run(capsys, "generate", "--generator", generator, "--masks", scenes / "label1", "--out",
                          tmp_path / out, "--n", n, "--seed", seed, *extra)
        assert rc == 0, err
        return tmp_path / out

    a = gen("a", 3, 4, "--images", scenes / "im1", "--area", 0.1, 0.3)
    b = gen("b", 2, 4, "--images", scenes / "im1", "--area", 0.1, 0.3)
    c = gen("c", 2, 5, "--images", scenes / "im1", "--area", 0.1, 0.3)
    fa, fb, fc = _files(a), _files(b), _files(c)
    assert all(fa[k] == v for k, v in fb.items())  # same seed: same pairs, whatever n
    assert any(fc[k] != v for k, v in fb.items())
    for stem in ("ca_00000", "ca_00001", "ca_00002"):
        m1, m2 = (read_palette_indices(a / d / f"{stem}.png") for d in ("label1", "label2"))
        label = read_image(a / "label" / f"{stem}.png")[..., 0]
        assert np.array_equal(label == 255, m1 != m2) and set(np.unique(label)) <= {0, 255}
        rec = json.loads((a / "records" / f"{stem}.json").read_text())
        assert rec["edits"] and sum(e["pixels"] for e in rec["edits"]) == int((m1 != m2).sum())
        assert 0.1 <= (m1 != m2).mean() <= 0.3 and rec["settings"]["date1"] == "real"
        src = read_image(scenes / "im1" / f"{rec['source']['map']}.png")
        y, x, s = rec["source"]["crop"]
        assert np.array_equal(read_image(a / "A" / f"{stem}.png"), src[y:y + s, x:x + s])  # real date 1
    assert discover(a).layout == "A|B|label" and len(discover(a / "semantic.txt").records) == 3

    d = gen("d", 1, 4)  # date 1 generated
    assert json.loads((d / "records" / "ca_00000.json").read_text())["settings"]["date1"] == "generated"
    rc, _, err = _run(capsys, "generate", "--generator", generator, "--masks", scenes / "label1", "--out", d)
    assert rc == 2 and "not empty" in err
    bad = tmp_path / "bad_maps"
    write_png(bad / "x.png", np.full((32, 32), 7, np.uint8))
    rc, _, err = _run(capsys, "generate", "--generator", generator, "--masks", bad, "--out", tmp_path / "e")
    assert rc == 2 and "not classes of the generator" in err and not (tmp_path / "e").exists()


def test_interrupted_generation_leaves_nothing(generator: Path, scenes: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from changekit.generation import writer

    calls = []

    def fail_second(*args: object, **kwargs: object) -> tuple[np.ndarray, np.ndarray]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        z = np.zeros((32, 32, 3), np.uint8)
        return z, z

    monkeypatch.setattr(writer, "synthesize_pair", fail_second)
    with pytest.raises(KeyboardInterrupt):
        generate_dataset(generator, scenes / "label1", tmp_path / "out", n=3)
    assert not (tmp_path / "out").exists() and not any(tmp_path.iterdir())


def test_protocol_end_to_end(generator: Path, scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Generated pre-training set -> pre-train -> zero-shot test -> few-shot split -> fine-tune, all by the CLI."""
    cfg_dir = Path(__file__).resolve().parents[1] / "configs" / "changeanywhere"
    for name, n, seed in (("ca_train", 6, 0), ("ca_val", 2, 1)):
        rc, _, err = _run(capsys, "generate", "--generator", generator, "--masks", scenes / "label1",
                          "--images", scenes / "im1", "--n", n, "--seed", seed, "--out", tmp_path / name)
        assert rc == 0, err
    target = tmp_path / "target"
    for split, seed in (("train", 11), ("test", 12)):
        assert _run(capsys, "data", "synth", "--out", target / split, "--n", 6, "--size", 32, "--seed", seed)[0] == 0
    toy = ["--set", "data.batch_size=3", "--set", "data.num_workers=0", "--set", "data.augment=none",
           "--set", "trainer.max_epochs=1", "--set", "trainer.accelerator=cpu", "--set", "trainer.devices=1",
           "--set", "trainer.progress_bar=false", "--set", "model.base_channels=4"]
    model = cfg_dir / "models" / "fc_siam_diff.yaml"  # the composed protocol of docs/changeanywhere.md
    rc, out, err = _run(capsys, "train", model, cfg_dir / "pretrain.yaml", "--out", tmp_path / "pre",
                        "--set", f"data.train={tmp_path / 'ca_train'}", "--set", f"data.val={tmp_path / 'ca_val'}",
                        "--set", f"data.test={target / 'test'}", "--set", "trainer.max_steps=-1",
                        "--set", "trainer.val_every_steps=null", *toy)
    assert rc == 0, err
    rc, out, err = _run(capsys, "test", "--ckpt", tmp_path / "pre" / "model.ckpt", "--data", target / "test",
                        "--out", tmp_path / "zero_shot", "--no-report")
    assert rc == 0, err
    assert "f1" in json.loads((tmp_path / "zero_shot" / "metrics.json").read_text())
    rc, _, err = _run(capsys, "data", "fewshot", target / "train", "--percent", 50, "--prefix", "sysucd-train",
                      "--out", tmp_path / "lists")
    assert rc == 0, err
    rc, out, err = _run(capsys, "train", model, cfg_dir / "datasets" / "sysu_cd.yaml",
                        cfg_dir / "splits" / "sysu_cd-50.yaml", "--out", tmp_path / "ft",
                        "--set", f"data.train={tmp_path / 'lists' / 'sysucd-train-50%.txt'}",
                        "--set", f"data.root={target / 'train'}", "--set", f"data.val={target / 'test'}",
                        "--set", f"data.test={target / 'test'}",
                        "--set", f"init_from={tmp_path / 'pre' / 'model.ckpt'}", *toy)
    assert rc == 0, err
    assert (tmp_path / "ft" / "model.ckpt").is_file()
