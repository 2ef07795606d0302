"""ChangeCLIP: remote-sensing change detection with multimodal vision-language representation learning.

Paper: S. Dong, L. Wang, B. Du, X. Meng, "ChangeCLIP: Remote sensing change detection with multimodal
vision-language representation learning", ISPRS J. Photogramm. Remote Sens. 208 (2024) 53-69,
doi:10.1016/j.isprsjprs.2024.01.004. Code: github.com/dyzy41/ChangeCLIP (mmsegmentation 1.1).

Both dates go through a CLIP image tower (:mod:`.image`) that also yields CLIP-space embeddings; per date, two
prompts built from the image's zero-shot CLIP tags (``changekit clip-tag``) go through CLIP's text tower with
13 learnable context vectors (:mod:`.text`), are refined by the context decoder from the image embeddings
(:mod:`.context_decoder`), and give an image-text score map concatenated to one stage. Differential features
(cosine gate, ``|A - B|`` branch) and an FPN are fused by SE blocks and decoded by a Swin decoder that attends
to both dates' text (:mod:`.decoder`). Everything is trained (nothing frozen). :mod:`.model` holds the model
and the builders, :mod:`.weights` loads CLIP checkpoints.

Parameter counts: ``changeclip_rn50`` 117,540,238; ``changeclip_vitb16`` 170,746,670 (the original's).
"""

from __future__ import annotations

from .model import ChangeCLIP, changeclip_rn50, changeclip_vitb16

__all__ = ["ChangeCLIP", "changeclip_rn50", "changeclip_vitb16"]
