"""The pixel loss terms (``bce``, ``ce``, ``ohem_ce``, ``focal``, ``dice``) and their shared target handling.

See :mod:`changekit.losses` for the logit layouts each term accepts.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, LabelValueError

TARGETS = {"change": ("change", "mask"), "sem_a": ("sem_a", "sem_a"), "sem_b": ("sem_b", "sem_b")}


def _prepare(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Float32 logits ``(N, K, H, W)``, int64 target ``(N, H, W)`` and its valid mask; checks shapes and values."""
    if target.ndim == logits.ndim and target.shape[1] == 1:
        target = target[:, 0]
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match: expected (N, K, H, W) "
            "logits and an (N, H, W) target of the same size"
        )
    target = target.long()
    valid = target != ignore_index
    classes = max(logits.shape[1], 2)
    bad = valid & ((target < 0) | (target >= classes))
    if bool(bad.any()):
        found = sorted(set(target[bad].unique()[:5].tolist()))
        raise LabelValueError(
            f"target holds values {found} outside 0..{classes - 1} (ignore_index {ignore_index}); "
            "check the labels or set ignore_index"
        )
    return logits.float(), target, valid


def _as_multiclass(logits: torch.Tensor) -> torch.Tensor:
    """Read a 1-channel sigmoid logit ``l`` as two-class logits ``[0, l]``; K-channel logits pass through."""
    if logits.shape[1] == 1:
        return torch.cat([torch.zeros_like(logits), logits], dim=1)
    return logits


def _masked_mean(values: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over valid pixels (optionally weighted); 0 when nothing is valid."""
    w = valid.to(values.dtype) if weights is None else weights * valid
    return (torch.where(valid, values, 0.0) * w).sum() / w.sum().clamp_min(1e-12)


def _number(name: str, value: Any, low: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or (low is not None and value < low):
        bound = f" >= {low}" if low is not None else ""
        raise ConfigError(f"parameter '{name}' must be a number{bound}, got {value!r}")
    return float(value)


def _ignore(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"parameter 'ignore_index' must be an integer, got {value!r}")
    return value


class BCELoss(nn.Module):
    """Binary cross-entropy on 1-channel logits (2-channel: on ``l1 - l0``), mean over valid pixels.

    Args:
        ignore_index: target value excluded from the loss.
        pos_weight: weight of the positive (change) term, e.g. ``#neg / #pos`` for rare change.
    """

    def __init__(self, ignore_index: int = 255, pos_weight: float | None = None) -> None:
        super().__init__()
        self.ignore_index = _ignore(ignore_index)
        self.pos_weight = None if pos_weight is None else _number("pos_weight", pos_weight, 0.0)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if logits.shape[1] > 2:
            raise ValueError(f"bce needs 1- or 2-channel logits, got {logits.shape[1]} channels; use 'ce'")
        logits, target, valid = _prepare(logits, target, self.ignore_index)
        logit = logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]
        y = (target == 1).to(logit.dtype)
        pw = None if self.pos_weight is None else logit.new_tensor(self.pos_weight)
        values = F.binary_cross_entropy_with_logits(logit, y, pos_weight=pw, reduction="none")
        return _masked_mean(values, valid)


class CELoss(nn.Module):
    """Softmax cross-entropy, mean over valid pixels (weighted mean with ``class_weights``, like torch).

    Args:
        ignore_index: target value excluded from the loss (e.g. 9 for Hi-UCD's unlabeled class).
        class_weights: one weight per class, or ``None``.
    """

    def __init__(self, ignore_index: int = 255, class_weights: list[float] | None = None) -> None:
        super().__init__()
        self.ignore_index = _ignore(ignore_index)
        cw = None
        if class_weights is not None:
            if not isinstance(class_weights, list | tuple) or not class_weights:
                raise ConfigError(f"parameter 'class_weights' must be a list of numbers, auto or auto_sqrt, "
                                  f"got {class_weights!r}")
            cw = torch.tensor([_number("class_weights", w, 0.0) for w in class_weights], dtype=torch.float32)
        self.register_buffer("class_weights", cw, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: D102
        logits, target, valid = _prepare(_as_multiclass(logits), target, self.ignore_index)
        t = torch.where(valid, target, 0)
        nll = -logits.log_softmax(1).gather(1, t.unsqueeze(1)).squeeze(1)
        weights = None
        if self.class_weights is not None:
            if self.class_weights.numel() != logits.shape[1]:
                raise ConfigError(
                    f"parameter 'class_weights' has {self.class_weights.numel()} entries but the logits have "
                    f"{logits.shape[1]} classes"
                )
            weights = self.class_weights[t]
        return _masked_mean(nll, valid, weights)


class OHEMCELoss(nn.Module):
    """Softmax cross-entropy over the hard pixels only: mmseg's ``OHEMPixelSampler`` in front of its CE loss.

    A valid pixel is kept when the predicted probability of its true class is below ``threshold =
    max(thresh, p_k)``, where ``p_k`` is the ``k``-th smallest such probability of the batch (0-based, ``k =
    min(min_kept * N, valid - 1)``): all pixels under ``thresh``, and at least the ``min_kept * N`` hardest.
    As in mmseg, ``min_kept`` counts per image, and ties at ``p_k`` are dropped, so when ``min_kept * N`` reaches
    the number of valid pixels every pixel is kept except the easiest one(s). ``thresh=None`` keeps exactly the
    ``min_kept * N`` pixels of highest loss. The selection takes no gradient. The loss is the sum over kept
    pixels divided by the number of valid pixels (like ``ce``; mmseg's default divides by all pixels, ignored
    ones included, which is the same when none is ignored).

    Args:
        thresh: probability threshold in (0, 1] (ChangerEx: 0.7), or ``None`` for loss-ranked selection.
        min_kept: pixels kept at least, per image (ChangerEx: 100000).
        ignore_index: target value excluded from the loss and the selection.
    """

    def __init__(self, thresh: float | None = 0.7, min_kept: int = 100000, ignore_index: int = 255) -> None:
        super().__init__()
        if thresh is not None and not 0 < _number("thresh", thresh) <= 1:
            raise ConfigError(f"parameter 'thresh' must be in (0, 1] or null, got {thresh!r}")
        if isinstance(min_kept, bool) or not isinstance(min_kept, int) or min_kept < 0:
            raise ConfigError(f"parameter 'min_kept' must be an integer >= 0, got {min_kept!r}")
        self.thresh = None if thresh is None else float(thresh)
        self.min_kept = min_kept
        self.ignore_index = _ignore(ignore_index)

    def kept(self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Boolean map ``(N, H, W)`` of the pixels the loss uses (float32 logits, int64 target in range)."""
        with torch.no_grad():
            prob = logits.softmax(1).gather(1, target.unsqueeze(1)).squeeze(1)
            valid_prob = prob[valid]
            batch_kept = self.min_kept * logits.shape[0]
            keep = torch.zeros_like(valid)
            if valid_prob.numel() == 0:
                return keep
            if self.thresh is None:  # mmseg ranks by loss: -log p, i.e. ascending p
                order = valid_prob.argsort()[:batch_kept]
                chosen = torch.zeros_like(valid_prob, dtype=torch.bool)
                chosen[order] = True
            else:
                kth = valid_prob.sort().values[min(batch_kept, valid_prob.numel() - 1)]
                chosen = valid_prob < max(float(kth), self.thresh)
            keep[valid] = chosen
            return keep

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: D102
        logits, target, valid = _prepare(_as_multiclass(logits), target, self.ignore_index)
        t = torch.where(valid, target, 0)
        keep = self.kept(logits, t, valid)
        nll = -logits.log_softmax(1).gather(1, t.unsqueeze(1)).squeeze(1)
        return torch.where(keep, nll, 0.0).sum() / valid.sum().clamp_min(1)


class FocalLoss(nn.Module):
    """Softmax focal loss ``-alpha (1 - p_t)^gamma log p_t`` (Lin et al. 2017, in MISGNet's form), mean over
    valid pixels. With ``gamma=0, alpha=1`` it equals ``ce``.

    Args:
        alpha: scalar weight of every term (MISGNet: 0.2).
        gamma: focusing exponent (>= 0).
        ignore_index: target value excluded from the loss.
    """

    def __init__(self, alpha: float = 1.0, gamma: float = 2.0, ignore_index: int = 255) -> None:
        super().__init__()
        self.alpha = _number("alpha", alpha, 0.0)
        self.gamma = _number("gamma", gamma, 0.0)
        self.ignore_index = _ignore(ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: D102
        logits, target, valid = _prepare(_as_multiclass(logits), target, self.ignore_index)
        t = torch.where(valid, target, 0)
        logpt = logits.log_softmax(1).gather(1, t.unsqueeze(1)).squeeze(1)
        focal = (1 - logpt.exp()).clamp_min(0).pow(self.gamma) if self.gamma else 1.0
        return _masked_mean(-self.alpha * focal * logpt, valid)


class DiceLoss(nn.Module):
    """Soft dice loss from logits over the whole batch.

    Args:
        mode: ``"binary"`` (change probability vs ``target == 1``) or ``"multiclass"`` (mean over classes of
            softmax dice; a 1-channel logit counts as the two classes ``1 - p, p``).
        ignore_index: target value excluded from the loss.
        smooth: added to numerator and denominator (0 = the plain ratio).
        eps: added to the denominator against 0 / 0.
        skip_empty: a class with no target pixel contributes 0 loss (smp / ClearSCD) instead of ``1 - dice``.
    """

    def __init__(
        self,
        mode: str = "binary",
        ignore_index: int = 255,
        smooth: float = 0.0,
        eps: float = 1e-7,
        skip_empty: bool = False,
    ) -> None:
        super().__init__()
        if mode not in ("binary", "multiclass"):
            raise ConfigError(f"parameter 'mode' must be 'binary' or 'multiclass', got {mode!r}")
        if not isinstance(skip_empty, bool):
            raise ConfigError(f"parameter 'skip_empty' must be true or false, got {skip_empty!r}")
        self.mode = mode
        self.ignore_index = _ignore(ignore_index)
        self.smooth = _number("smooth", smooth, 0.0)
        self.eps = _number("eps", eps, 0.0)
        self.skip_empty = skip_empty

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:  # noqa: D102
        if self.mode == "binary" and logits.shape[1] > 2:
            raise ValueError(f"binary dice needs 1- or 2-channel logits, got {logits.shape[1]}; use mode multiclass")
        logits, t, valid = _prepare(logits, target, self.ignore_index)
        v = valid.unsqueeze(1).to(logits.dtype)
        if self.mode == "binary":
            prob = logits.sigmoid() if logits.shape[1] == 1 else logits.softmax(1)[:, 1:]
            onehot = (t == 1).unsqueeze(1).to(logits.dtype)
        else:
            prob = _as_multiclass(logits).softmax(1)
            onehot = F.one_hot(torch.where(valid, t, 0), prob.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
        prob, onehot = prob * v, onehot * v
        dims = (0, 2, 3)
        inter = (prob * onehot).sum(dims)
        present = onehot.sum(dims)
        dice = (2 * inter + self.smooth) / (prob.sum(dims) + present + self.smooth + self.eps)
        loss = 1 - dice
        if self.skip_empty:
            loss = loss * (present > 0)
        return loss.mean() * valid.any()
