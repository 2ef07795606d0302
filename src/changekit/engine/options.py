"""The settings of a prediction run, in one typed object that the CLI and the Python API share.

``changekit predict`` builds a :class:`PredictOptions` from its flags; ``changekit.predict(ckpt, a, b, out,
PredictOptions(tile=256, amp=True))`` (or the same keywords directly) is the Python form. Checking happens once,
in :meth:`PredictOptions.validate`, so every entry point refuses a bad value with the same one-line message.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, suggest

BLENDS = ("gaussian", "mean")
RUNTIMES = ("torch", "onnx")


def check_threshold(threshold: float | None) -> None:
    """A ``--threshold`` given by the user is a probability: one error line otherwise (test, predict, ensemble)."""
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"--threshold: must be within [0, 1], got {threshold:g}")


@dataclass
class PredictOptions:
    """How pairs are cut into tiles, run and written.

    Attributes:
        tile: tile side in pixels (rounded up to the model's input divisor).
        overlap: pixels shared by neighbouring tiles (``0 <= overlap < tile``); blended away.
        batch_size: tiles per forward pass.
        blend: ``gaussian`` (seam-free) or ``mean`` (mmseg's averaging).
        threshold: change probability above which a pixel is change; ``None``: the checkpoint's
            ``trainer.threshold``.
        device: ``cpu``, ``cuda``, ``cuda:1``...; ``None``: CUDA when available.
        amp: autocast (bfloat16 on CPU, float16 on CUDA); probabilities are accumulated in float32.
        save_prob: also write change probabilities (``OUT_prob/``).
        save_overlay: also write coloured overlays (``OUT_overlay/``, PNG inputs only).
        overwrite: replace existing outputs.
        tile_tags: ChangeCLIP: tag every tile with CLIP instead of reading tag files (the seed's ``mm_slide``).
        clip_model, clip_weights, clip_classes: the CLIP model, its local weights and class-name file for
            ``tile_tags``.
        runtime: ``torch`` (a changekit checkpoint) or ``onnx`` (a model from ``changekit export --onnx``, run by
            onnxruntime through the same tiling, blending and writing).
        summary: also write a JSON summary per pair (``<name>_summary.json``: changed area, polygons, valid
            share, normalisation, model, timings); always on for pair lists, where it marks a finished pair.
        report: also write a self-contained HTML scene report per pair (``<name>_report.html``; implies
            ``summary``).
        align: warp date B onto date A's grid as it is read (CRS, resolution, extent; outside B's footprint is
            nodata); without it, dates on different grids are refused naming what differs.
        resampling: how B is resampled by ``align`` (``nearest``, ``bilinear``, ``cubic``... see
            :data:`changekit.raster.reader.RESAMPLINGS`).
        compress: compression of the Cloud Optimized GeoTIFF outputs (``deflate``, ``zstd`` or ``lzw``).
        vector: also write the change polygons of each pair (``.gpkg``, ``.geojson`` or ``.parquet``; one pair:
            exactly this file; several: ``<name>_change<suffix>`` beside the masks) with areas, probabilities and
            from-to classes (:func:`changekit.raster.vector.vectorize`).
        min_area: polygons smaller than this (map units squared, e.g. m²) are left out of ``vector``.
        simplify: simplification tolerance of ``vector`` polygons in map units (0: exact pixel edges).
        bands: 1-based bands of the input files to read, in the model's band order (``--bands 4,3,2``);
            ``None``: the bands the checkpoint was trained on (its ``data.bands``). Needed only when the inputs
            order or number their bands otherwise than the training files.
    """

    tile: int = 512
    overlap: int = 64
    batch_size: int = 4
    blend: str = "gaussian"
    threshold: float | None = None
    device: str | None = None
    amp: bool = False
    save_prob: bool = False
    save_overlay: bool = False
    overwrite: bool = False
    tile_tags: bool = False
    clip_model: str = "ViT-B-16"
    clip_weights: str | Path | None = None
    clip_classes: str | Path | None = None
    runtime: str = "torch"
    summary: bool = False
    report: bool = False
    align: bool = False
    resampling: str = "bilinear"
    compress: str = "deflate"
    vector: str | Path | None = None
    min_area: float = 0.0
    simplify: float = 0.0
    bands: tuple[int, ...] | None = None

    @classmethod
    def build(cls, options: PredictOptions | None = None, **overrides: Any) -> PredictOptions:
        """``options`` (or the defaults) with ``overrides`` applied; an unknown keyword is one ``ConfigError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = [k for k in overrides if k not in names]
        if unknown:
            raise ConfigError(f"predict: unknown option '{unknown[0]}'{suggest(unknown[0], names)}")
        base = options if options is not None else cls()
        return dataclasses.replace(base, **overrides).validate()

    def validate(self) -> PredictOptions:
        """Check every value once; returns ``self``."""
        for name in ("tile", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')}: must be a positive integer, got {value!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or not 0 <= self.overlap < self.tile:
            raise ConfigError(f"--overlap: must be between 0 and tile - 1 = {self.tile - 1}, got {self.overlap!r}")
        if self.blend not in BLENDS:
            raise ConfigError(f"--blend: must be one of {', '.join(BLENDS)}, got {self.blend!r}"
                              f"{suggest(str(self.blend), BLENDS)}")
        check_threshold(self.threshold)
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"--runtime: must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}"
                              f"{suggest(str(self.runtime), RUNTIMES)}")
        if self.runtime == "onnx" and (self.amp or self.tile_tags):
            flag = "--amp" if self.amp else "--tile-tags"
            raise ConfigError(f"{flag}: not available with --runtime onnx (the exported graph runs in float32 "
                              "on the tiles alone); drop it or use --runtime torch")
        self._validate_raster()
        if self.bands is not None:
            from ..data.norm_config import parse_bands

            self.bands = parse_bands(self.bands, "--bands")
        return self

    def _validate_raster(self) -> None:
        """The raster-layer options: resampling, compression, vector format, min_area and simplify."""
        from ..raster.reader import RESAMPLINGS
        from ..raster.vector import FORMATS
        from ..raster.writer import COMPRESSIONS

        for flag, value, allowed in (("--resampling", self.resampling, RESAMPLINGS),
                                     ("--compress", self.compress, COMPRESSIONS)):
            if value not in allowed:
                raise ConfigError(f"{flag}: must be one of {', '.join(allowed)}, got {value!r}"
                                  f"{suggest(str(value), allowed)}")
        if self.vector is not None and Path(self.vector).suffix.lower() not in FORMATS:
            raise ConfigError(f"--vector: {self.vector} must end in {', '.join(FORMATS)}")
        for flag, value in (("--min-area", self.min_area), ("--simplify", self.simplify)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < float("inf"):
                raise ConfigError(f"{flag}: must be a number >= 0 (map units), got {value!r}")

    def window(self) -> dict[str, Any]:
        """The sliding-window keywords (``tile``, ``overlap``, ``batch_size``, ``blend``, ``amp``)."""
        return dict(tile=self.tile, overlap=self.overlap, batch_size=self.batch_size, blend=self.blend, amp=self.amp)
