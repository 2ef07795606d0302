"""An ONNX export run by onnxruntime, looking like a change model to the tiling code.

``predict --runtime onnx`` goes through exactly the same path as a checkpoint (tiling, blending, nodata, band
selection, normalisation, GeoTIFF writing): :class:`OnnxChangeModel` is an ``nn.Module`` whose forward feeds the
tiles to an onnxruntime session and wraps the logits in a :class:`~changekit.models.outputs.ChangeOutput`, and
:func:`load_onnx` returns it with the run's config read back from the file's metadata.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError
from ..models.outputs import ChangeOutput
from .onnx_export import META_PREFIX


class OnnxChangeModel(nn.Module):
    """Runs an exported change model with onnxruntime.

    Args:
        path: the ``.onnx`` file from ``changekit export``.
        device: ``cuda`` uses onnxruntime's CUDA provider when installed, else the CPU provider.
        threads: onnxruntime intra-op threads (``0``: its default, every core).

    Attributes:
        in_channels, input_divisor, task, num_classes: from the file's metadata, as a model has them.
        fixed_size: the only tile size the graph is valid for (``None``: any size).
    """

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", threads: int = 0) -> None:
        super().__init__()
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001  (onnxruntime's own exception types)
            raise CheckpointError(f"{self.path}: not a readable ONNX model ({' '.join(str(exc).split())[:200]})") \
                from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if META_PREFIX + "config" not in meta:
            raise CheckpointError(f"{self.path}: an ONNX model without changekit metadata; export it with "
                                  "`changekit export --ckpt CKPT --onnx FILE`")
        self.meta = {k[len(META_PREFIX):]: v for k, v in meta.items() if k.startswith(META_PREFIX)}
        self.in_channels = int(self.meta["in_channels"])
        self.input_divisor = int(self.meta["input_divisor"])
        self.task = self.meta["task"]
        self.num_classes = int(self.meta.get("num_classes", 0))
        self.fixed_size = int(self.meta["fixed_size"]) if "fixed_size" in self.meta else None
        self.outputs = [o.name for o in self.session.get_outputs()]

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:
        """``(N, C, H, W)`` float tiles of each date -> the exported logits, on ``a``'s device."""
        if self.fixed_size is not None and tuple(a.shape[-2:]) != (self.fixed_size, self.fixed_size):
            raise ConfigError(f"{self.path}: exported for {self.fixed_size} x {self.fixed_size} tiles only, got "
                              f"{a.shape[-2]} x {a.shape[-1]}; use --tile {self.fixed_size}")
        feeds = {"a": a.detach().float().cpu().numpy(), "b": b.detach().float().cpu().numpy()}
        outs = [torch.from_numpy(o).to(a.device) for o in self.session.run(self.outputs, feeds)]
        return ChangeOutput(*outs) if len(outs) == 3 else ChangeOutput(outs[0])


def load_onnx(path: str | Path, device: str | torch.device = "cpu") -> tuple[OnnxChangeModel, dict[str, Any]]:
    """The runtime model and the run's resolved config stored in the export (the ``load_checkpoint`` of ONNX)."""
    model = OnnxChangeModel(path, device)
    return model, json.loads(model.meta["config"])


def check_tile(model: nn.Module, tile: int) -> None:
    """Refuse a ``--tile`` a fixed-size export cannot run (one line naming the file and the size it needs)."""
    fixed = getattr(model, "fixed_size", None)
    if fixed is not None and tile != fixed:
        raise ConfigError(f"--tile: {model.path} was exported for {fixed}-pixel tiles only (its graph froze the "
                          f"shapes), got {tile}; use --tile {fixed} or export again with --tile {tile}")
