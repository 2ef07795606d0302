"""The text side: prompts from image tags, CLIP BPE tokens, and CLIP's text transformer with learnable context.

Per date and image, two prompts are built (ChangeCLIP's ``get_cls_text``):

* background: ``"remote sensing image background objects"``;
* foreground: ``"remote sensing image foreground objects, " + ", ".join(tags)`` (the image's top-9 CLIP classes).

Each is tokenised with CLIP's BPE to ``context_length`` (64) tokens: ``[SOT] tokens [EOT] 0 ...``. A prompt that
does not fit raises (the original does not truncate either). The text encoder embeds the tokens and inserts
the learnable context vectors (13 x 512) right after SOT: ``[SOT, ctx_1..ctx_13, tokens, EOT, pad]`` = 77
positions, CLIP's full table; the output is the projected feature at the (shifted) EOT position.

Speed: the context vectors are shared by all images, so a prompt's embedding depends on its text only. The
model therefore encodes each *distinct* prompt of a batch once (both dates together, the background prompt
once) and gathers; this gives the same result as the original's per-image encoding.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import nn

from ...errors import ConfigError
from .layers import Transformer

BACKGROUND = "remote sensing image background objects"
FOREGROUND = "remote sensing image foreground objects"
TAG_SEPARATOR = "|"


@functools.lru_cache(maxsize=1)
def _tokenizer() -> object:
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "ChangeCLIP needs open_clip's CLIP tokenizer: pip install 'changekit[clip]' (open-clip-torch)"
        ) from exc
    return SimpleTokenizer()


@functools.lru_cache(maxsize=65536)
def tokenize(text: str, context_length: int) -> tuple[int, ...]:
    """CLIP BPE tokens of ``text`` as ``[SOT, ..., EOT]`` zero-padded to ``context_length``.

    Raises:
        ValueError: the prompt needs more than ``context_length`` tokens.
    """
    tok = _tokenizer()
    ids = [tok.sot_token_id, *tok.encode(text), tok.eot_token_id]  # type: ignore[attr-defined]
    if len(ids) > context_length:
        raise ValueError(
            f"prompt '{text}' needs {len(ids)} CLIP tokens but the context length is {context_length}; "
            "use fewer or shorter tags"
        )
    return tuple(ids + [0] * (context_length - len(ids)))


def as_tag_list(tags: str | Sequence[str]) -> list[str]:
    """One image's tags from a list or from the collate-safe ``"a|b|c"`` form (``""`` = no tags)."""
    if isinstance(tags, str):
        return [t for t in tags.split(TAG_SEPARATOR) if t]
    return [str(t) for t in tags]


def prompts(tags: str | Sequence[str], num_tags: int) -> tuple[str, str]:
    """Background and foreground prompt of one image from its (ranked) tags; the first ``num_tags`` are used."""
    return BACKGROUND, ", ".join([FOREGROUND, *as_tag_list(tags)[:num_tags]])


class CLIPTextContextEncoder(nn.Module):
    """CLIP's text transformer taking ``[SOT, context..., prompt tokens]`` (DenseCLIP's context encoder).

    Args:
        context_length: positions of the table (77 = 1 SOT + 13 context + 63 prompt tokens).
        vocab_size: CLIP's BPE vocabulary (49,408).
        width, heads, layers: transformer shape (512, 8, 12).
        embed_dim: output width (1024 with RN50, 512 with ViT-B/16).
    """

    def __init__(self, context_length: int = 77, vocab_size: int = 49408, width: int = 512, heads: int = 8,
                 layers: int = 12, embed_dim: int = 1024) -> None:
        super().__init__()
        self.context_length = context_length
        self.embed_dim = embed_dim
        self.transformer = Transformer(width, layers, heads)
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=width**-0.5)
        mask = torch.full((context_length, context_length), float("-inf"), device="cpu").triu_(1)
        self.register_buffer("attn_mask", mask.to(self.positional_embedding.device), persistent=False)

    def forward(self, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Embed prompts ``(P, L)`` with the context vectors ``(1, C, W)``; returns ``(P, embed_dim)``.

        ``L + C`` must equal ``context_length``.
        """
        p, length = tokens.shape
        n_ctx = context.shape[1]
        if length + n_ctx != self.context_length:
            raise ValueError(f"{length} prompt tokens + {n_ctx} context vectors != context length "
                             f"{self.context_length}")
        x = self.token_embedding(tokens)
        x = torch.cat([x[:, :1], context.to(x.dtype).expand(p, -1, -1), x[:, 1:]], 1)
        x = x + self.positional_embedding.to(x.dtype)
        x = self.transformer(x, self.attn_mask.to(x.dtype))
        x = self.ln_final(x)
        eot = tokens.argmax(-1) + n_ctx  # EOT has the largest id
        return x[torch.arange(p, device=x.device), eot] @ self.text_projection
