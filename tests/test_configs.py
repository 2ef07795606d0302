"""Every shipped config loads, builds its model, losses and augmentation, and trains one step on fake data."""

from __future__ import annotations

from pathlib import Path

import pytest

from changekit.config import load_config
from changekit.engine.train import train

# ChangeCLIP's full-size configs take about a minute per CPU step and need CLIP weights: their recipes are
# checked (and built on the meta device) by tests/models/test_changeclip.py instead.
CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml")
                 if not p.name.startswith("_") and p.parent.name != "changeclip")


def test_configs_exist() -> None:
    assert len(CONFIGS) >= 10


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_trains_one_step(path: Path, synth_root: Path, tmp_path: Path) -> None:
    cfg = load_config(path, [
        f"data.train={synth_root / 'train'}", f"data.val={synth_root / 'val'}", f"data.test={synth_root / 'val'}",
        "data.batch_size=2", "data.num_workers=0", "trainer.max_steps=1", "trainer.limit_val_batches=1",
        "trainer.accelerator=cpu", "trainer.devices=1", "trainer.progress_bar=false",
    ])
    for key in [k for k in cfg["model"] if k.endswith("weights")]:
        cfg["model"][key] = None  # no pretrained downloads in tests
    result = train(cfg, tmp_path / "run")
    assert result["steps"] == 1
    assert Path(result["checkpoint"]).is_file()
