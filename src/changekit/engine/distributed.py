"""Several processes (GPUs, machines) sharing one pair list: who am I, which pairs are mine, gather the results.

A pair list splits cleanly: each pair is predicted by exactly one process, with the same code and settings as a
single-process run, so every output file is written once and equals the single-process result bit for bit.
Processes only exchange their summary rows at the end (``gather_object`` over a gloo group, which works on CPU
and GPU machines alike and needs no tensor traffic), and rank 0 writes the run's summary table.

The launcher sets the environment: ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) or SLURM's ``srun`` (``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID``; ``MASTER_ADDR`` and
``MASTER_PORT`` exported by the batch script). Without them the run is one process and nothing here does anything.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

log = logging.getLogger(__name__)


def _env_int(*names: str) -> int | None:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            return int(value)
    return None


@dataclass
class Ranks:
    """This process's place in a distributed run.

    Attributes:
        rank, world: this process's index and the number of processes.
        local_rank: index among the processes of this machine (picks the GPU).
        started: this object initialised the process group (and so closes it).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    started: bool = False

    @classmethod
    def from_env(cls, timeout_s: float = 3600.0) -> Ranks:
        """Join the process group the launcher describes (a single process when there is none)."""
        world = _env_int("WORLD_SIZE", "SLURM_NTASKS") or 1
        if world <= 1:
            return cls()
        rank = _env_int("RANK", "SLURM_PROCID") or 0
        local = _env_int("LOCAL_RANK", "SLURM_LOCALID") or 0
        import torch.distributed as dist

        started = False
        if not dist.is_initialized():
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29500")
            dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
            started = True
        log.info("distributed prediction: rank %d of %d (local %d)", rank, world, local)
        return cls(rank, world, local, started)

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def device(self, requested: str | None) -> str | None:
        """The device of this rank: ``requested`` if given, else its own GPU (``cuda:LOCAL_RANK``) when any."""
        if requested is not None or not self.distributed or not torch.cuda.is_available():
            return requested
        return f"cuda:{self.local_rank % torch.cuda.device_count()}"

    def share(self, items: list[Any]) -> list[Any]:
        """This rank's items: every ``world``-th one from ``rank`` (balanced to within one)."""
        return items[self.rank :: self.world]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` on rank 0 (in rank order), ``None`` on the others."""
        if not self.distributed:
            return [obj]
        import torch.distributed as dist

        out: list[Any] | None = [None] * self.world if self.rank == 0 else None
        dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Leave the process group if this object joined it."""
        if self.started:
            import torch.distributed as dist

            dist.destroy_process_group()
            self.started = False
