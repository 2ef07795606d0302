"""ChangeAnywhere's transfer protocol (docs/changeanywhere.md, seed-systems.md 4.3) as composed configs.

Every configuration of the seed's config families, model x {sysu_cd, second} x {1, 5, 10, 20, 50, 100} % x
{finetune, onlysup}, is one ``changekit train MODEL.yaml DATASET.yaml SPLIT.yaml [--set ...]`` command. These
tests resolve all 216 of them and check the keys the seed fixes, resolve every split against generated SYSU-like
and SECOND-like sets laid out as the configs name them, and run the protocol's steps through the CLI.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest

from changekit.cli import main
from changekit.config import load_config
from changekit.data.fewshot import split_name
from changekit.engine.validate import validate_run

CA = Path(__file__).resolve().parents[1] / "configs" / "changeanywhere"
DOC = Path(__file__).resolve().parents[1] / "docs" / "changeanywhere.md"
SEED_MODELS = ("bit", "changeformer", "changer_ex", "fc_ef", "fc_siam_conc", "fc_siam_diff", "lightcdnet", "snunet")
MODELS = (*SEED_MODELS, "tinycd")
# dataset file -> (folder, list prefix of the seed's dataset_list files, validation split)
DATASETS = {"sysu_cd": ("SYSU-CD", "sysucd-train", "SYSU-CD/val"), "second": ("SECOND", "second-train", "SECOND/test")}
PERCENTS = (1, 5, 10, 20, 50, 100)
MODES = ("finetune", "onlysup")
# The per-model part of a command (docs/changeanywhere.md, "All combinations"). Recipes that start the backbone
# from ImageNet (the seed's onlysup) drop it when fine-tuning (the seed's finetune configs set pretrained=None);
# ChangeFormer's recipe leaves the MiT-b1 file to the user.
IMAGENET_RECIPES = {"bit", "tinycd"}
MIT_B1 = "/path/to/mit_b1_20220624-02e5a6a1.pth"
ONLYSUP_SET = {"changeformer": [f"model.backbone_weights={MIT_B1}"]}
SEED_PHOTOMETRIC = {"name": "photometric_mmseg", "brightness": 10, "contrast": [0.8, 1.2], "saturation": [0.8, 1.2],
                    "hue": 10, "per_date": True}


def protocol_run(model: str, dataset: str, percent: int, mode: str,
                 pretrained: str | None = None) -> tuple[list[Path], list[str]]:
    """Config files and ``--set`` items of one run, as the table of docs/changeanywhere.md writes them."""
    files = [CA / "models" / f"{model}.yaml", CA / "datasets" / f"{dataset}.yaml",
             CA / "splits" / f"{dataset}-{percent}.yaml"]
    if mode == "onlysup":
        return files, list(ONLYSUP_SET.get(model, []))
    sets = [f"init_from={pretrained or f'runs/ca_{model}/model.ckpt'}"]
    return files, sets + (["model.backbone_weights=null"] if model in IMAGENET_RECIPES else [])


def _check_resolved(cfg: dict, model: str, dataset: str, percent: int, mode: str) -> None:
    folder, prefix, val = DATASETS[dataset]
    data, optim, sched, trainer = cfg["data"], cfg["optim"], cfg["schedule"], cfg["trainer"]
    assert cfg["model"]["name"] == model
    # the seed's standard_256x256_50e_{sysucd,second}.py (ChangeFormer: its own AdamW weight decay 0.01)
    assert data["batch_size"] == 8
    assert (optim["name"], optim["lr"], optim["betas"]) == ("adamw", 1e-4, [0.9, 0.999])
    assert optim["weight_decay"] == (0.01 if model == "changeformer" else 0.05)
    assert (sched["name"], sched["power"], sched["min_lr"], sched["interval"]) == ("poly", 1.0, 0.0, "step")
    assert (sched["warmup"], sched["warmup_unit"], sched["warmup_factor"]) == (10, "epoch", 1e-6)
    assert (trainer["max_epochs"], trainer["max_steps"], trainer["val_every_epochs"]) == (50, -1, 10)
    assert (sched["plan_epochs"], sched["plan_steps"]) == (50, None)
    assert (trainer["monitor"], trainer["mode"]) == ("val/miou", "max")
    ops = [op["name"] for op in data["augment"]]
    if model == "changer_ex":  # its own train_pipeline
        assert ops == ["rot_flip", "random_crop", "swap_dates", "photometric_mmseg"]
    else:
        assert ops == ["rotate", "random_crop", "hflip", "vflip", "photometric_mmseg"]
        assert data["augment"][0] == {"name": "rotate", "limit": 180, "p": 0.5, "mask_fill": 255}
    assert {"name": "random_crop", "size": 256, "cat_max_ratio": 0.75} in data["augment"]
    assert SEED_PHOTOMETRIC in data["augment"]
    # data: the split's list (resolved in the training folder), SECOND validates on its test split
    train = f"{folder}/train" if percent == 100 else f"{folder}/dataset_list/{split_name(percent, prefix)}"
    assert (data["train"], data["root"], data["val"], data["test"]) == (train, f"{folder}/train", val,
                                                                        f"{folder}/test")
    if dataset == "second":
        assert data["val"] == data["test"]
    # the mode: only the initial weights differ
    weights = cfg["model"].get("backbone_weights")
    if mode == "finetune":
        assert cfg["init_from"] == f"runs/ca_{model}/model.ckpt" and weights is None
    else:
        assert cfg["init_from"] is None
        assert weights == {"bit": "imagenet", "tinycd": "imagenet", "changeformer": MIT_B1}.get(model)


@pytest.mark.parametrize("model", MODELS)
def test_every_combination_resolves_to_the_seed_protocol(model: str) -> None:
    for dataset in DATASETS:
        for percent in PERCENTS:
            for mode in MODES:
                files, sets = protocol_run(model, dataset, percent, mode)
                cfg = load_config(files, sets)
                try:
                    _check_resolved(cfg, model, dataset, percent, mode)
                except AssertionError as exc:
                    raise AssertionError(f"{model} x {dataset} x {percent} % x {mode}: {exc}") from exc


def test_fragment_files_are_exactly_the_protocol() -> None:
    """No stray or missing dataset/split files; the list names are those `changekit data fewshot` and the seed use."""
    assert sorted(p.stem for p in (CA / "datasets").glob("*.yaml")) == sorted(DATASETS)
    assert sorted(p.stem for p in (CA / "splits").glob("*.yaml")) == sorted(
        f"{d}-{p}" for d in DATASETS for p in PERCENTS)
    assert sorted(p.stem for p in (CA / "models").glob("*.yaml")) == sorted(MODELS)
    assert split_name(10, "sysucd-train") == "sysucd-train-10%.txt"  # the seed's dataset_list file names
    for path in [*(CA / "datasets").glob("*.yaml"), *(CA / "splits").glob("*.yaml")]:
        # data keys only, so that the file composes after any model's recipe without touching it
        assert re.findall(r"^[^#\s][^:]*:", path.read_text(), flags=re.M) == ["data:"], path


def test_pretrain_is_generic_over_the_model_file() -> None:
    for model in MODELS:
        cfg = load_config([CA / "models" / f"{model}.yaml", CA / "pretrain.yaml"])
        recipe = load_config(CA / "models" / f"{model}.yaml")
        assert cfg["model"] == recipe["model"] and cfg["loss"] == recipe["loss"] and cfg["optim"] == recipe["optim"]
        assert (cfg["data"]["train"], cfg["data"]["val"]) == ("changeanywhere/train", "changeanywhere/val")
        assert (cfg["trainer"]["max_steps"], cfg["trainer"]["val_every_steps"]) == (500000, 10000)
        sched = cfg["schedule"]
        assert (sched["warmup"], sched["warmup_unit"], sched["plan_epochs"], sched["plan_steps"]) == (
            1000, "step", None, 500000)  # planned as its own length, not the few-shot recipes' 50 epochs
        assert cfg["init_from"] is None


def test_docs_table_is_the_tested_commands() -> None:
    """The "All combinations" table of docs/changeanywhere.md gives, per model, exactly the --set items tested."""
    text = DOC.read_text()
    assert "configs/changeanywhere/models/MODEL.yaml configs/changeanywhere/datasets/DATASET.yaml" in text
    assert "configs/changeanywhere/splits/DATASET-PERCENT.yaml" in text
    rows = {m.group(1): m.group(0).split("|")[1:-1] for m in re.finditer(r"^\| `(\w+)` \|.*\|$", text, flags=re.M)}
    assert set(MODELS) <= set(rows)
    for model in MODELS:
        onlysup, finetune = (re.findall(r"`([^`]*)`", rows[model][i]) for i in (2, 3))
        assert [s for item in onlysup for s in item.split()] == protocol_run(model, "sysu_cd", 10, "onlysup")[1]
        assert [s for item in finetune for s in item.split()] == protocol_run(model, "sysu_cd", 10, "finetune")[1]


# ------------------------------------------------------------------------------- generated SYSU-like data
def _cli(*args: object) -> None:
    rc = main([str(a) for a in args])
    assert rc == 0, args


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory laid out as the configs name it: SYSU-CD/, SECOND/ (val = test) with their
    dataset_list/ from `changekit data fewshot`, and changeanywhere/{train,val} standing in for generated pairs."""
    root = tmp_path_factory.mktemp("ca_protocol")
    sets = {"SYSU-CD/train": 8, "SYSU-CD/val": 2, "SYSU-CD/test": 2, "SECOND/train": 6, "SECOND/test": 2,
            "changeanywhere/train": 4, "changeanywhere/val": 2}
    for seed, (name, n) in enumerate(sets.items()):
        _cli("data", "synth", "--out", root / name, "--n", n, "--size", 32, "--seed", seed)
    for folder, prefix in (("SYSU-CD", "sysucd-train"), ("SECOND", "second-train")):
        _cli("data", "fewshot", root / folder / "train", "--percent", 1, 5, 10, 20, 50, "--prefix", prefix,
             "--out", root / folder / "dataset_list")
    return root


@pytest.mark.parametrize("dataset", list(DATASETS))
def test_every_split_resolves_in_the_data_layout(dataset: str, workdir: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """validate_run (paths, list stems, labels, model on the meta device, augmentation, init_from) from the working
    directory the configs assume: every model, every percentage and both modes, in rotation."""
    monkeypatch.chdir(workdir)
    ckpt = workdir / "pretrained.ckpt"
    ckpt.write_bytes(b"")  # validate_run checks that init_from exists; it does not read it
    for i, model in enumerate(MODELS):
        files, sets = protocol_run(model, dataset, PERCENTS[i % len(PERCENTS)], MODES[i % 2], pretrained=str(ckpt))
        if "backbone_weights" in load_config(files[0])["model"]:
            sets.append("model.backbone_weights=null")  # no weight files here (a later --set wins)
        validate_run(load_config(files, sets))


def test_protocol_runs_through_the_cli(workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pre-train BIT on the stand-in generated set, test it zero-shot, fine-tune it on the 50 % SYSU-CD split with
    the protocol's finetune command; two training steps each, with validation and the mIoU-selected checkpoint."""
    monkeypatch.chdir(workdir)
    model = CA / "models" / "bit.yaml"
    augment = [{**op, "size": 32} if op["name"] == "random_crop" else op  # the protocol's ops, crops of 32
               for op in load_config(model)["data"]["augment"]]
    tiny = ["data.batch_size=2", "data.num_workers=0", "trainer.accelerator=cpu", "trainer.devices=1",
            "trainer.progress_bar=false", "trainer.val_every_epochs=1", "trainer.limit_val_batches=1",
            f"data.augment={json.dumps(augment)}"]
    _cli("train", model, CA / "pretrain.yaml", "--out", tmp_path / "ca_bit", "--set", *tiny,
         "model.backbone_weights=null", "trainer.max_steps=2", "trainer.val_every_steps=2")
    _cli("test", "--ckpt", tmp_path / "ca_bit" / "model.ckpt", "--data", "SYSU-CD/test", "--out",
         tmp_path / "zero_shot", "--no-report")
    assert "miou" in json.loads((tmp_path / "zero_shot" / "metrics.json").read_text())
    files, sets = protocol_run("bit", "sysu_cd", 50, "finetune", pretrained=str(tmp_path / "ca_bit" / "model.ckpt"))
    _cli("train", *files, "--out", tmp_path / "ft", "--set", *sets, *tiny, "trainer.max_steps=2")
    run = tmp_path / "ft"
    cfg = load_config(run / "config.yaml")
    assert cfg["data"]["train"] == "SYSU-CD/dataset_list/sysucd-train-50%.txt" and cfg["init_from"]
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "model.ckpt").is_file()
    with (run / "logs" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert any(row.get("val/miou") for row in rows)
    assert max(int(row["step"]) for row in rows if row.get("step")) <= 2
