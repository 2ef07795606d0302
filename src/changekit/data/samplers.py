"""Samplers whose order survives a kill: epoch ``e`` is the same permutation in a resumed run.

PyTorch's shuffling draws each epoch's order from one generator's running state, so a run resumed from a
checkpoint (a fresh generator) sees other orders, and a run resumed in the middle of an epoch replays the whole
epoch (Lightning then counts more steps than the schedule planned). Here epoch ``e``'s order is drawn from
``(seed, e)`` alone, and :meth:`ResumableShuffleSampler.resume_at` drops the samples of that epoch that were
already trained on before the kill.

:class:`ChangeBalancedSampler` (``data.sampler: change_balanced``) keeps that contract and centres a share of
the crops on changed pixels, for large images with sparse change (OSCD, xBD).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch.utils.data import Sampler

from ..errors import ConfigError

log = logging.getLogger(__name__)


class ResumableShuffleSampler(Sampler[int]):
    """A shuffling sampler with a per-epoch order fixed by ``(seed, epoch)`` and a mid-epoch resume point.

    Args:
        size: number of samples.
        seed: the run's seed.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size = int(size)
        self.seed = int(seed)
        self.epoch = 0
        self._resume: tuple[int, int] | None = None

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning before every epoch."""
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, samples_done: int) -> None:
        """Skip the first ``samples_done`` samples the next time epoch ``epoch`` is iterated."""
        self._resume = (int(epoch), max(0, int(samples_done)))

    def order(self, epoch: int) -> list[int]:
        """The full order of ``epoch``."""
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(int(epoch),)))
        return rng.permutation(self.size).tolist()

    def __iter__(self) -> Iterator[Any]:
        order = self.order(self.epoch)
        if self._resume is not None and self._resume[0] == self.epoch:
            order = order[self._resume[1]:]
            self._resume = None
        return iter(order)

    def __len__(self) -> int:
        return self.size


# ------------------------------------------------------------------------------------- change-aware sampling

SAMPLERS = ("uniform", "change_balanced")
MAX_POINTS = 4096  # changed pixels kept per image as crop centres (a deterministic subsample)


@dataclass
class ChangeIndex:
    """Where the change is in a training set: per image the changed and valid pixel counts and up to
    :data:`MAX_POINTS` changed pixel positions (row, col), read from the labels once.

    Used by :class:`ChangeBalancedSampler` for crop centres and by ``loss.pos_weight: auto`` /
    ``class_weights: auto`` for the change share.
    """

    changed: np.ndarray  # (N,) int64
    valid: np.ndarray  # (N,) int64
    points: list[np.ndarray]  # N arrays of (k, 2) int32 rows and columns

    @property
    def share(self) -> float:
        """Changed pixels / labelled (not ignored) pixels over the whole set."""
        total = int(self.valid.sum())
        return float(self.changed.sum()) / total if total else 0.0

    def sampled_share(self, change_share: float) -> float:
        """The change share a loss sees under :class:`ChangeBalancedSampler` with ``change_share``: expected
        changed pixels over expected labelled pixels of a sample, a ``change_share`` of samples drawn from the
        images holding change, the rest uniformly. Exact for pre-tiled data; a lower bound for crops centred on
        change (a crop around a changed pixel holds more change than its image on average)."""
        with_change = self.changed > 0
        if not with_change.any():
            return self.share
        c = float(change_share)  # images holding change have valid pixels, so ``valid`` below is positive
        changed = (1 - c) * self.changed.mean() + c * self.changed[with_change].mean()
        valid = (1 - c) * self.valid.mean() + c * self.valid[with_change].mean()
        return float(changed / valid)

    @classmethod
    def of(cls, dataset: Any) -> ChangeIndex:
        """The index of a :class:`~changekit.data.datasets.ChangeDataset` (computed once, kept on it)."""
        cached = getattr(dataset, "_change_index", None)
        if isinstance(cached, ChangeIndex):
            return cached
        changed, valid, points = [], [], []
        for i in range(len(dataset)):
            mask = dataset.change_mask(i)
            rows, cols = np.nonzero(mask == 1)
            changed.append(rows.size)
            valid.append(int((mask != 255).sum()))
            if rows.size > MAX_POINTS:
                keep = np.random.default_rng(i).choice(rows.size, MAX_POINTS, replace=False)
                rows, cols = rows[keep], cols[keep]
            points.append(np.stack([rows, cols], 1).astype(np.int32))
        index = cls(np.asarray(changed, np.int64), np.asarray(valid, np.int64), points)
        log.info("change index: %d of %d images hold change; change share %.4f", int((index.changed > 0).sum()),
                 len(index.changed), index.share)
        dataset._change_index = index
        return index


class ChangeBalancedSampler(ResumableShuffleSampler):
    """Draws a share of the samples as crops centred on changed pixels, the rest as a uniform shuffle.

    An epoch has as many samples as the set. Each is, with probability ``change_share``, ``(i, (row, col))``:
    an image ``i`` drawn uniformly among those holding change and one of its changed pixels, which the
    dataset passes to the ``random_crop`` op as the crop's centre (jittered by up to a quarter of the crop,
    so that change is not always in the middle); otherwise ``(i, None)`` from the epoch's uniform shuffle. On
    tiled data without a crop this oversamples the tiles that hold change. Epoch ``e`` is drawn from
    ``(seed, e)`` alone, and a mid-epoch resume skips the samples already trained on, as the parent class.

    Args:
        index: the training set's :class:`ChangeIndex`.
        seed: the run's seed.
        change_share: fraction of samples centred on change (0..1).
    """

    def __init__(self, index: ChangeIndex, seed: int, change_share: float = 0.5) -> None:
        super().__init__(len(index.changed), seed)
        if not 0.0 <= float(change_share) <= 1.0:
            raise ConfigError(f"data.change_share: {change_share!r} must be in 0..1")
        self.index = index
        self.change_share = float(change_share)
        self._with_change = np.flatnonzero(index.changed > 0)

    def order(self, epoch: int) -> list[tuple[int, tuple[int, int] | None]]:  # type: ignore[override]
        """The full order of ``epoch``: ``(index, crop centre or None)`` pairs."""
        uniform = super().order(epoch)
        rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(int(epoch), 1)))
        out: list[tuple[int, tuple[int, int] | None]] = []
        for i in uniform:
            if self._with_change.size and rng.random() < self.change_share:
                j = int(self._with_change[rng.integers(self._with_change.size)])
                row, col = self.index.points[j][rng.integers(len(self.index.points[j]))]
                out.append((j, (int(row), int(col))))
            else:
                out.append((int(i), None))
        return out
