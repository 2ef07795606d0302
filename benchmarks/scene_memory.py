"""Peak memory of ``changekit predict`` on generated RGB scenes: flat in scene size?

For each model and scene side, generates (once, under ``--work``) an RGB pair at 0.5 m, saves an untrained
checkpoint, and runs ``changekit predict`` in its own process, reporting that process's peak resident memory
(the kernel's ``ru_maxrss``) and wall time. Target (issue 12): at most 3 GB and flat in height and width.

    python benchmarks/scene_memory.py --work /tmp/scenes --sizes 5000 10000 20000 \\
        --models fc_siam_diff misgnet [--tile 512 --batch-size 4] [--json out.json]

A 20,000² pair takes 2 x 1.2 GB uncompressed (about 0.5 GB each as generated) and a long time on CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scene_common import changekit_cmd, make_checkpoint, make_pair  # noqa: E402


def measure_one(work: Path, model: str, size: int, tile: int, batch: int) -> dict:
    """Run one prediction in a child process that reports its own child's peak (a fresh ``RUSAGE_CHILDREN``)."""
    a, b = make_pair(work, size)
    ckpt = make_checkpoint(work, model)
    out = work / f"out_{model}_{size}.tif"
    cmd = [*changekit_cmd(), "predict", "--ckpt", str(ckpt), "--a", str(a), "--b", str(b), "--out", str(out),
           "--tile", str(tile), "--batch-size", str(batch), "--device", "cpu", "--overwrite"]
    probe = (f"import json,sys;sys.path.insert(0,{str(Path(__file__).resolve().parent)!r});"
             f"from scene_common import run_measured;w,p,_=run_measured({cmd!r});print(json.dumps([w,p]))")
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(res.stderr[-3000:])
    wall, peak = json.loads(res.stdout.strip().splitlines()[-1])
    return {"model": model, "size": size, "tile": tile, "batch_size": batch, "peak_rss_gib": round(peak, 3),
            "wall_s": round(wall, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", type=Path, required=True, help="folder for the generated scenes and outputs")
    p.add_argument("--sizes", type=int, nargs="+", default=[5000, 10000, 20000])
    p.add_argument("--models", nargs="+", default=["fc_siam_diff", "misgnet"])
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = p.parse_args()
    rows = []
    print("| model | scene | peak RSS | wall |\n|---|---|---|---|")
    for model in args.models:
        for size in args.sizes:
            row = measure_one(args.work, model, size, args.tile, args.batch_size)
            rows.append(row)
            print(f"| `{model}` | {size:,}² | {row['peak_rss_gib']:.2f} GiB | {row['wall_s']:.0f} s |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
