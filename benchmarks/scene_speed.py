"""Scene throughput of ``predict``: km²/min at 0.5 m, the pipeline's overhead, onnxruntime and bf16 against torch.

Modes (each on one generated RGB pair per size, an untrained checkpoint, in this process after a warm-up):

* ``overhead``: ``predict_scene`` end to end (read, normalise, tile, blend, write the COG) against the bare model
  on the same number of tiles in the same batches (random tiles, ``torch.inference_mode``). Overhead =
  pipeline time / bare time - 1. Target (issue 12): at most 15 %.
* ``onnx``: the same scene with ``--runtime onnx`` (exported at ``--tile``) against torch.
* ``amp``: ``--amp`` (bfloat16 autocast on CPU) against float32: throughput ratio (target >= 1.8x) and the share
  of mask pixels equal to float32's (target >= 99.5 %).

    python benchmarks/scene_speed.py --work /tmp/scenes --mode overhead --models fc_siam_diff misgnet --sizes 5000
    python benchmarks/scene_speed.py --work /tmp/scenes --mode onnx --models fc_siam_diff misgnet --sizes 5000
    python benchmarks/scene_speed.py --work /tmp/scenes --mode amp --models fc_siam_diff misgnet --sizes 5000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scene_common import km2_per_min, make_checkpoint, make_pair  # noqa: E402

from changekit.engine.options import PredictOptions  # noqa: E402
from changekit.engine.predict import PredictSession  # noqa: E402


def _predict(session: PredictSession, a: Path, b: Path, out: Path) -> float:
    """Seconds for one whole-scene prediction through the session's runner (the CLI's path, minus start-up)."""
    t0 = time.perf_counter()
    session.run(a.stem, a, b, {"mask": out})
    return time.perf_counter() - t0


def _mask(path: Path) -> np.ndarray:
    from changekit.raster.reader import RasterReader

    with RasterReader(path) as r:
        return r.read()[0]


def _bare(session: PredictSession, tiles: int, batch: int) -> float:
    """Seconds for the model alone on ``tiles`` random tiles in batches of ``batch``."""
    model, t, c = session.model, session.options.tile, getattr(session.model, "in_channels", 3)
    x = torch.randn(batch, c, t, t)
    with torch.inference_mode():
        model(x, x)  # warm-up
        t0 = time.perf_counter()
        for start in range(0, tiles, batch):
            n = min(batch, tiles - start)
            model(x[:n], x[:n])
    return time.perf_counter() - t0


def run(mode: str, work: Path, model: str, size: int, tile: int, overlap: int, batch: int) -> dict:
    a, b = make_pair(work, size)
    ckpt = make_checkpoint(work, model)
    opt = PredictOptions(tile=tile, overlap=overlap, batch_size=batch, device="cpu", overwrite=True).validate()
    torch_session = PredictSession(ckpt, opt)
    small_a, small_b = make_pair(work, 2 * tile)
    _predict(torch_session, small_a, small_b, work / "warmup.tif")
    t_torch = _predict(torch_session, a, b, work / f"torch_{model}_{size}.tif")
    row: dict = {"mode": mode, "model": model, "size": size, "tile": tile, "overlap": overlap, "batch_size": batch,
                 "torch_s": round(t_torch, 2), "torch_km2_per_min": round(km2_per_min(size, t_torch), 4)}
    if mode == "overhead":
        tiles = torch_session.tiles(a)
        t_bare = _bare(torch_session, tiles, batch)
        row.update(tiles=tiles, bare_s=round(t_bare, 2), overhead_pct=round(100 * (t_torch / t_bare - 1), 1))
    elif mode == "onnx":
        from changekit.engine.checkpoint import load_checkpoint
        from changekit.export.onnx_export import export_model

        onnx_path = work / f"{model}_{tile}.onnx"
        if not onnx_path.exists():
            m, cfg = load_checkpoint(ckpt)
            export_model(m, cfg, onnx_path, tile, source=ckpt)
        ort_session = PredictSession(onnx_path, PredictOptions(**{**vars(opt), "runtime": "onnx"}).validate())
        _predict(ort_session, small_a, small_b, work / "warmup.tif")
        t_ort = _predict(ort_session, a, b, work / f"onnx_{model}_{size}.tif")
        row.update(onnx_s=round(t_ort, 2), onnx_km2_per_min=round(km2_per_min(size, t_ort), 4),
                   onnx_speedup=round(t_torch / t_ort, 3))
    elif mode == "amp":
        amp_session = PredictSession(ckpt, PredictOptions(**{**vars(opt), "amp": True}).validate())
        _predict(amp_session, small_a, small_b, work / "warmup.tif")
        t_amp = _predict(amp_session, a, b, work / f"amp_{model}_{size}.tif")
        equal = float((_mask(work / f"amp_{model}_{size}.tif") == _mask(work / f"torch_{model}_{size}.tif")).mean())
        row.update(amp_s=round(t_amp, 2), amp_km2_per_min=round(km2_per_min(size, t_amp), 4),
                   amp_speedup=round(t_torch / t_amp, 3), equal_mask_pct=round(100 * equal, 3))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True)
    p.add_argument("--mode", choices=("overhead", "onnx", "amp"), required=True)
    p.add_argument("--models", nargs="+", default=["fc_siam_diff", "misgnet"])
    p.add_argument("--sizes", type=int, nargs="+", default=[5000])
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for model in args.models:
        for size in args.sizes:
            row = run(args.mode, args.work, model, size, args.tile, args.overlap, args.batch_size)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
