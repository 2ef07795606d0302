"""BIT: bitemporal image transformer on a ResNet-18-v1c backbone, as open-cd's ``bit_r18`` config.

Paper: H. Chen, Z. Qi, Z. Shi, "Remote Sensing Image Change Detection with Transformers", IEEE TGRS 60, 2022,
doi:10.1109/TGRS.2021.3095166. Configuration: open-cd 1.1.0 ``configs/_base_/models/bit_r18.py`` and its
``BITHead`` (the version ChangeAnywhere vendors).

Architecture (both dates through the same weights):

1. ResNet-18-v1c, 3 stages with strides (1, 2, 1): a 256-channel map at 1/8 of the input.
2. Bilinear x2 upsampling and a 3x3 conv + ReLU to 32 channels (1/4 of the input).
3. Semantic tokenizer: a 1x1 conv + ReLU gives 4 attention maps; softmax over the pixels; each token is the
   attention-weighted sum of the features, ``(N, 4, 32)`` per date.
4. Transformer encoder (depth 1) over the 8 tokens of both dates plus a learned position embedding.
5. Transformer decoder (depth 8): every pixel of a date attends to that date's 4 tokens.
6. ``|x_a - x_b|``, bilinear x4 upsampling to the input size, Dropout2d(0.1) and a 1x1 classifier: two-class
   logits (softmax; open-cd's ``num_classes=2``).

Attention layers project 32 -> 64 (8 heads of 8) and scale the scores by ``32 ** -0.5`` (open-cd scales by the
token width, not the head width); the feed-forward layers are 32 -> 64 -> 32 with ReLU; pre-norm LayerNorms.

Implementation choices:

* In training the backbone runs once per date, as open-cd does, so each BatchNorm normalises a date with that
  date's statistics (``siamese_bn = "per_date"``); ``date_batched=True`` runs both dates as one batch instead
  (faster; statistics pooled over both dates). In eval both dates always go through as one batch. The head has
  no BatchNorm: its tokenizer and decoder always run on both dates as one batch (a date's pixels only ever
  attend to that date's tokens, so this equals two separate passes).
* The 1x1 classifier runs before the x4 upsampling (2 channels upsampled instead of 32). Both are linear and
  bilinear weights sum to 1, so this equals open-cd's order up to float rounding, Dropout2d included.
* Inputs are replicate-padded to a multiple of 8 (the backbone stride) and the logits cropped back, so any size
  works. open-cd pads with zeros to a multiple of 32, which changes the tokens' softmax over the padded
  pixels: results differ from open-cd's only for sizes that are not multiples of 32.
* Random initialisation follows mmseg (see :mod:`.backbones.resnet_v1c`; Kaiming for the head's convolutions,
  N(0, 0.01) for the classifier, N(0, 1) for the position embedding).

Size at the defaults (3 bands, 2 classes): 2,989,638 parameters (backbone 2,802,016, head 187,622), the count the
open-cd definition gives (no published figure in open-cd's BIT README; the paper's BIT_S4 model is a different
configuration). 8.66 GMACs per 256x256 pair (``FlopCounterMode`` FLOPs / 2, multiply-adds as fvcore counts).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .backbones.resnet_v1c import ResNetV1c, load_backbone_weights, rename_opencd_keys, siamese
from .base import ChangeModel
from .blocks import check_change_channels, check_int, cpu_fast_layout, crop_to, pad_to_multiple, seg_classifier
from .foreign import register_converter
from .outputs import ChangeOutput
from .registry import register_model

_STRIDE = 8  # backbone output stride


class CrossAttention(nn.Module):
    """Multi-head attention of ``x (N, L, C)`` over ``ref (N, M, C)``; q/k/v project C -> ``inner`` without bias.

    Scores are scaled by ``C ** -0.5`` (the token width), as open-cd's BIT head does.
    """

    def __init__(self, dim: int, inner: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim**-0.5
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.proj = nn.Linear(inner, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:  # noqa: D102
        n, length, _ = x.shape
        q = self.to_q(x).view(n, length, self.heads, -1).transpose(1, 2)
        k = self.to_k(ref).view(n, ref.shape[1], self.heads, -1).transpose(1, 2)
        v = self.to_v(ref).view(n, ref.shape[1], self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)  # (N, heads, L, inner / heads)
        return self.drop(self.proj(out.transpose(1, 2).reshape(n, length, -1)))


class FeedForward(nn.Module):
    """``Linear(C, hidden) -> ReLU -> Dropout -> Linear(hidden, C) -> Dropout``."""

    def __init__(self, dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.drop(self.fc2(self.drop(F.relu(self.fc1(x)))))


class TransformerLayer(nn.Module):
    """Pre-norm attention + feed-forward with residuals. ``cross=True`` (decoder): queries attend to a separate
    reference sequence normalised by its own LayerNorm (``norm_ref``); otherwise (encoder) to themselves."""

    def __init__(self, dim: int, inner: int, heads: int, dropout: float, cross: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm_ref = nn.LayerNorm(dim) if cross else None
        self.attn = CrossAttention(dim, inner, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, inner, dropout)

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D102
        q = self.norm1(x)
        kv = q if self.norm_ref is None or ref is None else self.norm_ref(ref)
        x = x + self.attn(q, kv)
        return x + self.ffn(self.norm2(x))


class BITHead(nn.Module):
    """Tokenizer, token encoder, pixel decoder and classifier of BIT.

    Args:
        in_channels: backbone channels (256 for a 3-stage ResNet-18).
        channels: feature and token width after the input projection (32).
        embed_dims: inner width of attention and feed-forward layers (64).
        token_len: semantic tokens per date (4).
        enc_depth: encoder layers (1); dec_depth: decoder layers (8); num_heads: attention heads (8).
        num_classes: logit channels.
        drop_rate: dropout inside the transformer (0 in the config).
        classifier_dropout: Dropout2d before the classifier (mmseg's ``dropout_ratio``, 0.1).
    """

    def __init__(
        self, in_channels: int, channels: int, embed_dims: int, token_len: int, enc_depth: int, dec_depth: int,
        num_heads: int, num_classes: int, drop_rate: float, classifier_dropout: float,
    ) -> None:
        super().__init__()
        self.token_len = token_len
        self.reduce = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.token_att = nn.Conv2d(channels, token_len, 1)
        self.pos_embedding = nn.Parameter(torch.randn(1, 2 * token_len, channels))
        self.encoder = nn.ModuleList(
            TransformerLayer(channels, embed_dims, num_heads, drop_rate, cross=False) for _ in range(enc_depth)
        )
        self.decoder = nn.ModuleList(
            TransformerLayer(channels, embed_dims, num_heads, drop_rate, cross=True) for _ in range(dec_depth)
        )
        self.dropout = nn.Dropout2d(classifier_dropout)
        self.classifier = seg_classifier(channels, num_classes)
        for conv in (self.reduce, self.token_att):  # mmcv ConvModule's init
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Semantic tokens ``(B, token_len, C)`` of features ``x (B, C, H, W)``."""
        att = F.relu(self.token_att(x)).flatten(2).softmax(-1)  # (B, L, HW)
        return torch.bmm(att, x.flatten(2).transpose(1, 2))

    def forward(self, feats: torch.Tensor, n: int) -> torch.Tensor:
        """Logits ``(N, K, 4h, 4w)`` from backbone features ``(2N, C_in, h, w)`` (dates A then B)."""
        x = F.interpolate(feats, scale_factor=2.0, mode="bilinear", align_corners=False)
        x = F.relu(self.reduce(x))  # (2N, C, H, W)
        b, c, h, w = x.shape
        tok = self.tokens(x)  # (2N, L, C)
        tok = torch.cat([tok[:n], tok[n:]], dim=1) + self.pos_embedding  # (N, 2L, C): both dates' tokens
        for layer in self.encoder:
            tok = layer(tok)
        tok = torch.cat([tok[:, : self.token_len], tok[:, self.token_len :]], dim=0)  # back to (2N, L, C)
        seq = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        for layer in self.decoder:
            seq = layer(seq, tok)
        x = seq.transpose(1, 2).reshape(b, c, h, w)
        diff = (x[:n] - x[n:]).abs()
        logits = self.classifier(self.dropout(diff))
        return F.interpolate(logits, scale_factor=4.0, mode="bilinear", align_corners=False)


class BIT(ChangeModel):
    """BIT change detector: ResNet-18-v1c (3 stages) + BIT head. See the module docstring.

    Args:
        in_channels: bands of one date.
        num_classes: 2 for two-class logits (default, as open-cd), 1 for one sigmoid logit.
        backbone_weights: ``None`` (random init), ``"imagenet"`` (open-mmlab's ``resnet18_v1c``, downloaded once;
            ChangeAnywhere's "onlysup" runs start from it) or a local file with those weights.
        token_len, enc_depth, dec_depth, num_heads, channels, embed_dims: the head's sizes (open-cd's names).
        drop_rate: dropout inside the transformer layers.
        classifier_dropout: Dropout2d before the classifier.
        date_batched: in training, run both dates through the backbone as one batch (BatchNorm statistics pooled
            over both dates). ``False`` (default): one pass per date, as open-cd.
    """

    siamese_bn = "per_date"

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        backbone_weights: str | None = None,
        token_len: int = 4,
        enc_depth: int = 1,
        dec_depth: int = 8,
        num_heads: int = 8,
        channels: int = 32,
        embed_dims: int = 64,
        drop_rate: float = 0.0,
        classifier_dropout: float = 0.1,
        date_batched: bool = False,
    ) -> None:
        super().__init__()
        check_int("in_channels", in_channels)
        if not isinstance(date_batched, bool):
            raise ConfigError(f"model argument 'date_batched' must be true or false, got {date_batched!r}")
        check_change_channels(num_classes)
        for name, value in (("token_len", token_len), ("enc_depth", enc_depth), ("dec_depth", dec_depth),
                            ("num_heads", num_heads), ("channels", channels), ("embed_dims", embed_dims)):
            check_int(name, value)
        if embed_dims % num_heads:
            raise ConfigError(f"model argument 'embed_dims' ({embed_dims}) must be a multiple of num_heads "
                              f"({num_heads})")
        self.in_channels = in_channels
        self.change_channels = num_classes
        self.date_batched = date_batched
        self.backbone = ResNetV1c(in_channels, depth=18, num_stages=3, strides=(1, 2, 1), dilations=(1, 1, 1))
        load_backbone_weights(self.backbone, backbone_weights)
        self.head = BITHead(self.backbone.out_channels[-1], channels, embed_dims, token_len, enc_depth, dec_depth,
                            num_heads, num_classes, drop_rate, classifier_dropout)

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:  # noqa: D102
        self.check_input(a, b)
        n, (h, w) = a.shape[0], a.shape[-2:]
        x = pad_to_multiple(cpu_fast_layout(torch.cat([a, b], dim=0)), _STRIDE)
        feats = siamese(lambda t: self.backbone(t)[-1], x, n, self.date_batched or not self.training)
        return ChangeOutput(change=crop_to(self.head(feats, n), h, w))


@register_model
def bit(**kwargs: Any) -> BIT:
    """BIT (Chen et al., TGRS 2021), open-cd ``bit_r18``: 2,989,638 parameters at the defaults."""
    model_args: dict[str, Any] = dict(token_len=4, enc_depth=1, dec_depth=8, num_heads=8)
    return BIT(**{**model_args, **kwargs})


bit.model_cls = BIT  # type: ignore[attr-defined]  # lets build_model validate keyword names


# ------------------------------------------------------------------------------------ open-cd checkpoints
_HEAD_RENAMES = (
    ("pre_process.1.conv.", "reduce."),
    ("conv_att.conv.", "token_att."),
    ("enc_pos_embedding", "pos_embedding"),
    ("conv_seg.", "classifier."),
    (".attn.fc_out.0.", ".attn.proj."),
    (".ff.0.", ".ffn.fc1."),
    (".ff.3.", ".ffn.fc2."),
    (".norm1_.", ".norm_ref."),
)


@register_converter("opencd", "bit", description="open-cd 1.x BIT (bit_r18: SiamEncoderDecoder + BITHead)")
def bit_from_opencd(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename open-cd's ``bit_r18`` keys: ``backbone.*`` is kept, ``decode_head.*`` moves to ``head.*``."""
    return rename_opencd_keys(state, _HEAD_RENAMES)
