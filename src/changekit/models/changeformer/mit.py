"""MiT (SegFormer's Mix Transformer) encoder: segmentation-models-pytorch's ``mit_b*``, laid out as mmseg's.

smp 0.6.0 ships the NVlabs MiT (``mit_b0`` .. ``mit_b5``). changekit builds it with smp's own constructor and
settings, then groups its modules stage by stage the way mmseg's ``MixVisionTransformer`` does:

* ``layers.i.0``: the overlapping patch embedding (``proj`` convolution, ``norm``);
* ``layers.i.1.j``: the transformer blocks (``norm1``, ``attn.q``/``kv``/``proj``/``sr``/``norm``, ``norm2``,
  ``mlp.fc1``/``dwconv.dwconv``/``fc2``);
* ``layers.i.2``: the LayerNorm that closes the stage.

The same modules run in the same order; only their names change. The names matter for open-cd's optimiser rule
``custom_keys={'norm': dict(decay_mult=0.)}``, which ChangeAnywhere uses. It must match the same parameters here
as in mmseg: every LayerNorm except the stage-closing ones (``layers.i.2``), whose names hold no "norm".

One setting differs from smp so that the encoder equals mmseg's (the reference of open-cd and ChangeAnywhere):
every LayerNorm has ``eps=1e-6``. smp, like NVlabs, uses 1e-5 in the patch embeddings and in the attention's
spatial-reduction norm. Inside a block, mmseg stores its parameters differently: q, k and v are packed in one
``nn.MultiheadAttention``, and the Mix-FFN uses 1x1 convolutions. :func:`mit_from_mmseg` converts those names
and shapes, and :func:`mit_from_nvlabs` converts the NVlabs/smp names.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn

from ...errors import CheckpointError, ConfigError
from ...safeload import extract_state_dict, restricted_load
from ..blocks import check_choice, check_int
from ..siam_unet import load_encoder_state

log = logging.getLogger(__name__)

VARIANTS = ("mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5")
LN_EPS = 1e-6  # mmseg's MixVisionTransformer: norm_cfg=dict(type='LN', eps=1e-6) for every LayerNorm

# mmseg name pieces -> ours, applied in order to every key (any prefix is kept)
_MMSEG_RENAMES = (
    (re.compile(r"\.0\.projection\."), ".0.proj."),
    (re.compile(r"\.attn\.attn\.out_proj\."), ".attn.proj."),
    (re.compile(r"\.ffn\.layers\.0\."), ".mlp.fc1."),
    (re.compile(r"\.ffn\.layers\.1\."), ".mlp.dwconv.dwconv."),
    (re.compile(r"\.ffn\.layers\.4\."), ".mlp.fc2."),
)
_MMSEG_QKV = re.compile(r"(.*\.attn\.)attn\.in_proj_(weight|bias)")
_NV_PATCH = re.compile(r"(|.*\.)patch_embed(\d)\.(.*)")
_NV_BLOCK = re.compile(r"(|.*\.)block(\d)\.(\d+)\.(.*)")
_NV_NORM = re.compile(r"(|.*\.)norm(\d)\.(weight|bias)")


class MiTEncoder(nn.Module):
    """Four MiT stages; ``forward`` returns their outputs at strides 4, 8, 16 and 32.

    Args:
        variant: smp encoder name, ``mit_b0`` .. ``mit_b5`` (``mit_b1``: widths 64/128/320/512, heads 1/2/5/8,
            depths 2/2/2/2, spatial reduction 8/4/2/1, MLP ratio 4, drop-path 0.1).
        in_channels: input bands (smp adapts the first convolution).
        weights: ``None`` (random init), ``"imagenet"`` (smp's hub weights: needs the internet or a cached copy),
            or a local file in mmseg, NVlabs/smp or changekit names (see :func:`load_mit_weights`).
    """

    def __init__(self, variant: str = "mit_b1", in_channels: int = 3, weights: str | None = None) -> None:
        super().__init__()
        check_choice("backbone", variant, VARIANTS)
        check_int("in_channels", in_channels)
        if weights is not None and not isinstance(weights, str | Path):
            raise ConfigError(f"model argument 'backbone_weights' must be a path or 'imagenet', got {weights!r}")
        smp_encoder = _smp_mit(variant, in_channels, hub=weights == "imagenet")
        self.variant = variant
        self.out_channels: tuple[int, ...] = tuple(smp_encoder.out_channels[-4:])
        self.layers = nn.ModuleList(
            nn.ModuleList([getattr(smp_encoder, f"patch_embed{i}"), getattr(smp_encoder, f"block{i}"),
                           getattr(smp_encoder, f"norm{i}")])
            for i in range(1, 5)
        )
        for module in self.modules():
            if isinstance(module, nn.LayerNorm):
                module.eps = LN_EPS
        if weights is not None and weights != "imagenet":
            load_mit_weights(self, weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(N, C, H, W)`` -> four maps ``(N, C_i, ceil(H / s_i), ceil(W / s_i))`` for strides 4, 8, 16, 32."""
        feats = []
        for patch_embed, blocks, norm in self.layers:  # type: ignore[misc]
            x = norm(blocks(patch_embed(x))).contiguous()
            feats.append(x)
        return feats


def _smp_mit(variant: str, in_channels: int, hub: bool) -> nn.Module:
    """smp's MiT encoder; with ``hub`` its ImageNet weights (a clear error when they cannot be had).

    smp's constructor calls ``.item()`` on a tensor, which the meta device refuses: under a meta default device
    (``model_info``, checkpoint conversion) the encoder is built on the CPU and then moved to meta.
    """
    if not hub:
        if torch.empty(0).is_meta:
            with torch.device("cpu"):
                return get_encoder(variant, in_channels=in_channels, depth=5, weights=None).to("meta")
        return get_encoder(variant, in_channels=in_channels, depth=5, weights=None)
    try:
        return get_encoder(variant, in_channels=in_channels, depth=5, weights="imagenet")
    except Exception as exc:  # offline, no cache, hub error: never continue silently without the weights
        reason = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(
            f"could not get smp's ImageNet {variant} weights ({reason}); pass model.backbone_weights=/path/to/"
            f"{variant}.pth (mmseg's or NVlabs' file), or model.backbone_weights=null for a random init"
        ) from None


def mit_from_mmseg(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename mmseg ``MixVisionTransformer`` keys (any prefix, e.g. ``backbone.``) to :class:`MiTEncoder`'s.

    The packed ``attn.attn.in_proj_*`` splits into ``attn.q`` (first third) and ``attn.kv`` (key, then value),
    and the Mix-FFN's 1x1 convolution weights ``(out, in, 1, 1)`` become linear weights ``(out, in)``. Keys that
    are not MiT keys pass through unchanged.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        qkv = _MMSEG_QKV.fullmatch(key)
        if qkv:
            dim = value.shape[0] // 3
            out[f"{qkv[1]}q.{qkv[2]}"] = value[:dim]
            out[f"{qkv[1]}kv.{qkv[2]}"] = value[dim:]
            continue
        for pattern, replacement in _MMSEG_RENAMES:
            key = pattern.sub(replacement, key)
        if key.endswith((".mlp.fc1.weight", ".mlp.fc2.weight")) and value.ndim == 4:
            value = value.flatten(1)
        out[key] = value
    return out


def mit_from_nvlabs(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename NVlabs SegFormer / smp ``mit_b*`` keys (``patch_embed1.proj``, ``block1.0.attn.q``, ``norm1``) to
    :class:`MiTEncoder`'s; the ImageNet classifier (``head.*``) is dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if block := _NV_BLOCK.fullmatch(key):
            key = f"{block[1]}layers.{int(block[2]) - 1}.1.{block[3]}.{block[4]}"
        elif patch := _NV_PATCH.fullmatch(key):
            key = f"{patch[1]}layers.{int(patch[2]) - 1}.0.{patch[3]}"
        elif norm := _NV_NORM.fullmatch(key):
            key = f"{norm[1]}layers.{int(norm[2]) - 1}.2.{norm[3]}"
        elif key.startswith("head.") or ".head." in key:
            continue
        out[key] = value
    return out


def mit_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Whichever naming ``state`` uses (mmseg, NVlabs/smp or changekit), the same weights in changekit's names."""
    if any("attn.attn.in_proj_" in k or ".0.projection." in k for k in state):
        return mit_from_mmseg(state)
    if any(_NV_PATCH.fullmatch(k) for k in state):
        return mit_from_nvlabs(state)
    return dict(state)


def load_mit_weights(encoder: MiTEncoder, source: str | Path) -> None:
    """Load ImageNet (or any) MiT weights from a local file into ``encoder``.

    The file may be mmseg's ``mit_b1_20220624-02e5a6a1.pth`` (the one ChangeAnywhere's onlysup configs start
    from), NVlabs' ``mit_b1.pth``, smp's weights, a changekit checkpoint or a whole open-cd checkpoint (its
    ``backbone.`` part is used). It is read without running code from it.

    Raises:
        ConfigError: the file does not exist or does not hold this encoder's weights (names the keys).
        CheckpointError: the file is unreadable.
    """
    path = Path(source).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model.backbone_weights: file '{path}' does not exist (give a {encoder.variant} .pth file, "
            "'imagenet' for smp's hub weights, or null for a random init)"
        )
    state = mit_to_ours(extract_state_dict(restricted_load(path, "backbone weights")))
    try:
        load_encoder_state(encoder, state, path)
    except ConfigError as exc:  # the shared loader names its own config key
        raise ConfigError(str(exc).replace("encoder_weights", "model.backbone_weights", 1)) from None
    log.info("loaded %s backbone weights from %s", encoder.variant, path)
