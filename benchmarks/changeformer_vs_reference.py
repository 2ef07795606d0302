"""changekit's ``changeformer`` against open-cd's definition: same random weights, same outputs.

The reference is open-cd's ChangeFormer as ChangeAnywhere configures it (``changeformer_mit-b1_256x256_50e_*``).
mmseg's ``MixVisionTransformer`` (MiT-b1) runs on each date. The two feature pyramids are concatenated per level
(open-cd's ``FeatureFusionNeck(policy='concat')``, one ``torch.cat``), then go through mmseg's ``SegformerHead``,
and the logits are resized bilinearly to the input (``SiamEncoderDecoder.encode_decode``). SyncBN of the config
is plain BN here, which is the same in eval mode. Setup, and the comparison itself, are in
``opencd_reference.py``::

    python benchmarks/changeformer_vs_reference.py --ref /work/scratch/opencd --mm /tmp/openmmlab

The reference's state dict is saved as an mmengine checkpoint and imported with ``changekit convert opencd``'s
code. The script prints the largest logit difference per input size, both parameter counts, and changekit's
multiply-adds per pair.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from opencd_reference import run
from torch import nn


class OpenCDChangeFormer(nn.Module):
    """open-cd's SiamEncoderDecoder forward for this config, over mmseg's own modules (open-cd's key names)."""

    def __init__(self) -> None:
        super().__init__()
        from mmseg.models.backbones.mit import MixVisionTransformer
        from mmseg.models.decode_heads.segformer_head import SegformerHead

        self.backbone = MixVisionTransformer(
            in_channels=3, embed_dims=64, num_stages=4, num_layers=[2, 2, 2, 2], num_heads=[1, 2, 5, 8],
            patch_sizes=[7, 3, 3, 3], sr_ratios=[8, 4, 2, 1], out_indices=(0, 1, 2, 3), mlp_ratio=4,
            qkv_bias=True, drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1)
        self.decode_head = SegformerHead(
            in_channels=[v * 2 for v in [64, 128, 320, 512]], in_index=[0, 1, 2, 3], channels=256,
            dropout_ratio=0.1, num_classes=2, norm_cfg=dict(type="BN", requires_grad=True), align_corners=False)
        self.backbone.init_weights()
        self.decode_head.init_weights()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fused = [torch.cat([fa, fb], dim=1) for fa, fb in zip(self.backbone(a), self.backbone(b), strict=True)]
        return F.interpolate(self.decode_head(fused), size=a.shape[-2:], mode="bilinear", align_corners=False)


if __name__ == "__main__":
    run(__doc__.splitlines()[0], OpenCDChangeFormer, "changeformer")
