"""Reading and writing changekit checkpoints: a state_dict plus the resolved config, never a pickled module.

Two kinds are read: Lightning's run checkpoints (``best.ckpt``, ``last.ckpt``: weights under ``model.``, EMA
weights under ``ema.module.``, config under ``hyper_parameters.config``; they also carry optimiser state for
``--resume``) and the compact ``model.ckpt`` that a finished run exports (only the evaluated weights).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.io import atomic_path
from ..errors import CheckpointError
from ..models import build_model
from ..safeload import load_tensors

FORMAT = "changekit-checkpoint"
VERSION = 1


def _read(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    obj = load_tensors(path)  # weights_only: a planted pickle is refused, never run
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a changekit checkpoint (a {type(obj).__name__}, not a dict)")
    return obj


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The evaluated weights (EMA when present) and the resolved config of a checkpoint."""
    obj = _read(path)
    if obj.get("format") == FORMAT:
        config, state = obj.get("config"), obj.get("state_dict")
    else:
        hparams = obj.get("hyper_parameters")
        config = hparams.get("config") if isinstance(hparams, dict) else None
        state = obj.get("state_dict")
    if config is None or state is None:
        raise CheckpointError(f"{path}: not a changekit checkpoint (no config/state_dict); "
                              "for the authors' released weights use `changekit convert`")
    if (not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values())
            or not isinstance(config, dict) or not isinstance(config.get("model"), dict)
            or not isinstance(config["model"].get("name"), str)):
        raise CheckpointError(f"{path}: not a changekit checkpoint (its state_dict or config has the wrong form)")
    if obj.get("format") == FORMAT:
        return state, config
    prefix = "ema.module." if any(k.startswith("ema.module.") for k in state) else "model."
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return weights, config


def load_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: str | Path, strict: bool = True) -> None:
    """Load ``weights`` into ``model``; mismatching keys raise ``CheckpointError`` naming them."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    unexpected = [k for k in weights if k not in own]
    shape = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    if strict and (missing or unexpected or shape):
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shape)):
            if keys:
                parts.append(f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})")
        raise CheckpointError(
            f"{source}: weights do not fit model '{getattr(model, 'model_name', type(model).__name__)}' "
            f"({'; '.join(parts)}); is this a checkpoint of another model?"
        )
    model.load_state_dict({k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}, strict=False)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint by name and load its evaluated weights.

    Returns:
        ``(model, config)`` with the model in eval mode.
    """
    weights, config = read_checkpoint(path)
    kwargs = dict(config["model"])
    name = kwargs.pop("name")
    for key in [k for k in kwargs if k.endswith("weights") or k == "pretrained"]:
        kwargs.pop(key)  # weights come from the checkpoint, never from a file or hub
    model = build_model(name, **kwargs)
    load_weights(model, weights, path)
    return model.to(map_location).eval(), config


def save_checkpoint(path: str | Path, model: nn.Module, config: dict[str, Any], **extra: Any) -> Path:
    """Write the compact checkpoint (weights + config) atomically."""
    obj = {"format": FORMAT, "version": VERSION, "model": config["model"]["name"], "config": config,
           "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **extra}
    with atomic_path(path, durable=True) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def check_model_name(path: str | Path, expected: str) -> None:
    """Raise when the checkpoint at ``path`` holds another model than ``expected``."""
    _, config = read_checkpoint(path)
    found = config["model"]["name"]
    if found != expected:
        raise CheckpointError(f"{path}: checkpoint holds model '{found}', but the config asks for '{expected}'")
