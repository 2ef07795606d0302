"""Sliding-window inference: cut a pair into overlapping tiles, predict them in batches, blend the results.

Models are trained on small crops, so large images are predicted tile by tile. Overlapping tiles are blended
with a weight window (``"gaussian"`` favours tile centres, where the model saw the most context; ``"mean"``
averages uniformly) by accumulating weighted sums and weights, then dividing once. The input is reflect-padded
so that every tile fits on a regular grid and every tile size honours the model's ``input_divisor``.

:class:`TilePredictor` is the reusable core (``predict_scene`` drives it strip by strip over rasters that do
not fit in memory); :func:`sliding_window_predict` is the in-memory entry point.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..models.outputs import change_probability

log = logging.getLogger(__name__)

#: computes more forward inputs from a batch of tiles ``(ta, tb)`` (e.g. :class:`~changekit.clip_tags.TileTagger`)
TileExtras = Callable[[torch.Tensor, torch.Tensor], dict[str, Any]]

BLENDS = ("gaussian", "mean")


@dataclass(frozen=True)
class TileGrid:
    """Tile placement for an image of ``height x width`` (all coordinates in the padded frame).

    Attributes:
        height, width: size of the unpadded image.
        tile, stride: tile side and step between tile origins.
        pad_top, pad_left, pad_bottom, pad_right: reflect padding added around the image.
        ys, xs: tile origins along each axis in the padded frame.
    """

    height: int
    width: int
    tile: int
    stride: int
    pad_top: int
    pad_bottom: int
    pad_left: int
    pad_right: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @property
    def padded_height(self) -> int:
        return self.height + self.pad_top + self.pad_bottom

    @property
    def padded_width(self) -> int:
        return self.width + self.pad_left + self.pad_right

    def row_index(self) -> torch.Tensor:
        """Source row of every padded row (reflection at the borders)."""
        return reflect_indices(self.height, self.pad_top, self.pad_bottom)

    def col_index(self) -> torch.Tensor:
        """Source column of every padded column (reflection at the borders)."""
        return reflect_indices(self.width, self.pad_left, self.pad_right)


def _axis_plan(length: int, tile: int, stride: int) -> tuple[int, int, tuple[int, ...]]:
    """Padding before/after and tile origins so that tiles of ``tile`` at ``stride`` cover ``length``."""
    padded = tile if length <= tile else tile + math.ceil((length - tile) / stride) * stride
    before = (padded - length) // 2  # centre the image so both borders get reflected context
    return before, padded - length - before, tuple(range(0, padded - tile + 1, stride))


def plan_grid(height: int, width: int, tile: int, stride: int) -> TileGrid:
    """Place ``tile``-sized tiles every ``stride`` pixels over an image, padding it where needed."""
    top, bottom, ys = _axis_plan(height, tile, stride)
    left, right, xs = _axis_plan(width, tile, stride)
    return TileGrid(height, width, tile, stride, top, bottom, left, right, ys, xs)


def reflect_indices(length: int, before: int, after: int) -> torch.Tensor:
    """Indices into ``range(length)`` of a reflect-padded axis; unlike ``F.pad`` any pad size is allowed."""
    pos = torch.arange(-before, length + after)
    if length == 1:
        return torch.zeros_like(pos)
    period = 2 * (length - 1)
    m = pos.remainder(period)
    return torch.where(m < length, m, period - m)


def blend_window(tile: int, blend: str) -> torch.Tensor:
    """``(tile, tile)`` float32 weights: a separable Gaussian (sigma = tile / 8) or all ones."""
    if blend == "mean":
        return torch.ones(tile, tile)
    if blend != "gaussian":
        raise ConfigError(f"blend: unknown value '{blend}'; choose one of {', '.join(BLENDS)}")
    sigma = tile / 8
    r = torch.arange(tile, dtype=torch.float64) - (tile - 1) / 2
    g = torch.exp(-0.5 * (r / sigma) ** 2)
    w = torch.outer(g, g)
    return (w / w.max()).clamp_min(1e-4).float()  # no zero weights: tile corners still count a little


def autocast_for(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """Mixed precision context: float16 on CUDA, bfloat16 elsewhere; a no-op when not ``enabled``."""
    if not enabled:
        return contextlib.nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block and restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def resolve_device(model: nn.Module, device: str | torch.device | None) -> torch.device:
    """Move ``model`` to ``device`` if given, else return the device its parameters already live on."""
    if device is not None:
        dev = torch.device(device)
        model.to(dev)
        return dev
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


class TilePredictor:
    """Predicts tiles in batches and accumulates blended class probabilities.

    The accumulator has ``1 + 2K`` channels: change probability, then the ``K`` class probabilities of date A
    and of date B (``K = 0`` for binary models, discovered from the first batch).

    Args:
        model: a ``ChangeModel`` (anything returning a ``ChangeOutput``).
        tile: tile side in pixels; rounded up to a multiple of ``model.input_divisor``.
        stride: step between tiles, ``1 <= stride <= tile``.
        batch_size: tiles per forward pass.
        blend: ``"gaussian"`` or ``"mean"``.
        device: compute device; ``None`` keeps the model where it is.
        amp: run the model under autocast (outputs are accumulated in float32 either way).
    """

    def __init__(
        self,
        model: nn.Module,
        tile: int,
        stride: int,
        batch_size: int = 8,
        blend: str = "gaussian",
        device: str | torch.device | None = None,
        amp: bool = False,
    ) -> None:
        if tile < 1:
            raise ConfigError(f"tile: must be a positive number of pixels, got {tile}")
        if batch_size < 1:
            raise ConfigError(f"batch_size: must be at least 1, got {batch_size}")
        divisor = max(int(getattr(model, "input_divisor", 1) or 1), 1)
        if tile % divisor:
            new_tile = -(-tile // divisor) * divisor
            log.info("tile %d is not a multiple of the model's input_divisor %d; using %d", tile, divisor, new_tile)
            tile = new_tile
        if not 1 <= stride <= tile:
            raise ConfigError(f"stride: must be between 1 and the tile size {tile}, got {stride} (overlap too large?)")
        self.model = model
        self.tile = tile
        self.stride = stride
        self.batch_size = batch_size
        self.device = resolve_device(model, device)
        self.amp = amp
        self.window = blend_window(tile, blend)
        self.num_sem: int | None = None

    def grid(self, height: int, width: int) -> TileGrid:
        """Tile grid for an image of this size."""
        return plan_grid(height, width, self.tile, self.stride)

    @torch.inference_mode()
    def accumulate(
        self,
        a: torch.Tensor,
        b: torch.Tensor,
        positions: Sequence[tuple[int, int, int]],
        acc: torch.Tensor | None = None,
        wsum: torch.Tensor | None = None,
        extras: dict[str, Any] | None = None,
        tile_extras: TileExtras | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Add the weighted predictions of the tiles at ``positions`` to ``acc`` and their weights to ``wsum``.

        Args:
            a, b: padded images ``(N, C, H, W)``; tiles are cut from them on their own device.
            positions: ``(image index, y, x)`` tile origins.
            acc: ``(N, 1 + 2K, H, W)`` float32 running sums, allocated on ``a``'s device when ``None``.
            wsum: ``(N, 1, H, W)`` float32 running weights, allocated likewise.
            extras: forward keywords; tensors and lists with one entry per image are indexed per tile.
            tile_extras: called with each batch of tiles ``(ta, tb)``; returns more forward keywords for them
                (e.g. :class:`~changekit.clip_tags.TileTagger`: CLIP tags per tile).

        Returns:
            The updated ``(acc, wsum)``.
        """
        t = self.tile
        n_img = a.shape[0]
        window = self.window.to(a.device)
        if wsum is None:
            wsum = torch.zeros(n_img, 1, *a.shape[-2:], device=a.device)
        for start in range(0, len(positions), self.batch_size):
            chunk = positions[start : start + self.batch_size]
            ta = torch.stack([a[n, :, y : y + t, x : x + t] for n, y, x in chunk]).to(self.device)
            tb = torch.stack([b[n, :, y : y + t, x : x + t] for n, y, x in chunk]).to(self.device)
            kw = _select_extras(extras, [n for n, _, _ in chunk], n_img)
            if tile_extras is not None:
                kw.update(tile_extras(ta, tb))
            with autocast_for(self.device, self.amp):
                out = self.model(ta, tb, **kw)
            probs = self._probabilities(out, t).to(a.device) * window
            if acc is None:
                acc = torch.zeros(n_img, probs.shape[1], *a.shape[-2:], device=a.device)
            for i, (n, y, x) in enumerate(chunk):
                acc[n, :, y : y + t, x : x + t] += probs[i]
                wsum[n, 0, y : y + t, x : x + t] += window
        if acc is None:  # no positions at all
            acc = torch.zeros(n_img, 1 + 2 * (self.num_sem or 0), *a.shape[-2:], device=a.device)
        return acc, wsum

    def _probabilities(self, out: Any, tile: int) -> torch.Tensor:
        """Stack change and class probabilities of one batch of tiles as ``(B, 1 + 2K, t, t)`` float32."""
        change = out.change
        if change.shape[-2:] != (tile, tile):
            raise ValueError(
                f"model returned change logits of size {tuple(change.shape[-2:])} for {tile}x{tile} tiles; "
                "models must predict at input resolution"
            )
        parts = [change_probability(change)[:, None]]
        if out.sem_a is not None and out.sem_b is not None:
            parts += [out.sem_a.float().softmax(1), out.sem_b.float().softmax(1)]
        k = (sum(p.shape[1] for p in parts) - 1) // 2
        if self.num_sem is None:
            self.num_sem = k
        elif self.num_sem != k:
            raise ValueError(f"model returned {k} semantic classes after {self.num_sem} in an earlier batch")
        return torch.cat(parts, 1).float()

    def split(self, probs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``(N, 1 + 2K, H, W)`` probabilities into ``change`` ``(N,H,W)`` and ``sem_a``/``sem_b``."""
        result = {"change": probs[:, 0]}
        k = self.num_sem or 0
        if k:
            result["sem_a"] = probs[:, 1 : 1 + k]
            result["sem_b"] = probs[:, 1 + k :]
        return result


def _select_extras(extras: dict[str, Any] | None, index: list[int], n_img: int) -> dict[str, Any]:
    """Per-tile forward keywords: per-image tensors/lists are gathered by tile image index, others pass."""
    if not extras:
        return {}
    selected: dict[str, Any] = {}
    for key, value in extras.items():
        if isinstance(value, torch.Tensor) and value.ndim and value.shape[0] == n_img:
            selected[key] = value[index]
        elif isinstance(value, list | tuple) and len(value) == n_img:
            selected[key] = [value[i] for i in index]
        else:
            selected[key] = value
    return selected


def stride_from(tile: int, overlap: int | None, stride: int | None) -> int:
    """The tile step: ``stride`` if given, else ``tile - overlap``."""
    if stride is not None:
        return stride
    overlap = 0 if overlap is None else overlap
    if not 0 <= overlap < tile:
        raise ConfigError(f"overlap: must be between 0 and tile - 1 = {tile - 1}, got {overlap}")
    return tile - overlap


def sliding_window_predict(
    model: nn.Module,
    a: torch.Tensor,
    b: torch.Tensor,
    tile: int = 256,
    overlap: int | None = 64,
    stride: int | None = None,
    batch_size: int = 8,
    blend: str = "gaussian",
    device: str | torch.device | None = None,
    amp: bool = False,
    extras: dict[str, Any] | None = None,
    tile_extras: TileExtras | None = None,
) -> dict[str, torch.Tensor]:
    """Predict a pair of any size by blending overlapping tiles.

    Args:
        model: a change model returning a ``ChangeOutput``; run in eval mode under ``torch.inference_mode``.
        a, b: normalised images ``(N, C, H, W)`` or ``(C, H, W)`` of equal shape.
        tile: tile side (rounded up to the model's ``input_divisor``); smaller images are padded to one tile.
        overlap: pixels shared by neighbouring tiles (ignored when ``stride`` is given).
        stride: step between tiles; overrides ``overlap``.
        batch_size: tiles per forward pass (tiles of all ``N`` images are batched together).
        blend: ``"gaussian"`` (centre-weighted) or ``"mean"``.
        device: compute device (the model is moved there); ``None`` keeps the model's device.
        amp: autocast the forward pass.
        extras: forward keywords (e.g. ``tags_a``); per-image entries are indexed per tile.
        tile_extras: forward keywords computed from each batch of tiles (see :meth:`TilePredictor.accumulate`).

    Returns:
        ``{"change": (H, W)}`` change probability, plus ``"sem_a"``/``"sem_b"`` class probabilities
        ``(K, H, W)`` for semantic models; a leading ``N`` axis when the input had one. Float32, on the
        device of ``a``.
    """
    if a.shape != b.shape or a.ndim not in (3, 4):
        raise ValueError(
            f"expected two tensors of equal shape (N, C, H, W) or (C, H, W), got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    single = a.ndim == 3
    if single:
        a, b = a[None], b[None]
    predictor = TilePredictor(model, tile, stride_from(tile, overlap, stride), batch_size, blend, device, amp)
    h, w = a.shape[-2:]
    grid = predictor.grid(h, w)
    rows, cols = grid.row_index().to(a.device), grid.col_index().to(a.device)
    a_pad = a[:, :, rows][:, :, :, cols].float()
    b_pad = b[:, :, rows][:, :, :, cols].float()
    positions = [(n, y, x) for n in range(a.shape[0]) for y in grid.ys for x in grid.xs]
    log.debug("sliding window: %d tiles of %d px, stride %d", len(positions), predictor.tile, predictor.stride)
    with eval_mode(model):
        acc, wsum = predictor.accumulate(a_pad, b_pad, positions, extras=extras, tile_extras=tile_extras)
    top, left = grid.pad_top, grid.pad_left
    probs = (acc / wsum)[:, :, top : top + h, left : left + w].contiguous()  # a normal (not inference) tensor
    result = predictor.split(probs)
    return {k: v[0] for k, v in result.items()} if single else result
