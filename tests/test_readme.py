"""The README's quick tour and Python snippet run as written, so that the README cannot rot.

Every ``changekit ...`` line of the README's bash blocks runs through ``changekit.cli.main`` in a scratch folder
that holds what the tour names: ``LEVIR-CD/{train,val,test}`` (A|B|label sets made by ``changekit data synth``),
``scene_2019.tif`` / ``scene_2021.tif`` (generated GeoTIFFs), ``other_method/`` (saved masks) and ``configs/``
(the repository's recipes). The commands keep their text; only a few options are appended to keep the test fast
(fewer and smaller generated images and tiles, two training steps without the recipe's 256-pixel crops, one
benchmark iteration): the last value of an option wins.
"""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from changekit.cli import main

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
TINY_TRAIN = ["trainer.max_steps=2", "trainer.limit_val_batches=1", "data.batch_size=2", "data.num_workers=0",
              "data.augment=flips", "trainer.progress_bar=false", "trainer.accelerator=cpu", "trainer.devices=1"]
# appended to a command (by its first one or two words) to keep it small; everything else runs as written
FAST = {
    ("data", "synth"): ["--n", "4", "--size", "64"],
    ("data", "tile"): ["--size", "32", "--stride", "32"],
    ("train",): ["--set", *TINY_TRAIN],
    ("bench",): ["--size", "64", "--batch", "1", "--iters", "1", "--warmup", "0", "--no-train"],
    ("predict",): ["--tile", "64", "--overlap", "16"],
}


def readme_blocks(kind: str) -> list[str]:
    """The contents of the README's fenced blocks of one language."""
    return re.findall(rf"```{kind}\n(.*?)```", README.read_text(), flags=re.S)


def readme_commands() -> list[list[str]]:
    """Every ``changekit`` command of the README's bash blocks, split like a shell (comments dropped)."""
    commands = []
    for block in readme_blocks("bash"):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if words and words[0] == "changekit":
                commands.append(words[1:])
    return commands


def _fast(args: list[str]) -> list[str]:
    for prefix, extra in FAST.items():
        if tuple(args[: len(prefix)]) == prefix:
            return args + extra
    return args


@pytest.fixture()
def tour_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder holding the data and files the quick tour names."""
    from changekit.data.synthetic import synthesize, synthesize_geotiff_pair

    for i, split in enumerate(("train", "val", "test")):
        synthesize(tmp_path / "LEVIR-CD" / split, n=4 if split == "train" else 2, size=64, seed=i)
    a, b, _ = synthesize_geotiff_pair(tmp_path / "geo", size=96, seed=3)
    a.rename(tmp_path / "scene_2019.tif")
    b.rename(tmp_path / "scene_2021.tif")
    shutil.copytree(tmp_path / "LEVIR-CD" / "test" / "label", tmp_path / "other_method")
    (tmp_path / "configs").symlink_to(REPO / "configs", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_readme_has_a_tour() -> None:
    commands = readme_commands()
    assert len(commands) >= 8
    assert {c[0] for c in commands} >= {"data", "models", "train", "test", "predict", "eval-masks", "bench"}
    assert len(readme_blocks("python")) == 1


def test_readme_runs_as_written(tour_folder: Path, capsys: pytest.CaptureFixture,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    for args in readme_commands():
        rc = main(_fast(args))
        err = capsys.readouterr().err
        assert rc == 0, f"changekit {shlex.join(args)} -> exit {rc}: {err}"
    assert (tour_folder / "synth" / "A").is_dir()
    assert sorted(p.name for p in (tour_folder / "LEVIR-CD-256" / "train" / "A").iterdir())
    assert (tour_folder / "runs" / "fcsd" / "model.ckpt").is_file()
    assert (tour_folder / "runs" / "fcsd" / "test" / "metrics.json").is_file()
    assert list((tour_folder / "masks").glob("*.tif"))
    assert (tour_folder / "metrics.json").is_file()

    # the Python snippet, with the same small step count added to train()
    import changekit.engine.train as engine_train

    real_train = engine_train.train
    monkeypatch.setattr(engine_train, "train", lambda config, out, overrides=None, **kw: real_train(
        config, out, overrides=[*(overrides or []), *TINY_TRAIN], **kw))
    (snippet,) = readme_blocks("python")
    namespace: dict = {}
    exec(compile(snippet, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    assert namespace["run"]["steps"] == 2
    assert 0.0 <= namespace["metrics"]["f1"] <= 1.0
    assert (tour_folder / "runs" / "fcsd_py" / "test" / "metrics.json").is_file()
