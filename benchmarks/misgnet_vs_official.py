"""MISGNet: changekit's implementation against the authors' code, side by side in one process.

Usage::

    python benchmarks/misgnet_vs_official.py --official /path/to/MISGNet [--threads 2] [--repeats 5]

``--allocator tuned`` first applies :func:`changekit.runtime.tune_cpu_allocator` (what ``changekit predict`` does)
to the whole process, so both models run with it; the default ``system`` leaves glibc as it is. ``shipped``
compares the two as users run them: each timed changekit inference call enters
:func:`changekit.runtime.tuned_cpu_allocator` (which restores glibc's defaults and trims the heap on exit, so
every changekit call starts from a trimmed heap: a conservative figure), the authors' code runs with glibc's
defaults.

``--ablations`` instead times changekit's model alone with each CPU speed measure switched off in turn.

``--official`` is a checkout of github.com/JackLiu-97/MISGNet (not part of this repository). It is imported as
is and patched in memory only so that it builds: ``MutualModule0`` accepts the ``dropout`` argument that
``MutualNet`` passes (the released code raises ``TypeError``), and the hard-coded ``D:\\Download\\pvt_v2_b1.pth``
load in ``MyNet.__init__`` returns an empty dict (random backbone; weights do not change speed).

The script (1) copies the official model's weights into changekit's ``misgnet`` through the checkpoint
converter's key mapping and checks that both give the same logits in eval mode, then (2) times, alternating the
two models to share the machine's load fairly: inference pairs/s at 256x256 batch 8 and batch 1 (eval,
``torch.inference_mode``) and a training step at batch 8 (forward, 0.5 focal + dice loss, backward, AdamW).
Each figure is the median of ``--repeats`` timed runs after one warm-up; the repeats of the two models alternate.
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

    def patched_init(self: Any, dim: int, BatchNorm: Any = torch.nn.BatchNorm2d,  # noqa: N803
                     dropout: float = 0.1) -> None:
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


def interleaved_medians(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each function; one warm-up each, then the repeats alternate between them."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _ablation_patches() -> dict[str, Callable[[torch.nn.Module], Callable[[], None]]]:
    """Each entry switches ONE speed measure of changekit's MISGNet off (returns an undo function)."""
    import torch.nn.functional as F

    import changekit.models.misgnet.decoder as dec
    import changekit.models.onednn as onednn
    import changekit.models.misgnet.model as mdl
    import changekit.models.misgnet.sgm as sgm

    def patch(obj: Any, name: str, value: Any) -> Callable[[], None]:
        old = getattr(obj, name)
        setattr(obj, name, value)
        return lambda: setattr(obj, name, old)

    def no_channels_last(model: torch.nn.Module) -> Callable[[], None]:
        return patch(model, "channels_last", False)

    def no_bn_fold(model: torch.nn.Module) -> Callable[[], None]:
        return patch(dec, "_conv_bn", lambda conv, bn, x: bn(conv(x)))

    def pixel_reprojection(model: torch.nn.Module) -> Callable[[], None]:
        def forward(self: Any, nodes: torch.Tensor, assign: torch.Tensor, size: torch.Size) -> torch.Tensor:
            pix = torch.bmm(nodes, assign).unsqueeze(3)  # (B, C, N, 1): conv on every pixel, as released
            return F.relu(self.bn(self.conv(pix)), inplace=True).squeeze(3).view(size)
        return patch(sgm._PixelConv, "forward", forward)

    def loop_graphnet(model: torch.nn.Module) -> Callable[[], None]:
        def forward(self: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # the released loops
            b, c, h, w = x.shape
            sigma = torch.sigmoid(self.sigma)
            flat = x.reshape(b, c, -1).permute(0, 2, 1).contiguous()
            assign = torch.zeros(b, self.node_num, h * w, dtype=x.dtype)
            for k in range(self.node_num):
                assign[:, k] = -torch.norm((flat - self.anchor[k]).div(sigma[k]), dim=2).pow(2) / 2
            assign = F.softmax(assign, dim=1)
            nodes = torch.zeros(b, self.node_num, c, dtype=x.dtype)
            for k in range(self.node_num):
                r = (flat - self.anchor[k]).div(sigma[k])
                nodes[:, k] = r.mul(assign[:, k].unsqueeze(2)).sum(1) / (assign[:, k].sum(1).unsqueeze(1) + 1e-9)
            nodes = F.normalize(F.normalize(nodes, p=2, dim=2).view(b, -1), p=2, dim=1)
            return nodes.view(b, c, self.node_num), assign
        return patch(sgm.GraphNet, "forward", forward)

    def two_backbone_passes(model: torch.nn.Module) -> Callable[[], None]:
        original = mdl.MISGNet.features

        def features(self: Any, x: torch.Tensor) -> list[torch.Tensor]:
            n = x.shape[0] // 2
            return [torch.cat(p) for p in zip(original(self, x[:n]), original(self, x[n:]), strict=True)]
        return patch(mdl.MISGNet, "features", features)

    def no_inplace_blocks(model: torch.nn.Module) -> Callable[[], None]:
        return patch(model, "inplace_inference", False)

    def whole_batch_mix_ffn(model: torch.nn.Module) -> Callable[[], None]:
        return patch(model, "mlp_chunk_bytes", 0)

    def addmm_linears(model: torch.nn.Module) -> Callable[[], None]:
        return patch(onednn, "LINEAR", None)

    def unfused_dwconv_gelu(model: torch.nn.Module) -> Callable[[], None]:
        return patch(onednn, "CONV", None)

    return {"full": lambda m: (lambda: None), "no_inplace_blocks": no_inplace_blocks,
            "whole_batch_mix_ffn": whole_batch_mix_ffn, "addmm_linears": addmm_linears,
            "unfused_dwconv_gelu": unfused_dwconv_gelu, "no_channels_last": no_channels_last, "no_bn_fold": no_bn_fold,
            "pixel_reprojection": pixel_reprojection, "loop_graphnet": loop_graphnet,
            "two_backbone_passes": two_backbone_passes}


def run_ablations(model: torch.nn.Module, size: int, batch: int, repeats: int) -> dict[str, float]:
    """Inference pairs/s with each speed measure switched off in turn; rounds interleave the variants."""
    gen = torch.Generator().manual_seed(1)
    x, y = (torch.randn(batch, 3, size, size, generator=gen) for _ in range(2))
    model.eval()
    variants = _ablation_patches()
    times: dict[str, list[float]] = {k: [] for k in variants}
    with torch.inference_mode():
        ref = model(x, y).change
        for r in range(repeats + 1):
            for name, switch in variants.items():
                undo = switch(model)
                try:
                    t0 = time.perf_counter()
                    out = model(x, y).change
                    dt = time.perf_counter() - t0
                finally:
                    undo()
                if r == 0:  # warm-up round: also check each variant computes the same
                    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
                else:
                    times[name].append(dt)
    return {name: batch / statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, required=True, help="checkout of JackLiu-97/MISGNet")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--allocator", choices=("system", "tuned", "shipped"), default="system",
                        help="tuned: changekit's glibc malloc setting for the whole process (both models); "
                             "shipped: only around changekit's inference calls, as `changekit predict` runs")
    parser.add_argument("--ablations", action="store_true",
                        help="only time changekit's model with each speed measure switched off in turn")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from changekit.runtime import tune_cpu_allocator, tuned_cpu_allocator

    if args.allocator == "tuned" and not tune_cpu_allocator():
        parser.error("--allocator tuned needs glibc")

    import changekit.models.misgnet  # noqa: F401  (registers misgnet)
    from changekit.losses import build_loss
    from changekit.models import build_model
    from changekit.models.misgnet.convert import map_official_keys

    torch.manual_seed(0)
    ours = build_model("misgnet")
    if args.ablations:
        res = run_ablations(ours, args.size, 8, args.repeats)
        for name, v in res.items():
            print(f"{name:20s} {v:6.2f} pairs/s  ({v / res['full']:.2f}x of full)")
        print(json.dumps({"threads": torch.get_num_threads(), "size": args.size, "batch": 8,
                          "allocator": args.allocator, **res}))
        return
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
                              "threads": torch.get_num_threads(), "size": args.size, "allocator": args.allocator}
    print(f"equivalence: max |logit diff| {diff:.2e}, argmax agreement {agree:.5f}", flush=True)

    # 2. speed, alternating the two models
    loss_fn = build_loss([{"name": "focal", "weight": 0.5, "alpha": 0.2, "gamma": 2},
                          {"name": "dice", "mode": "multiclass"}])
    from changekit.models.outputs import ChangeOutput

    def infer(model: torch.nn.Module, n: int, is_ours: bool) -> Callable[[], Any]:
        x, y = (torch.randn(n, 3, args.size, args.size, generator=gen) for _ in range(2))

        shipped = args.allocator == "shipped" and is_ours

        def run() -> Any:
            with tuned_cpu_allocator() if shipped else contextlib.nullcontext(), torch.inference_mode():
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

    models = {"official": (official, False), "changekit": (ours, True)}
    for label, n in (("infer_b8", 8), ("infer_b1", 1)):
        for model, _ in models.values():
            model.eval()
        medians = interleaved_medians({k: infer(m, n, o) for k, (m, o) in models.items()}, args.repeats)
        for name, t in medians.items():
            result[f"{name}_{label}_pairs_per_s"] = n / t
            print(f"{name:9s} {label}: {n / t:.2f} pairs/s ({t * 1000:.0f} ms per batch)", flush=True)
    if not args.skip_train:
        for model, _ in models.values():
            model.train()
        medians = interleaved_medians({k: train_step(m, o) for k, (m, o) in models.items()}, max(1, args.repeats // 2))
        for name, t in medians.items():
            result[f"{name}_train_step_b8_s"] = t
            print(f"{name:9s} train step b8: {t:.2f} s", flush=True)
    result["speedup_infer_b8"] = result["changekit_infer_b8_pairs_per_s"] / result["official_infer_b8_pairs_per_s"]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
