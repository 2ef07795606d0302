"""Change detection over whole scenes that may not fit in memory.

:func:`predict_scene` walks the scene one row of tiles at a time: it reads only the rows those tiles need
(:class:`~changekit.raster.reader.RasterReader` windows of the selected bands, with their validity), blends the
tiles with :class:`~changekit.inference.sliding.TilePredictor`, writes the rows no later tile can touch through
:class:`~changekit.raster.writer.RasterWriter` (finished as Cloud Optimized GeoTIFFs), and carries the overlap rows
over to the next strip. The result is the same as :func:`~changekit.inference.sliding.sliding_window_predict` on
the whole scene, but memory grows with the scene width only. Outputs keep the grid (CRS and transform) of date A.

Where either date has no data (:meth:`RasterReader.valid <changekit.raster.reader.RasterReader.valid>`: nodata
value, internal mask, alpha band, NaN), the network sees the normalised mean (0) and no change is predicted: the
mask holds :data:`~changekit.raster.writer.MASK_NODATA`, the probability NaN and the class maps
:data:`~changekit.raster.writer.CLASS_NODATA`. Both dates must share one pixel grid, unless ``options.align``
warps date B onto date A's grid as it is read (rasterio ``WarpedVRT``; outside B's footprint is nodata).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..data.normalize import Normalisation
from ..errors import ConfigError
from ..raster.gdal import gdal_env
from ..raster.reader import RasterReader, check_pair
from ..raster.writer import CLASS_NODATA, MASK_NODATA, RasterWriter
from .sliding import TileExtras, TilePredictor, eval_mode, stride_from

if TYPE_CHECKING:
    from ..engine.distributed import Ranks
    from ..engine.options import PredictOptions

log = logging.getLogger(__name__)

#: What each scene output holds (:data:`changekit.raster.writer.KINDS`).
OUTPUT_KINDS = {"mask": "mask", "prob": "prob", "sem_a": "classes", "sem_b": "classes"}


@dataclass
class SceneOutputs:
    """The files one scene prediction writes (``None``: not written).

    Attributes:
        mask: 0 = no change, 255 = change (uint8); ``.tif`` keeps A's georeferencing, ``.png`` has none.
        prob: change probability (float32 GeoTIFF; a PNG is scaled to 0..255).
        sem_a, sem_b: semantic models: class-index maps of each date (uint8, with the palette).
    """

    mask: Path
    prob: Path | None = None
    sem_a: Path | None = None
    sem_b: Path | None = None

    def items(self) -> list[tuple[str, Path]]:
        """``(key, path)`` of every file to write."""
        return [(k, Path(v)) for k, v in vars(self).items() if v is not None]


def predict_scene(
    model: nn.Module,
    a_path: str | Path,
    b_path: str | Path,
    outputs: SceneOutputs | str | Path,
    options: PredictOptions | None = None,
    norm: Normalisation | None = None,
    *,
    extras: dict[str, Any] | None = None,
    palette: np.ndarray | None = None,
    tile_extras: TileExtras | None = None,
    bands: Sequence[int] | None = None,
    ranks: Ranks | None = None,
) -> Path:
    """Predict the change mask of a (georeferenced) scene pair, strip by strip, and write it.

    Args:
        model: a change model; it runs in eval mode without gradients.
        a_path, b_path: the two dates (GeoTIFF read by windows, or PNG/JPEG decoded whole); they must share
            size, band count, CRS and transform, unless ``options.align`` warps B onto A's grid.
        outputs: the files to write (:class:`SceneOutputs`), or just the mask's path.
        options: tile, overlap, batch size, blend, amp, threshold (default 0.5), device (default: the model's),
            ``align`` / ``resampling`` and ``compress`` (:class:`~changekit.engine.options.PredictOptions`).
        norm: raw pixels -> model input (the checkpoint's :class:`~changekit.data.normalize.Normalisation`:
            bands, scaling, ``data.radiometric`` fitted over the whole scene first; default: dtype full scale, then
            ImageNet mean/std); a date far outside its training statistics is warned about, naming the file.
        extras: the model's extra forward inputs for this one pair (e.g. ChangeCLIP's tags), one entry each.
        palette: ``(K, 3)`` uint8 class colours for the class maps (a GeoTIFF colour table or a palette PNG).
        tile_extras: forward inputs computed per batch of tiles instead (e.g. a
            :class:`~changekit.clip_tags.TileTagger`: ChangeCLIP's tags from each tile).
        bands: 1-based band indices read from both dates (default: ``norm.bands``, else every non-alpha band).
        ranks: several processes share the scene's rows (:mod:`~changekit.inference.scene_shard`); every rank
            calls this with the same scene, and only rank 0's ``outputs`` are written.

    Returns:
        The mask's path.

    Raises:
        SizeMismatchError: A and B differ in size, bands, CRS or transform (without ``align``).
        ConfigError: a setting or an output suffix is invalid, or the bands do not match the model.
    """
    from ..engine.options import PredictOptions

    files = outputs if isinstance(outputs, SceneOutputs) else SceneOutputs(Path(outputs))
    opt = (options or PredictOptions()).validate()
    norm = norm or Normalisation()
    if bands is None:
        bands = getattr(norm, "bands", None)
    threshold = 0.5 if opt.threshold is None else float(opt.threshold)
    inputs = {Path(a_path).resolve(), Path(b_path).resolve()}
    for key, p in files.items():
        if p.resolve() in inputs:
            raise ConfigError(f"{p}: the {key} output is one of the input images; choose another output path")
    with gdal_env(), contextlib.ExitStack() as stack:
        src_a = stack.enter_context(RasterReader(a_path, bands))
        align = src_a if opt.align else None
        src_b = stack.enter_context(RasterReader(b_path, bands, align_to=align,
                                                 resampling=opt.resampling))
        check_pair(src_a, src_b)
        in_ch = getattr(model, "in_channels", None)
        if in_ch is not None and in_ch != src_a.count:
            raise ConfigError(f"{src_a.path} has {src_a.count} bands but the model expects {in_ch} input channels")
        predictor = TilePredictor(model, opt.tile, stride_from(opt.tile, opt.overlap, None), opt.batch_size,
                                  opt.blend, opt.device, opt.amp)

        def open_writers() -> dict[str, RasterWriter]:
            return {key: stack.enter_context(RasterWriter(
                p, src_a.height, src_a.width, OUTPUT_KINDS[key], src_a.geo, palette if key.startswith("sem") else None,
                opt.compress, key=key)) for key, p in files.items()}

        sharded = ranks is not None and ranks.distributed
        writers = {} if sharded else open_writers()
        map_a, map_b = norm.fit_scene(src_a, src_b)  # range warning; data.radiometric over the whole scene

        def run(outputs: dict[str, Any], rows: tuple[int, int] | None = None) -> None:
            with eval_mode(model), torch.inference_mode():
                _run_strips(predictor, src_a, src_b, lambda raw, valid: norm.chw(raw, src_a.path, map_a, valid),
                            lambda raw, valid: norm.chw(raw, src_b.path, map_b, valid), outputs, threshold, extras,
                            tile_extras, rows)

        if not sharded:
            run(writers)
        else:
            _run_shard(ranks, files, src_a.height, src_a.width, run, open_writers)
    log.info("wrote %s", files.mask)
    return files.mask


def _run_shard(ranks: Ranks, files: SceneOutputs, height: int, width: int, run: Callable[..., None],
               open_writers: Callable[[], dict[str, RasterWriter]]) -> None:
    """This rank's rows into partials; then rank 0 merges every rank's rows into its outputs."""
    from .scene_shard import SceneShard

    first = ranks.rank == 0
    shard = SceneShard.agree(ranks, Path(files.mask).parent if first else None,
                             [k for k, _ in files.items()] if first else None, Path(files.mask).name)
    r0, r1 = shard.rows(height)
    log.info("rank %d of %d: rows %d to %d of %s", ranks.rank, ranks.world, r0, r1 - 1, Path(files.mask).name)
    try:
        sinks = shard.sinks(height, width)
        try:
            run(sinks, (r0, r1))
        finally:
            for sink in sinks.values():
                sink.close()
        ranks.barrier()
        if first:
            shard.merge(open_writers(), height)
        ranks.barrier()
    except BaseException:
        shard.remove()
        raise


def _run_strips(
    predictor: TilePredictor,
    src_a: RasterReader,
    src_b: RasterReader,
    norm_a: Callable[[np.ndarray, np.ndarray], torch.Tensor],
    norm_b: Callable[[np.ndarray, np.ndarray], torch.Tensor],
    outputs: dict[str, RasterWriter],
    threshold: float,
    extras: dict[str, Any] | None = None,
    tile_extras: TileExtras | None = None,
    rows: tuple[int, int] | None = None,
) -> None:
    """Predict one row of tiles at a time, write the finished rows, carry the overlap rows onward.

    With ``rows = (first, end)`` only the strips whose tiles touch those output rows run, in the same order as for
    the whole scene, and only those rows are written (one rank's share of a scene): the same pixels result.
    """
    grid = predictor.grid(src_a.height, src_a.width)
    t = predictor.tile
    row_of, cols = grid.row_index().numpy(), grid.col_index().numpy()
    positions = [(0, 0, x) for x in grid.xs]
    carry: tuple[torch.Tensor, torch.Tensor] | None = None
    log.info("scene %dx%d: %d strips of %d tiles", src_a.height, src_a.width, len(grid.ys), len(grid.xs))
    first_row, end_row = rows if rows is not None else (0, grid.height)
    for r, y in enumerate(grid.ys):
        if y + t <= first_row + grid.pad_top:  # this strip's tiles touch no row of the share
            continue
        if y >= end_row + grid.pad_top:
            break
        idx = row_of[y : y + t]
        lo, hi = int(idx.min()), int(idx.max()) + 1
        window = (lo, 0, hi - lo, src_a.width)
        raw_a, valid_a = src_a.read_valid(window)
        raw_b, valid_b = src_b.read_valid(window)
        tile_rows = idx - lo
        a = norm_a(raw_a[:, tile_rows][:, :, cols], valid_a[tile_rows][:, cols])[None]
        b = norm_b(raw_b[:, tile_rows][:, :, cols], valid_b[tile_rows][:, cols])[None]
        acc = wsum = None
        if carry is not None:
            acc = torch.zeros(1, carry[0].shape[1], *a.shape[-2:])
            wsum = torch.zeros(1, 1, *a.shape[-2:])
            acc[:, :, : carry[0].shape[2]] = carry[0]
            wsum[:, :, : carry[1].shape[2]] = carry[1]
        acc, wsum = predictor.accumulate(a, b, positions, acc, wsum, extras=extras, tile_extras=tile_extras)
        done = (grid.ys[r + 1] if r + 1 < len(grid.ys) else grid.padded_height) - y  # rows no later tile touches
        carry = (acc[:, :, done:].clone(), wsum[:, :, done:].clone())
        r0, r1 = max(y - grid.pad_top, first_row), min(y + done - grid.pad_top, end_row)
        if r1 <= r0:
            continue
        local = slice(r0 + grid.pad_top - y, r1 + grid.pad_top - y)
        c = slice(grid.pad_left, grid.pad_left + grid.width)
        probs = predictor.split(acc[:, :, local, c] / wsum[:, :, local, c])
        _write_rows(outputs, r0, probs, ~(valid_a[r0 - lo : r1 - lo] & valid_b[r0 - lo : r1 - lo]), threshold)


def _write_rows(outputs: dict[str, RasterWriter], r0: int, probs: dict[str, torch.Tensor], nodata: np.ndarray,
                threshold: float) -> None:
    """Write finished rows: the mask, the probability and the class maps, with nodata where ``nodata``."""
    change = probs["change"][0].numpy()
    mask = np.where(change > threshold, 255, 0).astype(np.uint8)
    some = bool(nodata.any())
    if some:  # either date has no data there: no change is predicted, the outputs say "nodata"
        mask[nodata] = MASK_NODATA
    outputs["mask"].write(r0, mask)
    if "prob" in outputs:
        prob = change.astype(np.float32)
        if some:
            prob[nodata] = np.nan
        outputs["prob"].write(r0, prob)
    for key in ("sem_a", "sem_b"):
        if key in outputs:
            if key not in probs:
                raise ConfigError(f"{key}_path: the model is not semantic (it returns no class maps)")
            classes = probs[key][0].argmax(0).numpy().astype(np.uint8)
            if some:
                classes[nodata] = CLASS_NODATA
            outputs[key].write(r0, classes)
