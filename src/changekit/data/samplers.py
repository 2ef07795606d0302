"""Samplers whose order survives a kill: epoch ``e`` is the same permutation in a resumed run.

PyTorch's shuffling draws each epoch's order from one generator's running state, so a run resumed from a
checkpoint (a fresh generator) sees other orders, and a run resumed in the middle of an epoch replays the whole
epoch (Lightning then counts more steps than the schedule planned). Here epoch ``e``'s order is drawn from
``(seed, e)`` alone, and :meth:`ResumableShuffleSampler.resume_at` drops the samples of that epoch that were
already trained on before the kill.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


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

    def __iter__(self) -> Iterator[int]:
        order = self.order(self.epoch)
        if self._resume is not None and self._resume[0] == self.epoch:
            order = order[self._resume[1]:]
            self._resume = None
        return iter(order)

    def __len__(self) -> int:
        return self.size
