"""ClearSCD: semantic change detection with SACL, BSCC and a deep CVAPS head.

Paper: K. Tang, F. Xu, X. Chen, Q. Dong, Y. Yuan, J. Chen, "The ClearSCD model: Comprehensively leveraging
semantics and change relationships for semantic change detection in high spatial resolution remote sensing
imagery", ISPRS J. Photogramm. Remote Sens. 211:299-317, 2024. Code: github.com/tangkai-RS/ClearSCD.

Architecture (seed-systems 1.3): one Siamese smp EfficientNet-b0 encoder and FPN decoder (128 channels at 1/4),
one shared 3x3 segmentation head for both dates, the deep CVAPS head over ``|logits_A - logits_B|`` (switch
``cvaps_input="softmax"`` for the paper's posteriors), and, for training only, the projection head, SACL (local
InfoNCE + global per-class, per-date memory queues with warm-up and hard query sampling) and BSCC. The queues are
buffers (saved in checkpoints). 5,780,499 parameters at the defaults (the encoder's unused ``_conv_head`` /
``_bn1`` included, as in the released model).

Modules: :mod:`.heads` (CVAPS, projection), :mod:`.losses` (SACL, queues, BSCC), :mod:`.model` (the network),
:mod:`.convert` (the authors' released checkpoints).
Departures from the released code, all documented in ``docs/models/clearscd.md`` and none changing a result:
ImageNet weights load for real when asked (``encoder_weights``; ``None`` reproduces the released random start);
SACL is computed without per-class Python loops over pixels and without pixel-by-pixel logits matrices; the
encoder is activation-checkpointed in training (``checkpoint_encoder``); CPU inference runs channels_last
through a BN-folded, activation-fused encoder (:mod:`.fast`). With the authors' weights the eval outputs equal
theirs (benchmarks/clearscd_vs_official.py).
"""

from __future__ import annotations

from typing import Any

from ..registry import register_model
from . import convert  # noqa: F401  (registers `changekit convert clearscd`)
from .heads import CVAPSHead, ProjectionHead
from .model import ClearSCD

__all__ = ["CVAPSHead", "ClearSCD", "ProjectionHead", "clearscd"]


@register_model
def clearscd(**kwargs: Any) -> ClearSCD:
    """ClearSCD (Tang et al., 2024), Hi-UCD settings: 9 classes, 5,780,499 parameters at the defaults."""
    return ClearSCD(**kwargs)


clearscd.model_cls = ClearSCD  # type: ignore[attr-defined]  # lets build_model validate keyword names
