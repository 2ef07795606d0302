"""Relative radiometric normalisation between the two dates of a pair (``data.radiometric``).

Two acquisitions differ in illumination, season and sensor calibration; a change network that sees raw values
has to learn that away, and on real data with few labels it does not (issue 14: on OSCD, mapping date B's
per-band mean and standard deviation onto date A's lifted FC-EF's held-out F1 from 0.14 to 0.44). The modes:

* ``none``: the pixels as read;
* ``match_meanstd``: date B's per-band mean and standard deviation mapped onto date A's
  (``b' = (b - mean_b) * std_a / std_b + mean_a``), in A's raw units;
* ``match_histogram``: date B's per-band quantile function mapped onto date A's (piecewise linear over
  :data:`~changekit.data.band_stats.MATCH_LEVELS` quantiles), in A's raw units;
* ``standardize``: each date standardised per band with its own mean and standard deviation (Daudt et al.
  2018); the result is the network's input, so the dataset-wide normalisation is the identity then.

Statistics are computed per image and band over the **whole** image or scene, nodata excluded, never per
training crop or prediction tile (a tile's own statistics would erase the very change inside it). Datasets fit
the maps on the decoded image before augmentation and apply them at normalisation; scenes fit them in a
streaming pass (:func:`scene_maps`) before prediction. The maps work on raw values of any dtype and return
float32.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .band_stats import MATCH_LEVELS, BandStats

log = logging.getLogger(__name__)

RADIOMETRIC_MODES = ("none", "match_meanstd", "match_histogram", "standardize")
#: rows read per step of the streaming statistics pass over a scene
SCENE_STRIP_ROWS = 256


@dataclass(frozen=True)
class BandMap:
    """A per-band value mapping of one date: affine (``gain * x + bias``) or piecewise linear (``xp -> fp``).

    Attributes:
        gain, bias: ``(C,)`` float64 (affine maps).
        xp, fp: ``(C, K)`` increasing quantile tables of this date and of the reference (piecewise maps).
    """

    gain: np.ndarray | None = None
    bias: np.ndarray | None = None
    xp: np.ndarray | None = None
    fp: np.ndarray | None = None

    @property
    def affine(self) -> bool:
        return self.gain is not None

    def apply(self, chw: np.ndarray) -> np.ndarray:
        """Map raw ``(C, H, W)`` values; returns float32 (a new array)."""
        x = np.asarray(chw, np.float32)
        if self.affine:
            gain = np.asarray(self.gain, np.float32).reshape(-1, 1, 1)
            bias = np.asarray(self.bias, np.float32).reshape(-1, 1, 1)
            return x * gain + bias
        out = np.empty(x.shape, np.float32)
        for c in range(x.shape[0]):  # np.interp extrapolates flat; extend the end segments linearly instead
            xp, fp = self.xp[c], self.fp[c]
            out[c] = np.interp(x[c], xp, fp)
            lo, hi = x[c] < xp[0], x[c] > xp[-1]
            if lo.any():
                out[c][lo] = fp[0] + (x[c][lo] - xp[0]) * _slope(xp[:2], fp[:2])
            if hi.any():
                out[c][hi] = fp[-1] + (x[c][hi] - xp[-1]) * _slope(xp[-2:], fp[-2:])
        return out


def _slope(xp: np.ndarray, fp: np.ndarray) -> float:
    dx = float(xp[-1] - xp[0])
    return float(fp[-1] - fp[0]) / dx if dx > 0 else 1.0


def _safe_std(std: np.ndarray) -> np.ndarray:
    """A constant band (std 0) or one without valid pixels keeps unit scale."""
    return np.where(np.isfinite(std) & (std > 0), std, 1.0)


def _increasing(table: np.ndarray) -> np.ndarray:
    """Make each row strictly increasing (``np.interp`` needs it): tiny steps where values repeat."""
    out = np.maximum.accumulate(table, axis=1)
    span = np.maximum(out[:, -1:] - out[:, :1], 1.0)
    return out + np.arange(table.shape[1]) * (1e-9 * span)


def pair_maps(mode: str, stats_a: BandStats, stats_b: BandStats) -> tuple[BandMap | None, BandMap | None]:
    """The maps of dates A and B (``None``: unchanged) for ``mode``, from each date's statistics.

    A date without any valid pixel leaves the pair unchanged (logged): there is nothing to match.

    Raises:
        ValueError: an unknown mode, or A and B with different band counts.
    """
    if mode not in RADIOMETRIC_MODES:
        raise ValueError(f"unknown radiometric mode {mode!r}; use one of {', '.join(RADIOMETRIC_MODES)}")
    if mode == "none":
        return None, None
    if stats_a.bands != stats_b.bands:
        raise ValueError(f"date A has {stats_a.bands} band(s) but date B has {stats_b.bands}")
    if mode == "standardize":
        return _standardize(stats_a), _standardize(stats_b)
    if stats_a.count == 0 or stats_b.count == 0:
        log.info("radiometric %s: a date has no valid pixel; the pair is left unchanged", mode)
        return None, None
    if mode == "match_meanstd":
        gain = _safe_std(stats_a.std) / _safe_std(stats_b.std)
        return None, BandMap(gain=gain, bias=stats_a.mean - gain * stats_b.mean)
    levels = np.linspace(0.0, 1.0, MATCH_LEVELS)
    return None, BandMap(xp=_increasing(stats_b.quantiles(levels)), fp=stats_a.quantiles(levels))


def _standardize(stats: BandStats) -> BandMap:
    if stats.count == 0:
        return BandMap(gain=np.ones(stats.bands), bias=np.zeros(stats.bands))
    std = _safe_std(stats.std)
    return BandMap(gain=1.0 / std, bias=-stats.mean / std)


def image_maps(mode: str, a: np.ndarray, b: np.ndarray, valid_a: np.ndarray | None = None,
               valid_b: np.ndarray | None = None) -> tuple[BandMap | None, BandMap | None]:
    """:func:`pair_maps` of two whole ``(C, H, W)`` images (``valid_*``: ``(H, W)``, False = nodata).

    Where either date has no data, neither date's pixel counts: the two dates are compared on their common
    valid area only.
    """
    if mode == "none":
        return None, None
    both = _common(valid_a, valid_b)
    return pair_maps(mode, _stats(a, both), _stats(b, both))


def _common(valid_a: np.ndarray | None, valid_b: np.ndarray | None) -> np.ndarray | None:
    if valid_a is None:
        return valid_b
    return valid_a if valid_b is None else valid_a & valid_b


def _stats(chw: np.ndarray, valid: np.ndarray | None) -> BandStats:
    stats = BandStats(chw.shape[0], chw.dtype, expected_pixels=chw.shape[1] * chw.shape[2])
    stats.update(chw, valid)
    return stats


RowReader = Callable[[int, int], "tuple[np.ndarray, np.ndarray | None]"]


def scene_maps(mode: str, height: int, read_a: RowReader, read_b: RowReader, bands: int, dtype: np.dtype,
               width: int, strip_rows: int = SCENE_STRIP_ROWS) -> tuple[BandMap | None, BandMap | None]:
    """:func:`pair_maps` of two scenes, streamed strip by strip (memory: one strip of each date).

    Args:
        mode: a :data:`RADIOMETRIC_MODES` value.
        height, width: the scene size (both dates on one grid).
        read_a, read_b: ``(r0, r1) -> ((C, r1 - r0, W) raw rows, (r1 - r0, W) valid or None)`` of each date's
            selected bands; a pixel counts only where both dates are valid.
        bands, dtype: band count and dtype of what the readers return.
        strip_rows: rows per read.
    """
    if mode == "none":
        return None, None
    stats_a = BandStats(bands, dtype, expected_pixels=height * width)
    stats_b = BandStats(bands, dtype, expected_pixels=height * width)
    for r0 in range(0, height, strip_rows):
        r1 = min(r0 + strip_rows, height)
        (a, valid_a), (b, valid_b) = read_a(r0, r1), read_b(r0, r1)
        both = _common(valid_a, valid_b)
        stats_a.update(a, both)
        stats_b.update(b, both)
    log.info("radiometric %s: statistics of %d x %d pixels per date (%d valid in both)", mode, height, width,
             stats_a.count)
    return pair_maps(mode, stats_a, stats_b)
