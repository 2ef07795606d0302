"""Loss functions with ignore handling, and the config-built composite loss the engine optimises.

Logit layouts (``ChangeOutput.change`` may have 1 or K channels):

* ``bce``: binary cross-entropy on a sigmoid logit. 1-channel logits are used as is; 2-channel logits use
  ``l1 - l0`` (whose sigmoid is softmax channel 1, so this equals 2-class ``ce``).
* ``ce``: softmax cross-entropy over K channels. A 1-channel logit ``l`` is read as the two-class logits
  ``[0, l]`` (softmax of which is ``[1 - sigmoid(l), sigmoid(l)]``).
* ``focal``: softmax focal loss ``-alpha (1 - p_t)^gamma log p_t`` (MISGNet's form: one scalar alpha for all
  classes), mean over valid pixels; 1-channel logits are read as ``[0, l]`` as for ``ce``.
* ``ohem_ce``: ``ce`` over the hard pixels only (mmseg's ``OHEMPixelSampler``: true-class probability below
  ``thresh``, at least ``min_kept`` per image; see :class:`OHEMCELoss`).
* ``dice``: ``mode="binary"`` scores the change probability (sigmoid, or softmax channel 1) against
  ``target == 1``; ``mode="multiclass"`` averages the dice of every class over softmax probabilities
  (MISGNet's ``1 - mean_c 2 sum(p y) / (sum(p + y) + eps)``). Sums run over all pixels of the batch.
  ``skip_empty=True`` scores classes absent from the target as 0 loss (smp's ``DiceLoss`` behaviour, which
  ClearSCD uses).

``pos_weight`` (``bce``) and ``class_weights`` (``ce``; ``ohem_ce`` has none) accept ``auto`` and ``auto_sqrt``,
resolved before a run starts from the change share ``s`` the loss sees (the training labels', or the sampled share
under ``data.sampler: change_balanced``; :func:`resolve_auto_weights`): ``auto`` is inverse class frequency
(``pos_weight = (1 - s) / s``, ``class_weights = [1 / (2 (1 - s)), 1 / (2 s)]``, as Daudt et al. 2018 weight their
loss), ``auto_sqrt`` its square root (F1-oriented: the decision threshold stays near 0.5). The numbers replace
the value in the run's config.

Every loss ignores pixels whose target equals ``ignore_index`` (default 255), and a batch with no valid pixel
gives a loss of exactly 0 (still attached to the graph), never NaN. Losses compute in float32 whatever the
logits' dtype.
"""

from __future__ import annotations

from .auto import AUTO_PARAMS, AUTO_POWERS, auto_terms, class_frequency_weights, is_auto, resolve_auto_weights
from .composite import LOSSES, CompositeLoss, build_loss
from .terms import TARGETS, BCELoss, CELoss, DiceLoss, FocalLoss, OHEMCELoss

__all__ = [
    "AUTO_PARAMS", "AUTO_POWERS", "LOSSES", "TARGETS", "BCELoss", "CELoss", "CompositeLoss", "DiceLoss", "FocalLoss",
    "OHEMCELoss",
    "auto_terms", "build_loss", "class_frequency_weights", "is_auto", "resolve_auto_weights",
]
