"""Distributed prediction of a pair list: two gloo processes on CPU (torchrun) write exactly what one process
writes, each pair once, and rank 0's table lists every pair."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from scene_pairs import write_scene_pair
from torchrun_cli import run_cli

from changekit.config import resolve
from changekit.engine.checkpoint import save_checkpoint
from changekit.engine.distributed import Ranks
from changekit.models import build_model

#: Summary keys that legitimately differ between runs (times, and the output paths' folder).
VARYING = {"timings_s", "tiles_per_s", "outputs"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("dist")
    rng = np.random.default_rng(0)
    rows = ["a,b"]
    for i in range(5):
        write_scene_pair(ws / f"p{i}_a.tif", ws / f"p{i}_b.tif", (96, 80), [(slice(10 + i, 50), slice(20, 60))], rng)
        rows.append(f"p{i}_a.tif,p{i}_b.tif")
    (ws / "pairs.csv").write_text("\n".join(rows) + "\n")
    import torch

    torch.manual_seed(0)
    save_checkpoint(ws / "model.ckpt", build_model("fc_siam_diff"), resolve({"model": {"name": "fc_siam_diff"}}))
    return ws


def _predict(ws: Path, out: str, nproc: int) -> subprocess.CompletedProcess:
    return run_cli(["predict", "--ckpt", str(ws / "model.ckpt"), "--pairs", str(ws / "pairs.csv"), "--out",
                    str(ws / out), "--tile", "64", "--overlap", "16", "--device", "cpu"], nproc)


def test_two_gloo_ranks_equal_one_process(ws: Path) -> None:
    single = _predict(ws, "single", 1)
    assert single.returncode == 0, single.stderr[-3000:]
    dist = _predict(ws, "dist", 2)
    assert dist.returncode == 0, dist.stderr[-3000:]
    assert "rank 0/2" in dist.stderr and "rank 1/2" in dist.stderr  # both ranks worked
    assert dist.stdout.count("5 done, 0 skipped, 0 failed") == 1  # one table, from rank 0
    names = sorted(p.name for p in (ws / "single").iterdir())
    assert names == sorted(p.name for p in (ws / "dist").iterdir())
    masks = [n for n in names if n.endswith(".tif")]
    assert len(masks) == 5
    for name in masks:
        with rasterio.open(ws / "single" / name) as s, rasterio.open(ws / "dist" / name) as d:
            assert np.array_equal(s.read(), d.read()) and s.transform == d.transform
    for name in (n for n in names if n.endswith("_summary.json")):
        s, d = (json.loads((ws / f / name).read_text()) for f in ("single", "dist"))
        assert {k: v for k, v in s.items() if k not in VARYING} == {k: v for k, v in d.items() if k not in VARYING}
    rows = [r.split(",")[:2] for r in (ws / "dist" / "pairs_summary.csv").read_text().splitlines()[1:]]
    assert rows == [[f"p{i}_a", "done"] for i in range(5)]
    again = _predict(ws, "dist", 2)  # a distributed rerun skips what is finished
    assert again.returncode == 0 and "0 done, 5 skipped, 0 failed" in again.stdout, again.stderr[-2000:]


def test_ranks_share_round_robin_and_pick_their_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Ranks(rank=1, world=3, local_rank=1)
    assert r.share(list(range(8))) == [1, 4, 7]
    assert r.device("cpu") == "cpu"
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert Ranks.from_env() == Ranks()  # no launcher: one process, nothing initialised
