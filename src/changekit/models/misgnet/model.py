"""MISGNet: the full model (Siamese PVTv2-b1, three SGM levels, MDAM decoder) and its registry builder.

The backbone is timm's ``pvt_v2_b1`` (embed dims 64/128/320/512, heads 1/2/5/8, MLP ratios 8/8/4/4, depths
2/2/2/2, SR ratios 8/4/2/1, qkv bias, LayerNorm eps 1e-6, drop-path 0.1), shared by both dates. Only stages
1-3 feed the decoder; the released code also computes stage 4 and discards it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import CheckpointError, ConfigError, DatasetNotFoundError
from ...safeload import load_tensors
from .. import onednn
from ..base import ChangeModel
from ..blocks import check_change_channels, check_int
from ..outputs import ChangeOutput
from ..registry import register_model
from .decoder import MDAM
from .sgm import MutualNet

log = logging.getLogger(__name__)

DIMS = (64, 128, 320)
CLUSTERS = (2, 4, 8)
_PAD = 4  # the head upsamples the stride-4 map by 4: H and W must be multiples of 4


def _load_backbone_weights(backbone: nn.Module, source: str, in_channels: int) -> None:
    """Load ImageNet weights into timm's PVTv2-b1 from a local file (official or timm key names).

    Raises:
        DatasetNotFoundError: the file does not exist.
        ConfigError: the file holds no PVTv2-b1 weights.
    """
    from timm.models.pvt_v2 import checkpoint_filter_fn

    path = Path(source).expanduser()
    if not path.exists() and not path.is_symlink():
        raise DatasetNotFoundError(
            f"{path}: backbone weights not found (give a local pvt_v2_b1 .pth file, 'timm' to download them "
            "from the timm hub, or leave backbone_weights unset for a random init)"
        )
    state = load_tensors(path, "backbone weights file")  # weights_only: a planted pickle is refused, never run
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: backbone_weights holds no state dict of tensors")
    state = checkpoint_filter_fn(dict(state), backbone)
    own = backbone.state_dict()
    state = {k: v for k, v in state.items() if k in own}
    proj = "patch_embed.proj.weight"
    if proj in state and state[proj].shape[1] != in_channels:
        from timm.models import adapt_input_conv

        state[proj] = adapt_input_conv(in_channels, state[proj])
    missing = sorted(set(own) - set(state))
    if len(state) == 0 or missing:
        raise ConfigError(f"{path}: not a pvt_v2_b1 checkpoint (missing {len(missing)} keys, e.g. {missing[:3]})")
    backbone.load_state_dict(state)


def build_backbone(in_channels: int, keep_stage4: bool, weights: str | None) -> nn.Module:
    """timm's PVTv2-b1 without classifier; stage 4 removed unless ``keep_stage4``.

    ``weights``: ``None`` (random init), ``"timm"`` (the timm hub; an error when it cannot be reached), or a
    local file path.
    """
    from timm.models.pvt_v2 import pvt_v2_b1  # by function, not by registry name (others may re-register it)

    kwargs: dict[str, Any] = dict(num_classes=0, in_chans=in_channels, drop_path_rate=0.1)
    if weights == "timm":
        try:
            return _maybe_drop_stage4(pvt_v2_b1(pretrained=True, **kwargs), keep_stage4)
        except Exception as exc:  # offline, no cache, hub error: never continue silently without the weights
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CheckpointError(
                f"could not get timm's ImageNet pvt_v2_b1 weights ({reason}); pass "
                "model.backbone_weights=/path/to/pvt_v2_b1.pth, or model.backbone_weights=null for a random init"
            ) from None
    backbone = pvt_v2_b1(pretrained=False, **kwargs)
    if weights and weights != "timm":
        _load_backbone_weights(backbone, weights, in_channels)
    return _maybe_drop_stage4(backbone, keep_stage4)


def _block_inference(block: nn.Module, x: torch.Tensor, hw: tuple[int, int], chunk_bytes: int) -> torch.Tensor:
    """timm's PVTv2 ``Block.forward`` for inference (no autograd): same arithmetic, fewer passes over memory.

    The residual adds run in place, the linears fuse their bias and the Mix-FFN's depthwise conv fuses its exact
    GELU (oneDNN, :mod:`..onednn`). The Mix-FFN runs over groups of whole images whose 8x-wide hidden layer
    stays under ``chunk_bytes`` (0: the whole batch at once); see :attr:`MISGNet.mlp_chunk_bytes`.
    """
    x = x.add_(_attention_inference(block.attn, block.norm1(x), hw))
    y = block.norm2(x)
    n, length, _ = x.shape
    per_image = length * block.mlp.fc1.out_features * x.element_size()
    step = n if chunk_bytes <= 0 else max(2, chunk_bytes // per_image // 2 * 2)  # >= 2: see mlp_chunk_bytes
    for i in range(0, n, step):
        x[i:i + step].add_(_mlp_inference(block.mlp, y[i:i + step], hw))
    return x


def _mlp_inference(mlp: nn.Module, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """timm's ``MlpWithDepthwiseConv`` (PVTv2's Mix-FFN) with fused-bias linears and the GELU fused in the conv."""
    h = mlp.relu(onednn.linear(x, mlp.fc1))
    n, _, c = h.shape
    conv = mlp.dwconv  # on the channels_last view of the tokens: no copy
    hidden = onednn.conv2d(h.transpose(1, 2).view(n, c, *hw), conv.weight, conv.bias, conv.stride, conv.padding,
                           conv.dilation, conv.groups, act="gelu")
    del h  # frees the first hidden tensor before fc2 allocates
    hidden = hidden.flatten(2).transpose(1, 2)
    if not hidden.is_contiguous():  # the conv answered in NCHW
        hidden = hidden.contiguous()
    return onednn.linear(hidden, mlp.fc2)


def _attention_inference(attn: nn.Module, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """timm's PVTv2 spatial-reduction ``Attention.forward`` (eval, non-linear variant) with fused-bias linears."""
    n, length, c = x.shape
    q = onednn.linear(x, attn.q).reshape(n, length, attn.num_heads, -1).permute(0, 2, 1, 3)
    if attn.sr is not None:
        x = attn.sr(x.permute(0, 2, 1).reshape(n, c, *hw)).reshape(n, c, -1).permute(0, 2, 1)
        x = attn.norm(x)
    kv = onednn.linear(x, attn.kv).reshape(n, -1, 2, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    k, v = kv.unbind(0)
    out = F.scaled_dot_product_attention(q, k, v)
    return onednn.linear(out.transpose(1, 2).reshape(n, length, c), attn.proj)


def _maybe_drop_stage4(backbone: nn.Module, keep_stage4: bool) -> nn.Module:
    if not keep_stage4:
        backbone.stages = backbone.stages[:3]
    return backbone


class MISGNet(ChangeModel):
    """MISGNet (Liu et al., IEEE JSTARS 2025): binary change detection with semantic graph guidance.

    Args:
        in_channels: bands of one date.
        num_classes: 2 (two-class logits, as released) or 1 (one sigmoid logit).
        backbone_weights: ``None`` (random init), a local path to ``pvt_v2_b1.pth`` (the PVT authors' release or
            timm's format), or ``"timm"`` for timm's ImageNet weights from the hub (cached or downloaded; when
            that fails, an error: never a silent random init).
        keep_stage4: also hold PVT stage 4 (7,822,848 parameters) as the released model does: 17,674,850
            parameters instead of 9,852,002. It is never computed (its output was discarded) and frozen.

    Both dates run through the backbone as one batch (the backbone has only LayerNorms, so this equals two
    passes). Inputs of any size are replicate-padded to a multiple of 4 and the logits cropped back. The
    pyramid features stay in channels_last layout (the transformer's token layout, so no copies) and, on CPU,
    the input is converted too: oneDNN convolutions are faster in that layout.
    Parameters that the released forward never uses (stage 4 when kept, the third GCN weight of every cascade)
    are frozen (``requires_grad=False``) so DDP needs no ``find_unused_parameters``; the released training
    never updated them either (AdamW skips parameters without gradient).
    """

    #: the only layers with batch statistics (the SGM's node and re-projection convolutions) are per date or
    #: after the dates meet, as released; the shared backbone has LayerNorms only, so one batched pass over
    #: both dates equals two (tests/models/test_siamese_batchnorm.py)
    siamese_bn = "per_date"
    channels_last: bool = True  # CPU speed switch (benchmarks compare both); the results are the same
    inplace_inference: bool = True  # speed switch: backbone blocks update temporaries in place without autograd
    #: Without autograd, the Mix-FFN runs over groups of whole images whose 8x-wide hidden layer (8.4 MB per
    #: 256x256 image in stage 1) fits in this many bytes; 0 runs the whole batch at once. Below glibc's 32 MB
    #: mmap threshold, each hidden tensor reuses heap memory instead of being mapped fresh and page-faulted
    #: in (about 1.7 GB/s on the 2-core benchmark machine, where the groups cut a batch-8 forward from 1.25 to
    #: 1.05 s), and the hidden layer is read back from cache. Groups hold at least 2 images: oneDNN's pointwise
    #: conv takes a one-image channels_last batch for NCHW and copies it both ways. Same results; a speed switch.
    mlp_chunk_bytes: int = 16 << 20

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        backbone_weights: str | None = None,
        keep_stage4: bool = False,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels)
        check_change_channels(num_classes)
        if not isinstance(keep_stage4, bool):
            raise ConfigError(f"model argument 'keep_stage4' must be true or false, got {keep_stage4!r}")
        if backbone_weights is not None and not isinstance(backbone_weights, str):
            raise ConfigError(f"model argument 'backbone_weights' must be a path or 'timm', got {backbone_weights!r}")
        self.in_channels = in_channels
        self.change_channels = num_classes
        self.keep_stage4 = keep_stage4
        self.backbone = build_backbone(in_channels, keep_stage4, backbone_weights)
        self.sgm = nn.ModuleList(MutualNet(c, k) for c, k in zip(DIMS, CLUSTERS, strict=True))
        self.decoder = MDAM(DIMS, num_classes)
        for p in self.unused_parameters():
            p.requires_grad_(False)

    def unused_parameters(self) -> list[nn.Parameter]:
        """Registered parameters the forward never uses (kept for counts and checkpoint compatibility)."""
        unused = [p for sgm in self.sgm for p in sgm.unused_parameters()]  # type: ignore[attr-defined]
        if self.keep_stage4:
            unused += list(self.backbone.stages[3].parameters())
        return unused

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stages 1-3 of the backbone as channels_last ``(N, C, H, W)`` views (no layout copies)."""
        x = self.backbone.patch_embed(x)  # (N, H, W, C)
        inplace = self.inplace_inference and not self.training and not torch.is_grad_enabled()
        feats = []
        for stage in list(self.backbone.stages)[:3]:
            if stage.downsample is not None:
                x = stage.downsample(x.permute(0, 3, 1, 2))
            n, h, w, c = x.shape
            tokens = x.reshape(n, h * w, c)
            for block in stage.blocks:
                tokens = (_block_inference(block, tokens, (h, w), self.mlp_chunk_bytes) if inplace
                          else block(tokens, (h, w)))
            x = stage.norm(tokens).reshape(n, h, w, c)
            feats.append(x.permute(0, 3, 1, 2) if self.channels_last else x.permute(0, 3, 1, 2).contiguous())
        return feats

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:  # noqa: D102
        self.check_input(a, b)
        n, (h, w) = a.shape[0], a.shape[-2:]
        x = torch.cat([a, b], dim=0)
        ph, pw = (-h) % _PAD, (-w) % _PAD
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        if x.device.type == "cpu" and self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        diffs = []
        for sgm, feat in zip(self.sgm, self.features(x), strict=True):
            fa, fb = sgm(feat[:n], feat[n:])
            diffs.append((fa - fb).abs_())
        logits = self.decoder(*diffs)
        return ChangeOutput(change=logits[..., :h, :w].contiguous())


@register_model
def misgnet(**kwargs: Any) -> MISGNet:
    """MISGNet (Liu et al., JSTARS 2025), PVTv2-b1: 9,852,002 parameters (17,674,850 with ``keep_stage4``)."""
    model_args: dict[str, Any] = dict(keep_stage4=False)
    return MISGNet(**{**model_args, **kwargs})


misgnet.model_cls = MISGNet  # type: ignore[attr-defined]  # lets build_model validate keyword names
