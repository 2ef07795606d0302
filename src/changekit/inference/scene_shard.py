"""The rows of one scene shared by several processes (``torchrun`` / ``srun``), with one output written once.

Each rank predicts one band of output rows (:func:`row_share`): it runs the strips whose tiles touch those rows,
in the same order as a single process, so every pixel is the same sum of the same tiles in the same order and
the result equals a single-process run bit for bit (the few strips at a band's edge are computed by both
neighbours). A rank writes its rows into a partial array (``.npy``, memory-mapped, on the output's filesystem,
which all ranks must share); rank 0 then copies the bands in order into the real outputs (Cloud Optimized
GeoTIFFs) and removes the partials. Ranks exchange only the output folder and keys (``broadcast_object_list``)
and two barriers per scene: no tensor traffic, so CPU machines work too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..engine.distributed import Ranks

#: dtype of each output kind's partial rows (the writers' own dtypes)
PARTIAL_DTYPES = {"mask": np.uint8, "prob": np.float32, "sem_a": np.uint8, "sem_b": np.uint8}
#: rows copied per write when rank 0 merges the partials (bounded memory)
MERGE_ROWS = 512


def row_share(height: int, rank: int, world: int) -> tuple[int, int]:
    """Output rows ``[r0, r1)`` of ``rank`` among ``world`` (contiguous, balanced to within one row)."""
    return height * rank // world, height * (rank + 1) // world


class RowSink:
    """Rows of one output band, written by the strip loop like a raster writer (``write(row, array)``)."""

    def __init__(self, path: Path, first_row: int, rows: int, width: int, dtype: Any) -> None:
        self.path, self.first_row = path, first_row
        self.array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(rows, width))

    def write(self, row: int, values: np.ndarray) -> None:
        self.array[row - self.first_row : row - self.first_row + values.shape[0]] = values

    def close(self) -> None:
        self.array.flush()
        del self.array


@dataclass
class SceneShard:
    """One scene's share for this rank, and where the ranks put their partial rows.

    Attributes:
        ranks: the process group.
        folder: rank 0's output folder (broadcast), where the partials go.
        keys: the outputs rank 0 writes (broadcast, so every rank computes the same ones).
        tag: a name unique to this scene and run.
    """

    ranks: Ranks
    folder: Path
    keys: list[str]
    tag: str

    @classmethod
    def agree(cls, ranks: Ranks, folder: Path | None, keys: Iterable[str] | None, tag: str) -> SceneShard:
        """Rank 0's folder and output keys, known to every rank (a collective call: every rank makes it)."""
        import torch.distributed as dist

        box = [(str(folder), list(keys or []), f"{tag}-{os.getpid()}") if ranks.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        folder_s, keys_l, tag_s = box[0]
        return cls(ranks, Path(folder_s), keys_l, tag_s)

    def rows(self, height: int) -> tuple[int, int]:
        return row_share(height, self.ranks.rank, self.ranks.world)

    def partial(self, key: str, rank: int) -> Path:
        return self.folder / f".{self.tag}.rank{rank}.{key}.npy"

    def sinks(self, height: int, width: int) -> dict[str, RowSink]:
        """This rank's partial outputs."""
        r0, r1 = self.rows(height)
        return {k: RowSink(self.partial(k, self.ranks.rank), r0, r1 - r0, width, PARTIAL_DTYPES[k])
                for k in self.keys}

    def merge(self, writers: dict[str, Any], height: int) -> None:
        """Rank 0: every rank's rows into ``writers``, in order; the partials are removed."""
        try:
            for rank in range(self.ranks.world):
                r0, r1 = row_share(height, rank, self.ranks.world)
                for key, writer in writers.items():
                    part = np.load(self.partial(key, rank), mmap_mode="r")
                    for start in range(0, r1 - r0, MERGE_ROWS):
                        writer.write(r0 + start, np.asarray(part[start : start + MERGE_ROWS]))
                    del part
        finally:
            self.remove()

    def remove(self) -> None:
        for rank in range(self.ranks.world):
            for key in self.keys:
                self.partial(key, rank).unlink(missing_ok=True)
