"""Decisions on unseen data: the F1-optimal threshold, weight averaging and validation splits by image or site."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from changekit.cli import main
from changekit.config import load_config
from changekit.engine.finish import ProbabilityHistogram, average_state, decision_threshold
from changekit.errors import ConfigError
from changekit.data.splits import group_of, split_stems


def test_histogram_finds_the_f1_optimal_threshold() -> None:
    hist = ProbabilityHistogram()
    prob = torch.tensor([[[0.30, 0.35, 0.10, 0.12, 0.05, 0.9]]])
    mask = torch.tensor([[[1, 1, 0, 0, 255, 255]]])
    hist.update(prob, mask)
    thr, f1 = hist.best_f1()
    assert f1 == pytest.approx(1.0) and 0.12 <= thr < 0.30
    assert ((prob > thr) == (mask == 1))[mask != 255].all()
    empty = ProbabilityHistogram()
    empty.update(prob, torch.zeros_like(mask))
    assert empty.best_f1() == (0.5, 0.0)


def test_threshold_config_takes_auto() -> None:
    assert load_config(overrides=["trainer.threshold=auto"])["trainer"]["threshold"] == "auto"
    assert decision_threshold(load_config(overrides=["trainer.threshold=auto"])) == 0.5
    with pytest.raises(ConfigError, match=r"trainer.threshold: 'high' is not a number, or auto"):
        load_config(overrides=["trainer.threshold=high"])


def test_average_state(tmp_path: Path) -> None:
    paths = []
    for i, value in enumerate((1.0, 3.0)):
        path = tmp_path / f"epoch-{i:04d}.pt"
        torch.save({"w": torch.full((2,), value), "n": torch.tensor(i)}, path)
        paths.append(path)
    avg = average_state(paths)
    assert avg["w"].tolist() == [2.0, 2.0] and int(avg["n"]) == 1
    with pytest.raises(ConfigError, match="no weight snapshots"):
        average_state([])


def test_split_by_whole_images_and_sites() -> None:
    tiles = [f"{city}_{r}_{c}" for city in ("paris", "rennes", "pisa", "beirut", "mumbai") for r in (0, 128)
             for c in (0, 128)]
    assert group_of("paris_0_128") == "paris" and group_of("hurricane-florence_00000318") == \
        "hurricane-florence_00000318"
    train, val = split_stems(tiles, 0.2, by="image", seed=1)
    assert len(val) == 4 and len({group_of(s) for s in val}) == 1  # one whole city, never some of its tiles
    assert not {group_of(s) for s in val} & {group_of(s) for s in train}
    train, val = split_stems(tiles, 0.2, val_groups=["pisa", "rennes"])
    assert {s.split("_")[0] for s in val} == {"pisa", "rennes"} and len(train) == 12
    xbd = ["santa-rosa-wildfire_00000001", "santa-rosa-wildfire_00000002", "hurricane-florence_00000318",
           "guatemala-volcano_00000003"]
    train, val = split_stems(xbd, 0.3, by="prefix", val_groups=["hurricane-florence"])
    assert val == ["hurricane-florence_00000318"]
    train, val = split_stems(xbd, 0.3, by="regex", pattern=r"^([a-z]+)-", val_groups=["santa"])
    assert len(val) == 2
    with pytest.raises(ConfigError, match="validation group"):
        split_stems(tiles, 0.2, val_groups=["oslo"])
    with pytest.raises(ConfigError, match="does not match --pattern"):
        split_stems(xbd, 0.3, by="regex", pattern=r"^\d")
    with pytest.raises(ConfigError, match="cannot give both"):
        split_stems(["a_0_0", "a_0_128"], 0.5)


def test_cli_split_then_auto_threshold_and_averaging(tmp_path: Path, synth_root: Path, tiny_config, capsys) -> None:  # noqa: ANN001
    lists = tmp_path / "lists"
    assert main(["data", "split", str(synth_root / "train"), "--out", str(lists), "--val", "0.25"]) == 0
    train, val = ((lists / f"{n}.txt").read_text().split() for n in ("train", "val"))
    assert len(val) == 3 and len(train) == 9 and not set(train) & set(val)
    assert main(["data", "split", str(synth_root / "train"), "--out", str(lists)]) == 2  # exists: --overwrite
    capsys.readouterr()

    cfg = tiny_config(synth_root)
    cfg["data"].update(train=str(lists / "train.txt"), val=str(lists / "val.txt"), root=str(synth_root / "train"))
    cfg["trainer"].update(max_epochs=3, threshold="auto", average_last=2)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["train", str(path), "--out", str(out)]) == 0
    assert yaml.safe_load((out / "config.yaml").read_text())["trainer"]["threshold"] == "auto"
    snaps = sorted(p.name for p in (out / "checkpoints" / "average").glob("*.pt"))
    assert snaps == ["epoch-0001.pt", "epoch-0002.pt"]  # the last two epochs
    ckpt = torch.load(out / "model.ckpt", weights_only=True)
    chosen = ckpt["config"]["trainer"]["threshold"]
    assert isinstance(chosen, float) and 0.0 <= chosen <= 1.0
    expected = average_state([out / "checkpoints" / "average" / s for s in snaps])
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in expected.items())
    assert main(["test", "--ckpt", str(out / "model.ckpt"), "--data", str(synth_root / "val"),
                 "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["threshold"] == pytest.approx(chosen)
