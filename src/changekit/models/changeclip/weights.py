"""Initialise ChangeCLIP from a CLIP checkpoint (what ``pretrained='pretrained/RN50.pt'`` does in the original).

``"openai"`` fetches OpenAI's weights through open_clip (online, cached). Accepted files: OpenAI's TorchScript
archives (``RN50.pt``, ``ViT-B-16.pt`` as downloaded by the ``clip`` package or open_clip's ``openai`` tag) and plain state dicts with OpenAI/open_clip key names (optionally under
``state_dict``, optionally with a ``module.`` prefix). ``visual.*`` goes to the image tower; the attention-pool
(RN50) or patch (ViT) positional table is bilinearly resized to the model's grid (7 x 7 -> 16 x 16, 14 x 14 ->
16 x 16) as the original does; extra input bands get the mean of the RGB filters. ``transformer.*``,
``token_embedding``, ``positional_embedding`` (cut to the model's table), ``ln_final`` and ``text_projection``
go to the text encoder. The ViT adapters and everything after the towers keep their initialisation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError, DatasetNotFoundError
from ...safeload import is_torchscript, load_tensors, restricted_load

log = logging.getLogger(__name__)
TEXT_KEYS = ("transformer.", "token_embedding.", "positional_embedding", "ln_final.", "text_projection")


def read_clip_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The float32 state dict of a CLIP checkpoint file (TorchScript archive or saved state dict)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        raise DatasetNotFoundError(
            f"{path}: CLIP weights not found; download OpenAI's RN50.pt / ViT-B-16.pt (the files the `clip` "
            "package fetches) or an open_clip checkpoint and point model.clip_weights at it"
        )
    # never torch.jit.load: a TorchScript archive's tensors are read by the restricted unpickler, its code never
    # runs; any other file is read weights_only (or as safetensors)
    state: object = restricted_load(path, "CLIP weights file") if is_torchscript(path) \
        else load_tensors(path, "CLIP weights file")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a CLIP state dict, got {type(state).__name__}")
    return {k.removeprefix("module."): v.float() for k, v in state.items() if isinstance(v, torch.Tensor)}


def _resize_grid(table: torch.Tensor, rows: int) -> torch.Tensor:
    """Resize a ``(1 + s*s, C)`` positional table to ``rows = 1 + t*t`` (bilinear on the grid part)."""
    if table.shape[0] == rows:
        return table
    s, t = round((table.shape[0] - 1) ** 0.5), round((rows - 1) ** 0.5)
    grid = table[1:].reshape(1, s, s, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(t, t), mode="bilinear", align_corners=False)
    return torch.cat([table[:1], grid.permute(0, 2, 3, 1).reshape(t * t, -1)], 0)


def _load_part(module: nn.Module, state: dict[str, torch.Tensor], what: str, source: Path,
               allowed_missing: tuple[str, ...] = ()) -> None:
    own = module.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in state.items()
           if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state and not k.startswith(allowed_missing)
               and not k.endswith(("num_batches_tracked", "relative_position_index"))]
    if bad or missing:
        raise CheckpointError(
            f"{source}: the CLIP {what} does not fit this model (a RN50 file for changeclip_rn50, ViT-B/16 for "
            f"changeclip_vitb16?); shape mismatches: {bad[:3]}, missing: {missing[:3]}"
        )
    unexpected = [k for k in state if k not in own]
    if unexpected:
        log.info("CLIP %s: ignored %d keys such as %s", what, len(unexpected), unexpected[:3])
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def openai_state_dict(clip_name: str) -> dict[str, torch.Tensor]:
    """OpenAI's ``RN50`` / ``ViT-B-16`` weights through open_clip's download (and cache)."""
    from ...clip_tags import load_clip

    return {k: v.float() for k, v in load_clip(clip_name, None, "cpu")[0].state_dict().items()}


def load_clip_weights(model: nn.Module, path: str | Path, clip_name: str = "RN50") -> None:
    """Copy a CLIP checkpoint's image and text towers into a :class:`~.model.ChangeCLIP` (in place).

    Args:
        model: the ChangeCLIP model.
        path: a checkpoint file, or ``"openai"`` for OpenAI's ``clip_name`` weights via open_clip (online).
        clip_name: ``"RN50"`` or ``"ViT-B-16"`` (used with ``"openai"``).
    """
    source = Path(path)
    state = openai_state_dict(clip_name) if str(path) == "openai" else read_clip_state_dict(source)
    visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    text = {k: v for k, v in state.items() if k.startswith(TEXT_KEYS)}
    if not visual or not text:
        raise CheckpointError(f"{source}: no 'visual.*' and text-tower keys; is this a CLIP checkpoint?")
    backbone = model.backbone  # type: ignore[attr-defined]
    own = backbone.state_dict()
    for key in ("attnpool.positional_embedding", "positional_embedding"):
        if key in visual and key in own and visual[key].ndim == 2:
            visual[key] = _resize_grid(visual[key], own[key].shape[0])
    w = visual.get("conv1.weight")
    if w is not None and own["conv1.weight"].shape[1] != w.shape[1]:
        extra = own["conv1.weight"].shape[1] - w.shape[1]
        if extra > 0:
            visual["conv1.weight"] = torch.cat([w, w.mean(1, keepdim=True).expand(-1, extra, -1, -1)], 1)
        else:
            visual["conv1.weight"] = w[:, : own["conv1.weight"].shape[1]]
    _load_part(backbone, visual, "image tower", source, allowed_missing=("fpn",))
    encoder = model.text_encoder  # type: ignore[attr-defined]
    if "positional_embedding" in text:
        text["positional_embedding"] = text["positional_embedding"][: encoder.context_length]
    _load_part(encoder, text, "text tower", source)
    log.info("initialised the image and text towers from %s", source)
