"""Semantic metrics of K-class and semantic-change (SCD) confusion matrices.

Pure functions of integer matrices; the streaming bookkeeping lives in :mod:`changekit.metrics.scd`.
Formulas and sources are written out in ``docs/metrics.md``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from .confusion import MatrixLike, as_numpy_matrix, kappa, per_class_scores, safe_div

Absent = Literal["zero", "nan"]


def semantic_metrics(cm: MatrixLike, absent: Absent = "zero") -> dict[str, Any]:
    """OA, mIoU, mean F1, kappa and per-class scores of a K-class matrix (rows = ground truth).

    Args:
        absent: how a class with a zero denominator (absent from ground truth *and* prediction) enters the
            means. ``"zero"`` (default) counts it as 0, like ClearSCD's ``SEGEvaluator``, so the mean is always
            over all K classes; ``"nan"`` leaves it out of the means (nanmean, as mmsegmentation) and reports
            it as ``None`` in the per-class lists.
    """
    if absent not in ("zero", "nan"):
        raise ValueError(f"absent must be 'zero' or 'nan', got {absent!r}")
    m = as_numpy_matrix(cm)
    scores = per_class_scores(m)
    present = (m.sum(0) + m.sum(1)) > 0  # TP + FP + FN > 0  <=>  row or column non-empty
    out: dict[str, Any] = {"oa": float(safe_div(np.trace(m), m.sum())), "kappa": kappa(m)}
    for name in ("iou", "f1"):
        vals = scores[name]
        if absent == "zero":
            out[f"m{name}"] = float(vals.mean())
        else:
            out[f"m{name}"] = float(vals[present].mean()) if present.any() else 0.0
    for name in ("precision", "recall", "f1", "iou"):
        vals = scores[name]
        if absent == "zero":
            out[f"{name}_per_class"] = [float(v) for v in vals]
        else:
            out[f"{name}_per_class"] = [float(v) if p else None for v, p in zip(vals, present, strict=True)]
    return out


def sek(cm: MatrixLike, iou_change: float, no_change_index: int) -> float:
    """Separated kappa: kappa of ``cm`` with the no-change/no-change cell zeroed, times ``exp(iou_change) / e``."""
    m = as_numpy_matrix(cm).copy()
    m[no_change_index, no_change_index] = 0
    return kappa(m) * math.exp(iou_change - 1.0)


def second_metrics(hist: MatrixLike) -> dict[str, float]:
    """The standard SECOND SCD metrics of a ``(C+1)`` matrix whose index 0 is "no change".

    ``hist`` counts per-date semantic change maps (unchanged pixels = 0, changed pixels = class + 1) of both
    dates together, as in Bi-SRNet's ``SCDD_eval_all`` (also used by ChangeMamba, SCanNet, open-cd).
    Returns ``miou_scd`` (mean of no-change and change IoU of the binarised matrix), ``sek``, ``fscd``,
    ``score`` = 0.3 miou_scd + 0.7 sek, and the parts ``iou_nc``, ``iou_c``, ``kappa_n0``,
    ``scd_precision``, ``scd_recall``. 0/0 is 0.0 throughout.
    """
    m = as_numpy_matrix(hist)
    if m.shape[0] < 2:
        raise ValueError("an SCD matrix needs the no-change class and at least one semantic class")
    total = m.sum()
    tn = m[0, 0]
    gt_change = total - m[0, :].sum()  # row 0 = ground-truth no change
    pred_change = total - m[:, 0].sum()  # column 0 = predicted no change
    tp_bin = m[1:, 1:].sum()  # change predicted as change, whatever the classes
    iou_nc = float(safe_div(tn, m[0, :].sum() + m[:, 0].sum() - tn))
    iou_c = float(safe_div(tp_bin, total - tn))
    m_n0 = m.copy()
    m_n0[0, 0] = 0
    kappa_n0 = kappa(m_n0)
    sek_value = kappa_n0 * math.exp(iou_c - 1.0)
    sc_tp = np.trace(m[1:, 1:])  # changed pixels whose semantic class is right
    precision = float(safe_div(sc_tp, pred_change))
    recall = float(safe_div(sc_tp, gt_change))
    fscd = float(safe_div(2 * precision * recall, precision + recall))
    miou = (iou_nc + iou_c) / 2
    return {
        "miou_scd": miou,
        "sek": sek_value,
        "fscd": fscd,
        "score": 0.3 * miou + 0.7 * sek_value,
        "iou_nc": iou_nc,
        "iou_c": iou_c,
        "kappa_n0": kappa_n0,
        "scd_precision": precision,
        "scd_recall": recall,
    }


def mean_iou_over_seen(cm: MatrixLike, num_seen: int, last_iou: float | None = None) -> float:
    """ClearSCD's consistency mIoU: sum of per-class IoU (0/0 -> 0) divided by ``num_seen - 1``.

    ``num_seen`` is the number of distinct ground-truth codes met during evaluation *including* the ignored
    "unlabeled" code, which the ``- 1`` is meant to remove (ClearSCD ``SCD_Change_Evaluator`` /
    ``SCD_NoChange_Evaluator``). ``last_iou`` replaces the IoU of the last class (mIoU_nc puts the BCD change
    IoU there). Returns 0.0 when ``num_seen <= 1``.
    """
    ious = per_class_scores(as_numpy_matrix(cm))["iou"]
    if last_iou is not None:
        ious[-1] = last_iou
    denom = int(num_seen) - 1
    return float(ious.sum() / denom) if denom > 0 else 0.0
