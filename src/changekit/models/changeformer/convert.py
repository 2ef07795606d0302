"""Import of open-cd / ChangeAnywhere ChangeFormer checkpoints (``changekit convert opencd SRC --model changeformer``).

open-cd's ``SiamEncoderDecoder`` holds ``backbone.*`` (mmseg's ``MixVisionTransformer``) and ``decode_head.*``
(mmseg's ``SegformerHead``); its neck has no weights. The head's keys are ours already. The backbone's keys go
through :func:`~.mit.mit_from_mmseg`: q/k/v are unpacked, the Mix-FFN's 1x1 convolutions become linear weights,
and modules are renamed.
"""

from __future__ import annotations

import torch

from ..foreign import register_converter
from .mit import mit_from_mmseg


@register_converter("opencd", "changeformer")
def changeformer_from_opencd(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open-cd / ChangeAnywhere ChangeFormer (MiT-b1 backbone, SegFormer head on concatenated features)."""
    return mit_from_mmseg(state)
