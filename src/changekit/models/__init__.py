"""Change-detection models: importing this package registers every model family.

Build one with ``build_model("fc_siam_diff", in_channels=4)``; see ``list_models()`` for the names.
"""

from __future__ import annotations

from . import changeclip, changemask, clearscd, fc_siam, misgnet, siam_unet  # noqa: F401  (registers the builders)
from .base import ChangeModel
from .outputs import ChangeOutput
from .registry import build_model, count_parameters, list_models, model_info, register_model

__all__ = [
    "ChangeModel",
    "ChangeOutput",
    "build_model",
    "count_parameters",
    "list_models",
    "model_info",
    "register_model",
]
