"""Command-line slips and bad configs are refused up front (issue 11, sections 1 and 2).

Every case runs through ``changekit.cli.main`` and must: exit with code 2, print exactly one ``error:`` line
(after the usage line, or the help for a bare group) that names the command, option, key or file at fault and
no traceback, leave every input byte-identical, and create nothing under ``--out``.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml

from changekit.cli import main

RECIPES = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class Case:
    """One hostile command: its arguments (``{cfg}``, ``{out}``, ``{data}``, ``{sem}`` are filled in), the text
    the error line must contain, the config file to write first (if any), and the usage line expected before."""

    args: list[str]
    expect: str
    config: dict | list | str | None = None
    usage: str | None = None
    files: dict[str, str] = field(default_factory=dict)


def _tiny(data: str) -> dict:
    return {"model": {"name": "fc_siam_diff"},
            "data": {"train": f"{data}/train", "val": f"{data}/val", "batch_size": 2, "num_workers": 0},
            "trainer": {"max_steps": 1, "accelerator": "cpu", "devices": 1, "progress_bar": False}}


def _semantic(sem: str, **model: object) -> dict:
    return {"model": {"name": "clearscd", "num_classes": 5, "encoder_weights": None, **model},
            "data": {"train": f"{sem}/train", "val": None, "task": "semantic", "ignore_index": 255,
                     "batch_size": 2, "num_workers": 0},
            "loss": [{"name": "bce"}, {"name": "ce", "target": "sem_a"}, {"name": "ce", "target": "sem_b"}]}


def _with(base: dict, section: str, **values: object) -> dict:
    return {**base, section: {**base.get(section, {}), **values}}


CASES: dict[str, Case] = {
    # ---- the command line
    "command typo": Case(["trian", "{cfg}", "--out", "{out}"], "No such command 'trian'. Did you mean 'train'?",
                         usage="Usage: changekit [OPTIONS] COMMAND"),
    "option typo": Case(["train", "{cfg}", "--ot", "{out}"], "No such option: --ot",
                        config="tiny", usage="Usage: changekit train"),
    "missing required option": Case(["test", "--ckpt", "{cfg}"], "Missing option '--out'",
                                    usage="Usage: changekit test"),
    "option value of the wrong type": Case(["data", "synth", "--out", "{out}", "--n", "many"],
                                           "Invalid value for '--n': 'many' is not an integer",
                                           usage="Usage: changekit data synth"),
    "option without its value": Case(["data", "tile", "{data}/train", "--out", "{out}", "--size"],
                                     "Option '--size' requires an argument", usage="Usage: changekit data tile"),
    "extra argument": Case(["models", "extra"], "unexpected extra argument", usage="Usage: changekit models"),
    "plugin command, missing argument": Case(["convert", "opencd", "--out", "{out}", "--model", "bit"],
                                             "Missing argument 'src'", usage="Usage: changekit convert opencd"),
    "plugin group typo": Case(["data", "convert", "hiuc", "x", "--out", "{out}"],
                              "No such command 'hiuc'", usage="Usage: changekit data convert"),
    "override without =": Case(["train", "{cfg}", "--out", "{out}", "--set", "trainer.max_steps"],
                               "override 'trainer.max_steps' must look like key=value", config="tiny"),
    # ---- config values: type, range, choice, unknown keys
    "wrong type (--set)": Case(["train", "{cfg}", "--out", "{out}", "--set", "data.batch_size=2",
                                "trainer.max_steps=abc"],
                               "trainer.max_steps: 'abc' is not an integer (from --set)", config="tiny"),
    "negative batch size": Case(["train", "{cfg}", "--out", "{out}"], "data.batch_size: -4 must be >= 1 (in ",
                                config=("data", {"batch_size": -4})),
    "lr not a number": Case(["train", "{cfg}", "--out", "{out}"], "optim.lr: 'fast' is not a number",
                            config=("optim", {"lr": "fast"})),
    "schedule typo": Case(["train", "{cfg}", "--out", "{out}"],
                          "schedule.name: 'cosin' is not one of none, poly, step, cosine, linear (did you mean "
                          "'cosine'?)", config=("schedule", {"name": "cosin"})),
    "boolean as text": Case(["train", "{cfg}", "--out", "{out}"], "trainer.channels_last: 'yes' is not true or false",
                            config=("trainer", {"channels_last": "yes"})),
    "unknown key": Case(["train", "{cfg}", "--out", "{out}"],
                        "unknown config key 'trainer.max_epoch' (did you mean 'max_epochs'?)",
                        config=("trainer", {"max_epoch": 3})),
    "unknown section": Case(["train", "{cfg}", "--out", "{out}"], "unknown config key 'optimizer' (did you mean "
                                                                  "'optim'?)", config=("optimizer", {"lr": 0.1})),
    "config is a list": Case(["train", "{cfg}", "--out", "{out}"], "a config must be a mapping",
                             config=["model", "data"]),
    "_base_ cycle": Case(["train", "{cfg}", "--out", "{out}"], "_base_ cycle", config="_base_: loop.yaml\n",
                         files={"loop.yaml": "_base_: c.yaml\n"}),
    "missing _base_": Case(["train", "{cfg}", "--out", "{out}"], "_base_ file 'gone.yaml' not found",
                           config="_base_: [gone.yaml]\n"),
    "second config file missing": Case(["train", "{cfg}", "{out}.yaml", "--out", "{out}"], "config file not found",
                                       config="tiny"),
    # ---- the run against the outside world (engine.validate)
    "validation split missing": Case(["train", "{cfg}", "--out", "{out}", "--set", "data.val=nowhere/val"],
                                     "data.val: 'nowhere/val' does not exist", config="tiny"),
    "bad loss parameter": Case(["train", "{cfg}", "--out", "{out}"], "loss[0] (dice): parameter 'mode'",
                               config=("loss", [{"name": "dice", "mode": "binray"}])),
    "semantic loss on a binary model": Case(["train", "{cfg}", "--out", "{out}"],
                                            "loss[1] (ce_sem_a): target 'sem_a' needs a semantic model",
                                            config=("loss", [{"name": "ce"}, {"name": "ce", "target": "sem_a"}])),
    "augmentation op typo": Case(["train", "{cfg}", "--out", "{out}"],
                                 "data.augment[0]: unknown op 'hflp' (did you mean 'hflip'?)",
                                 config=("data", {"augment": [{"name": "hflp"}]})),
    "model argument typo": Case(["train", "{cfg}", "--out", "{out}"], "model 'fc_siam_diff' has no argument 'dropuot'",
                                config=("model", {"dropuot": 0.1})),
    "missing init_from": Case(["train", "{cfg}", "--out", "{out}", "--set", "init_from=old/model.ckpt"],
                              "init_from: checkpoint 'old/model.ckpt' not found", config="tiny"),
    # ---- labels against num_classes / ignore_index
    "Hi-UCD recipe on 5-class data": Case(
        ["train", str(RECIPES / "clearscd" / "hiucd_mini.yaml"), "--out", "{out}", "--set", "data.train={sem}/train",
         "data.val={sem}/val"], "classes.yaml lists 5 classes (bare soil, building, road, vegetation, water) but "
                                "model.num_classes is 9; set model.num_classes=5"),
    "ignore value differs from the data's": Case(["train", "{cfg}", "--out", "{out}", "--set", "data.ignore_index=9"],
                                                 "marks ignored pixels with 255 but data.ignore_index is 9",
                                                 config="semantic"),
    "class value above num_classes": Case(["train", "{cfg}", "--out", "{out}"],
                                          "label2/synth_00001.png: class value(s) {7} outside 0..4",
                                          config="semantic-bad"),
    "data.task binary for a semantic model": Case(["train", "{cfg}", "--out", "{out}", "--set", "data.task=binary",
                                                   "loss=[{name: bce}]"],
                                                  "data.task: 'binary' does not fit model 'clearscd'",
                                                  config="semantic"),
}


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, synth_root: Path, synth_semantic_root: Path) -> dict[str, Path]:
    """Copies of the generated data sets (one semantic set with a class value 7 planted)."""
    root = tmp_path_factory.mktemp("hostile_cli")
    shutil.copytree(synth_root, root / "data")
    shutil.copytree(synth_semantic_root, root / "sem")
    shutil.copytree(synth_semantic_root, root / "sembad")
    from changekit.data.io import write_png

    label = root / "sembad" / "train" / "label2" / "synth_00001.png"
    arr = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(label)).copy()
    arr[:4, :4] = 7
    write_png(label, arr.astype(np.uint8))
    return {"data": root / "data", "sem": root / "sem", "sembad": root / "sembad"}


def _config(case: Case, world: dict[str, Path]) -> object:
    if case.config == "tiny":
        return _tiny(str(world["data"]))
    if case.config == "semantic":
        return _semantic(str(world["sem"]))
    if case.config == "semantic-bad":
        return _semantic(str(world["sembad"]))
    if isinstance(case.config, tuple):
        section, value = case.config
        base = _tiny(str(world["data"]))
        return {**base, section: value} if not isinstance(value, dict) else _with(base, section, **value)
    return case.config


@pytest.mark.parametrize("name", sorted(CASES))
def test_refused_up_front(name: str, world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    case = CASES[name]
    cfg = tmp_path / "c.yaml"
    content = _config(case, world)
    if isinstance(content, str):
        cfg.write_text(content)
    elif content is not None:
        cfg.write_text(yaml.safe_dump(content))
    for fname, text in case.files.items():
        (tmp_path / fname).write_text(text)
    out = tmp_path / "out"
    fill = {"cfg": str(cfg), "out": str(out), "data": str(world["data"]), "sem": str(world["sem"])}
    args = []
    for arg in case.args:
        for key, value in fill.items():
            arg = arg.replace(f"{{{key}}}", value)
        args.append(arg)
    before = {k: _digest(p) for k, p in world.items()}
    inputs_before = _digest(tmp_path)

    rc = main(args)
    err = capsys.readouterr().err

    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, err
    assert case.expect in errors[0], err
    assert "Traceback" not in err
    if case.usage is not None:
        assert lines == [lines[0], errors[0]] and lines[0].startswith(case.usage), err
    else:
        assert lines == errors, err
    assert not out.exists() and not Path(f"{out}.yaml").exists()
    assert _digest(tmp_path) == inputs_before
    assert {k: _digest(p) for k, p in world.items()} == before


@pytest.mark.parametrize("group", [[], ["data"], ["convert"], ["generator"], ["data", "convert"]])
def test_bare_group_prints_help_then_one_error_line(group: list[str], capsys: pytest.CaptureFixture) -> None:
    rc = main(group)
    cap = capsys.readouterr()
    assert rc == 2 and cap.out == ""
    lines = [ln for ln in cap.err.splitlines() if ln.strip()]
    assert "Commands" in cap.err  # the help, on stderr
    assert lines[-2].startswith(f"Usage: {' '.join(['changekit', *group])} [OPTIONS] COMMAND")
    assert lines[-1].startswith("error: missing command (one of: ")
    assert [ln for ln in lines if ln.startswith("error:")] == [lines[-1]]


def test_validate_run_for_the_test_split(world: dict[str, Path]) -> None:
    """``test`` validates the split it reads: set, existing, and with class values the model can score."""
    from changekit.config import resolve
    from changekit.engine.validate import validate_run
    from changekit.errors import ConfigError, DatasetNotFoundError, LabelValueError

    cfg = resolve(_semantic(str(world["sem"])))
    with pytest.raises(ConfigError, match=r"^data.test: not set; set data.test=PATH"):
        validate_run(cfg, splits=("test",))
    cfg["data"]["test"] = str(world["sem"] / "nowhere")
    with pytest.raises(DatasetNotFoundError, match=r"^data.test: '.*nowhere' does not exist"):
        validate_run(cfg, splits=("test",))
    cfg["data"]["test"] = str(world["sembad"] / "train")
    with pytest.raises(LabelValueError, match=r"synth_00001.png: class value\(s\) \{7\} outside 0..4 .*data.test"):
        validate_run(cfg, splits=("test",))
    cfg["data"]["test"] = str(world["sem"] / "val")
    validate_run(cfg, splits=("test",))  # fits: nothing raised, nothing written
