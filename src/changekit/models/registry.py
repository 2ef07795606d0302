"""Model registry: build any model by name, list them, count their parameters.

Builders are registered with ``@register_model``; ``changekit.models`` imports every family file so that
importing the package registers everything. A builder takes keyword arguments only (the model's
constructor arguments) and returns a :class:`~changekit.models.base.ChangeModel`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import nn

from ..errors import ConfigError, UnknownModelError, suggest

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
F = TypeVar("F", bound=Callable[..., nn.Module])


def register_model(fn: F) -> F:
    """Register a builder under its function name; a second registration of a name is an error."""
    name = fn.__name__
    if name in _REGISTRY:
        raise ValueError(f"model '{name}' is already registered")
    _REGISTRY[name] = fn
    return fn


def list_models(filter: str = "") -> list[str]:
    """Sorted names of the registered models containing ``filter``."""
    return sorted(n for n in _REGISTRY if filter in n)


def get_builder(name: str) -> Callable[..., nn.Module]:
    """The builder registered as ``name``; ``UnknownModelError`` names the closest match."""
    if name not in _REGISTRY:
        raise UnknownModelError(
            f"unknown model '{name}'{suggest(name, _REGISTRY)}; available: {', '.join(list_models())}"
        )
    return _REGISTRY[name]


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; ``None`` values fall back to the builder's defaults.

    Args:
        name: registry name, e.g. ``"fc_siam_diff"``.
        **kwargs: constructor arguments of that model (see its docstring).

    Raises:
        UnknownModelError: ``name`` is not registered.
        ConfigError: an argument is not accepted by the model.
    """
    builder = get_builder(name)
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    allowed = accepted_args(builder)
    if allowed is not None:
        for key in kwargs:
            if key not in allowed:
                accepted = ", ".join(sorted(allowed))
                raise ConfigError(f"model '{name}' has no argument '{key}'{suggest(key, allowed)}; accepted: {accepted}")
    model = builder(**kwargs)
    model.model_name = name  # type: ignore[assignment]
    model.model_kwargs = dict(kwargs)  # type: ignore[assignment]
    return model


def accepted_args(builder: Callable[..., Any]) -> set[str] | None:
    """Keyword arguments a builder accepts, following ``**kwargs`` into the model class when declared."""
    sig = inspect.signature(builder)
    names = {p.name for p in sig.parameters.values() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        target = getattr(builder, "model_cls", None)
        if target is None:
            return None
        names |= {p for p in inspect.signature(target.__init__).parameters if p not in ("self", "args", "kwargs")}
    return names


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (all registered ones, used or not)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_info(name: str, **kwargs: Any) -> dict[str, Any]:
    """``{"name", "task", "params"}`` for a model built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        model = build_model(name, **kwargs)
    return {"name": name, "task": getattr(model, "task", "binary"), "params": count_parameters(model)}
