"""Side-by-side speed and memory of changekit's ClearSCD and the authors' implementation (same machine, one run).

Usage::

    git clone https://github.com/tangkai-RS/ClearSCD /tmp/ClearSCD_official   # kept outside the repository
    python benchmarks/clearscd_vs_official.py --official /tmp/ClearSCD_official --threads 2

``--allocator tuned`` applies :func:`changekit.runtime.tune_cpu_allocator` (what the ``changekit`` command line
does) in every worker, for both implementations; the default ``system`` leaves glibc's malloc as it is.

Each measurement runs in a fresh subprocess so that its peak resident memory (``ru_maxrss``) is its own.
Measured: inference pairs/s (eval, no grad) at batch 1 and 8 for each ``--sizes``; one training step (forward,
every loss term with the global SACL term active, backward, Adam step) at ``--train-size`` / ``--train-batch``,
timed on the second step, and the peak RSS of that process.

The authors' code is imported, not modified. Shims applied at run time only: their ``self.decoder(*features)``
call is adapted to smp >= 0.5's list argument; ``Tensor.cuda`` is a no-op on CPU (their code moves index tensors
to CUDA unconditionally); ``_init_weighets`` is skipped (it downloads torchvision weights and then loads none,
seed-systems 1.3, so skipping it leaves the released initialisation); a minimal ``einops`` stand-in covering
their three patterns is used when ``einops`` is not installed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import torch


def _einops_shim() -> None:
    try:
        import einops  # noqa: F401
        return
    except ImportError:
        pass
    mod = types.ModuleType("einops")

    def repeat(x: torch.Tensor, pattern: str, repeat: int) -> torch.Tensor:  # noqa: A002
        if pattern == "n -> (repeat n)":
            return x.repeat(repeat)
        if pattern == "c n -> (repeat c) n":
            return x.repeat(repeat, 1)
        raise NotImplementedError(pattern)

    def rearrange(x: torch.Tensor, pattern: str) -> torch.Tensor:
        if pattern == "classnum channel queuelen -> channel (classnum queuelen)":
            return x.permute(1, 0, 2).reshape(x.shape[1], -1)
        raise NotImplementedError(pattern)

    mod.repeat, mod.rearrange = repeat, rearrange  # type: ignore[attr-defined]
    sys.modules["einops"] = mod


def build_official(path: str, size: int) -> Any:
    """The authors' ClearSCD with their Hi-UCD-mini config, built on CPU."""
    _einops_shim()
    sys.path.insert(0, path)
    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    from model.ClearSCD import ClearSCD as Official  # type: ignore[import-not-found]
    from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder

    cfg = json.loads((Path(path) / "configs" / "hiucd_mini" / "ours.json").read_text())
    args = argparse.Namespace(**cfg)
    args.size = size
    Official._init_weighets = lambda self: None  # loads nothing in the released code anyway
    model = Official(args)
    dec = model.decoder
    dec.forward = lambda *feats: FPNDecoder.forward(dec, list(feats))  # smp >= 0.5 takes a list
    return model, args


def build_ours() -> Any:
    import changekit.models.clearscd  # noqa: F401
    from changekit.models import build_model

    model = build_model("clearscd")
    model.current_epoch = 1  # past the warm-up: the global SACL term is active
    return model


def _data(batch: int, size: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(batch, 3, size, size, generator=g), torch.randn(batch, 3, size, size, generator=g)
    # blocky class maps (16 px cells) with all 9 classes and some unlabeled (9) pixels
    cells = torch.randint(0, 10, (batch, 2, size // 16, size // 16), generator=g)
    sem = cells.repeat_interleave(16, 2).repeat_interleave(16, 3)
    sem_a, sem_b = sem[:, 0], torch.where(torch.rand(sem[:, 1].shape, generator=g) < 0.7, sem[:, 0], sem[:, 1])
    change = (sem_a != sem_b).long()
    change[(sem_a == 9) | (sem_b == 9)] = 255
    return {"a": a, "b": b, "sem_a": sem_a, "sem_b": sem_b, "change": change}


def infer(impl: str, official: str, size: int, batch: int, reps: int) -> dict[str, float]:
    d = _data(batch, size)
    if impl == "official":
        model, _ = build_official(official, size)
        model.eval()
        x = torch.cat([d["a"], d["b"]], 1)
        run = lambda: model(x, test=True)  # noqa: E731
    else:
        model = build_ours().eval()
        run = lambda: model(d["a"], d["b"])  # noqa: E731
    with torch.inference_mode():
        run()  # warm-up
        t0 = time.perf_counter()
        for _ in range(reps):
            run()
        dt = time.perf_counter() - t0
    return {"pairs_per_s": batch * reps / dt}


def train_step(impl: str, official: str, size: int, batch: int) -> dict[str, float]:
    d = _data(batch, size)
    if impl == "official":
        model, args = build_official(official, size)
        from loss.losses import BCDLoss  # type: ignore[import-not-found]  (importable once the path is set)

        bcd, ce = BCDLoss(), torch.nn.CrossEntropyLoss(ignore_index=9)
        x = torch.cat([d["a"], d["b"]], 1)

        def loss_fn() -> torch.Tensor:
            out = model(x, d["sem_a"], d["sem_b"], d["change"], test=False, warmup=False)
            return (bcd(out["BCD"], d["change"]) + ce(out["seg_A"], d["sem_a"]) + ce(out["seg_B"], d["sem_b"])
                    + out["contrast_loss"] + out["bscc_loss"])
    else:
        from changekit.losses import build_loss

        model = build_ours()
        loss = build_loss([{"name": "bce"}, {"name": "dice", "skip_empty": True},
                           {"name": "ce", "target": "sem_a", "ignore_index": 9},
                           {"name": "ce", "target": "sem_b", "ignore_index": 9}])
        batch_d = {"mask": d["change"], "sem_a": d["sem_a"], "sem_b": d["sem_b"]}

        def loss_fn() -> torch.Tensor:
            out = model(d["a"], d["b"])
            total, _ = loss(out, batch_d)
            return total + sum(model.extra_losses(out, batch_d).values())
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=2.5e-4, weight_decay=5e-4)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        opt.zero_grad()
        value = loss_fn()
        value.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return {"step_s": times[-1], "first_step_s": times[0], "loss": float(value)}


def official_to_changekit(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the authors' state dict to changekit's (``head_seg.0.*`` -> ``head_seg.*``, 18 queues -> one)."""
    out = {k.replace("head_seg.0.", "head_seg."): v for k, v in state.items()
           if not k.startswith(("queue_", "ptr_"))}
    classes = sum(1 for k in state if k.startswith("queue_A"))
    out["queues.queue"] = torch.stack([torch.stack([state[f"queue_{t}{c}"] for c in range(classes)])
                                       for t in "AB"])
    out["queues.ptr"] = torch.stack([torch.cat([state[f"ptr_{t}{c}"] for c in range(classes)]) for t in "AB"])
    return out


def check_equivalence(official: str, size: int = 64) -> dict[str, float]:
    """Largest absolute difference of the eval outputs with the authors' weights copied into changekit's model."""
    theirs, _ = build_official(official, size)
    ours = build_ours()
    missing, unexpected = ours.load_state_dict(official_to_changekit(theirs.state_dict()), strict=False)
    if unexpected or set(missing) - {"queues.filled"}:
        raise RuntimeError(f"state dicts differ: missing {missing}, unexpected {unexpected}")
    theirs.eval()
    ours.eval()
    d = _data(2, size)
    with torch.inference_mode():
        t = theirs(torch.cat([d["a"], d["b"]], 1), test=True)
        o = ours(d["a"], d["b"])
    return {"max_abs_diff_sem_a": float((t["seg_A"] - o.sem_a).abs().max()),
            "max_abs_diff_sem_b": float((t["seg_B"] - o.sem_b).abs().max()),
            "max_abs_diff_change": float((t["BCD"] - o.change).abs().max())}


def _worker(ns: argparse.Namespace) -> None:
    torch.set_num_threads(ns.threads)
    if ns.allocator == "tuned":
        from changekit.runtime import tune_cpu_allocator

        if not tune_cpu_allocator():
            raise SystemExit("--allocator tuned needs glibc")
    torch.manual_seed(0)
    if ns.kind == "check":
        res = check_equivalence(ns.official, ns.size)
    elif ns.kind == "infer":
        res = infer(ns.impl, ns.official, ns.size, ns.batch, ns.reps)
    else:
        res = train_step(ns.impl, ns.official, ns.size, ns.batch)
    res["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print("RESULT " + json.dumps(res))


def _spawn(ns: argparse.Namespace, impl: str, kind: str, size: int, batch: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", impl, kind, str(size), str(batch), "--official", ns.official,
           "--threads", str(ns.threads), "--reps", str(ns.reps), "--allocator", ns.allocator]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{impl} {kind} {size} x{batch} failed:\n{proc.stderr[-3000:]}")
    res = {"impl": impl, "kind": kind, "size": size, "batch": batch, "allocator": ns.allocator,
           **json.loads(line[7:])}
    print(json.dumps(res), flush=True)
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official", required=True, help="path to a checkout of tangkai-RS/ClearSCD")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--train-size", type=int, default=512)
    p.add_argument("--train-batch", type=int, default=8)
    p.add_argument("--no-train", action="store_true")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=2, help="timed inference batches after one warm-up batch")
    p.add_argument("--allocator", choices=("system", "tuned"), default="system",
                   help="tuned: changekit's glibc malloc setting in every worker (both implementations)")
    p.add_argument("--out", help="write all results as JSON here")
    p.add_argument("--worker", nargs=4, metavar=("IMPL", "KIND", "SIZE", "BATCH"), help=argparse.SUPPRESS)
    ns = p.parse_args()
    if ns.worker:
        impl, kind, size, batch = ns.worker
        _worker(argparse.Namespace(impl=impl, kind=kind, size=int(size), batch=int(batch), official=ns.official,
                                   threads=ns.threads, reps=ns.reps, allocator=ns.allocator))
        return
    if not (Path(ns.official) / "model" / "ClearSCD.py").is_file():
        sys.exit(f"{ns.official}: not a ClearSCD checkout (model/ClearSCD.py missing)")
    results = [_spawn(ns, "both", "check", 64, 2)]
    for size in ns.sizes:
        for batch in ns.batches:
            for impl in ("official", "changekit"):
                results.append(_spawn(ns, impl, "infer", size, batch))
    if not ns.no_train:
        for impl in ("official", "changekit"):
            results.append(_spawn(ns, impl, "train", ns.train_size, ns.train_batch))
    if ns.out:
        Path(ns.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
