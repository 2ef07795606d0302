"""Binary change-detection metrics from a 2x2 confusion matrix (class 1 = change).

Every ratio defines 0/0 as 0.0 (an empty change class gives precision = recall = F1 = IoU = 0, never NaN),
so that a validation batch without change never poisons a running mean or a JSON report.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .confusion import MatrixLike, as_numpy_matrix, kappa, per_class_scores, safe_div

BINARY_KEYS = ("precision", "recall", "f1", "iou", "oa", "kappa")


def binary_metrics(cm: MatrixLike, smooth: float = 0.0) -> dict[str, Any]:
    """Precision, recall, F1, IoU of the change class, OA and kappa of a 2x2 matrix (rows = ground truth).

    Args:
        cm: a :class:`ConfusionMatrix` of 2 classes, a tensor, array or nested list.
        smooth: added to every cell before the ratios. ``1e-4`` reproduces ChangeCLIP's ``CM2Metric``;
            the default 0 gives exact ratios. ``confusion`` always reports the raw counts.

    Returns:
        ``precision``, ``recall``, ``f1``, ``iou``, ``oa``, ``kappa`` (floats for the change class),
        ``precision_per_class``, ``recall_per_class``, ``f1_per_class``, ``iou_per_class`` (lists, index 0 =
        no change), ``miou``, ``mf1`` (means over the two classes) and ``confusion`` (list of lists of ints).
    """
    raw = as_numpy_matrix(cm, square=2)
    if smooth < 0:
        raise ValueError(f"smooth must be >= 0, got {smooth}")
    m = raw + float(smooth)
    scores = per_class_scores(m)
    total = m.sum()
    out: dict[str, Any] = {
        "precision": float(scores["precision"][1]),
        "recall": float(scores["recall"][1]),
        "f1": float(scores["f1"][1]),
        "iou": float(scores["iou"][1]),
        "oa": float(safe_div(np.trace(m), total)),
        "kappa": kappa(m),
    }
    for name in ("precision", "recall", "f1", "iou"):
        out[f"{name}_per_class"] = [float(v) for v in scores[name]]
    out["miou"] = float(scores["iou"].mean())
    out["mf1"] = float(scores["f1"].mean())
    out["confusion"] = [[int(round(v)) for v in row] for row in raw]
    return out
