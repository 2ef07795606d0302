"""End-to-end through the command line: train, resume, test, predict, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from changekit.cli import main
from changekit.data.io import write_png



def _write_cfg(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def trained(synth_root: Path, tmp_path_factory: pytest.TempPathFactory, tiny_config) -> Path:  # noqa: ANN001
    out = tmp_path_factory.mktemp("run") / "run"
    cfg = _write_cfg(out.parent / "c.yaml", tiny_config(synth_root))
    assert main(["train", str(cfg), "--out", str(out), "--set", "trainer.max_epochs=1"]) == 0
    return out


def test_train_writes_run(trained: Path) -> None:
    assert (trained / "model.ckpt").is_file()
    assert (trained / "checkpoints" / "last.ckpt").is_file()
    assert (trained / "logs" / "metrics.csv").is_file()
    cfg = yaml.safe_load((trained / "config.yaml").read_text())
    assert cfg["model"]["name"] == "fc_siam_diff" and cfg["trainer"]["max_epochs"] == 1
    ckpt = torch.load(trained / "model.ckpt", weights_only=True)
    assert ckpt["format"] == "changekit-checkpoint" and "state_dict" in ckpt and ckpt["config"] == cfg


def test_test_writes_metrics_and_report(trained: Path, synth_root: Path, capsys: pytest.CaptureFixture) -> None:
    rc, out, _ = _run(capsys, "test", "--ckpt", trained / "model.ckpt", "--data", synth_root / "val",
                      "--out", trained / "eval")
    assert rc == 0 and "f1=" in out
    metrics = json.loads((trained / "eval" / "metrics.json").read_text())
    for key in ("precision", "recall", "f1", "iou", "oa"):
        assert 0.0 <= metrics[key] <= 1.0
    assert -1.0 <= metrics["kappa"] <= 1.0
    cm = np.array(metrics["confusion"])
    assert cm.sum() == 6 * 64 * 64 and metrics["num_pairs"] == 6
    html = (trained / "eval" / "report.html").read_text()
    assert "data:image/png;base64" in html and "Confusion" in html


def test_predict_writes_masks(trained: Path, synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    rc, _, _ = _run(capsys, "predict", "--ckpt", trained / "model.ckpt", "--a", synth_root / "val" / "A",
                    "--b", synth_root / "val" / "B", "--out", tmp_path / "pred", "--tile", 64, "--overlap", 16, "--prob")
    assert rc == 0
    masks = sorted((tmp_path / "pred").glob("synth_?????.png"))
    assert len(masks) == 6
    values = np.unique(np.asarray(Image.open(masks[0])))
    assert set(values.tolist()) <= {0, 255}
    assert (tmp_path / "pred_prob" / "synth_00000.png").is_file()  # extras beside the mask folder, not in it
    # --amp (bfloat16 autocast on CPU): same outputs up to rounding of the probabilities
    rc, _, _ = _run(capsys, "predict", "--ckpt", trained / "model.ckpt", "--a", synth_root / "val" / "A",
                    "--b", synth_root / "val" / "B", "--out", tmp_path / "amp", "--tile", 64, "--overlap", 16, "--prob",
                    "--amp")
    assert rc == 0
    full = np.asarray(Image.open(tmp_path / "pred_prob" / "synth_00000.png")).astype(int)
    half = np.asarray(Image.open(tmp_path / "amp_prob" / "synth_00000.png")).astype(int)
    assert np.abs(full - half).mean() < 3  # 0..255 scale


def test_resume_continues_and_refuses_overwrite(trained: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from changekit.engine.task import ChangeTask

    cfg = trained.parent / "c.yaml"
    rc, _, err = _run(capsys, "train", cfg, "--out", trained)
    assert rc == 2 and "already holds a run" in err and "--resume" in err
    before = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    calls = []
    original = ChangeTask.training_step
    monkeypatch.setattr(ChangeTask, "training_step", lambda self, *a: calls.append(1) or original(self, *a))
    rc, _, _ = _run(capsys, "train", cfg, "--out", trained, "--resume", "--set", "trainer.max_epochs=2")
    assert rc == 0
    after = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    assert after["global_step"] == 2 * before
    assert len(calls) == before  # only the second epoch ran: the first came from the checkpoint


def test_one_line_errors(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture, tiny_config) -> None:  # noqa: ANN001
    cfg = tiny_config(synth_root)
    cases = {
        "unknown model 'fc_siam_dif' (did you mean 'fc_siam_diff'?)": {**cfg, "model": {"name": "fc_siam_dif"}},
        "unknown config key 'trainer.max_epoch'": {**cfg, "trainer": {"max_epoch": 1}},
        "model 'fc_siam_diff' has no argument 'dropuot'": {**cfg, "model": {"name": "fc_siam_diff", "dropuot": 0.1}},
        f"{tmp_path / 'missing'}": {**cfg, "data": {**cfg["data"], "train": str(tmp_path / "missing")}},
    }
    for i, (expected, c) in enumerate(cases.items()):
        rc, _, err = _run(capsys, "train", _write_cfg(tmp_path / f"c{i}.yaml", c), "--out", tmp_path / f"r{i}")
        assert rc == 2, err
        assert expected in err
        assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, err


def test_bad_labels_name_the_file(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                  tiny_config) -> None:  # noqa: ANN001
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(synth_root / "val", bad)
    write_png(bad / "label" / "synth_00003.png", np.full((64, 64), 128, np.uint8))
    cfg = {**tiny_config(synth_root), "data": {**tiny_config(synth_root)["data"], "train": str(bad)}}
    rc, _, err = _run(capsys, "train", _write_cfg(tmp_path / "c.yaml", cfg), "--out", tmp_path / "r")
    assert rc == 2 and "synth_00003.png" in err and "128" in err


def test_predict_errors_leave_no_output(trained: Path, synth_root: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:
    import shutil

    a = tmp_path / "A"
    shutil.copytree(synth_root / "val" / "A", a)
    (a / "extra.png").write_bytes((a / "synth_00000.png").read_bytes())
    rc, _, err = _run(capsys, "predict", "--ckpt", trained / "model.ckpt", "--a", a, "--b", synth_root / "val" / "B",
                      "--out", tmp_path / "pred")
    assert rc == 2 and "extra" in err and not (tmp_path / "pred").exists()
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    rc, _, err = _run(capsys, "predict", "--ckpt", tmp_path / "junk.ckpt", "--a", synth_root / "val" / "A",
                      "--b", synth_root / "val" / "B", "--out", tmp_path / "pred")
    assert rc == 2 and "junk.ckpt" in err and not (tmp_path / "pred").exists()


def test_models_json(capsys: pytest.CaptureFixture) -> None:
    rc, out, _ = _run(capsys, "models", "--json")
    infos = {m["name"]: m for m in json.loads(out)}
    assert rc == 0
    assert {"fc_ef", "fc_siam_conc", "fc_siam_diff", "siam_unet"} <= set(infos)
    assert infos["fc_siam_diff"] == {"name": "fc_siam_diff", "task": "binary", "params": 1350146}


# ------------------------------------------------------------------------ the command line itself (issue 11 §1)


def test_version_and_global_flags(capsys: pytest.CaptureFixture) -> None:
    import changekit

    rc, out, err = _run(capsys, "--version")
    assert rc == 0 and out.strip() == f"changekit {changekit.__version__}" and err == ""
    rc, out, _ = _run(capsys, "--help")
    assert rc == 0 and "--debug" in out and "--version" in out


def test_usage_errors_are_two_lines_and_exit_2(capsys: pytest.CaptureFixture) -> None:
    """Typer raises its bundled click copy's exceptions; main() must catch those, not only click's own."""
    import typer

    from changekit.cli_usage import click_exceptions

    usage, _ = click_exceptions()
    assert any(issubclass(typer.BadParameter, cls) for cls in usage)
    for args, expected in [
        (["train", "--out"], "Option '--out' requires an argument"),
        (["predict", "--ckpt", "a", "--a", "b", "--b", "c", "--out", "d", "--tile", "big"],
         "Invalid value for '--tile': 'big' is not an integer"),
        (["bench"], "Missing argument 'model'"),
        (["--debug", "tset"], "No such command 'tset'. Did you mean 'test'?"),
    ]:
        rc, out, err = _run(capsys, *args)
        lines = err.strip().splitlines()
        assert rc == 2 and out == "", err
        assert len(lines) == 2 and lines[0].startswith("Usage: changekit") and lines[1].startswith("error: "), err
        assert expected in lines[1]


@pytest.mark.parametrize(("args", "expected"), [
    (["--set", "a=1", "b.c=2", "CFG"], ["--set", "a=1", "--set", "b.c=2", "CFG"]),
    (["--set", "a=1", "--set", "b=[1, 2]", "c=x=y", "--out", "o"],
     ["--set", "a=1", "--set", "b=[1, 2]", "--set", "c=x=y", "--out", "o"]),
    (["--set=a=1", "b=2"], ["--set=a=1", "--set", "b=2"]),
    (["--set", "oops", "b=2"], ["--set", "oops", "--set", "b=2"]),
    (["--", "--set", "a=1", "b=2"], ["--", "--set", "a=1", "b=2"]),
])
def test_set_takes_several_pairs(args: list[str], expected: list[str]) -> None:
    from changekit.cli_usage import expand_set_pairs

    assert expand_set_pairs(args) == expected


def test_set_pairs_reach_train_and_generator_train(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import changekit.engine.train as engine_train
    import changekit.generation.model as generation_model
    from changekit.errors import ConfigError

    seen: dict[str, list[str]] = {}

    def stop(key: str):  # noqa: ANN202
        def record(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            seen[key] = list(kwargs.get("overrides", args[-1] if args else []))
            raise ConfigError("stop here")
        return record

    monkeypatch.setattr(engine_train, "train", stop("train"))
    monkeypatch.setattr(generation_model, "resolve_settings", stop("generator"))
    rc, _, _ = _run(capsys, "train", tmp_path / "c.yaml", "--set", "trainer.max_epochs=2", "data.batch_size=4",
                    "--out", tmp_path / "r", "--set", "optim.lr=0.1")
    assert rc == 2 and seen["train"] == ["trainer.max_epochs=2", "data.batch_size=4", "optim.lr=0.1"]
    rc, _, _ = _run(capsys, "generator", "train", "--images", tmp_path, "--masks", tmp_path, "--classes",
                    tmp_path / "c.yaml", "--out", tmp_path / "g", "--set", "train.ldm_steps=5", "train.ae_steps=3")
    assert rc == 2 and seen["generator"] == ["train.ldm_steps=5", "train.ae_steps=3"]


def test_train_composes_several_configs(synth_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
                                        tiny_config) -> None:  # noqa: ANN001
    cfg = tiny_config(synth_root)
    base = _write_cfg(tmp_path / "base.yaml", {k: v for k, v in cfg.items() if k != "data"})
    data = _write_cfg(tmp_path / "data.yaml", {"data": cfg["data"], "trainer": {"max_steps": 1}})
    out = tmp_path / "run"
    rc, _, err = _run(capsys, "train", base, data, "--out", out, "--set", "trainer.limit_val_batches=1",
                      "data.batch_size=2")
    assert rc == 0, err
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["trainer"]["max_steps"] == 1 and saved["data"]["batch_size"] == 2
    assert saved["data"]["train"] == cfg["data"]["train"] and saved["trainer"]["accelerator"] == "cpu"
