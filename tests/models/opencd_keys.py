"""Helpers for tests of models imported from open-cd: fake checkpoints from the committed key fixtures.

``tests/data/opencd_keys/<name>.json`` holds the names and shapes of the state dict open-cd's definition of a
model has (``{"source": ..., "keys": {name: shape}}``), read off the public open-cd code; no weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from changekit.models.foreign import convert_foreign, get_converter

KEYS = Path(__file__).resolve().parents[1] / "data" / "opencd_keys"


def opencd_checkpoint(name: str, path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors named and shaped as ``opencd_keys/<name>.json``, saved at ``path`` as an mmengine checkpoint
    (``{"meta": ..., "state_dict": ...}``); returns the state dict."""
    gen = torch.Generator().manual_seed(seed)
    keys = json.loads((KEYS / f"{name}.json").read_text())["keys"]
    state = {k: torch.randint(0, 100, shape, generator=gen) if k.endswith("num_batches_tracked")
             else torch.rand(shape, generator=gen) + 0.1 for k, shape in keys.items()}
    torch.save({"meta": {"mmseg_version": "1.2.2", "iter": 500000}, "state_dict": state}, path)
    return state


def check_strict_conversion(name: str, tmp_path: Path) -> nn.Module:
    """Convert a fake open-cd checkpoint of ``name``; every tensor must land, unchanged, under its mapped name."""
    src = tmp_path / f"{name}_opencd.pth"
    state = opencd_checkpoint(name, src)
    model, cfg = convert_foreign("opencd", src, name)
    assert cfg["model"]["name"] == name
    mapped = get_converter("opencd", name).map_keys(dict(state))
    own = model.state_dict()
    assert set(own) == set(mapped) and len(mapped) == len(state)
    for key, value in mapped.items():
        assert torch.equal(own[key], value.to(own[key].dtype)), key
    return model


def trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm a random affine: mmseg's zero-initialised last BatchNorm of each residual block would
    otherwise block the gradient to the block's other layers (as it is meant to, at step 0)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
    return model
