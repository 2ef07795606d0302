"""LightCDNet (Y. Xing, J. Jiang, J. Xiang, E. Yan, Y. Song, D. Mo, "LightCDNet: Lightweight Change Detection
Network Based on VHR Images", IEEE GRSL 20:6502105, 2023, doi:10.1109/LGRS.2023.3304309), as open-cd implements
it (``opencd/models/backbones/lightcdnet.py``, ``necks/tiny_fpn.py``, ``decode_heads/ds_fpn_head.py``) and
ChangeAnywhere trains it (``configs/lightcdnet/lightcdnet_b_*``).

The model: a shared stem and an early-fusion module fuse the dates at stride 2 (:mod:`.backbone`); ShuffleNetV2
stages with criss-cross attention give a stride-4/8/16 pyramid; an FPN without norms (48 channels) and open-cd's
``DS_FPNHead`` (per-level 1x1 conv-BN-ReLU, sum at stride 2, 1x1 classifier) give two-class logits, upsampled
bilinearly to the input. In training an auxiliary ``FCNHead`` on the fused stride-2 map adds a 0.4-weighted
cross-entropy (the deep supervision of the fusion module; :meth:`.LightCDNet.extra_losses`).

Sizes (registered builders; the S / B / L of the paper and open-cd's ``net_type``): ``lightcdnet_s`` (widths
24/48/96/192, 4 fusion units), ``lightcdnet`` (base: 24/116/232/464, 8 units; ChangeAnywhere's) and
``lightcdnet_l`` (24/176/352/704, 16 units); all with stage repeats 4/8/4.

Parameters (all registered, as open-cd's README counts them: 0.35 / 1.32 / 2.82 M): 347,771 / 1,318,433 /
2,821,019 for S / B / L. Compute per 256x256 pair: 1.61 / 3.05 / 5.49 G multiply-adds
(``torch.utils.flop_counter.FlopCounterMode`` FLOPs / 2, the fvcore/open-cd convention; convolutions and matrix
products); open-cd reports 1.65 / 3.22 / 5.94 GMACs, which include the stage-3 tail that open-cd runs but never
uses (see :mod:`.backbone`; with it: 1.65 / 3.25 / 5.95).

Package layout: :mod:`.backbone` (stem, fusion module, ShuffleNet stages, criss-cross attention), :mod:`.model`
(neck, heads, the model and its builders), :mod:`.convert` (open-cd checkpoint key mapping).
"""

from __future__ import annotations

from . import convert  # noqa: F401  # registers the open-cd converters
from .backbone import CrissCrossAttention, FusionModule, LightCDBackbone, ShuffleUnit
from .model import SIZES, LightCDNet, lightcdnet, lightcdnet_l, lightcdnet_s

__all__ = ["SIZES", "CrissCrossAttention", "FusionModule", "LightCDBackbone", "LightCDNet", "ShuffleUnit",
           "lightcdnet", "lightcdnet_l", "lightcdnet_s"]
