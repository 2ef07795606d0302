"""Data tools, converters and run folders never destroy what the user has (issue 11, section 4).

Each refused case runs through ``changekit.cli.main`` and must exit with code 2, print exactly one ``error:`` line
naming the path at fault, and leave the whole workspace byte-identical: no output, no temporary, no new folder.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import yaml

from changekit.cli import main
from changekit.data.synthetic import synthesize
from changekit.engine.runfolder import run_lock


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@pytest.fixture()
def ws(tmp_path: Path) -> Path:
    """``data`` (4 synthetic pairs of 32 x 32) and a finished-looking ``other`` folder of user files."""
    synthesize(tmp_path / "data", n=4, size=32, seed=3)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("the user's own file")
    (tmp_path / "weights.pth").write_bytes(b"")
    torch.save({"w": torch.ones(2)}, tmp_path / "weights.pth")
    return tmp_path


def _refused(capsys: pytest.CaptureFixture, ws: Path, args: list[object], names: object, rc: int = 2) -> str:
    before = _tree(ws)
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == rc, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert str(names) in lines[0], (names, err)
    assert _tree(ws) == before
    return lines[0]


@pytest.mark.parametrize("args, target, words", [
    (["data", "synth", "--out", "{ws}/data", "--n", "2", "--size", "32"], "data", "--overwrite"),
    (["data", "synth", "--out", "{ws}/other", "--n", "2", "--size", "32"], "other", "--overwrite"),
    (["data", "synth", "--out", "{ws}/weights.pth", "--n", "2", "--size", "32"], "weights.pth", "is a file"),
    (["data", "tile", "{ws}/data", "--out", "{ws}/data/tiles", "--size", "16"], "data/tiles", "lies inside"),
    (["data", "tile", "{ws}/data", "--out", "{ws}", "--size", "16", "--overwrite"], "", "contains the input"),
    (["data", "tile", "{ws}/data", "--out", "{ws}/other", "--size", "16"], "other", "--overwrite"),
    (["data", "tile", "{ws}/data", "--out", "{ws}/data/A", "--size", "16", "--overwrite"], "data/A", "lies inside"),
    (["data", "lists", "{ws}/data", "--out", "{ws}/other/notes.txt"], "notes.txt", "--overwrite"),
    (["data", "lists", "{ws}/data", "--out", "{ws}/data/A/synth_00000.png", "--overwrite"], "synth_00000.png",
     "lies inside"),
    (["data", "xbd-masks", "{ws}/data", "--out", "{ws}/data/A", "--overwrite"], "data/A", "lies inside"),
    (["data", "convert", "second", "{ws}/data", "--out", "{ws}/data/im"], "data/im", "lies inside"),
    (["convert", "misgnet", "{ws}/weights.pth", "--out", "{ws}/weights.pth"], "weights.pth", "is the input"),
    (["convert", "misgnet", "{ws}/weights.pth", "--out", "{ws}/other/notes.txt"], "notes.txt", "--overwrite"),
    (["convert", "opencd", "{ws}/weights.pth", "--model", "bit", "--out", "{ws}/other"], "other", "is a folder"),
    (["convert", "opencd", "{ws}/weights.pth", "--model", "no_such_model", "--out", "{ws}/x.ckpt"],
     "no_such_model", "opencd"),
    (["train", "--resume", "--out", "{ws}/other"], "other", "nothing to resume"),
])
def test_data_tools_refuse_to_destroy(ws: Path, capsys: pytest.CaptureFixture, args: list[str], target: str,
                                      words: str) -> None:
    line = _refused(capsys, ws, [a.format(ws=ws) for a in args], target)
    assert words in line


def test_list_files_may_live_inside_the_data_but_never_replace_it(ws: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "lists", str(ws / "data"), "--out", str(ws / "data" / "lists" / "all.txt")]) == 0
    capsys.readouterr()
    _refused(capsys, ws, ["data", "lists", ws / "data", "--out", ws / "data" / "lists" / "all.txt"], "all.txt")
    assert main(["data", "lists", str(ws / "data"), "--out", str(ws / "data" / "lists" / "all.txt"),
                 "--overwrite"]) == 0


def test_synth_over_an_existing_set_only_with_overwrite(ws: Path, capsys: pytest.CaptureFixture) -> None:
    """The reported case: `data synth --out EXISTING --n 2` deleted the other pairs."""
    _refused(capsys, ws, ["data", "synth", "--out", ws / "data", "--n", "2", "--size", "32"], ws / "data")
    assert len(list((ws / "data" / "A").iterdir())) == 4
    assert main(["data", "synth", "--out", str(ws / "data"), "--n", "2", "--size", "32", "--overwrite"]) == 0
    assert len(list((ws / "data" / "A").iterdir())) == 2


def test_train_into_a_folder_owned_by_a_live_run(ws: Path, capsys: pytest.CaptureFixture, tiny_config) -> None:  # noqa: ANN001
    run = ws / "run"
    run.mkdir()
    cfg = tiny_config(ws)
    cfg["data"].update(train=str(ws / "data"), val=str(ws / "data"), test=None)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    with run_lock(run):
        line = _refused(capsys, ws, ["train", "--resume", "--out", run], run)
    assert "in use by pid" in line


def test_train_refuses_folders_it_does_not_own(ws: Path, capsys: pytest.CaptureFixture, tiny_config) -> None:  # noqa: ANN001
    cfg = tiny_config(ws)
    cfg["data"].update(train=str(ws / "data"), val=str(ws / "data"), test=None)
    path = ws / "other" / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    _refused(capsys, ws, ["train", path, "--out", ws / "other"], "other")  # a non-empty folder of the user's
    _refused(capsys, ws, ["train", path, "--out", ws / "data" / "run"], "lies inside the input")
    _refused(capsys, ws, ["train", path, "--out", ws], "contains the input")
