"""Shared pieces of the scene benchmarks: generated RGB scene pairs and untrained checkpoints.

Scenes are written strip by strip (memory: one strip), as tiled, deflate-compressed GeoTIFFs in UTM 33N at 0.5 m,
date B a copy of A with inverted rectangles, so the benchmarks never hold a whole scene themselves. The weights
are a fixed-seed initialisation: speed and memory do not depend on training.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PIXEL_M = 0.5


def make_pair(folder: Path, size: int, seed: int = 0) -> tuple[Path, Path]:
    """``folder/a_<size>.tif`` and ``b_<size>.tif`` (3-band uint8, ``size`` x ``size``), made once and reused."""
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.windows import Window

    folder.mkdir(parents=True, exist_ok=True)
    pa, pb = folder / f"a_{size}.tif", folder / f"b_{size}.tif"
    if pa.exists() and pb.exists():
        return pa, pb
    profile = dict(driver="GTiff", height=size, width=size, count=3, dtype="uint8", compress="deflate", tiled=True,
                   blockxsize=512, blockysize=512, BIGTIFF="IF_SAFER", crs=CRS.from_epsg(32633),
                   transform=Affine(PIXEL_M, 0, 500000, 0, -PIXEL_M, 5_000_000))
    rng = np.random.default_rng(seed)
    step = 512
    with rasterio.open(pa, "w", **profile) as da, rasterio.open(pb, "w", **profile) as db:
        for r0 in range(0, size, step):
            h = min(step, size - r0)
            yy = np.arange(r0, r0 + h)[:, None]
            xx = np.arange(size)[None, :]
            base = (np.sin(yy / 37.0) * np.cos(xx / 53.0) * 60 + 120).astype(np.float32)
            a = np.clip(base[None] + rng.normal(0, 12, (3, h, size)), 0, 255).astype(np.uint8)
            b = a.copy()
            blocks = ((yy // 700) % 3 == 1) & ((xx // 900) % 4 == 2)  # changed rectangles
            b[:, blocks] = 255 - b[:, blocks]
            da.write(a, window=Window(0, r0, size, h))
            db.write(b, window=Window(0, r0, size, h))
    return pa, pb


def make_checkpoint(folder: Path, model: str) -> Path:
    """An untrained (seed 0) checkpoint of ``model`` with the default config."""
    import torch

    from changekit.config import resolve
    from changekit.engine.checkpoint import save_checkpoint
    from changekit.models import build_model

    path = folder / f"{model}.ckpt"
    if not path.exists():
        torch.manual_seed(0)
        save_checkpoint(path, build_model(model), resolve({"model": {"name": model}}))
    return path


def run_measured(args: list[str]) -> tuple[float, float, str]:
    """Run a command; returns (wall seconds, its peak RSS in GiB, stderr tail). Each call must be the only child
    whose peak matters: ``RUSAGE_CHILDREN`` keeps the largest peak of all waited-for children."""
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    return wall, peak, proc.stderr[-500:]


def changekit_cmd() -> list[str]:
    """``python -m changekit`` of this interpreter (the installed CLI, same environment)."""
    return [sys.executable, "-m", "changekit"]


def km2_per_min(size: int, seconds: float) -> float:
    """Scene throughput: area of a ``size`` x ``size`` scene at :data:`PIXEL_M` per minute."""
    return (size * PIXEL_M) ** 2 / 1e6 / (seconds / 60)
