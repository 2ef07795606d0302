"""Pixel normalisation as part of the model: raw pixels of any dtype -> the float tensors it was trained on.

One :class:`Normalisation` is resolved when a run starts (:func:`changekit.data.norm_config.resolve_normalisation`:
``data.bands``, ``data.normalize``, ``data.radiometric`` and the training data's dtype and statistics), stored in
the run's config (``data.resolved_normalize``) and so in every checkpoint, and applied by every reader of pixels
for that model: training and test datasets, ``predict`` on image folders and on scenes, and the Python API. What
the network sees at inference is what it saw in training, whatever the input's dtype.

Per band ``c`` of the selected bands, with the pair's radiometric map ``m`` (:mod:`changekit.data.radiometric`)::

    x' = ((clip(m(x), lo_c, hi_c) - offset_c) / scale_c - mean_c) / std_c

Nodata (non-finite values, and pixels a reader marks invalid) becomes 0 after normalisation: the training mean,
never a raw value that would mean something.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from ..config_types import config_error
from ..errors import ConfigError
from .band_stats import BandStats
from .radiometric import RADIOMETRIC_MODES, BandMap, image_maps, scene_maps

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: how a normalisation was resolved (``legacy``: a checkpoint from before it was stored)
MODES = ("dtype", "scale", "percentile", "meanstd", "standardize", "legacy")
KEY = "data.resolved_normalize"
#: at most this many pixels per image are sampled for the out-of-range check
_RANGE_SAMPLE = 1 << 16


def dtype_scale(dtype: Any) -> float:
    """Full-scale value of a pixel dtype: 255 for uint8, the integer maximum otherwise, 1.0 for floats."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or not np.issubdtype(dtype, np.integer):
        return 1.0
    return float(np.iinfo(dtype).max)


def _floats(value: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in np.asarray(value, np.float64).reshape(-1))


@dataclass(frozen=True)
class Normalisation:
    """The resolved pixel normalisation of a model (see the module docstring for the formula).

    Attributes:
        mean, std: per band (one value applies to every band), after scaling.
        scale: divisor per band (one value for all); ``None``: :func:`dtype_scale` of the input (``legacy``
            checkpoints only; a new run always stores its scale).
        offset: subtracted before scaling, per band (one value for all).
        clip: ``(low, high)`` per band in raw units, applied before the offset (``None``: no clipping).
        bands: 1-based band indices read from every file (``None``: all bands).
        radiometric: the relative radiometric mode between the dates (:data:`RADIOMETRIC_MODES`).
        mode: how it was resolved (:data:`MODES`), for messages and summaries.
        dtype: the training data's dtype (``None``: unknown).
        stats: the training statistics per band (``data stats`` rows: mean, std, min, max, percentiles), when
            they were computed; they are the reference of :meth:`range_problem`.
        request: the ``data.normalize`` value it was resolved from (a resumed run whose request changed
            resolves again).
    """

    mean: Sequence[float] = IMAGENET_MEAN
    std: Sequence[float] = IMAGENET_STD
    scale: float | Sequence[float] | None = None
    offset: float | Sequence[float] = 0.0
    clip: tuple[Sequence[float], Sequence[float]] | None = None
    bands: tuple[int, ...] | None = None
    radiometric: str = "none"
    mode: str = "legacy"
    dtype: str | None = None
    stats: tuple[dict[str, Any], ...] | None = None
    request: str | None = None
    _warned: set[str] = field(default_factory=set, compare=False, repr=False)
    _affines: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict, compare=False,
                                                                              repr=False)

    # ------------------------------------------------------------------------------------ config and storage
    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Normalisation:
        """The normalisation of a run's (or checkpoint's) resolved config: its ``data.resolved_normalize``, or
        for configs from before it existed, ``data.mean`` / ``data.std`` after scaling by dtype (``legacy``)."""
        return cls.from_data_config(config["data"])

    @classmethod
    def from_data_config(cls, data: dict[str, Any]) -> Normalisation:
        """:meth:`from_config` of the ``data`` section alone."""
        if data.get("resolved_normalize"):
            return cls.from_dict(data["resolved_normalize"])
        bands = data.get("bands")
        return cls(tuple(data["mean"]), tuple(data["std"]), bands=tuple(bands) if bands else None,
                   radiometric=data.get("radiometric") or "none")

    def to_dict(self) -> dict[str, Any]:
        """A JSON- and YAML-ready dict (plain lists and numbers), read back by :meth:`from_dict`."""
        def plain(v: Any) -> Any:
            if v is None or isinstance(v, str):
                return v
            vals = list(_floats(v))
            return vals[0] if np.ndim(v) == 0 else vals

        return {
            "mode": self.mode, "bands": list(self.bands) if self.bands else None, "dtype": self.dtype,
            "scale": plain(self.scale), "offset": plain(self.offset),
            "clip": None if self.clip is None else [plain(self.clip[0]), plain(self.clip[1])],
            "mean": plain(self.mean), "std": plain(self.std), "radiometric": self.radiometric,
            "stats": None if self.stats is None else [dict(s) for s in self.stats], "request": self.request,
        }

    @classmethod
    def from_dict(cls, d: Any, key: str = KEY) -> Normalisation:
        """The normalisation a :meth:`to_dict` dict describes.

        Raises:
            ConfigError: not such a dict (names ``key`` and what is wrong).
        """
        if not isinstance(d, dict):
            raise config_error(key, f"expected the mapping that training writes, got {type(d).__name__}")
        unknown = set(d) - {"mode", "bands", "dtype", "scale", "offset", "clip", "mean", "std", "radiometric",
                            "stats", "request"}
        if unknown:
            raise config_error(key, f"unknown entries {sorted(unknown)} (written by another changekit version?)")
        try:
            norm = cls(
                mean=_floats(d["mean"]), std=_floats(d["std"]),
                scale=None if d.get("scale") is None else _floats(d["scale"]),
                offset=_floats(d.get("offset", 0.0)),
                clip=None if d.get("clip") is None else (_floats(d["clip"][0]), _floats(d["clip"][1])),
                bands=tuple(int(b) for b in d["bands"]) if d.get("bands") else None,
                radiometric=str(d.get("radiometric") or "none"), mode=str(d.get("mode") or "scale"),
                dtype=d.get("dtype"), stats=tuple(dict(s) for s in d["stats"]) if d.get("stats") else None,
                request=d.get("request"),
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise config_error(key, f"not a resolved normalisation ({exc.__class__.__name__}: {exc})") from None
        return norm.validate(key)

    def validate(self, key: str = KEY) -> Normalisation:
        """Check the values once; returns ``self``."""
        if self.mode not in MODES:
            raise config_error(key, f"mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.radiometric not in RADIOMETRIC_MODES:
            raise config_error(key, f"radiometric {self.radiometric!r} is not one of {', '.join(RADIOMETRIC_MODES)}")
        for name in ("std", "scale"):
            v = getattr(self, name)
            if v is not None and (not np.all(np.isfinite(v)) or np.any(np.asarray(v, np.float64) == 0)):
                raise config_error(key, f"{name} values must be finite and non-zero, got {list(_floats(v))}")
        if self.bands is not None and any(b < 1 for b in self.bands):
            raise config_error(key, f"bands are 1-based, got {list(self.bands)}")
        return self

    def with_bands(self, bands: Sequence[int] | None) -> Normalisation:
        """The same normalisation reading other band indices (``predict --bands`` for files whose band order
        differs from the training files'); the count must stay the model's."""
        if bands is None:
            return self
        bands = tuple(int(b) for b in bands)
        width = len(self.bands) if self.bands else None
        if width is not None and len(bands) != width:
            raise ConfigError(f"--bands: {len(bands)} band(s) {list(bands)}, but the model was trained on {width} "
                              f"(bands {list(self.bands or ())})")
        return replace(self, bands=bands, _warned=set(), _affines={})

    def describe(self) -> str:
        """One line for logs and summaries: ``bands 4,3,2; meanstd (training statistics); radiometric none``."""
        what = {"dtype": f"divided by {self._scale_text()} (dtype full scale)",
                "scale": f"divided by {self._scale_text()}",
                "percentile": "clipped to training percentiles and scaled to 0..1",
                "meanstd": "standardised with the training mean/std",
                "standardize": "each image standardised by its own mean/std",
                "legacy": "divided by the dtype's full scale (checkpoint without a stored normalisation)"}[self.mode]
        bands = ",".join(map(str, self.bands)) if self.bands else "all"
        return f"bands {bands}; {self.mode}: {what}; radiometric {self.radiometric}"

    def _scale_text(self) -> str:
        if self.scale is None:
            return "the dtype maximum"
        vals = _floats(self.scale)
        return f"{vals[0]:g}" if len(set(vals)) == 1 else "per-band values"

    # ---------------------------------------------------------------------------------------------- applying
    def _per_band(self, value: Any, bands: int, name: str, source: Any) -> np.ndarray:
        v = np.asarray(value, np.float64).reshape(-1)
        if len(v) not in (1, bands):
            raise ConfigError(f"{source}: {bands} band(s), but the model's normalisation has {len(v)} {name} values "
                              f"({self.describe()})")
        return np.resize(v, bands)

    def _affine(self, bands: int, dtype: np.dtype, source: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mul, add)`` ``(C, 1, 1)`` float32 with ``x' = x * mul + add`` after clipping (cached)."""
        key = (bands, np.dtype(dtype).str)
        if key not in self._affines:
            self._affines[key] = self._make_affine(bands, np.dtype(dtype), source)
        return self._affines[key]

    def _make_affine(self, bands: int, dtype: np.dtype, source: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if self.scale is None:
            scale = np.full(bands, dtype_scale(dtype))
            if np.issubdtype(dtype, np.integer) and dtype != np.uint8 and dtype.name not in self._warned:
                self._warned.add(dtype.name)
                log.warning("%s: %s pixels divided by %g: the checkpoint stores no normalisation (trained before "
                            "changekit stored one); retrain, or check that it was trained on %s data", source,
                            dtype.name, scale[0], dtype.name)
        else:
            scale = self._per_band(self.scale, bands, "scale", source)
        mean = self._per_band(self.mean, bands, "mean", source)
        std = self._per_band(self.std, bands, "std", source)
        if (std == 0).any():
            raise ConfigError("data.std: values must be non-zero")
        offset = self._per_band(self.offset, bands, "offset", source)
        mul = 1.0 / (scale * std)
        add = -(offset / scale + mean) / std
        return (torch.from_numpy(mul.astype(np.float32)).view(-1, 1, 1),
                torch.from_numpy(add.astype(np.float32)).view(-1, 1, 1))

    def chw(self, raw: np.ndarray, source: Any = "input", band_map: BandMap | None = None,
            valid: np.ndarray | None = None) -> torch.Tensor:
        """Normalise raw ``(C, H, W)`` pixels (bands already selected) into a float32 tensor.

        Args:
            raw: pixels as read, any dtype.
            source: the file, named in errors and warnings.
            band_map: the pair's radiometric map of this date (:meth:`fit_pair`), applied first.
            valid: ``(H, W)`` bool, False = nodata; those pixels (and non-finite ones) become 0.
        """
        raw = np.asarray(raw)
        if raw.ndim == 2:
            raw = raw[None]
        dtype = raw.dtype
        bad = None
        if np.issubdtype(dtype, np.floating):  # NaN / Inf are nodata: they never reach the network
            finite = np.isfinite(raw)
            if not finite.all():
                bad = ~finite.all(axis=0)
                raw = np.where(finite, raw, 0).astype(dtype, copy=False)
        mul, add = self._affine(raw.shape[0], dtype, source)
        x = band_map.apply(raw) if band_map is not None else raw
        if x.dtype not in (np.uint8, np.float32):
            x = x.astype(np.float32)
        t = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32, copy=True)  # never write into the input
        if self.clip is not None:
            lo = torch.from_numpy(self._per_band(self.clip[0], t.shape[0], "clip", source).astype(np.float32))
            hi = torch.from_numpy(self._per_band(self.clip[1], t.shape[0], "clip", source).astype(np.float32))
            t = torch.maximum(torch.minimum(t, hi.view(-1, 1, 1)), lo.view(-1, 1, 1))
        t = t.mul_(mul).add_(add)
        if valid is not None:
            bad = ~np.asarray(valid, bool) if bad is None else bad | ~np.asarray(valid, bool)
        if bad is not None and bad.any():
            t[:, torch.from_numpy(bad)] = 0.0
        return t

    def hwc(self, raw: np.ndarray, source: Any = "input", band_map: BandMap | None = None,
            valid: np.ndarray | None = None) -> torch.Tensor:
        """:meth:`chw` of raw ``(H, W, C)`` (or ``(H, W)``) pixels; returns ``(C, H, W)``."""
        if raw.ndim == 2:
            raw = raw[:, :, None]
        return self.chw(np.moveaxis(raw, -1, 0), source, band_map, valid)

    def to_unit(self, x: torch.Tensor) -> torch.Tensor:
        """Network input ``(C, H, W)`` back to about 0..1 for display (reports): the scaled modes undo
        mean/std; the standardised ones (``meanstd``, ``standardize``) show -2..+2 standard deviations."""
        if self.mode in ("meanstd", "standardize"):
            return (x * 0.25 + 0.5).clamp(0, 1)
        def first(values: Any) -> torch.Tensor:  # x may hold the first bands only (an RGB view of 13)
            v = np.asarray(values, np.float32).reshape(-1)
            return torch.from_numpy(np.resize(v, x.shape[0]) if len(v) < x.shape[0] else v[: x.shape[0]]).view(-1, 1, 1)

        return (x * first(self.std) + first(self.mean)).clamp(0, 1)

    def fit_pair(self, a: np.ndarray, b: np.ndarray, valid_a: np.ndarray | None = None,
                 valid_b: np.ndarray | None = None) -> tuple[BandMap | None, BandMap | None]:
        """The radiometric maps of one pair from its two whole ``(C, H, W)`` images (``(None, None)`` for
        ``radiometric: none``)."""
        return image_maps(self.radiometric, a, b, valid_a, valid_b)

    def pair(self, a: np.ndarray, b: np.ndarray, source_a: Any = "A", source_b: Any = "B",
             valid_a: np.ndarray | None = None, valid_b: np.ndarray | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Both dates of a whole pair ``(C, H, W)`` normalised, radiometric maps fitted on the pair itself."""
        map_a, map_b = self.fit_pair(a, b, valid_a, valid_b)
        return self.chw(a, source_a, map_a, valid_a), self.chw(b, source_b, map_b, valid_b)

    def fit_scene(self, a: Any, b: Any, sample_rows: int = 32) -> tuple[BandMap | None, BandMap | None]:
        """Prepare a scene pair before prediction: warn when a date lies far outside the training statistics
        (``sample_rows`` rows spread over the scene), and fit the radiometric maps in one streaming pass over
        both dates (nodata of either date excluded).

        Args:
            a, b: :class:`~changekit.raster.reader.RasterReader` of the two dates on one grid.
        """
        for reader in (a, b):
            rows = np.unique(np.linspace(0, reader.height - 1, min(sample_rows, reader.height)).astype(int))
            reads = [reader.read_valid((int(r), 0, 1, reader.width)) for r in rows]
            self.check_range(np.concatenate([d for d, _ in reads], axis=1), reader.path,
                             np.concatenate([v for _, v in reads], axis=0))
        if self.radiometric == "none":
            return None, None

        def rows_of(reader: Any) -> Any:
            return lambda r0, r1: reader.read_valid((r0, 0, r1 - r0, reader.width))

        return scene_maps(self.radiometric, a.height, rows_of(a), rows_of(b), a.count, np.dtype(a.dtype), a.width)

    # ------------------------------------------------------------------------------------ out-of-range warning
    def reference_range(self) -> tuple[np.ndarray, np.ndarray, bool] | None:
        """``(low, high, measured)`` per band: the training data's 1st and 99th percentiles (``measured``), or
        the nominal range the scale implies (``[offset, offset + scale]``); ``None``: nothing to compare with."""
        if self.stats:
            lo = np.array([s["percentiles"].get("1", s["min"]) for s in self.stats], np.float64)
            hi = np.array([s["percentiles"].get("99", s["max"]) for s in self.stats], np.float64)
            return lo, hi, True
        if self.mode == "standardize" or self.scale is None:
            return None
        offset = np.asarray(self.offset, np.float64).reshape(-1)
        return offset, offset + np.asarray(self.scale, np.float64).reshape(-1), False

    def range_problem(self, raw: np.ndarray, valid: np.ndarray | None = None) -> str | None:
        """Why raw ``(C, H, W)`` pixels lie far outside what the model was trained on, or ``None``.

        A band is "far outside" when its own p1..p99 range lies wholly below or above the training range, its
        median lies more than one training range (p1..p99 width) beyond that range, or its p1..p99 width is over
        10x the training width (or, against measured statistics, under 1/20 of it): a uint16 scene given to an
        8-bit model, 8-bit or 0..1 reflectance given to a 0..10,000 one.
        """
        ref = self.reference_range()
        if ref is None or raw.size == 0:
            return None
        lo, hi, measured = ref
        c, h, w = raw.shape
        step = max(1, int(np.sqrt(h * w / _RANGE_SAMPLE)))
        stats = BandStats(c, raw.dtype)
        stats.update(raw[:, ::step, ::step], None if valid is None else np.asarray(valid)[::step, ::step])
        if stats.count == 0:
            return None
        p1, p50, p99 = stats.percentiles((1, 50, 99)).T
        lo, hi = np.resize(lo, c), np.resize(hi, c)
        width = np.maximum(hi - lo, 1e-12)
        names = self.bands or tuple(range(1, c + 1))
        for i in range(c):
            span = p99[i] - p1[i]
            if (p99[i] < lo[i] or p1[i] > hi[i] or p50[i] < lo[i] - width[i] or p50[i] > hi[i] + width[i]
                    or span > 10 * width[i] or (measured and span < width[i] / 20)):
                return (f"band {names[i]}: median {p50[i]:g}, 1-99 % range {p1[i]:g}..{p99[i]:g}, but the model was "
                        f"trained on {lo[i]:g}..{hi[i]:g}")
        return None

    def check_range(self, raw: np.ndarray, source: Any, valid: np.ndarray | None = None) -> bool:
        """Warn (once per file) when :meth:`range_problem` finds one; returns whether it did."""
        key = str(source)
        if key in self._warned:
            return False
        problem = self.range_problem(raw, valid)
        if problem is None:
            return False
        self._warned.add(key)
        log.warning("%s: input values lie far outside the training statistics (%s); is it the same sensor, "
                    "product and bands (normalisation: %s)?", source, problem, self.describe())
        return True


def bands_text(bands: Sequence[int] | None) -> str:
    """``4,3,2`` (or ``all``) as messages and CLI options write band lists."""
    return ",".join(str(int(b)) for b in bands) if bands else "all"
