"""The ChangeCLIP change model and its registered builders ``changeclip_rn50`` / ``changeclip_vitb16``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import ConfigError
from ..base import ChangeModel
from ..blocks import check_int
from ..outputs import ChangeOutput
from ..registry import register_model
from .context_decoder import ContextDecoder
from .decoder import FPN, SELayerV2, SwinTextDecoder, conv_relu
from .image import CLIPResNetWithAttention, CLIPVisionTransformer
from .text import CLIPTextContextEncoder, TAG_SEPARATOR, as_tag_list, prompts, tokenize

Tags = Sequence[str | Sequence[str]]


class ChangeCLIP(ChangeModel):
    """ChangeCLIP (Dong et al., ISPRS J. P&RS 2024): CLIP image and text towers for binary change detection.

    Forward: ``model(a, b, tags_a=[...], tags_b=[...])`` with one entry per image, either a list of class names
    (ranked, as written by ``changekit clip-tag``) or the collate-safe string ``"name|name|..."``; an empty entry
    means no tags (the original's behaviour when its JSON files are missing).

    Args:
        backbone: ``"rn50"`` or ``"vitb16"``.
        in_channels: bands per date.
        num_classes: 2 (two-class logits, CE as in the paper) or 1 (a sigmoid logit).
        image: keyword arguments of the image tower (:class:`CLIPResNetWithAttention` or
            :class:`CLIPVisionTransformer`), e.g. smaller widths for tests.
        text: keyword arguments of :class:`CLIPTextContextEncoder` (``embed_dim`` is set from the image tower).
        context_length: prompt tokens (64); ``text.context_length - context_length`` learnable context vectors
            (77 - 64 = 13) are inserted after SOT.
        context_width, context_heads, context_layers: the context decoder (256, 4, 3).
        channels: neck, fusion and decoder width (256).
        decoder_drop_path: stochastic depth of the second Swin block of each decoder stage (0.2).
        num_tags: tags used per prompt (9: keys 1..9 of the seed's JSON).
        text_tags_b_from_a: the released inference builds date B's foreground prompt from date A's tags; ``True``
            reproduces that at evaluation (training always uses each date's own tags, as the original does).
        allow_untagged: a forward call without ``tags_a`` / ``tags_b`` uses empty tags instead of raising.
        date_batched: run both dates through the image tower as one batch (faster). In training its BatchNorms
            (RN50; the ViT's first adapter) then normalise both dates' statistics together, whereas the original
            runs the dates one after the other: ``False`` (default) does that. Evaluation is the same either way.
        clip_weights: a CLIP checkpoint (OpenAI ``.pt`` TorchScript archive, or an (open_clip) state dict) whose
            image and text towers initialise the model, as ChangeCLIP's ``pretrained='pretrained/RN50.pt'``;
            ``"openai"`` downloads OpenAI's weights through open_clip; ``None``: random initialisation.
    """

    input_divisor = 32
    extra_inputs = ("tags_a", "tags_b")
    #: the image tower's BatchNorms see each date's batch on its own in training, as in the original
    #: (tests/models/test_siamese_batchnorm.py); ``date_batched=True`` pools them
    siamese_bn = "per_date"

    def __init__(
        self,
        backbone: str = "rn50",
        in_channels: int = 3,
        num_classes: int = 2,
        image: dict[str, Any] | None = None,
        text: dict[str, Any] | None = None,
        context_length: int = 64,
        context_width: int = 256,
        context_heads: int = 4,
        context_layers: int = 3,
        channels: int = 256,
        decoder_drop_path: float = 0.2,
        num_tags: int = 9,
        text_tags_b_from_a: bool = False,
        allow_untagged: bool = False,
        date_batched: bool = False,
        clip_weights: str | None = None,
    ) -> None:
        super().__init__()
        if backbone not in ("rn50", "vitb16"):
            raise ConfigError(f"backbone: expected 'rn50' or 'vitb16', got {backbone!r}")
        if num_classes not in (1, 2):
            raise ConfigError(f"num_classes: ChangeCLIP is a binary change model (1 or 2), got {num_classes}")
        for name, value in (("in_channels", in_channels), ("context_length", context_length),
                            ("channels", channels), ("num_tags", num_tags)):
            check_int(name, value)
        if channels % 4:
            raise ConfigError(f"channels: must be a multiple of 4, got {channels}")
        self.in_channels = in_channels
        self.num_classes_out = num_classes
        self.context_length = context_length
        self.num_tags = num_tags
        self.text_tags_b_from_a = bool(text_tags_b_from_a)
        self.allow_untagged = bool(allow_untagged)
        self.date_batched = bool(date_batched)
        image_kw = {"in_channels": in_channels, **(image or {})}
        if backbone == "rn50":
            self.backbone: nn.Module = CLIPResNetWithAttention(**image_kw)
        else:
            self.backbone = CLIPVisionTransformer(**image_kw)
        dim = self.backbone.embed_dim
        self.text_encoder = CLIPTextContextEncoder(**{"embed_dim": dim, **(text or {})})
        n_ctx = self.text_encoder.context_length - context_length
        if n_ctx < 1:
            raise ConfigError(f"context_length: must be below the text encoder's {self.text_encoder.context_length}")
        self.context_decoder = ContextDecoder(context_width, context_heads, context_layers, dim)
        width = self.text_encoder.token_embedding.embedding_dim
        self.contexts2 = nn.Parameter(torch.empty(1, 1, n_ctx, width))
        nn.init.trunc_normal_(self.contexts2)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-4))
        stage = list(self.backbone.stage_channels)
        stage[self.backbone.embed_stage] += 2  # the 2-channel score map is concatenated to one stage
        self.score_stage = self.backbone.embed_stage
        self.minus_conv = nn.ModuleList(conv_relu(c, channels) for c in stage)
        self.neck = FPN([2 * c for c in stage], channels)
        self.channel_att = nn.ModuleList(SELayerV2(3 * channels, channels) for _ in stage)
        self.decode_head = SwinTextDecoder(channels, dim, num_classes, drop_path=decoder_drop_path)
        self._init_new_layers()
        if clip_weights:
            from .weights import load_clip_weights

            load_clip_weights(self, clip_weights, "RN50" if backbone == "rn50" else "ViT-B-16")

    def _init_new_layers(self) -> None:
        """The original's initialisation: mmcv ``ConvModule`` convs (``|A-B|`` and SE blocks) get Kaiming normal
        (fan-out, ReLU) with zero bias; the FPN's convs are re-initialised Xavier-uniform by its ``init_cfg``."""
        for module in (self.minus_conv, self.channel_att):
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(m.bias)
        for m in self.neck.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    # ------------------------------------------------------------------ text
    def _tags(self, tags: Tags | None, n: int, key: str) -> list[list[str]]:
        if tags is None:
            if not self.allow_untagged:
                raise ValueError(
                    f"ChangeCLIP needs '{key}' (per-image CLIP class tags): run `changekit clip-tag DATA_ROOT` and "
                    "train through changekit (it adds them), or build the model with allow_untagged=True"
                )
            return [[] for _ in range(n)]
        if isinstance(tags, str) or len(tags) != n:
            raise ValueError(f"{key}: expected one entry per image ({n}), got {tags!r:.200}")
        return [as_tag_list(t) for t in tags]

    def encode_prompts(self, tags_a: list[list[str]], tags_b: list[list[str]], device: torch.device
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text embeddings ``(N, 2, D)`` of both dates (background, foreground), each distinct prompt once."""
        texts = [p for tags in (*tags_a, *tags_b) for p in prompts(tags, self.num_tags)]
        unique = list(dict.fromkeys(texts))
        index = {t: i for i, t in enumerate(unique)}
        tokens = torch.tensor([tokenize(t, self.context_length) for t in unique], dtype=torch.long, device=device)
        emb = self.text_encoder(tokens, self.contexts2[0])
        gather = torch.tensor([index[t] for t in texts], device=device)
        emb = emb[gather].view(2, len(tags_a), 2, -1)
        return emb[0], emb[1]

    # ------------------------------------------------------------------ image
    def _image(self, a: torch.Tensor, b: torch.Tensor) -> tuple[list[torch.Tensor], ...]:
        if self.date_batched:
            stages, glob, local = self.backbone(torch.cat([a, b]))
            n = a.shape[0]
            return ([s[:n] for s in stages], glob[:n], local[:n]), ([s[n:] for s in stages], glob[n:], local[n:])
        return self.backbone(a), self.backbone(b)

    def _text_update(self, text: torch.Tensor, glob: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        """``text + gamma * ContextDecoder(text, [global, local])`` (DenseCLIP's visual-to-text update)."""
        visual = torch.cat([glob.unsqueeze(1), local.flatten(2).transpose(1, 2)], 1)
        return text + self.gamma * self.context_decoder(text, visual)

    @staticmethod
    def score_map(local: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every location with each prompt: ``(N, K, h, w)``."""
        return torch.einsum("bchw,bkc->bkhw", F.normalize(local, dim=1), F.normalize(text, dim=2))

    def forward(self, a: torch.Tensor, b: torch.Tensor, tags_a: Tags | None = None,  # noqa: D102
                tags_b: Tags | None = None) -> ChangeOutput:
        self.check_input(a, b)
        n = a.shape[0]
        ta = self._tags(tags_a, n, "tags_a")
        tb = self._tags(tags_b, n, "tags_b")
        if self.text_tags_b_from_a and not self.training:
            tb = ta
        text_a, text_b = self.encode_prompts(ta, tb, a.device)
        (sa, ga, la), (sb, gb, lb) = self._image(a, b)
        if self.date_batched:
            upd = self._text_update(torch.cat([text_a, text_b]), torch.cat([ga, gb]), torch.cat([la, lb]))
            text_a, text_b = upd[:n], upd[n:]
        else:
            text_a, text_b = self._text_update(text_a, ga, la), self._text_update(text_b, gb, lb)
        k = self.score_stage
        sa, sb = list(sa), list(sb)
        sa[k] = torch.cat([sa[k], self.score_map(la, text_a).to(sa[k].dtype)], 1)
        sb[k] = torch.cat([sb[k], self.score_map(lb, text_b).to(sb[k].dtype)], 1)
        fpn = self.neck([torch.cat([fa, fb], 1) for fa, fb in zip(sa, sb, strict=True)])
        fused = []
        for i, (fa, fb, p) in enumerate(zip(sa, sb, fpn, strict=True)):
            minus = self.minus_conv[i]((fa - fb).abs())
            gate = torch.sigmoid(1 - F.cosine_similarity(fa, fb, dim=1)).unsqueeze(1)
            fused.append(self.channel_att[i](torch.cat([p * gate, minus, p], 1)))
        logits = self.decode_head(fused, text_a, text_b)
        logits = F.interpolate(logits, size=a.shape[-2:], mode="bilinear", align_corners=False)
        return ChangeOutput(logits)

    @staticmethod
    def example_extras(n: int) -> dict[str, list[str]]:
        """Forward keywords for ``n`` random-input pairs (benchmarks, smoke tests): nine fixed tags per date."""
        tags = TAG_SEPARATOR.join(["building", "road", "tree", "farmland", "bare land", "river", "parking lot",
                                   "dense residential", "meadow"])
        return {"tags_a": [tags] * n, "tags_b": [tags] * n}


def _variant(backbone: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    if kwargs.get("backbone", backbone) != backbone:
        raise ConfigError(f"backbone: changeclip_{backbone} is the {backbone} variant; choose the model by name")
    return {**kwargs, "backbone": backbone}


@register_model
def changeclip_rn50(**kwargs: Any) -> ChangeCLIP:
    """ChangeCLIP with CLIP's modified ResNet-50 (117,540,238 parameters)."""
    return ChangeCLIP(**_variant("rn50", kwargs))


@register_model
def changeclip_vitb16(**kwargs: Any) -> ChangeCLIP:
    """ChangeCLIP with CLIP's ViT-B/16 and four-level adapters (170,746,670 parameters)."""
    return ChangeCLIP(**_variant("vitb16", kwargs))


changeclip_rn50.model_cls = ChangeCLIP  # type: ignore[attr-defined]
changeclip_vitb16.model_cls = ChangeCLIP  # type: ignore[attr-defined]
