"""changekit's ``bit`` against open-cd's definition (``bit_r18``): same random weights, same logits.

The reference is open-cd's ``SiamEncoderDecoder`` forward for ``configs/_base_/models/bit_r18.py``: mmseg's
``ResNetV1c`` (depth 18, 3 stages, strides (1, 2, 1)) on each date, open-cd's ``FeatureFusionNeck(concat)`` and
``BITHead`` (token_len 4, enc 1, dec 8, 8 heads, channels 32, embed 64, 2 classes; SyncBN is plain BN here, the
same in eval). Its weights go to changekit through ``changekit convert opencd --model bit``'s code; both run in
eval mode on random pairs (see :mod:`opencd_reference` for the setup)::

    python benchmarks/bit_vs_reference.py --ref /work/scratch/opencd --mm /tmp/openmmlab
"""

from __future__ import annotations

import torch
from torch import nn

from opencd_reference import run


class OpenCDBIT(nn.Module):
    """open-cd's BIT: one backbone pass per date, concatenation, BIT head (logits already at input size)."""

    def __init__(self) -> None:
        super().__init__()
        from mmseg.models.backbones import ResNetV1c
        from opencd.models.decode_heads.bit_head import BITHead
        from opencd.models.necks.feature_fusion import FeatureFusionNeck

        bn = dict(type="BN", requires_grad=True)
        self.backbone = ResNetV1c(depth=18, num_stages=3, out_indices=(2,), dilations=(1, 1, 1), strides=(1, 2, 1),
                                  norm_cfg=bn, norm_eval=False, style="pytorch", contract_dilation=True)
        self.neck = FeatureFusionNeck(policy="concat", out_indices=(0,))
        self.decode_head = BITHead(in_channels=256, channels=32, embed_dims=64, enc_depth=1, enc_with_pos=True,
                                   dec_depth=8, num_heads=8, drop_rate=0.0, use_tokenizer=True, token_len=4,
                                   upsample_size=4, num_classes=2, norm_cfg=dict(type="LN", requires_grad=True),
                                   align_corners=False,
                                   loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.decode_head(self.neck(self.backbone(a), self.backbone(b)))


if __name__ == "__main__":
    run(__doc__.splitlines()[0], OpenCDBIT, "bit")
