"""LightCDNet: changekit's implementation against open-cd's, on the same random weights.

Usage (in an environment with ``mmengine``, ``mmcv-lite`` 2.1 and ``mmsegmentation`` 1.2 beside changekit)::

    python benchmarks/lightcdnet_vs_reference.py --ref /path/to/open-cd [--size b] [--keys-out FILE.json]

``--ref`` is a checkout of github.com/likyoo/open-cd (or the copy vendored by ChangeAnywhere; the LightCDNet
files are identical), not part of this repository. Its ``LightCDNet`` backbone, ``TinyFPN`` neck and
``DS_FPNHead`` plus mmseg's ``FCNHead`` are built as ``configs/_base_/models/lightcdnet.py`` sets them (BatchNorm
instead of SyncBN: same keys, same eval arithmetic, and it runs on one CPU process) and run the way
``DIEncoderDecoder`` does (inputs zero-padded to a multiple of 32 as its data preprocessor does, logits resized
to the input bilinearly). Only what does not build without compiled mmcv ops is replaced: the package
``mmcv.ops`` is a stand-in module whose ``CrissCrossAttention`` is mmcv's own pure-PyTorch file
(``mmcv/ops/cc_attention.py``), loaded by path; the ``opencd`` package ``__init__`` files are skipped so that
only the modules named above are imported.

Random values are written into every tensor of the reference's state dict (BatchNorm statistics included, and
the criss-cross ``gamma``, which starts at 0), saved as an mmengine-style checkpoint, converted with
``changekit convert opencd`` 's mapping, and both models are compared: eval logits at 256x256 and at 250x190
(padding path), and, in float64, training-mode logits and auxiliary logits (batch statistics; per date in the
fusion module).
``--keys-out`` writes the reference's state-dict names and shapes (the fixture of the converter test).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn.functional as F

SIZES = {"s": ("small", [24, 48, 96, 192], "lightcdnet_s"), "b": ("base", [24, 116, 232, 464], "lightcdnet"),
         "l": ("large", [24, 176, 352, 704], "lightcdnet_l")}


def _mmcv_ops_standin() -> None:
    """``mmcv.ops`` without compiled kernels: the real ``cc_attention.py``; other names resolve to placeholders
    (mmseg imports some at module level; none is used by the models compared here)."""
    spec = importlib.util.find_spec("mmcv")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("mmcv (mmcv-lite 2.1) is not installed in this environment")
    path = Path(list(spec.submodule_search_locations)[0]) / "ops" / "cc_attention.py"
    cc_spec = importlib.util.spec_from_file_location("mmcv.ops.cc_attention", path)
    cc = importlib.util.module_from_spec(cc_spec)  # type: ignore[arg-type]
    sys.modules["mmcv.ops.cc_attention"] = cc
    cc_spec.loader.exec_module(cc)  # type: ignore[union-attr]
    ops = types.ModuleType("mmcv.ops")
    ops.CrissCrossAttention = cc.CrissCrossAttention  # type: ignore[attr-defined]

    def placeholder(name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return type(name, (), {})

    ops.__getattr__ = placeholder  # type: ignore[attr-defined]
    sys.modules["mmcv.ops"] = ops


def _package(name: str, path: Path) -> None:
    mod = types.ModuleType(name)
    mod.__path__ = [str(path)]  # type: ignore[attr-defined]
    sys.modules[name] = mod


def build_reference(ref: Path, size: str) -> torch.nn.ModuleDict:
    """open-cd's LightCDNet parts as ChangeAnywhere's ``lightcdnet_b`` configs set them (BN for SyncBN)."""
    _mmcv_ops_standin()
    root = ref / "opencd"
    _package("opencd", root)
    _package("opencd.models", root / "models")
    for sub in ("backbones", "necks", "decode_heads"):
        _package(f"opencd.models.{sub}", root / "models" / sub)
    from mmseg.models.decode_heads import FCNHead

    from opencd.models.backbones.lightcdnet import LightCDNet  # type: ignore[import-not-found]
    from opencd.models.decode_heads.ds_fpn_head import DS_FPNHead  # type: ignore[import-not-found]
    from opencd.models.necks.tiny_fpn import TinyFPN  # type: ignore[import-not-found]

    net_type, widths, _ = SIZES[size]
    bn = dict(type="BN", requires_grad=True)
    return torch.nn.ModuleDict({
        "backbone": LightCDNet(stage_repeat_num=[4, 8, 4], net_type=net_type),
        "neck": TinyFPN(exist_early_x=True, early_x_for_fpn=True, custom_block="conv", in_channels=widths,
                        out_channels=48, num_outs=4),
        "decode_head": DS_FPNHead(in_channels=[48] * 4, in_index=[0, 1, 2, 3], channels=48, dropout_ratio=0.0,
                                  num_classes=2, norm_cfg=bn, align_corners=False),
        "auxiliary_head": FCNHead(in_channels=24, in_index=0, channels=24, num_convs=1, concat_input=False,
                                  dropout_ratio=0.0, num_classes=2, norm_cfg=bn, align_corners=False),
    })


def reference_forward(ref: torch.nn.ModuleDict, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``DIEncoderDecoder``: pad to 32 (zeros), backbone, neck, heads; logits resized to the padded input, cropped."""
    h, w = a.shape[-2:]
    ph, pw = (-h) % 32, (-w) % 32
    a, b = F.pad(a, (0, pw, 0, ph)), F.pad(b, (0, pw, 0, ph))
    x = ref["neck"](ref["backbone"](a, b))
    size = (h + ph, w + pw)
    logits = F.interpolate(ref["decode_head"](x), size=size, mode="bilinear", align_corners=False)[..., :h, :w]
    aux = F.interpolate(ref["auxiliary_head"](x), size=size, mode="bilinear", align_corners=False)[..., :h, :w]
    return logits, aux


def randomise(module: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
            elif name.endswith("gamma.scale"):
                t.fill_(0.7)  # starts at 0 (attention off): make it count
            else:
                t.copy_(torch.randn(t.shape, generator=gen) * 0.2)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref", type=Path, required=True, help="open-cd checkout (its opencd/ package is imported)")
    p.add_argument("--size", choices=sorted(SIZES), default="b")
    p.add_argument("--keys-out", type=Path, help="write the reference's state-dict names and shapes here")
    args = p.parse_args()
    torch.manual_seed(0)
    from changekit.models.foreign import convert_foreign

    ref = build_reference(args.ref, args.size)
    randomise(ref, seed=1)
    state = ref.state_dict()
    if args.keys_out:
        keys = {k: list(v.shape) for k, v in state.items()}
        args.keys_out.write_text(json.dumps({"source": f"likyoo/open-cd LightCDNet net_type={SIZES[args.size][0]} "
                                             "(backbone, TinyFPN, DS_FPNHead, FCNHead aux): names and shapes only",
                                             "keys": keys}, indent=1) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "opencd.pth"
        torch.save({"meta": {"mmengine_version": "0.10.7"}, "state_dict": state}, src)
        ours, _ = convert_foreign("opencd", src, SIZES[args.size][2])
    results = {}
    for label, shape in (("eval 256x256", (2, 3, 256, 256)), ("eval 250x190", (2, 3, 250, 190))):
        a, b = torch.randn(shape), torch.randn(shape)
        ref.eval(), ours.eval()
        with torch.no_grad():
            results[label] = float((ours(a, b).change - reference_forward(ref, a, b)[0]).abs().max())
    # Training mode in float64: batch statistics over random weights amplify float32 rounding (the two sides
    # order their sums differently) to ~1e-3, which would hide a real difference; in float64 both agree to 1e-10.
    a, b = torch.randn(4, 3, 128, 128, dtype=torch.float64), torch.randn(4, 3, 128, 128, dtype=torch.float64)
    ref.double().train(), ours.double().train()
    with torch.no_grad():
        out, (r_logits, r_aux) = ours(a, b), reference_forward(ref, a, b)
    results["train logits 128x128 (float64)"] = float((out.change - r_logits).abs().max())
    results["train aux logits 128x128 (float64)"] = float((out.aux["aux_change"] - r_aux).abs().max())
    for label, diff in results.items():
        print(f"{label}: max |ours - open-cd| = {diff:.3g}")
    ok = all(d <= 1e-5 for d in results.values())
    print("OK (<= 1e-5)" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
