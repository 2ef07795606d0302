"""How much of a training step is spent on loading and augmentation?

Trains ``fc_siam_diff`` on generated 256x256 pairs at batch 8 with the ``standard`` augmentation and measures,
in the real loop, the time the training process waits for the next batch, against the step time. Also reports
the serial cost of producing one batch (``num_workers=0``), i.e. the work the workers hide.

    python benchmarks/data_loading.py [--workers 2] [--steps 30] [--augment standard] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from changekit.data.datasets import ChangeDataset
from changekit.data.synthetic import synthesize
from changekit.data.transforms import build_transforms
from changekit.engine.datamodule import collate
from changekit.models import build_model


def measure(workers: int, steps: int, augment: str, size: int = 256, batch: int = 8) -> dict:
    """Wait-for-data and step times of a real training loop."""
    with tempfile.TemporaryDirectory() as tmp:
        root = synthesize(Path(tmp) / "d", n=batch * 8, size=size, seed=0)
        ds = ChangeDataset(root, transform=build_transforms(augment))
        model = build_model("fc_siam_diff")
        opt = torch.optim.AdamW(model.parameters(), 1e-3)

        def loader(nw: int) -> DataLoader:
            return DataLoader(ds, batch_size=batch, shuffle=True, num_workers=nw, collate_fn=collate,
                              persistent_workers=nw > 0, drop_last=True)

        serial = []
        it = iter(loader(0))
        for _ in range(4):
            t0 = time.perf_counter()
            next(it)
            serial.append(time.perf_counter() - t0)

        waits, computes = [], []
        dl = loader(workers)
        done = 0
        while done < steps + 2:
            it = iter(dl)
            while True:
                t0 = time.perf_counter()
                try:
                    batch_ = next(it)
                except StopIteration:
                    break
                t1 = time.perf_counter()
                out = model(batch_["image_a"], batch_["image_b"])
                loss = torch.nn.functional.cross_entropy(out.change, batch_["mask"], ignore_index=255)
                opt.zero_grad()
                loss.backward()
                opt.step()
                t2 = time.perf_counter()
                if done >= 2:  # skip worker start-up and first-step allocation
                    waits.append(t1 - t0)
                    computes.append(t2 - t1)
                done += 1
                if done >= steps + 2:
                    break
        wait, step = sum(waits), sum(computes)
        return {
            "workers": workers, "augment": augment, "size": size, "batch": batch, "steps": len(waits),
            "serial_batch_s": statistics.median(serial), "median_step_s": statistics.median(computes),
            "wait_fraction": wait / (wait + step), "threads": torch.get_num_threads(),
        }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--augment", default="standard")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    res = measure(args.workers, args.steps, args.augment)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print(f"fc_siam_diff {res['size']}x{res['size']} batch {res['batch']}, augment '{res['augment']}', "
          f"{res['workers']} workers, {res['steps']} steps, {res['threads']} torch threads")
    print(f"  training step (median)        {res['median_step_s'] * 1000:8.1f} ms")
    print(f"  one batch loaded serially     {res['serial_batch_s'] * 1000:8.1f} ms "
          f"({100 * res['serial_batch_s'] / res['median_step_s']:.1f} % of a step)")
    print(f"  waiting for data in the loop  {100 * res['wait_fraction']:8.1f} % of loop time")


if __name__ == "__main__":
    main()
