"""changekit: deep-learning change detection for remote-sensing image pairs.

The public API mirrors the command line::

    import changekit
    changekit.list_models()
    model = changekit.build_model("fc_siam_diff")
    run = changekit.train("configs/fc_siam/fc_siam_diff_levir_cd.yaml", out="runs/x")
    metrics = changekit.test(run["checkpoint"], out="runs/x/test", data="LEVIR-CD/test")
    changekit.predict(run["checkpoint"], a="A/", b="B/", out="masks/")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__", "benchmark", "build_model", "eval_masks", "list_models", "load_checkpoint", "model_info",
    "predict", "run_demo", "test", "train",
]

_LAZY = {
    "build_model": ("changekit.models", "build_model"),
    "list_models": ("changekit.models", "list_models"),
    "model_info": ("changekit.models", "model_info"),
    "load_checkpoint": ("changekit.engine.checkpoint", "load_checkpoint"),
    "train": ("changekit.engine.train", "train"),
    "test": ("changekit.engine.evaluate", "test"),
    "predict": ("changekit.engine.predict", "predict"),
    "eval_masks": ("changekit.evaluation", "eval_masks"),
    "benchmark": ("changekit.bench", "benchmark"),
    "run_demo": ("changekit.demo", "run_demo"),
}


def __getattr__(name: str) -> Any:
    """Import heavy parts (torch, Lightning) only when used, so the CLI starts fast."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'changekit' has no attribute '{name}'")
