"""Training guards: a NaN or infinite loss stops training with one line, and no checkpoint holds non-finite weights.

A NaN strip in the imagery, a learning rate that is far too high or a broken loss term used to train on silently:
the loss turned NaN, the weights followed, and every later checkpoint (and the exported ``model.ckpt``) held NaN,
predicting "no change" everywhere. :class:`~changekit.engine.task.ChangeTask` calls :func:`check_loss` on every
training step and :func:`check_weights` before every checkpoint is written, so training stops at the first bad
step, naming the step and the batch, and the last good checkpoint stays the newest one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from ..errors import NonFiniteError

_FIX = "Check the data (`changekit data check`) and the loss settings, or lower optim.lr"


def _stems(batch: Mapping[str, Any], limit: int = 4) -> str:
    stems = [str(s) for s in (batch.get("stem") or [])]
    if not stems:
        return ""
    return f" (batch: {', '.join(stems[:limit])}{', ...' if len(stems) > limit else ''})"


def check_loss(loss: torch.Tensor, step: int, batch: Mapping[str, Any], terms: Mapping[str, Any] | None = None
               ) -> None:
    """Raise when the training loss of ``step`` is NaN or infinite.

    Raises:
        NonFiniteError: naming the step, the batch's stems, the non-finite loss terms and what to check.
    """
    value = float(loss.detach())
    if math.isfinite(value):
        return
    bad = [k for k, v in (terms or {}).items() if torch.is_tensor(v) and not torch.isfinite(v.detach()).all()]
    which = f"; non-finite terms: {', '.join(bad)}" if bad else ""
    raise NonFiniteError(f"training loss is {value} at step {step}{_stems(batch)}{which}; training stopped and no "
                         f"checkpoint of this step was written. {_FIX}")


def check_weights(state_dict: Mapping[str, Any], step: int) -> None:
    """Raise before a checkpoint with NaN or infinite weights is written.

    Raises:
        NonFiniteError: naming the step and the first non-finite tensor.
    """
    for name, value in state_dict.items():
        if torch.is_tensor(value) and value.is_floating_point() and not torch.isfinite(value).all():
            raise NonFiniteError(f"weights turned NaN or infinite by step {step} ({name}); training stopped and the "
                                 f"checkpoint was not written. {_FIX}")
