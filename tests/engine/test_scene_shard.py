"""One scene's rows shared by processes: each share runs the strips that touch its rows, and two gloo ranks under
torchrun write exactly the files one process writes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch
from scene_pairs import write_scene_pair
from torchrun_cli import run_cli

from changekit.config import resolve
from changekit.engine.checkpoint import save_checkpoint
from changekit.inference.scene import _run_strips
from changekit.inference.scene_shard import row_share
from changekit.inference.sliding import TilePredictor, stride_from
from changekit.models import build_model
from changekit.raster.reader import RasterReader


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("shard")
    write_scene_pair(ws / "a.tif", ws / "b.tif", (203, 171), [(slice(30, 150), slice(40, 120))])
    torch.manual_seed(0)
    save_checkpoint(ws / "model.ckpt", build_model("fc_siam_diff"), resolve({"model": {"name": "fc_siam_diff"}}))
    return ws


def test_row_share_covers_every_row_once() -> None:
    for height, world in ((203, 2), (7, 3), (5, 8), (1000, 7)):
        shares = [row_share(height, r, world) for r in range(world)]
        assert shares[0][0] == 0 and shares[-1][1] == height
        assert all(shares[i][1] == shares[i + 1][0] for i in range(world - 1))


class _Rows:
    """Collects written rows like a raster writer."""

    def __init__(self, height: int, width: int, dtype: Any) -> None:
        self.array = np.full((height, width), 77, dtype)
        self.written = np.zeros(height, int)

    def write(self, row: int, values: np.ndarray) -> None:
        self.array[row : row + values.shape[0]] = values
        self.written[row : row + values.shape[0]] += 1


@pytest.mark.parametrize("world", [2, 3, 5])
def test_shares_of_the_strip_loop_equal_the_whole_scene_bit_for_bit(ws: Path, world: int) -> None:
    torch.manual_seed(0)
    model = build_model("fc_siam_diff").eval()
    predictor = TilePredictor(model, 64, stride_from(64, 16, None), 3)
    norm = lambda raw, valid: torch.from_numpy(raw.astype(np.float32) / 255.0)  # noqa: E731

    def run(rows: tuple[int, int] | None) -> dict[str, _Rows]:
        outputs = {"mask": _Rows(203, 171, np.uint8), "prob": _Rows(203, 171, np.float32)}
        with RasterReader(ws / "a.tif") as ra, RasterReader(ws / "b.tif") as rb, torch.inference_mode():
            _run_strips(predictor, ra, rb, norm, norm, outputs, 0.5, rows=rows)
        return outputs

    whole = run(None)
    assert (whole["mask"].written == 1).all()
    merged = {k: np.zeros_like(v.array) for k, v in whole.items()}
    for rank in range(world):
        r0, r1 = row_share(203, rank, world)
        part = run((r0, r1))
        for key, rows in part.items():
            assert (rows.written[r0:r1] == 1).all() and rows.written[:r0].sum() == rows.written[r1:].sum() == 0
            merged[key][r0:r1] = rows.array[r0:r1]
    for key, rows in whole.items():
        assert np.array_equal(merged[key], rows.array), key  # the same sums in the same order: bit for bit


def _predict(ws: Path, out: str, nproc: int) -> subprocess.CompletedProcess:
    return run_cli(["predict", "--ckpt", str(ws / "model.ckpt"), "--a", str(ws / "a.tif"), "--b", str(ws / "b.tif"),
                    "--out", str(ws / out), "--tile", "64", "--overlap", "16", "--device", "cpu", "--prob",
                    "--summary"], nproc, debug=nproc > 1)  # --debug logs each rank's rows


def test_two_gloo_ranks_share_one_scene_and_write_what_one_process_writes(ws: Path) -> None:
    single = _predict(ws, "single", 1)
    assert single.returncode == 0, single.stderr[-3000:]
    dist = _predict(ws, "dist", 2)
    assert dist.returncode == 0, dist.stderr[-3000:]
    assert "rank 0 of 2: rows 0 to 100 of" in dist.stderr and "rank 1 of 2: rows 101 to 202 of" in dist.stderr
    assert dist.stdout.count("wrote 1 mask(s)") == 1  # rank 0 reports
    names = sorted(p.name for p in (ws / "single").iterdir())
    assert names == sorted(p.name for p in (ws / "dist").iterdir())  # no partial or temporary file is left
    tifs = [n for n in names if n.endswith(".tif")]
    assert len(tifs) == 2  # the mask and the probability
    for name in tifs:
        with rasterio.open(ws / "single" / name) as s, rasterio.open(ws / "dist" / name) as d:
            assert np.array_equal(s.read(), d.read(), equal_nan=True) and s.transform == d.transform
            assert d.profile["tiled"] and d.overviews(1) == s.overviews(1)
