"""Systematic few-shot splits: the seed's SYSU-CD pattern, odd percentages, list reading and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from changekit.cli import main
from changekit.data.discover import discover
from changekit.data.fewshot import fewshot_indices, fewshot_stems, write_fewshot_lists
from changekit.data.synthetic import synthesize
from changekit.errors import ConfigError

SYSU = [f"{i:05d}" for i in range(12000)]


def test_sysu_pattern() -> None:
    shuffled = list(np.random.default_rng(0).permutation(SYSU))
    expected = {1: 120, 5: 600, 10: 1200, 20: 2400, 50: 6000}
    for p, count in expected.items():
        chosen = fewshot_stems(shuffled, p)
        assert len(chosen) == count
        assert chosen == SYSU[:: 100 // p]
    assert fewshot_stems(shuffled, 1)[:3] == ["00000", "00100", "00200"]
    assert fewshot_stems(SYSU, 100) == SYSU


def test_non_integer_step_and_errors() -> None:
    assert fewshot_indices(100, 3) == [0, 33, 66]
    assert fewshot_indices(7, 50) == [0, 2, 4, 6]
    with pytest.raises(ConfigError, match="percent"):
        fewshot_indices(10, 0)
    with pytest.raises(ConfigError, match="duplicates"):
        fewshot_stems(["a", "a"], 50)


def test_lists_from_a_stem_list_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    src = tmp_path / "train.txt"
    src.write_text("\n".join(reversed(SYSU)) + "\n")
    out = tmp_path / "dataset_list"
    assert main(["data", "fewshot", str(src), "--percent", "1", "5", "10", "20", "50", "--out", str(out),
                 "--prefix", "sysucd-train"]) == 0
    assert "sysucd-train-1%.txt (120 stems)" in capsys.readouterr().out
    lines = (out / "sysucd-train-1%.txt").read_text().split()
    assert lines[:3] == ["00000", "00100", "00200"] and len(lines) == 120
    assert len((out / "sysucd-train-50%.txt").read_text().split()) == 6000
    assert main(["data", "fewshot", str(src), "5", "--out", str(out)]) == 2  # numbers without --percent


def test_lists_from_a_folder_are_read_back_as_seed_lists(tmp_path: Path) -> None:
    root = synthesize(tmp_path / "train", n=10, size=32, seed=0)
    (path,) = write_fewshot_lists(root, tmp_path / "lists", [50])
    assert path.name == "train-50%.txt"
    found = discover(path, root=root)  # the seed's format: bare stems resolved under the training folder
    assert [r.stem for r in found.records] == [f"synth_{i:05d}" for i in range(0, 10, 2)]
    assert all(r.label is not None for r in found.records)
    seed_style = tmp_path / "sysucd-train-20%.txt"  # a hand-written seed-style file, accepted as it is
    seed_style.write_text("synth_00000\nsynth_00005\n")
    assert [r.stem for r in discover(seed_style, root=root).records] == ["synth_00000", "synth_00005"]
