"""Import the authors' released MISGNet checkpoints (whole pickled models) without their code.

The released ``train.py`` saves ``torch.save(model)`` and ``torch.save(model_ema)``: pickles of the module
objects (``models.mynet.mynet4.MyNet`` or ``ema_pytorch.EMA`` wrapping it), which a plain ``torch.load`` can only
open with the authors' code importable, and which would run arbitrary code from the file. Here the file is read
with :class:`RestrictedUnpickler`: tensors, storages and a few plain containers are rebuilt; every other global
(module classes, functions, ``functools.partial``, ...) becomes an inert :class:`Stub` that only records the
state it is given. The module tree of stubs is then walked into a ``state_dict`` and its official key names are
mapped onto :class:`~changekit.models.misgnet.MISGNet`'s (:func:`map_official_keys`).
"""

from __future__ import annotations

import _compat_pickle
import collections
import pickle
import re
import types
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError

_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
}


class Stub:
    """Stands in for any class or function of the pickle that is not known to be safe; records its state."""

    stub_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.stub_args = args
        self.stub_state: Any = kwargs or None

    def __setstate__(self, state: Any) -> None:
        self.stub_state = state

    def __repr__(self) -> str:
        return f"<stub {self.stub_name}>"


def _stub_class(module: str, name: str) -> type:
    return type(name, (Stub,), {"stub_name": f"{module}.{name}", "__module__": "changekit.stub"})


class RestrictedUnpickler(pickle.Unpickler):
    """``find_class`` returns only tensor-rebuilding helpers, storages, dtypes and plain containers; anything
    else becomes a :class:`Stub` class, so loading never imports or runs code named by the file."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        # protocol-2 pickles name Python 2 modules (``__builtin__.set``); map them as pickle itself would
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _SAFE_GLOBALS:
            return _SAFE_GLOBALS[(module, name)]
        if module == "torch":
            value = getattr(torch, name, None)
            if isinstance(value, torch.dtype):
                return value
            if name.endswith("Storage") and isinstance(value, type):
                return value
        if module == "torch.storage" and name == "UntypedStorage":
            return torch.UntypedStorage
        return _stub_class(module, name)


_PICKLE_MODULE = types.ModuleType("changekit_restricted_pickle")
_PICKLE_MODULE.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
_PICKLE_MODULE.load = lambda f, **kw: RestrictedUnpickler(f, **kw).load()  # type: ignore[attr-defined]


def restricted_load(path: str | Path) -> Any:
    """Unpickle a ``torch.save`` file with :class:`RestrictedUnpickler` (tensors land on the CPU)."""
    try:
        return torch.load(path, map_location="cpu", pickle_module=_PICKLE_MODULE, weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read as a PyTorch checkpoint ({exc})") from None


def module_state_dict(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a pickled ``nn.Module`` tree of :class:`Stub` objects (parameters, persistent
    buffers, submodules), or of a plain mapping of tensors."""
    out: dict[str, torch.Tensor] = {}
    if isinstance(obj, Stub):
        state = obj.stub_state
        if isinstance(state, tuple) and state and isinstance(state[0], dict):
            state = state[0]
        if not isinstance(state, dict) or "_modules" not in state:
            return out
        skip = state.get("_non_persistent_buffers_set")
        skip = skip if isinstance(skip, set | frozenset | list | tuple) else ()
        for kind in ("_parameters", "_buffers"):
            for name, value in (state.get(kind) or {}).items():
                if isinstance(value, torch.Tensor) and name not in skip:
                    out[prefix + name] = value.detach()
        for name, child in (state.get("_modules") or {}).items():
            if child is not None:
                out.update(module_state_dict(child, f"{prefix}{name}."))
        return out
    if isinstance(obj, dict):
        for name, value in obj.items():
            if isinstance(value, torch.Tensor):
                out[prefix + str(name)] = value.detach()
    return out


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Find the model weights in a loaded released checkpoint.

    Accepts a pickled ``MyNet``, a pickled ``ema_pytorch.EMA`` (its ``ema_model`` weights are taken), a
    training checkpoint ``{"model": state_dict, ...}`` or a plain state_dict; strips ``module.`` prefixes.
    """
    if isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ("model_ema", "ema", "model", "state_dict"):
            if key in obj:
                return extract_state_dict(obj[key])
    state = module_state_dict(obj)
    if any(k.startswith("ema_model.") for k in state):
        state = {k[len("ema_model."):]: v for k, v in state.items() if k.startswith("ema_model.")}
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


_RULES: list[tuple[str, str]] = [
    (r"^MGLNet(\d)\.mutualnet0\.", r"sgm.\1."),
    (r"\.(x[12]_conv\d+)\.0\.", r".\1."),  # BasicConv2d wrapped in nn.Sequential
    (r"\.(r2e2?)\.conv\.0\.", r".\1.conv."),
    (r"^decode(\d)\.", r"decoder.decode\1."),
    (r"^Translayer(\d)\.", r"decoder.translayer\1."),
    (r"^final2\.0\.", "decoder.head.0."),
    (r"^final2\.1\.conv\.", "decoder.head.1."),
]


def map_official_keys(state: dict[str, torch.Tensor], keep_stage4: bool = False) -> dict[str, torch.Tensor]:
    """Rename the released ``MyNet`` keys to :class:`MISGNet`'s.

    ``backbone.*`` follows timm's PVTv2 renaming (``patch_embed1`` -> ``patch_embed``, ``block1.0`` ->
    ``stages.0.blocks.0``, ``norm1`` -> ``stages.0.norm``, ``dwconv.dwconv`` -> ``dwconv``); stage 4 (and a
    classifier ``head``) is dropped unless ``keep_stage4``. ``MGLNet{i}.mutualnet0`` -> ``sgm.{i}``;
    ``decode{i}``, ``Translayer{i}`` and ``final2`` move under ``decoder``. Unknown keys are kept (loading
    then reports them).
    """
    from timm.models.pvt_v2 import checkpoint_filter_fn

    backbone = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    out = {f"backbone.{k}": v for k, v in checkpoint_filter_fn(backbone, None).items()
           if not k.startswith("head.") and (keep_stage4 or not k.startswith("stages.3."))}
    for key, value in state.items():
        if key.startswith("backbone."):
            continue
        for pattern, repl in _RULES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    return out


def convert_checkpoint(src: str | Path, keep_stage4: bool = False) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Read a released checkpoint into a :class:`MISGNet` and its resolved config (weights checked strictly).

    Raises:
        CheckpointError: unreadable file, or weights that do not fit MISGNet.
    """
    from ...config import resolve
    from ..registry import build_model

    state = map_official_keys(extract_state_dict(restricted_load(src)), keep_stage4=keep_stage4)
    if not state:
        raise CheckpointError(f"{src}: no model weights found in the file")
    cfg = resolve({"model": {"name": "misgnet", "keep_stage4": keep_stage4}})
    with torch.device("meta"):  # no random init of 10-18 M parameters that are overwritten anyway
        model = build_model("misgnet", keep_stage4=keep_stage4)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{src}: not a MISGNet checkpoint: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected {unexpected[:3]}, {len(wrong)} of wrong shape {wrong[:3]}"
        )
    model.load_state_dict(state, assign=True)
    return model.eval(), cfg
