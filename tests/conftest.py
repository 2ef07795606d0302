"""Shared fixtures: tiny generated data sets (made by changekit's own generator, never real data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train`` (12 pairs) and ``val`` (6 pairs) of 64x64 synthetic scenes in the A|B|label layout."""
    from changekit.data.synthetic import synthesize

    root = tmp_path_factory.mktemp("synth")
    synthesize(root / "train", n=12, size=64, seed=1)
    synthesize(root / "val", n=6, size=64, seed=2)
    return root


@pytest.fixture(scope="session")
def synth_semantic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``train`` (8) and ``val`` (4) semantic 64x64 scenes (im1|im2|label1|label2|label + classes.yaml)."""
    from changekit.data.synthetic import synthesize

    root = tmp_path_factory.mktemp("synth_sem")
    synthesize(root / "train", n=8, size=64, seed=1, semantic=True)
    synthesize(root / "val", n=4, size=64, seed=2, semantic=True)
    return root


@pytest.fixture(scope="session")
def tiny_config():  # noqa: ANN201
    """Factory of configs that train fc_siam_diff for a few CPU steps on a data root."""
    return _tiny_config


def _tiny_config(root: Path, **trainer: object) -> dict:
    return {
        "model": {"name": "fc_siam_diff"},
        "data": {"train": str(root / "train"), "val": str(root / "val"), "test": str(root / "val"),
                 "batch_size": 4, "num_workers": 0},
        "loss": [{"name": "ce"}],
        "trainer": {"max_epochs": 1, "accelerator": "cpu", "devices": 1, "progress_bar": False,
                    "log_every_n_steps": 1, **trainer},
    }
