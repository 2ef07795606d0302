"""The model zoo's figures: ``changekit bench`` of every registered model, one table.

Each model runs in its own process (so that one model's peak memory does not count in the next one's), twice:
``changekit bench MODEL --batch 8 --json`` (inference and one training step at batch 8, GMACs per pair) and
``changekit bench MODEL --batch 1 --no-train --json`` (inference at batch 1). The JSON of every run is kept, and
the Markdown table printed (or written with ``--markdown``) is the one in ``docs/benchmarks.md`` and the README::

    python benchmarks/zoo_table.py --json zoo_bench.json --markdown zoo_bench.md
    python benchmarks/zoo_table.py --models fc_ef bit --iters 3    # a few models
    python benchmarks/zoo_table.py --table zoo_bench.json           # the table again from saved results

Figures depend on the machine and its load: run it on a quiet machine and give both with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: published figures beside ours, with their source (parameters in millions, GFLOPs as the source prints them)
PUBLISHED: dict[str, str] = {
    "clearscd": "5,780,499 params (seed-systems.md, the released code)",
    "misgnet": "17,674,850 params with keep_stage4 (seed-systems.md, the released code)",
    "changeclip_rn50": "117,540,238 params (seed-systems.md, the released code)",
    "changeclip_vitb16": "170,746,670 params (seed-systems.md, the released code)",
    "lightcdnet_s": "0.35 M, 1.65 G (open-cd README)",
    "lightcdnet": "1.32 M, 3.22 G (open-cd README)",
    "lightcdnet_l": "2.82 M, 5.94 G (open-cd README)",
    "tinycd": "0.28 M, 1.45 GFLOPs (TinyCD paper)",
}


def _bench(model: str, batch: int, train: bool, iters: int, warmup: int) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "changekit", "bench", model, "--batch", str(batch), "--iters", str(iters),
           "--warmup", str(warmup), "--json"]
    if not train:
        cmd.append("--no-train")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode:
        return {"model": model, "error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(done.stdout)


def _mib(value: float | None) -> str:
    return "" if value is None else f"{value:,.0f}"


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of :func:`main`'s results."""
    head = ("| model | task | parameters | GMACs / 256² pair | pairs/s, batch 8 | pairs/s, batch 1 | "
            "training step, batch 8 | peak MiB: inference b8 / training b8 | published |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---|")
    lines = [head]
    for row in rows:
        b8, b1 = row.get("batch8", {}), row.get("batch1", {})
        if "error" in b8:
            lines.append(f"| `{row['name']}` | | | | | | | | error: {b8['error']} |")
            continue
        step = b8.get("train_step_s")
        lines.append(
            f"| `{row['name']}` | {b8['task']} | {b8['params']:,} | {b8.get('gmacs_per_pair') or 0:.2f} | "
            f"{b8['infer_pairs_per_s']:.2f} | {b1.get('infer_pairs_per_s', float('nan')):.2f} | "
            f"{'' if step is None else f'{step:.2f} s'} | "
            f"{_mib(b8['infer_peak_mem_mib'])} / {_mib(b8.get('train_peak_mem_mib'))} | "
            f"{PUBLISHED.get(row['name'], '')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", help="registered names (default: all)")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every run's result here")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    parser.add_argument("--table", type=Path, help="print the table of a saved --json file and stop")
    args = parser.parse_args(argv)
    if args.table:
        if not args.table.is_file():
            parser.error(f"--table {args.table}: no such file (write one with --json)")
        rows = json.loads(args.table.read_text())["rows"]
    else:
        from changekit.models.registry import list_models

        names = args.models or list_models()
        rows = []
        for name in names:
            t0 = time.time()
            row = {"name": name, "batch8": _bench(name, 8, True, args.iters, args.warmup)}
            if "error" not in row["batch8"]:
                row["batch1"] = _bench(name, 1, False, args.iters, args.warmup)
            row["seconds"] = round(time.time() - t0, 1)
            print(f"{name}: {row['seconds']} s", file=sys.stderr, flush=True)
            rows.append(row)
        if args.json:
            load = os.getloadavg()
            args.json.write_text(json.dumps({"rows": rows, "loadavg_after": load,
                                             "date": time.strftime("%Y-%m-%d %H:%M")}, indent=1))
    text = table(rows)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
