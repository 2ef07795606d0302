"""Metrics for binary and semantic change detection, all derived from one integer confusion-matrix core.

See ``docs/metrics.md`` for every formula, the defaults and where ClearSCD's variants depart from the
standard SECOND definitions.
"""

from __future__ import annotations

from .binary import BINARY_KEYS, binary_metrics
from .confusion import ConfusionMatrix, all_reduce_sum, kappa, safe_div
from .scd import SCDMetrics
from .semantic import mean_iou_over_seen, second_metrics, sek, semantic_metrics

__all__ = [
    "BINARY_KEYS",
    "ConfusionMatrix",
    "SCDMetrics",
    "all_reduce_sum",
    "binary_metrics",
    "kappa",
    "mean_iou_over_seen",
    "safe_div",
    "second_metrics",
    "sek",
    "semantic_metrics",
]
