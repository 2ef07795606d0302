"""Base class of every change model: the input contract and shared behaviour."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from .outputs import ChangeOutput


class ChangeModel(nn.Module):
    """A change model maps two dates ``a, b`` of shape ``(N, C, H, W)`` to a :class:`ChangeOutput`.

    Subclasses implement :meth:`forward` and switch shared behaviour with class attributes:

    Attributes:
        task: ``"binary"`` or ``"semantic"`` (semantic models also return ``sem_a`` / ``sem_b``).
        input_divisor: ``H`` and ``W`` must be multiples of this (checked by :meth:`check_input`).
        extra_inputs: batch keys (besides the images) passed to ``forward`` as keyword arguments, e.g.
            ``("tags_a", "tags_b")`` for vision-language models.
        num_classes: number of semantic classes (semantic models).
    """

    task: ClassVar[str] = "binary"
    input_divisor: ClassVar[int] = 1
    extra_inputs: ClassVar[tuple[str, ...]] = ()
    num_classes: int = 0
    model_name: str = ""
    model_kwargs: dict[str, Any]

    def check_input(self, a: torch.Tensor, b: torch.Tensor) -> None:
        """Raise ``ValueError`` with a fix when the pair has the wrong shape for this model."""
        if a.ndim != 4 or a.shape != b.shape:
            raise ValueError(
                f"expected two tensors of equal shape (N, C, H, W), got {tuple(a.shape)} and {tuple(b.shape)}"
            )
        in_ch = getattr(self, "in_channels", None)
        if in_ch is not None and a.shape[1] != in_ch:
            raise ValueError(f"model expects {in_ch} input channels, got {a.shape[1]}")
        d = self.input_divisor
        h, w = a.shape[-2:]
        if h % d or w % d:
            nh, nw = -(-h // d) * d, -(-w // d) * d
            raise ValueError(
                f"input size {h}x{w} is not divisible by {d}; consider padding your images to {nh}x{nw} "
                "(changekit predict pads automatically)"
            )

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:  # noqa: D102
        raise NotImplementedError

    def extra_losses(self, output: ChangeOutput, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Model-specific loss terms computed from its own internals (e.g. contrastive terms).

        The engine adds every returned term to the configured losses during training. Default: none.
        """
        return {}

    @torch.inference_mode()
    def predict(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> torch.Tensor:
        """Change probability ``(N, H, W)`` in eval mode without gradients."""
        was_training = self.training
        self.eval()
        try:
            return self(a, b, **extras).change_prob()
        finally:
            self.train(was_training)
