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

import re
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError
from ...safeload import RestrictedUnpickler, Stub, extract_state_dict, module_state_dict, restricted_load

__all__ = ["RestrictedUnpickler", "Stub", "convert_checkpoint", "extract_state_dict", "map_official_keys",
           "module_state_dict", "restricted_load"]


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
