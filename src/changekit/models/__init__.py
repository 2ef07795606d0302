"""Change-detection models: importing this package registers every model family.

Every module and subpackage of :mod:`changekit.models` is imported here, so a new family registers its builders
(``@register_model``) and its checkpoint converters (``@register_converter``) by existing; nothing else needs
editing. Build one with ``build_model("fc_siam_diff", in_channels=4)``; see ``list_models()`` for the names.
"""

from __future__ import annotations

import importlib
import pkgutil

from .base import ChangeModel
from .outputs import ChangeOutput
from .registry import build_model, count_parameters, list_models, model_info, register_model

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "ChangeModel",
    "ChangeOutput",
    "build_model",
    "count_parameters",
    "list_models",
    "model_info",
    "register_model",
]
