"""Shared part of ``bit_vs_reference.py`` and ``changer_ex_vs_reference.py``: load open-cd's module definitions
from a local copy, hand the same random weights to changekit through its open-cd converter, compare logits.

Needs, outside the repository:

* a copy of open-cd 1.x's ``opencd/`` package (ChangeAnywhere vendors 1.1.0), e.g. ``git archive`` of
  ``tangkai-RS/ChangeAnywhere`` into ``/work/scratch/opencd``: pass its root as ``--ref``;
* mmengine, mmcv-lite and mmsegmentation 1.x, importable or installed into a folder passed as ``--mm``::

      pip install --no-deps --target /tmp/openmmlab mmcv-lite==2.1.0 mmengine==0.10.7 mmsegmentation==1.2.2 \\
          addict yapf termcolor platformdirs

mmcv-lite has no compiled ops: ``mmcv.ops`` (imported by mmseg utilities these models never call) is an inert
stand-in that fails if used. open-cd's package ``__init__`` files (which import every model and check library
versions) are skipped: ``opencd``, ``opencd.models`` and its subpackages are bare packages over the copy's
folders, so only the modules a model needs are imported, unmodified.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

_PACKAGES = ("opencd", "opencd.models", "opencd.models.utils", "opencd.models.necks", "opencd.models.backbones",
             "opencd.models.decode_heads")


def parse_args(description: str) -> argparse.Namespace:
    """``--ref`` (open-cd copy), ``--mm`` (OpenMMLab install folder), ``--sizes`` and ``--batch``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--ref", type=Path, required=True, help="root of a local open-cd 1.x copy (holds opencd/)")
    parser.add_argument("--mm", type=Path, default=None, help="folder with mmengine, mmcv-lite, mmsegmentation")
    parser.add_argument("--sizes", default="256x256,512x512,256x320", help="comma-separated HxW input sizes")
    parser.add_argument("--batch", type=int, default=2)
    return parser.parse_args()


def load_opencd(ref: Path, mm: Path | None) -> None:
    """Make ``opencd.*`` modules importable from ``ref`` without running the package ``__init__`` files."""
    if not (ref / "opencd" / "registry.py").is_file():
        raise SystemExit(f"--ref {ref}: no opencd/registry.py there (give the root of an open-cd copy)")
    if mm is not None:
        sys.path.insert(0, str(mm))

    class _MissingOps(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            if name.startswith("__"):
                raise AttributeError(name)

            def missing(*args: object, **kwargs: object) -> None:
                raise RuntimeError(f"mmcv.ops.{name} needs the compiled mmcv (not used by this comparison)")

            return missing

    sys.modules["mmcv.ops"] = _MissingOps("mmcv.ops")
    for name in _PACKAGES:
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(ref.joinpath(*name.split(".")))]
        sys.modules[name] = pkg


def randomize_norms(model: nn.Module, seed: int = 0) -> None:
    """Random BatchNorm statistics and norm affines, so that wrong normalisation shows in the logits."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            if isinstance(m, nn.BatchNorm2d | nn.LayerNorm) and m.weight is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)


def compare(name: str, reference: nn.Module, sizes: str, batch: int) -> float:
    """Convert ``reference``'s weights to changekit's ``name`` and print the largest logit difference per size.

    ``reference(img_a, img_b)`` must return open-cd's logits at the input size. Returns the largest difference.
    """
    from changekit.models.foreign import convert_foreign
    from changekit.models.registry import count_parameters
    from torch.utils.flop_counter import FlopCounterMode

    reference.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "opencd.pth"
        torch.save({"meta": {"mmengine_version": "0.10.7"}, "state_dict": reference.state_dict()}, path)
        ours, _ = convert_foreign("opencd", path, name)
    ours.eval()
    print(f"parameters: changekit {count_parameters(ours):,d}, open-cd {count_parameters(reference):,d}")
    worst = 0.0
    gen = torch.Generator().manual_seed(1)
    cl = torch.channels_last
    for size in sizes.split(","):
        h, w = (int(v) for v in size.split("x"))
        a, b = torch.randn(batch, 3, h, w, generator=gen), torch.randn(batch, 3, h, w, generator=gen)
        with torch.no_grad():
            got = ours(a, b).change
            ref_plain = reference(a, b)
            # changekit runs its CPU convolutions in channels_last (faster oneDNN kernels): fed the same layout,
            # open-cd's modules take the same kernels, so that comparison isolates the model's arithmetic.
            ref_cl = reference(a.contiguous(memory_format=cl), b.contiguous(memory_format=cl))
        diff = float((ref_cl - got).abs().max())
        worst = max(worst, diff)
        print(f"{h}x{w} batch {batch}: logits {tuple(got.shape)} (scale {float(ref_plain.abs().max()):.2f}); "
              f"max |diff| vs open-cd, same layout {diff:.2e}; vs open-cd contiguous "
              f"{float((ref_plain - got).abs().max()):.2e}; open-cd contiguous vs channels_last "
              f"{float((ref_plain - ref_cl).abs().max()):.2e}")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        ours(torch.randn(1, 3, 256, 256), torch.randn(1, 3, 256, 256))
    print(f"changekit {name}: {counter.get_total_flops() / 2e9:.3f} GMACs per 256x256 pair (FLOPs / 2)")
    return worst


def run(description: str, build_reference: Callable[[], nn.Module], name: str) -> None:
    """Parse the arguments, build open-cd's model with ``build_reference`` and compare it with ``name``."""
    args = parse_args(description)
    load_opencd(args.ref.resolve(), args.mm)
    torch.manual_seed(0)
    reference = build_reference()
    randomize_norms(reference)
    worst = compare(name, reference, args.sizes, args.batch)
    verdict = "within" if worst <= 1e-5 else "ABOVE"
    print(f"largest difference (same layout) over all sizes: {worst:.2e} ({verdict} 1e-5)")
