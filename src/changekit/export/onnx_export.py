"""``changekit export --onnx``: a checkpoint as an ONNX graph that onnxruntime runs without PyTorch.

The graph takes the two normalised dates ``a``, ``b`` ``(N, C, H, W)`` float32 and returns the change logits
``change`` ``(N, K, H, W)`` (plus ``sem_a``, ``sem_b`` for semantic models), with the batch and both spatial axes
dynamic. Everything needed to feed it the way training did travels in the file's metadata (``changekit.*``
keys): the run's resolved config (so ``predict --runtime onnx`` applies the same normalisation, band selection
and threshold as the checkpoint), the resolved normalisation and bands on their own for other consumers, the
model's name, input divisor and input channels.

The graph is traced with PyTorch's TorchScript exporter at one tile size. A model whose code does arithmetic on
Python shape values (padding amounts, channel-shuffle views...) gets those values frozen at that size, so every
export is checked against PyTorch with onnxruntime before it is written: at the traced size with batches of 1
and 2 (must agree within :data:`TOLERANCE` on probabilities, else the export is refused), and at half the size,
square and 1:3 (tiles are what ``predict`` feeds it; a model that pads internally to a multiple of 16 or 32
keeps agreeing at such sizes). A model that only agrees at the traced size is written with
``changekit.fixed_size`` set, and ``predict --runtime onnx`` then requires that ``--tile``.
"""

from __future__ import annotations

import io
import json
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_path
from ..engine.summary import plain_json
from ..errors import CheckpointError
from ..models.outputs import change_probability

log = logging.getLogger(__name__)

#: Largest allowed difference between onnxruntime's and PyTorch's change probabilities.
TOLERANCE = 1e-4
OPSET = 17
META_PREFIX = "changekit."


class _Graph(nn.Module):
    """The exported function: ``(a, b) -> change logits`` (and class logits for semantic models)."""

    def __init__(self, model: nn.Module, semantic: bool) -> None:
        super().__init__()
        self.model, self.semantic = model, semantic

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> Any:  # noqa: D102
        out = self.model(a, b)
        return (out.change, out.sem_a, out.sem_b) if self.semantic else out.change


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        path: the ONNX file.
        tile: the size the graph was traced at.
        dynamic_size: the graph agrees with PyTorch at other sizes too (else only at ``tile``).
        max_diff: the largest probability difference seen in the checks.
    """

    path: Path
    tile: int
    dynamic_size: bool
    max_diff: float


def _trace(model: nn.Module, semantic: bool, channels: int, tile: int) -> bytes:
    names = ["change", "sem_a", "sem_b"] if semantic else ["change"]
    axes = {k: {0: "batch", 2: "height", 3: "width"} for k in ["a", "b", *names]}
    sample = torch.zeros(1, channels, tile, tile)
    graph = _Graph(model, semantic).eval()  # the exporter restores the wrapper's mode afterwards: make it eval
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values: the checks below decide
        torch.onnx.export(graph, (sample, sample), buf, input_names=["a", "b"], output_names=names,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)
    model.eval()
    return buf.getvalue()


def max_difference(model: nn.Module, session: Any, shape: tuple[int, int, int, int], seed: int = 0) -> float:
    """Largest change-probability difference between ``model`` and an onnxruntime ``session`` on random input."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    with torch.no_grad():
        ref = change_probability(model(a, b).change)
    out = session.run(["change"], {"a": a.numpy(), "b": b.numpy()})[0]
    return float((change_probability(torch.from_numpy(out)) - ref).abs().max())


def _metadata(cfg: dict[str, Any], model: nn.Module, tile: int, dynamic: bool) -> dict[str, str]:
    from ..data.normalize import Normalisation

    meta = {
        "config": json.dumps(plain_json(cfg)),
        "normalisation": json.dumps(plain_json(Normalisation.from_config(cfg))),
        "bands": json.dumps(plain_json(cfg.get("data", {}).get("bands"))),
        "model": str(cfg["model"]["name"]),
        "task": str(getattr(model, "task", "binary")),
        "in_channels": str(int(getattr(model, "in_channels", 3))),
        "num_classes": str(int(getattr(model, "num_classes", 0) or 0)),
        "input_divisor": str(int(getattr(model, "input_divisor", 1) or 1)),
        "traced_tile": str(tile),
    }
    if not dynamic:
        meta["fixed_size"] = str(tile)
    return {META_PREFIX + k: v for k, v in meta.items()}


def export_model(model: nn.Module, cfg: dict[str, Any], out: str | Path, tile: int = 512,
                 source: str | Path = "model") -> OnnxExport:
    """Export ``model`` (with its run's resolved ``cfg``) to ``out`` after checking it (see the module docstring).

    Args:
        tile: the traced tile size (rounded up to the model's input divisor; ``predict``'s default is 512).
        source: what to name in messages (the checkpoint).

    Raises:
        CheckpointError: the model takes extra inputs (ChangeCLIP's tags), cannot be traced, or disagrees with
            PyTorch at the traced size.
    """
    import onnx
    import onnxruntime as ort

    name = cfg["model"]["name"]
    if getattr(model, "extra_inputs", ()):
        raise CheckpointError(f"{source}: model '{name}' takes extra inputs ({', '.join(model.extra_inputs)}); "
                              "ONNX export covers models of the two images alone")
    divisor = max(int(getattr(model, "input_divisor", 1) or 1), 1)
    tile = -(-int(tile) // divisor) * divisor
    channels = int(getattr(model, "in_channels", 3))
    semantic = getattr(model, "task", "binary") == "semantic"
    model = model.cpu().eval()
    try:
        data = _trace(model, semantic, channels, tile)
    except Exception as exc:  # noqa: BLE001  (the tracer's errors are long and internal: one line instead)
        first = " ".join(str(exc).split())[:240]
        raise CheckpointError(f"{source}: model '{name}' cannot be exported to ONNX ({type(exc).__name__}: "
                              f"{first})") from None
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    diffs = [max_difference(model, session, (n, channels, tile, tile), seed=n) for n in (1, 2)]
    if max(diffs) > TOLERANCE:
        raise CheckpointError(f"{source}: model '{name}' exports, but onnxruntime differs from PyTorch by "
                              f"{max(diffs):.2e} > {TOLERANCE:g} in change probability at {tile} x {tile}")
    half = max(divisor, (tile // 2) // divisor * divisor)
    other_diff = 0.0
    for i, size in enumerate(((half, half), (half, 3 * half))):  # other tile sizes, one of them not square
        try:
            other_diff = max(other_diff, max_difference(model, session, (1, channels, *size), seed=3 + i))
        except Exception:  # noqa: BLE001  (onnxruntime refuses the shape: sizes frozen at trace time)
            other_diff = float("inf")
    dynamic = other_diff <= TOLERANCE
    if not dynamic:
        log.warning("%s: model '%s' exports for %d x %d tiles only (its code computes shapes in Python, which the "
                    "trace freezes); predict --runtime onnx will need --tile %d", source, name, tile, tile, tile)
    proto = onnx.load_from_string(data)
    for key, value in _metadata(cfg, model, tile, dynamic).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    out = Path(out)
    with atomic_path(out) as tmp:
        onnx.save(proto, str(tmp))
    diff = max(diffs + ([other_diff] if dynamic else []))
    log.info("%s: %s exported (max probability difference %.1e)", out, name, diff)
    return OnnxExport(out, tile, dynamic, float(np.float64(diff)))


def export_onnx(ckpt: str | Path, out: str | Path, tile: int = 512, overwrite: bool = False) -> OnnxExport:
    """``changekit export --ckpt CKPT --onnx OUT``: load the checkpoint and :func:`export_model` it."""
    from ..engine.checkpoint import load_checkpoint
    from ..safety import check_output

    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise CheckpointError(f"--onnx: {out} must end in .onnx")
    check_output(out, inputs=[ckpt], overwrite=overwrite, kind="file")
    model, cfg = load_checkpoint(ckpt)
    return export_model(model, cfg, out, tile, source=ckpt)
