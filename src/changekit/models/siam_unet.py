"""Siamese U-Net over any segmentation-models-pytorch encoder.

The generic siamese-encoder / fused-skip design of FC-Siam-diff (Daudt, Le Saux, Boulch, "Fully convolutional
siamese networks for change detection", ICIP 2018) with a modern backbone: a shared smp encoder (``resnet18``,
``efficientnet-b0``, ``tu-<timm name>``, ...) sees both dates in one batched pass, each level's two feature maps are
fused (``|a-b|`` by default, or concatenation, or sum), and smp's U-Net decoder plus a 3x3 segmentation head turn
the fused pyramid into change logits at input resolution.

Encoder weights: ``None`` = random init; a local file (``.pth``/``.pt``/``.ckpt``/``.bin``/``.safetensors``) =
a state dict loaded into the encoder (missing keys are an error, unexpected keys a warning, both by name);
any other string (``"imagenet"``) = smp's own hub download, which needs the internet.

With ``fusion="diff"`` or ``"sum"`` the parameter count equals ``smp.Unet`` with the same encoder and decoder
(14,328,354 for the resnet18 defaults with 2 classes); ``"concat"`` widens the decoder's inputs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from segmentation_models_pytorch.base import SegmentationHead
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn

from ..errors import ChangekitError, ConfigError
from ..safeload import load_tensors
from .base import ChangeModel
from .blocks import (
    FUSIONS,
    check_change_channels,
    check_choice,
    check_int,
    cpu_fast_layout,
    crop_to,
    fuse,
    pad_to_multiple,
)
from .outputs import ChangeOutput
from .registry import register_model

log = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".safetensors")


def _is_weight_file(weights: str) -> bool:
    """A string names a local file (rather than an smp weight name such as ``"imagenet"``)."""
    return weights.lower().endswith(_WEIGHT_SUFFIXES) or "/" in weights or "\\" in weights or Path(weights).is_file()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a tensor dict from ``path``; unwraps ``{"state_dict": ...}`` / ``{"model": ...}`` checkpoints."""
    if not path.exists() and not path.is_symlink():
        raise ConfigError(f"encoder_weights: file '{path}' does not exist")
    try:  # weights_only (or safetensors): a planted pickle is refused, never run
        obj: Any = load_tensors(path, "encoder weights file")
    except ChangekitError as exc:
        raise ConfigError(f"encoder_weights: cannot read {exc}") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConfigError(f"encoder_weights: '{path}' does not hold a state dict of tensors")
    return obj


def _best_prefix(keys: list[str], wanted: set[str]) -> str:
    """The key prefix (``""``, ``"encoder."``, ``"model.encoder."``, ...) under which most ``wanted`` keys appear.

    Lets a full siam_unet / Lightning checkpoint serve as encoder weights without manual renaming.
    """
    counts: dict[str, int] = {}
    for key in keys:
        for prefix in [""] + [key[: i + 1] for i, ch in enumerate(key) if ch == "."]:
            if key[len(prefix) :] in wanted:
                counts[prefix] = counts.get(prefix, 0) + 1
    return max(counts, key=lambda p: (counts[p], -len(p))) if counts else ""


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> None:
    """Load a local state dict into ``encoder``.

    Keys may sit under a prefix (``encoder.``, ``model.encoder.``: found automatically). A first-conv weight
    saved for another band count is adapted to the encoder's (channels repeated cyclically and rescaled so
    activations keep their size). Missing keys or other shape mismatches raise
    ``ConfigError`` naming the keys; unexpected keys are logged as a warning.
    """
    path = Path(path)
    load_encoder_state(encoder, _read_state_dict(path), path)


def load_encoder_state(encoder: nn.Module, raw: dict[str, torch.Tensor], path: str | Path) -> None:
    """:func:`load_encoder_weights` for a state dict already read (and renamed) from ``path`` (named in messages)."""
    own = encoder.state_dict()
    prefix = _best_prefix(list(raw), set(own))
    state = {k[len(prefix) :]: v for k, v in raw.items() if k.startswith(prefix)}
    if prefix:
        log.info(
            "encoder_weights: using the %d keys under '%s' of %s (%d others skipped)",
            len(state), prefix, path, len(raw) - len(state),
        )
    stem = next((k for k, v in own.items() if v.ndim == 4), None)  # the first convolution's weight
    bad = []
    for key, value in list(state.items()):
        if key not in own or own[key].shape == value.shape:
            continue
        target = own[key].shape
        if key == stem and value.ndim == 4 and value.shape[0] == target[0] and value.shape[2:] == target[2:]:
            idx = torch.arange(target[1]) % value.shape[1]
            state[key] = value[:, idx] * (value.shape[1] / target[1])
            log.info("encoder_weights: adapted '%s' from %d to %d input channels", key, value.shape[1], target[1])
        else:
            bad.append(f"{key} {tuple(value.shape)} vs {tuple(target)}")
    if bad:
        raise ConfigError(f"encoder_weights: '{path}' does not fit the encoder; shape mismatch: {', '.join(bad)}")
    missing = sorted(set(own) - set(state))
    if missing:
        raise ConfigError(
            f"encoder_weights: '{path}' lacks {len(missing)} encoder keys: {', '.join(missing[:10])}"
            + (" ..." if len(missing) > 10 else "")
        )
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        log.warning(
            "encoder_weights: ignoring %d unexpected keys in %s: %s", len(unexpected), path, ", ".join(unexpected[:10])
        )
    if any(t.is_meta for t in own.values()):
        return  # built on the meta device (model_info): the file was checked, there is nothing to copy into
    encoder.load_state_dict({k: v for k, v in state.items() if k in own}, strict=True)


def _freeze_unused_stages(encoder: nn.Module, depth: int) -> None:
    """Stop gradients to smp encoder stages a shallow ``depth`` never runs.

    smp keeps e.g. ResNet's ``layer4`` at depth 4; left trainable it would break DDP (unused parameters) and
    waste optimiser state. Freezing keeps the modules, so state dicts stay compatible with smp's.
    """
    get_stages = getattr(encoder, "get_stages", None)
    if get_stages is None:
        return
    try:
        stages = get_stages()
    except NotImplementedError:
        return
    for stride, modules in stages.items():
        if stride > 2**depth:
            for module in modules:
                module.requires_grad_(False)


class SiamUnet(ChangeModel):
    """Siamese U-Net: shared smp encoder, per-level fusion of the two dates, smp U-Net decoder.

    Args:
        encoder_name: any smp encoder name (``resnet18``, ``efficientnet-b0``, ``tu-convnext_atto``, ...).
        encoder_weights: ``None`` (random), a local state-dict file, or an smp weight name (downloads).
        encoder_depth: encoder stages used (3-5); the decoder has one block per stage. smp encoders keep the
            deeper stages' modules at depth < 5: they are frozen (``requires_grad=False``), not removed.
        decoder_channels: output channels of the decoder blocks, deepest first; length ``encoder_depth``.
        in_channels: channels of one date.
        num_classes: 2 for two-class logits (default), 1 for one sigmoid logit.
        fusion: ``"diff"`` (``|a-b|``, default), ``"concat"`` or ``"sum"``.
    """

    #: changekit's own baseline, with no reference code to follow: the encoder's BatchNorms normalise both
    #: dates as one batch in training (tests/models/test_siamese_batchnorm.py)
    siamese_bn = "joint"

    def __init__(
        self,
        encoder_name: str = "resnet18",
        encoder_weights: str | None = None,
        encoder_depth: int = 5,
        decoder_channels: tuple[int, ...] | list[int] = (256, 128, 64, 32, 16),
        in_channels: int = 3,
        num_classes: int = 2,
        fusion: str = "diff",
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels)
        check_int("encoder_depth", encoder_depth, minimum=3)
        if encoder_depth > 5:
            raise ConfigError(f"model argument 'encoder_depth' must be 3, 4 or 5, got {encoder_depth}")
        check_change_channels(num_classes)
        check_choice("fusion", fusion, FUSIONS)
        decoder_channels = tuple(decoder_channels)
        if len(decoder_channels) != encoder_depth:
            raise ConfigError(
                f"model argument 'decoder_channels' needs {encoder_depth} entries (one per encoder stage, "
                f"encoder_depth={encoder_depth}), got {len(decoder_channels)}"
            )
        for ch in decoder_channels:
            check_int("decoder_channels", ch)
        self.in_channels = in_channels
        self.change_channels = num_classes
        self.fusion = fusion
        local = isinstance(encoder_weights, str | Path) and _is_weight_file(str(encoder_weights))
        try:
            self.encoder = get_encoder(
                encoder_name,
                in_channels=in_channels,
                depth=encoder_depth,
                weights=None if local else encoder_weights,
            )
        except KeyError as exc:  # smp reports unknown names / weight tags as KeyError
            raise ConfigError(f"model argument 'encoder_name'/'encoder_weights': {exc.args[0]}") from exc
        if local:
            load_encoder_weights(self.encoder, encoder_weights)  # type: ignore[arg-type]
        _freeze_unused_stages(self.encoder, encoder_depth)
        self.divisor = 2**encoder_depth
        enc_channels = [c * 2 if fusion == "concat" else c for c in self.encoder.out_channels]
        self.decoder = UnetDecoder(
            encoder_channels=enc_channels, decoder_channels=decoder_channels, n_blocks=encoder_depth
        )
        self.head = SegmentationHead(decoder_channels[-1], num_classes, kernel_size=3)

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:  # noqa: D102
        self.check_input(a, b)
        n, (h, w) = a.shape[0], a.shape[-2:]
        feats = self.encoder(pad_to_multiple(cpu_fast_layout(torch.cat([a, b], dim=0)), self.divisor))
        # The decoder drops the full-resolution first feature, so it is passed through unfused.
        fused = [feats[0][:n]] + [fuse(f[:n], f[n:], self.fusion) for f in feats[1:]]
        return ChangeOutput(change=crop_to(self.head(self.decoder(fused)), h, w))


@register_model
def siam_unet(**kwargs: Any) -> SiamUnet:
    """Siamese U-Net, resnet18 encoder, abs-diff fusion: 14,328,354 parameters at the defaults."""
    model_args: dict[str, Any] = dict(encoder_name="resnet18", fusion="diff")
    return SiamUnet(**{**model_args, **kwargs})


siam_unet.model_cls = SiamUnet  # type: ignore[attr-defined]  # lets build_model validate keyword names
