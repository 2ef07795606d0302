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

Two fidelity checks run first (``--checks-only`` runs only them). Both start from the authors' randomly
initialised model, saved as their ``main.py`` saves it (``{'state_dict': model.state_dict()}``) and imported
with ``changekit convert clearscd``'s code (:func:`changekit.models.foreign.convert_foreign`):

* ``check``: eval outputs of both on the same pairs (largest absolute differences);
* ``train-check``: one training step of both from one seed (same drop-connect and dropout masks: changekit
  draws them in the released order; every pixel is sampled by SACL at 64 px, batch 2, so its random draws do not
  matter), global SACL active: each loss term, the relative L2 difference of every gradient (the largest, and
  that of the projection head's first weight) and the largest difference of every BatchNorm running statistic
  (and of the projection head's running mean). The same figures for changekit with the projection head run
  once on both dates (``pooled_head``: what changekit did before it ran the head per date, as released).

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
import tempfile
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


def converted(theirs: Any) -> Any:
    """changekit's ClearSCD holding the authors' model's weights, through the released checkpoint format and
    ``changekit convert clearscd``'s code (strict loading)."""
    from changekit.models.foreign import convert_foreign

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "1_0.5_checkpoint.pth.tar"
        torch.save({"state_dict": theirs.state_dict()}, path)
        model, _ = convert_foreign("clearscd", path)
    model.current_epoch = 1  # past the warm-up: the global SACL term is active
    return model


def check_equivalence(official: str, size: int = 64) -> dict[str, float]:
    """Largest absolute difference of the eval outputs with the authors' weights converted into changekit's."""
    theirs, _ = build_official(official, size)
    ours = converted(theirs)
    theirs.eval()
    ours.eval()
    d = _data(2, size)
    with torch.inference_mode():
        t = theirs(torch.cat([d["a"], d["b"]], 1), test=True)
        o = ours(d["a"], d["b"])
    return {"max_abs_diff_sem_a": float((t["seg_A"] - o.sem_a).abs().max()),
            "max_abs_diff_sem_b": float((t["seg_B"] - o.sem_b).abs().max()),
            "max_abs_diff_change": float((t["BCD"] - o.change).abs().max())}


def _official_step(model: Any, d: dict[str, torch.Tensor]) -> dict[str, float]:
    from loss.losses import BCDLoss  # type: ignore[import-not-found]  (importable once the path is set)

    ce = torch.nn.CrossEntropyLoss(ignore_index=9)
    out = model(torch.cat([d["a"], d["b"]], 1), d["sem_a"], d["sem_b"], d["change"], test=False, warmup=False)
    terms = {"change": BCDLoss()(out["BCD"], d["change"]), "ce_sem_a": ce(out["seg_A"], d["sem_a"]),
             "ce_sem_b": ce(out["seg_B"], d["sem_b"]), "sacl": out["contrast_loss"], "bscc": out["bscc_loss"]}
    sum(terms.values()).backward()
    return {k: float(v) for k, v in terms.items()}


def _changekit_step(model: Any, d: dict[str, torch.Tensor]) -> dict[str, float]:
    from changekit.losses import build_loss

    loss = build_loss([{"name": "bce", "ignore_index": 255}, {"name": "dice", "ignore_index": 255, "skip_empty": True},
                       {"name": "ce", "target": "sem_a", "ignore_index": 9},
                       {"name": "ce", "target": "sem_b", "ignore_index": 9}])
    batch = {"mask": d["change"], "sem_a": d["sem_a"], "sem_b": d["sem_b"]}
    out = model(d["a"], d["b"])
    total, parts = loss(out, batch)
    extra = model.extra_losses(out, batch)
    (total + sum(extra.values())).backward()
    return {"change": float(parts["bce"] + parts["dice"]), "ce_sem_a": float(parts["ce_sem_a"]),
            "ce_sem_b": float(parts["ce_sem_b"]), "sacl": float(extra["sacl_local"] + extra["sacl_global"]),
            "bscc": float(extra["bscc"])}


def check_training(official: str, size: int = 64, batch: int = 2) -> dict[str, Any]:
    """One training step of the authors' model and of changekit's, same weights and seed (see the module doc)."""
    theirs, _ = build_official(official, size)
    ours, pooled = converted(theirs), converted(theirs)

    def pooled_head(fa: torch.Tensor, fb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        proj = pooled.proj_head(torch.cat([fa, fb], 0))  # changekit before: one head pass over both dates
        return proj[: fa.shape[0]], proj[fa.shape[0] :]

    pooled._project = pooled_head
    d = _data(batch, size)
    losses = {}
    for name, model, step in (("official", theirs, _official_step), ("changekit", ours, _changekit_step),
                              ("pooled_head", pooled, _changekit_step)):
        model.train()
        torch.manual_seed(0)
        losses[name] = step(model, d)
    ref_params = dict(theirs.named_parameters())
    ref_buffers = dict(theirs.named_buffers())
    res: dict[str, Any] = {"losses": losses}
    grads = {k: p.grad for k, p in ref_params.items() if p.grad is not None}
    total = float(torch.stack([g.norm() for g in grads.values()]).norm())
    for name, model in (("changekit", ours), ("pooled_head", pooled)):
        rel, absolute = {}, 0.0
        for key, p in model.named_parameters():
            g_ref = grads.get(key.replace("head_seg.", "head_seg.0."))
            if p.grad is None or g_ref is None:  # the encoder's unused _conv_head / _bn1
                continue
            absolute = max(absolute, float((p.grad - g_ref).abs().max()))
            # relative L2 where the gradient is not ~0 (biases of convolutions followed by BatchNorm: float noise)
            if float(g_ref.norm()) > 1e-5 * total:
                rel[key] = float((p.grad - g_ref).norm() / g_ref.norm())
        stats = {key: float((b - ref_buffers[key]).abs().max()) for key, b in model.named_buffers()
                 if key.endswith(("running_mean", "running_var"))}
        worst = max(rel, key=rel.get)
        res[name] = {
            "max_abs_loss_diff": max(abs(losses[name][k] - losses["official"][k]) for k in losses["official"]),
            "proj_first_weight_grad_rel_l2": rel["proj_head.proj.0.weight"],
            "proj_running_mean_max_abs_diff": stats["proj_head.proj.1.running_mean"],
            "max_grad_rel_l2": rel[worst], "max_grad_rel_l2_param": worst, "grads_compared": len(rel),
            "max_abs_grad_diff": absolute, "max_bn_stat_abs_diff": max(stats.values()),
        }
    return res


def _worker(ns: argparse.Namespace) -> None:
    torch.set_num_threads(ns.threads)
    if ns.allocator == "tuned":
        from changekit.runtime import tune_cpu_allocator

        if not tune_cpu_allocator():
            raise SystemExit("--allocator tuned needs glibc")
    torch.manual_seed(0)
    if ns.kind == "check":
        res = check_equivalence(ns.official, ns.size)
    elif ns.kind == "train-check":
        res = check_training(ns.official, ns.size, ns.batch)
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
    p.add_argument("--checks-only", action="store_true", help="only the eval and training fidelity checks")
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
    results = [_spawn(ns, "both", "check", 64, 2), _spawn(ns, "both", "train-check", 64, 2)]
    for size in [] if ns.checks_only else ns.sizes:
        for batch in ns.batches:
            for impl in ("official", "changekit"):
                results.append(_spawn(ns, impl, "infer", size, batch))
    if not (ns.no_train or ns.checks_only):
        for impl in ("official", "changekit"):
            results.append(_spawn(ns, impl, "train", ns.train_size, ns.train_batch))
    if ns.out:
        Path(ns.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
