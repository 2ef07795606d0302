"""Seed ensembles: ``changekit ensemble`` writes one checkpoint that averages its members' probabilities."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from changekit.cli import main
from changekit.engine.checkpoint import load_checkpoint, read_checkpoint
from changekit.engine.ensemble import make_ensemble
from changekit.errors import CheckpointError, ConfigError, OutputError
from changekit.models import build_model, count_parameters, model_info


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory, synth_root: Path, tiny_config) -> list[Path]:  # noqa: ANN001
    """``model.ckpt`` of two one-epoch runs that differ only in their seed."""
    base = tmp_path_factory.mktemp("seeds")
    ckpts = []
    for seed in (0, 1):
        cfg = tiny_config(synth_root, seed=seed, threshold=0.3 + 0.2 * seed)
        path = base / f"s{seed}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        assert main(["train", str(path), "--out", str(base / f"run{seed}")]) == 0
        ckpts.append(base / f"run{seed}" / "model.ckpt")
    return ckpts


def test_the_ensemble_averages_its_members_probabilities(two_runs: list[Path], tmp_path: Path) -> None:
    info = make_ensemble(two_runs, tmp_path / "e.ckpt")
    assert info["members"] == ["fc_siam_diff", "fc_siam_diff"]
    assert info["thresholds"] == [0.3, 0.5] and info["threshold"] == pytest.approx(0.4)
    ens, cfg = load_checkpoint(tmp_path / "e.ckpt")
    members = [load_checkpoint(p)[0] for p in two_runs]
    assert count_parameters(ens) == sum(count_parameters(m) for m in members) == info["params"]
    assert cfg["trainer"]["threshold"] == pytest.approx(0.4) and cfg["model"]["name"] == "ensemble"
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 64, 64, generator=g), torch.randn(2, 3, 64, 64, generator=g)
    with torch.no_grad():
        expected = torch.stack([m(a, b).change_prob() for m in members]).mean(0)
        out = ens(a, b)
        assert not torch.equal(members[0](a, b).change_prob(), members[1](a, b).change_prob())  # two seeds
    assert out.change.shape == (2, 2, 64, 64) and torch.isfinite(out.change).all()
    assert torch.allclose(out.change_prob(), expected.clamp(1e-6, 1 - 1e-6), atol=1e-6)
    # a given threshold wins; the sources are recorded in the checkpoint
    assert make_ensemble(two_runs, tmp_path / "t.ckpt", threshold=0.7)["threshold"] == 0.7
    raw = torch.load(tmp_path / "t.ckpt", weights_only=True)
    assert raw["ensemble"]["checkpoints"] == [str(p.resolve()) for p in two_runs]


def test_semantic_members_average_class_probabilities() -> None:
    torch.manual_seed(0)
    ens = build_model("ensemble", members=[{"name": "clearscd", "num_classes": 4, "pyramid_channels": 32,
                                            "segmentation_channels": 32}] * 2).eval()
    assert ens.task == "semantic" and ens.num_classes == 4
    a, b = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = [m(a, b) for m in ens.members]
        got = ens(a, b)
    mean_a = torch.stack([o.sem_a.softmax(1) for o in outs]).mean(0)
    assert torch.allclose(got.sem_a.softmax(1), mean_a, atol=1e-5)


def test_members_must_agree_on_task_bands_and_inputs(two_runs: list[Path], tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="differ in in_channels"):
        build_model("ensemble", members=[{"name": "fc_ef"}, {"name": "fc_ef", "in_channels": 4}])
    with pytest.raises(ConfigError, match="differ in task"):
        build_model("ensemble", members=[{"name": "fc_ef"}, {"name": "clearscd"}])
    with pytest.raises(ConfigError, match="at least two"):
        build_model("ensemble", members=[{"name": "fc_ef"}])
    with pytest.raises(ConfigError, match=r"members\[1\].*cannot hold an ensemble"):
        build_model("ensemble", members=[{"name": "fc_ef"}, {"name": "ensemble"}])
    assert model_info("ensemble")["params"] == 2 * model_info("fc_ef")["params"]

    # another normalisation: refused naming the file and the key, nothing written
    weights, cfg = read_checkpoint(two_runs[1])
    cfg["data"]["resolved_normalize"] = {**cfg["data"]["resolved_normalize"], "mean": [0.0, 0.0, 0.0]}
    other = tmp_path / "other.ckpt"
    torch.save({"format": "changekit-checkpoint", "version": 1, "config": cfg, "state_dict": weights}, other)
    with pytest.raises(ConfigError, match=r"other\.ckpt: data\.resolved_normalize differs"):
        make_ensemble([two_runs[0], other], tmp_path / "e.ckpt")
    assert not (tmp_path / "e.ckpt").exists()
    with pytest.raises(ConfigError, match="at least two checkpoints"):
        make_ensemble(two_runs[:1], tmp_path / "e.ckpt")
    with pytest.raises(ConfigError, match="--threshold"):
        make_ensemble(two_runs, tmp_path / "e.ckpt", threshold=1.5)
    make_ensemble(two_runs, tmp_path / "e.ckpt")
    with pytest.raises(ConfigError, match="already an ensemble"):
        make_ensemble([tmp_path / "e.ckpt", two_runs[0]], tmp_path / "e2.ckpt")
    with pytest.raises(OutputError):  # exists: --overwrite
        make_ensemble(two_runs, tmp_path / "e.ckpt")
    with pytest.raises(OutputError):  # never over an input
        make_ensemble(two_runs, two_runs[0], overwrite=True)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.ckpt"):
        make_ensemble([two_runs[0], tmp_path / "junk.ckpt"], tmp_path / "e3.ckpt")


def test_cli_ensemble_then_test_and_predict(two_runs: list[Path], synth_root: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    ens = tmp_path / "seeds.ckpt"
    assert main(["ensemble", *map(str, two_runs), "--out", str(ens), "--threshold", "0.5"]) == 0
    assert "2 members (fc_siam_diff, fc_siam_diff)" in capsys.readouterr().out
    assert main(["models", "--filter", "ensemble"]) == 0  # listed with how it is made, not a default's count
    assert "made by `changekit ensemble" in capsys.readouterr().out
    assert main(["test", "--ckpt", str(ens), "--data", str(synth_root / "val"), "--out", str(tmp_path / "ev")]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["threshold"] == pytest.approx(0.5) and 0.0 <= metrics["f1"] <= 1.0
    pair = sorted((synth_root / "val" / "A").iterdir())[0]
    out = tmp_path / "pred.png"
    assert main(["predict", "--ckpt", str(ens), "--a", str(pair), "--b", str(synth_root / "val" / "B" / pair.name),
                 "--out", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    # usage errors: one line, exit 2, nothing written
    assert main(["ensemble", str(two_runs[0]), "--out", str(tmp_path / "one.ckpt")]) == 2
    assert main(["ensemble", *map(str, two_runs), "--out", str(tmp_path / "x.ckpt"), "--treshold", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "at least two checkpoints" in err and "--treshold" in err
    assert not (tmp_path / "one.ckpt").exists() and not (tmp_path / "x.ckpt").exists()
