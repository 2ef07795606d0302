"""TinyCD: changekit's implementation against the authors' released model code, on the same weights.

Usage::

    python benchmarks/tinycd_vs_reference.py --ref /path/to/Tiny_model_4_CD [--weights levir_best.pth]

``--ref`` is a checkout of github.com/AndreaCodegoni/Tiny_model_4_CD (not part of this repository); its
``models/change_classifier.py`` and ``models/layers.py`` are imported as they are (``ChangeClassifier(pretrained=
False)``: torchvision's ``efficientnet_b4`` built without downloading weights). ``--weights`` loads a released state
dict (``pretrained_models/levir_best.pth``) into the reference; without it the reference gets random values in every
tensor (BatchNorm statistics included). The same state dict is saved to a temporary file and read through
``changekit convert tinycd`` 's converter, and the two models' change probabilities are compared in eval mode at
256x256 and 512x512 (batch 2). Target: max abs difference <= 1e-5.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch


def load_reference(root: Path) -> torch.nn.Module:
    sys.path.insert(0, str(root))
    from models.change_classifier import ChangeClassifier  # type: ignore[import-not-found]

    return ChangeClassifier(pretrained=False)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", type=Path, required=True, help="checkout of the authors' repository")
    p.add_argument("--weights", type=Path, help="a released state dict (default: random values)")
    args = p.parse_args()
    from changekit.models.foreign import convert_foreign
    from changekit.safeload import load_tensors

    torch.manual_seed(0)
    ref = load_reference(args.ref)
    if args.weights:
        ref.load_state_dict(load_tensors(args.weights))
    else:
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, t in ref.state_dict().items():
                if t.is_floating_point():
                    t.copy_(torch.rand(t.shape, generator=gen) + 0.5 if name.endswith("running_var")
                            else torch.randn(t.shape, generator=gen) * 0.3)
    ref.eval()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "released.pth"
        torch.save(ref.state_dict(), src)
        ours, cfg = convert_foreign("tinycd", src)
    worst = 0.0
    for size in (256, 512):
        a, b = torch.randn(2, 3, size, size), torch.randn(2, 3, size, size)
        with torch.no_grad():
            diff = float((ours(a, b).change_prob() - ref(a, b)[:, 0]).abs().max())
        worst = max(worst, diff)
        print(f"eval {size}x{size}: max |ours - released| on the probabilities = {diff:.3g}")
    print(f"converted config: threshold {cfg['trainer']['threshold']}, mean {cfg['data']['mean']}, "
          f"std {cfg['data']['std']}")
    print("OK (<= 1e-5)" if worst <= 1e-5 else "MISMATCH")
    return 0 if worst <= 1e-5 else 1


if __name__ == "__main__":
    raise SystemExit(main())
