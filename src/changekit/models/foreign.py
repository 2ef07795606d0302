"""Import of checkpoints released by other frameworks (open-cd / mmengine, the authors' own training loops).

A model family registers one key-mapping function per foreign format it can read, in its own file::

    @register_converter("opencd", "bit")
    def bit_from_opencd(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ...  # rename open-cd's keys to ours

:func:`convert_foreign` then reads the file with the restricted unpickler (no code from the file runs),
finds the weights (``state_dict`` of an mmengine checkpoint, a plain state dict, a pickled module...), applies
the mapping, and loads the result strictly: a checkpoint of another model is one
:class:`~changekit.errors.CheckpointError` line naming the missing and unexpected keys.
``changekit convert <source> SRC --model NAME --out DST.ckpt`` is the CLI over it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError, suggest
from ..safeload import extract_state_dict, restricted_load

KeyMap = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass
class Converter:
    """How one foreign format maps onto one registered model."""

    source: str
    model: str
    map_keys: KeyMap
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    #: config overrides the converted checkpoint carries (e.g. normalisation the released weights expect)
    config: dict[str, Any] = field(default_factory=dict)
    description: str = ""


_CONVERTERS: dict[tuple[str, str], Converter] = {}


def register_converter(
    source: str, model: str, model_kwargs: dict[str, Any] | None = None, config: dict[str, Any] | None = None,
    description: str = "",
) -> Callable[[KeyMap], KeyMap]:
    """Register ``fn(state) -> state`` as the mapping of ``source``'s keys onto registered model ``model``."""

    def deco(fn: KeyMap) -> KeyMap:
        key = (source, model)
        if key in _CONVERTERS:
            raise ValueError(f"a converter from '{source}' to '{model}' is already registered")
        doc = description or (fn.__doc__ or "").strip().splitlines()[0] if (description or fn.__doc__) else ""
        _CONVERTERS[key] = Converter(source, model, fn, dict(model_kwargs or {}), dict(config or {}), doc)
        return fn

    return deco


def list_converters(source: str | None = None) -> list[Converter]:
    """The registered converters (of one ``source`` when given), sorted by source and model."""
    return [c for k, c in sorted(_CONVERTERS.items()) if source is None or k[0] == source]


def get_converter(source: str, model: str | None) -> Converter:
    """The converter of ``source`` for ``model`` (``model`` may be omitted when the source has only one)."""
    sources = sorted({s for s, _ in _CONVERTERS})
    if source not in sources:
        raise ConfigError(f"unknown checkpoint source '{source}'{suggest(source, sources)}; "
                          f"known: {', '.join(sources) or 'none'}")
    models = [c.model for c in list_converters(source)]
    if model is None:
        if len(models) == 1:
            return _CONVERTERS[(source, models[0])]
        raise ConfigError(f"{source} checkpoints hold one of several models; pass --model ({', '.join(models)})")
    if (source, model) not in _CONVERTERS:
        raise ConfigError(f"no {source} converter for model '{model}'{suggest(model, models)}; "
                          f"available: {', '.join(models)}")
    return _CONVERTERS[(source, model)]


def compare_keys(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """``""`` when ``state`` fits ``own`` exactly, else a short description of what differs."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if keys:
            parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    return "; ".join(parts)


def convert_foreign(
    source: str, src: str | Path, model: str | None = None, **model_kwargs: Any
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Read a foreign checkpoint into a registered model and a resolved run config.

    Args:
        source: the format (``opencd``, ``tinycd``, ``clearscd``...; see :func:`list_converters`).
        src: the checkpoint file.
        model: registered model name (optional when the source maps onto one model only).
        **model_kwargs: constructor arguments over the converter's (e.g. ``base_channel=16``).

    Raises:
        CheckpointError: unreadable file, or weights that do not fit the model (names the keys).
        ConfigError: unknown source or model.
    """
    from ..config import resolve
    from .registry import build_model

    conv = get_converter(source, model)
    kwargs = {**conv.model_kwargs, **{k: v for k, v in model_kwargs.items() if v is not None}}
    raw = extract_state_dict(restricted_load(src))
    if not raw:
        raise CheckpointError(f"{src}: no model weights found in the file")
    state = conv.map_keys(dict(raw))
    with torch.device("meta"):  # no random init of weights that are overwritten anyway
        net = build_model(conv.model, **kwargs)
    diff = compare_keys(net.state_dict(), state)
    if diff:
        raise CheckpointError(f"{src}: not a {source} checkpoint of '{conv.model}': {diff}")
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, assign=True)
    user = {"model": {"name": conv.model, **kwargs}}
    for section, values in conv.config.items():
        user[section] = {**user.get(section, {}), **values} if isinstance(values, dict) else values
    return net.eval(), resolve(user)
