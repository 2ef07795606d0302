"""MISGNet: changekit's implementation against the authors' code, side by side in one process.

Usage::

    python benchmarks/misgnet_vs_official.py --official /path/to/MISGNet [--threads 2] [--repeats 5]

``--official`` is a checkout of github.com/JackLiu-97/MISGNet (not part of this repository). It is imported as
is and patched in memory only so that it builds: ``MutualModule0`` accepts the ``dropout`` argument that
``MutualNet`` passes (the released code raises ``TypeError``), and the hard-coded ``D:\\Download\\pvt_v2_b1.pth``
load in ``MyNet.__init__`` returns an empty dict (random backbone; weights do not change speed).

The script (1) copies the official model's weights into changekit's ``misgnet`` through the checkpoint
converter's key mapping and checks that both give the same logits in eval mode, then (2) times, alternating the
two models to share the machine's load fairly: inference pairs/s at 256x256 batch 8 and batch 1 (eval,
``torch.inference_mode``) and a training step at batch 8 (forward, 0.5 focal + dice loss, backward, AdamW).
Each figure is the median of ``--repeats`` timed runs after one warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch


def load_official(root: Path) -> torch.nn.Module:
    """Build the authors' ``MyNet(3, 2)`` from a checkout, patched in memory only to build."""
    sys.path.insert(0, str(root))
    import models.mynet.MGL.basicnet5 as bn5  # type: ignore[import-not-found]

    init = bn5.MutualModule0.__init__

    def patched_init(self: Any, dim: int, BatchNorm: Any = torch.nn.BatchNorm2d, dropout: float = 0.1) -> None:  # noqa: N803
        init(self, dim, BatchNorm)

    bn5.MutualModule0.__init__ = patched_init
    from models.mynet import mynet4  # type: ignore[import-not-found]

    real_load = torch.load
    torch.load = lambda *a, **k: {}  # the hard-coded D:\Download\pvt_v2_b1.pth
    try:
        model = mynet4.MyNet(3, 2)
    finally:
        torch.load = real_load
    return model


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="checkout of JackLiu-97/MISGNet")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--skip-train", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import changekit.models.misgnet  # noqa: F401  (registers misgnet)
    from changekit.losses import build_loss
    from changekit.models import build_model
    from changekit.models.misgnet.convert import map_official_keys

    torch.manual_seed(0)
    ours = build_model("misgnet")
    official = load_official(args.official)

    # 1. equivalence: official weights -> converter key mapping -> our model
    official.eval()
    state = {k: v for k, v in official.state_dict().items()}
    ours.load_state_dict(map_official_keys(state))
    ours.eval()
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(2, 3, args.size, args.size, generator=gen) for _ in range(2))
    with torch.inference_mode():
        ref = official(a, b)
        got = ours(a, b).change
    diff = float((ref - got).abs().max())
    agree = float((ref.argmax(1) == got.argmax(1)).float().mean())
    result: dict[str, Any] = {"max_abs_logit_diff": diff, "argmax_agreement": agree,
                              "threads": torch.get_num_threads(), "size": args.size}
    print(f"equivalence: max |logit diff| {diff:.2e}, argmax agreement {agree:.5f}", flush=True)

    # 2. speed, alternating the two models
    loss_fn = build_loss([{"name": "focal", "weight": 0.5, "alpha": 0.2, "gamma": 2},
                          {"name": "dice", "mode": "multiclass"}])
    from changekit.models.outputs import ChangeOutput

    def infer(model: torch.nn.Module, n: int, is_ours: bool) -> Callable[[], Any]:
        x, y = (torch.randn(n, 3, args.size, args.size, generator=gen) for _ in range(2))

        def run() -> Any:
            with torch.inference_mode():
                return model(x, y)
        return run

    def train_step(model: torch.nn.Module, is_ours: bool) -> Callable[[], Any]:
        x, y = (torch.randn(8, 3, args.size, args.size, generator=gen) for _ in range(2))
        mask = (torch.rand(8, args.size, args.size, generator=gen) > 0.9).long()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=4e-4, weight_decay=1e-4)

        def run() -> None:
            out = model(x, y)
            out = out if is_ours else ChangeOutput(change=out)
            loss, _ = loss_fn(out, {"mask": mask})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return run

    for label, n in (("infer_b8", 8), ("infer_b1", 1)):
        for name, model, is_ours in (("official", official, False), ("changekit", ours, True)):
            model.eval()
            t = median_time(infer(model, n, is_ours), args.repeats)
            result[f"{name}_{label}_pairs_per_s"] = n / t
            print(f"{name:9s} {label}: {n / t:.2f} pairs/s ({t * 1000:.0f} ms per batch)", flush=True)
    if not args.skip_train:
        for name, model, is_ours in (("official", official, False), ("changekit", ours, True)):
            model.train()
            t = median_time(train_step(model, is_ours), max(1, args.repeats // 2))
            result[f"{name}_train_step_b8_s"] = t
            print(f"{name:9s} train step b8: {t:.2f} s", flush=True)
    result["speedup_infer_b8"] = result["changekit_infer_b8_pairs_per_s"] / result["official_infer_b8_pairs_per_s"]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
