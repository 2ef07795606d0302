"""changekit's ``snunet`` / ``snunet_c16`` against open-cd's definition: same random weights, same outputs.

The reference is open-cd's ``DIEncoderDecoder`` as ``configs/_base_/models/snunet_c16.py`` builds it, which
ChangeAnywhere's ``snunet_c32_*`` configs use with ``base_channel=32``. open-cd's own ``SNUNet_ECAM`` backbone
takes the two dates. mmseg's ``FCNHead(num_convs=0, concat_input=False)`` follows: Dropout2d(0.1) and a 1x1
classifier. The logits are then resized to the input. Setup, and the eval comparison itself, are in
``opencd_reference.py``::

    python benchmarks/snunet_vs_reference.py --ref /work/scratch/opencd --mm /tmp/openmmlab

Both widths are compared, c32 and then c16. For each, one more check runs in training mode: the same state, the
same input and the same dropout seed go through both models. The check compares the logits and the BatchNorm
running statistics afterwards. This confirms that changekit's per-date encoder passes normalise and update
exactly as open-cd's two backbone calls do.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from opencd_reference import randomize_norms, run
from torch import nn


class OpenCDSNUNet(nn.Module):
    """open-cd's DIEncoderDecoder forward for this config, over open-cd's and mmseg's own modules."""

    def __init__(self, base_channel: int) -> None:
        super().__init__()
        from mmseg.models.decode_heads.fcn_head import FCNHead
        from opencd.models.backbones.snunet import SNUNet_ECAM

        self.backbone = SNUNet_ECAM(in_channels=3, base_channel=base_channel)
        self.decode_head = FCNHead(in_channels=base_channel * 4, channels=base_channel * 4, in_index=-1,
                                   num_convs=0, concat_input=False, num_classes=2)
        self.decode_head.init_weights()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        logits = self.decode_head(list(self.backbone(a, b)))
        return F.interpolate(logits, size=a.shape[-2:], mode="bilinear", align_corners=False)


def train_mode_check(name: str, base_channel: int) -> None:
    """One training-mode forward of both from the same state and dropout seed: logits and updated BN statistics."""
    from changekit.models.foreign import convert_foreign, get_converter

    torch.manual_seed(0)
    reference = OpenCDSNUNet(base_channel)
    randomize_norms(reference)
    with tempfile.TemporaryDirectory() as tmp:
        torch.save({"meta": {}, "state_dict": reference.state_dict()}, Path(tmp) / "ref.pth")
        ours, _ = convert_foreign("opencd", Path(tmp) / "ref.pth", name)
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 3, 64, 64, generator=gen), torch.randn(2, 3, 64, 64, generator=gen)
    with torch.no_grad():  # the running statistics update without autograd too
        torch.manual_seed(0)
        expected = reference.train()(a, b)
        torch.manual_seed(0)
        got = ours.train()(a, b).change
    ref_stats = get_converter("opencd", name).map_keys(
        {k: v for k, v in reference.state_dict().items() if "running" in k})
    own = ours.state_dict()
    stats = max(float((own[k] - v).abs().max()) for k, v in ref_stats.items())
    print(f"train mode, 64x64 batch 2: max |logit diff| {float((got - expected).abs().max()):.2e}, "
          f"max |running-statistic diff| {stats:.2e}")


if __name__ == "__main__":
    for model_name, width in (("snunet", 32), ("snunet_c16", 16)):
        print(f"--- {model_name} (base_channel {width})")
        run(__doc__.splitlines()[0], lambda width=width: OpenCDSNUNet(width), model_name)
        train_mode_check(model_name, width)
