"""changekit's ``changer_ex`` against open-cd's definition (``changer_ex_r18``): same random weights, same logits.

The reference is open-cd's ``DIEncoderDecoder`` forward for ``configs/_base_/models/changer_r18.py`` with the
ChangerEx interactions of ChangeAnywhere's configs: ``IA_ResNetV1c`` (depth 18, 4 stages; none, SpatialExchange
p=1/2, ChannelExchange p=1/2 twice), the ``Changer`` head (channels 128, FDAF, MixFFN, 2 classes) and mmseg's
bilinear resize of the stride-4 logits to the input. Its weights go to changekit through ``changekit convert
opencd --model changer_ex``'s code; both run in eval mode on random pairs (setup: :mod:`opencd_reference`)::

    python benchmarks/changer_ex_vs_reference.py --ref /work/scratch/opencd --mm /tmp/openmmlab
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from opencd_reference import run


class OpenCDChangerEx(nn.Module):
    """open-cd's ChangerEx: the interaction backbone sees both dates, the head fuses, logits resized to the input."""

    def __init__(self) -> None:
        super().__init__()
        import opencd.models.utils.interaction_layer  # noqa: F401 - registers the exchange layers
        from opencd.models.backbones.interaction_resnet import IA_ResNetV1c
        from opencd.models.decode_heads.changer import Changer

        bn = dict(type="BN", requires_grad=True)
        exchange = (None, dict(type="SpatialExchange", p=1 / 2), dict(type="ChannelExchange", p=1 / 2),
                    dict(type="ChannelExchange", p=1 / 2))
        self.backbone = IA_ResNetV1c(depth=18, num_stages=4, out_indices=(0, 1, 2, 3), dilations=(1, 1, 1, 1),
                                     strides=(1, 2, 2, 2), norm_cfg=bn, norm_eval=False, style="pytorch",
                                     contract_dilation=True, interaction_cfg=exchange)
        self.decode_head = Changer(in_channels=[64, 128, 256, 512], in_index=[0, 1, 2, 3], channels=128,
                                   dropout_ratio=0.1, num_classes=2, norm_cfg=bn, align_corners=False,
                                   loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0))

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:  # noqa: D102
        logits = self.decode_head(self.backbone(a, b))
        return F.interpolate(logits, a.shape[-2:], mode="bilinear", align_corners=False)


if __name__ == "__main__":
    run(__doc__.splitlines()[0], OpenCDChangerEx, "changer_ex")
