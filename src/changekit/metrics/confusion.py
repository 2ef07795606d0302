"""One streaming confusion-matrix core for every metric in changekit.

All metrics (binary, semantic, SCD) are derived from exact integer counts, so that streaming over batches,
merging per-worker matrices and summing across DDP processes give exactly the one-shot result. Rows are the
ground truth, columns the prediction (the convention of ClearSCD, MISGNet and ChangeCLIP).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

MatrixLike = Any  # ConfusionMatrix | torch.Tensor | np.ndarray | nested lists


class ConfusionMatrix:
    """Streaming ``(n, n)`` int64 confusion matrix (rows = ground truth, columns = prediction).

    Pixels whose target equals ``ignore_index`` or lies outside ``[0, num_classes)`` are dropped. The matrix
    lives on the device of the last update, so GPU batches are counted without a host copy.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = None if ignore_index is None else int(ignore_index)
        self._mat = torch.zeros((self.num_classes, self.num_classes), dtype=torch.int64)

    @property
    def matrix(self) -> torch.Tensor:
        """The ``(n, n)`` int64 counts; rows = ground truth, columns = prediction."""
        return self._mat

    def reset(self) -> None:
        """Zero the counts (start of a new epoch or evaluation)."""
        self._mat = torch.zeros_like(self._mat)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> ConfusionMatrix:
        """Count one batch of integer predictions against targets of the same shape.

        Raises:
            ValueError: shapes differ, or a prediction at a counted pixel lies outside ``[0, num_classes)``
                (it would silently land in another cell otherwise).
        """
        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target, device=pred.device)
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {tuple(pred.shape)} != target shape {tuple(target.shape)}")
        if pred.is_floating_point() or target.is_floating_point():
            raise ValueError("pred and target must be integer tensors (class indices), not floating point")
        n = self.num_classes
        pred = pred.reshape(-1).long()
        target = target.reshape(-1).long()
        valid = (target >= 0) & (target < n)
        if self.ignore_index is not None and 0 <= self.ignore_index < n:
            valid &= target != self.ignore_index
        pred, target = pred[valid], target[valid]
        if pred.numel() and bool(((pred < 0) | (pred >= n)).any()):
            bad = torch.unique(pred[(pred < 0) | (pred >= n)])[:10].tolist()
            raise ValueError(f"prediction values {bad} are outside [0, {n})")
        counts = torch.bincount(target * n + pred, minlength=n * n).reshape(n, n)
        if self._mat.device != counts.device:
            self._mat = self._mat.to(counts.device)
        self._mat += counts
        return self

    def _check_compatible(self, other: ConfusionMatrix) -> None:
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"cannot merge ConfusionMatrix with {type(other).__name__}")
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                f"cannot merge ConfusionMatrix(num_classes={other.num_classes}, ignore_index={other.ignore_index})"
                f" into ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index})"
            )

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix's counts in place (per-worker or per-split accumulation); returns ``self``."""
        self._check_compatible(other)
        self._mat += other.matrix.to(self._mat.device)
        return self

    def __add__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self._check_compatible(other)
        out = ConfusionMatrix(self.num_classes, self.ignore_index)
        out._mat = self._mat.clone()
        return out.merge(other)

    def copy(self) -> ConfusionMatrix:
        """Independent copy (same counts, same device)."""
        out = ConfusionMatrix(self.num_classes, self.ignore_index)
        out._mat = self._mat.clone()
        return out

    def sync(self) -> ConfusionMatrix:
        """Sum the counts over all DDP processes in place; a no-op when torch.distributed is not initialised.

        Call it once, after the last update of an evaluation: calling it twice would count every process's
        pixels again.
        """
        self._mat = all_reduce_sum(self._mat)
        return self

    def to_numpy(self) -> np.ndarray:
        """The counts as an int64 numpy array on the host."""
        return self._mat.detach().cpu().numpy().astype(np.int64)

    def tolist(self) -> list[list[int]]:
        """The counts as nested Python ints (JSON-ready)."""
        return [[int(v) for v in row] for row in self.to_numpy()]

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, ignore_index={self.ignore_index}, "
            f"total={int(self._mat.sum())})"
        )


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Return ``tensor`` summed over all DDP processes (the tensor itself when not distributed).

    NCCL only reduces CUDA tensors, so a CPU tensor is moved to the current CUDA device for the reduction
    and brought back.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    device = tensor.device
    work = tensor.clone()
    if dist.get_backend() == "nccl" and work.device.type != "cuda":
        work = work.to(torch.device("cuda", torch.cuda.current_device()))
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    logger.debug("all-reduced a %s tensor over %d processes", tuple(work.shape), dist.get_world_size())
    return work.to(device)


def as_numpy_matrix(cm: MatrixLike, square: int | None = None) -> np.ndarray:
    """Any confusion-matrix-like input as a float64 numpy array (validated square, optionally of size ``square``)."""
    if isinstance(cm, ConfusionMatrix):
        arr = cm.to_numpy()
    elif isinstance(cm, torch.Tensor):
        arr = cm.detach().cpu().numpy()
    else:
        arr = np.asarray(cm)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"confusion matrix must be square 2-D, got shape {arr.shape}")
    if square is not None and arr.shape[0] != square:
        raise ValueError(f"expected a {square}x{square} confusion matrix, got {arr.shape[0]}x{arr.shape[1]}")
    return arr.astype(np.float64)


def safe_div(num: np.ndarray | float, den: np.ndarray | float) -> np.ndarray:
    """``num / den`` with 0/0 (and x/0) defined as 0.0, element-wise."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den != 0)
    return out


def kappa(cm: MatrixLike) -> float:
    """Cohen's kappa ``(po - pe) / (1 - pe)``; 0.0 for an empty matrix or when ``pe == 1``.

    ``po = trace / N`` and ``pe = sum_i row_i * col_i / N^2``, as in Bi-SRNet's and ClearSCD's ``cal_kappa``.
    """
    m = as_numpy_matrix(cm)
    total = m.sum()
    if total == 0:
        return 0.0
    po = np.trace(m) / total
    pe = float(m.sum(1) @ m.sum(0)) / total**2
    if pe == 1:
        return 0.0
    return float((po - pe) / (1 - pe))


def per_class_scores(m: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and IoU of a float matrix (0/0 -> 0.0)."""
    tp = np.diag(m)
    fp = m.sum(0) - tp
    fn = m.sum(1) - tp
    return {
        "precision": safe_div(tp, tp + fp),
        "recall": safe_div(tp, tp + fn),
        "f1": safe_div(2 * tp, 2 * tp + fp + fn),
        "iou": safe_div(tp, tp + fp + fn),
    }
