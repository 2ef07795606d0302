"""Pixel normalisation: raw pixels of any dtype -> the float tensors a model was trained on.

One :class:`Normalisation` is applied by every reader of pixels for a model (training data, ``test``,
``predict`` on image folders and on scenes), so what the network sees at inference is what it saw in training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def dtype_scale(dtype: Any) -> float:
    """Full-scale value of a pixel dtype: 255 for uint8, the integer maximum otherwise, 1.0 for floats."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
        return 1.0
    return float(np.iinfo(dtype).max)


@dataclass(frozen=True)
class Normalisation:
    """``(raw / scale - mean) / std`` per band; non-finite values (nodata) become 0 before it.

    Attributes:
        mean, std: per band (one value applies to every band).
        scale: divisor of the raw values; ``None``: :func:`dtype_scale` of the input.
    """

    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    scale: float | None = None

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Normalisation:
        """The normalisation a run's resolved config describes (``data.mean``, ``data.std``)."""
        data = cfg["data"]
        return cls(tuple(data["mean"]), tuple(data["std"]))

    def _stats(self, bands: int, source: Any) -> tuple[np.ndarray, np.ndarray]:
        m = np.asarray(self.mean, np.float32).reshape(-1)
        s = np.asarray(self.std, np.float32).reshape(-1)
        for key, v in (("data.mean", m), ("data.std", s)):
            if len(v) not in (1, bands):
                raise ConfigError(f"{source}: {bands} band(s), but {key} has {len(v)} values")
        if (s == 0).any():
            raise ConfigError("data.std: values must be non-zero")
        return np.resize(m, bands).reshape(-1, 1, 1), np.resize(s, bands).reshape(-1, 1, 1)

    def chw(self, raw: np.ndarray, source: Any = "input") -> torch.Tensor:
        """Normalise raw ``(C, H, W)`` pixels into a float32 tensor."""
        m, s = self._stats(raw.shape[0], source)
        scale = np.float32(self.scale if self.scale is not None else dtype_scale(raw.dtype))
        if np.issubdtype(raw.dtype, np.floating):  # NaN / Inf are nodata: they never reach the network
            raw = np.where(np.isfinite(raw), raw, 0)
        return torch.from_numpy((raw.astype(np.float32) / scale - m) / s)

    def hwc(self, raw: np.ndarray, source: Any = "input") -> torch.Tensor:
        """Normalise raw ``(H, W, C)`` (or ``(H, W)``) pixels into a float32 ``(C, H, W)`` tensor."""
        if raw.ndim == 2:
            raw = raw[:, :, None]
        return self.chw(np.ascontiguousarray(raw.transpose(2, 0, 1)), source)
