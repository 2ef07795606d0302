"""Every shipped config loads, builds its model, losses and augmentation, and trains one step on fake data."""

from __future__ import annotations

from pathlib import Path

import pytest

from changekit.config import load_config
from changekit.engine.train import train

# ChangeCLIP's full-size configs take about a minute per CPU step and need CLIP weights: their recipes are
# checked (and built on the meta device) by tests/models/test_changeclip.py instead.
# ChangeAnywhere's protocol fragments (datasets/, splits/, pretrain.yaml) hold only data/trainer keys and are
# composed after a model recipe: tests/test_changeanywhere_protocol.py resolves them with every model instead.
_CA = Path(__file__).resolve().parents[1] / "configs" / "changeanywhere"
_FRAGMENTS = (_CA / "datasets", _CA / "splits", _CA / "pretrain.yaml")
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml")
                 if not p.name.startswith("_") and p.parent.name != "changeclip"
                 and not any(p == f or f in p.parents for f in _FRAGMENTS))


def test_configs_exist() -> None:
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_trains_one_step(path: Path, synth_root: Path, synth_semantic_root: Path, tmp_path: Path) -> None:
    semantic = load_config(path)["data"]["task"] == "semantic"
    root = synth_semantic_root if semantic else synth_root
    overrides = [
        f"data.train={root / 'train'}", f"data.val={root / 'val'}", f"data.test={root / 'val'}",
        "data.batch_size=2", "data.num_workers=0", "trainer.max_steps=1", "trainer.limit_val_batches=1",
        "trainer.accelerator=cpu", "trainer.devices=1", "trainer.progress_bar=false",
    ]
    if semantic:  # the generated scenes have 5 classes with ignore 255 (Hi-UCD/SECOND have their own tables)
        overrides += ["data.ignore_index=255", "model.num_classes=5", "data.classes=null", "data.augment=flips",
                      "loss=[{name: bce}, {name: dice, skip_empty: true}, {name: ce, target: sem_a}, "
                      "{name: ce, target: sem_b}]"]
    cfg = load_config(path, overrides)
    for key in [k for k in cfg["model"] if k.endswith("weights")]:
        cfg["model"][key] = None  # no pretrained downloads in tests
    result = train(cfg, tmp_path / "run")
    assert result["steps"] == 1
    assert Path(result["checkpoint"]).is_file()
