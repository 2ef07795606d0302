"""Progress of a prediction over many tiles and pairs: tiles/s, pairs done and an ETA, as log lines.

A scene list can run for hours; the person (or the cluster log) watching it needs to know how fast it goes and
when it ends. :class:`Progress` counts the tiles the model has seen through a forward hook (so it works for every
model and runtime without touching the tiling code), and logs one line at most every ``every`` seconds on the
``changekit.progress`` logger, which the CLI shows on stderr. The ETA divides the tiles still to do (known up
front from each pair's size and the tile grid) by the rate measured so far.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from torch import nn

log = logging.getLogger("changekit.progress")


def duration(seconds: float) -> str:
    """``'1h02m'``, ``'4m05s'``, ``'12s'``."""
    s = max(int(round(seconds)), 0)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def show_progress() -> None:
    """Print progress lines on stderr (the CLI's choice; the library only logs them)."""
    if not any(getattr(h, "_changekit_progress", False) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._changekit_progress = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


class Progress:
    """Counts tiles and pairs and logs the rate and the time left.

    Args:
        total_pairs: pairs this process will run.
        total_tiles: tiles of those pairs (0 when unknown: no ETA is shown).
        every: seconds between two log lines.
        prefix: put before each line (e.g. ``'rank 1/4 '``).
    """

    def __init__(self, total_pairs: int, total_tiles: int = 0, every: float = 5.0, prefix: str = "") -> None:
        self.total_pairs, self.total_tiles, self.every, self.prefix = total_pairs, total_tiles, every, prefix
        self.pairs = self.tiles = 0
        self.start = self._last = time.perf_counter()

    @property
    def rate(self) -> float:
        """Tiles per second since the start."""
        elapsed = time.perf_counter() - self.start
        return self.tiles / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """The current state as one line."""
        parts = [f"{self.prefix}pairs {self.pairs}/{self.total_pairs}"]
        if self.total_tiles:
            parts.append(f"tiles {self.tiles}/{self.total_tiles}")
        else:
            parts.append(f"tiles {self.tiles}")
        rate = self.rate
        parts.append(f"{rate:.1f} tiles/s")
        if self.total_tiles and rate > 0:
            parts.append(f"ETA {duration(max(self.total_tiles - self.tiles, 0) / rate)}")
        return " | ".join(parts)

    def add_tiles(self, n: int) -> None:
        """Count ``n`` more tiles; log when the last line is older than ``every`` seconds."""
        self.tiles += n
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            log.info("%s", self.line())

    def pair_done(self, skip_tiles: int = 0) -> None:
        """One more pair finished (or skipped / failed: ``skip_tiles`` leaves the total, so the ETA stays fair)."""
        self.pairs += 1
        self.total_tiles = max(self.total_tiles - skip_tiles, self.tiles)
        log.info("%s", self.line())

    @contextlib.contextmanager
    def counting(self, model: nn.Module) -> Iterator[None]:
        """Count the tiles of every forward call of ``model`` within the block (a forward hook)."""

        def hook(_module: nn.Module, args: tuple, _out: object) -> None:
            if args and hasattr(args[0], "shape"):
                self.add_tiles(int(args[0].shape[0]))

        handle = model.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()
