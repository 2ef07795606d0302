"""Per-band statistics of raw pixels, streamed over images and scenes, nodata excluded.

One accumulator serves three users, so that they agree on what "the statistics" of a band are:

* ``changekit data stats`` and the resolution of ``data.normalize`` (mean/std and percentiles of the training
  images, :mod:`changekit.data.norm_config`);
* relative radiometric normalisation (:mod:`changekit.data.radiometric`), which needs each date's mean, standard
  deviation and quantile function over a whole image or a whole scene read strip by strip;
* the warning for input whose range lies far outside the training statistics.

Mean and variance are exact (per-update moments in float64 merged with Chan's formula, so a billion uint16
values lose no precision). Quantiles are exact up to the within-value interpolation for integer data of at most
16 bits (a histogram of every value); for other data they come from an evenly strided sample of at most
``max_samples`` valid pixels per band (every value is seen by the moments; only the quantiles are estimated).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: the percentiles ``data stats`` reports and a resolved normalisation keeps (in percent)
PERCENTILES = (0.1, 1.0, 2.0, 5.0, 25.0, 50.0, 75.0, 95.0, 98.0, 99.0, 99.9)
#: quantile levels of the tables that histogram matching interpolates between
MATCH_LEVELS = 1025


def _histogram_offset(dtype: np.dtype) -> int | None:
    """The value added so that an integer dtype of <= 16 bits indexes a histogram, or ``None`` (sampled)."""
    if dtype == np.bool_:
        return 0
    if np.issubdtype(dtype, np.integer) and dtype.itemsize <= 2:
        return -int(np.iinfo(dtype).min)
    return None


@dataclass
class _Moments:
    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    def merge(self, count: np.ndarray, mean: np.ndarray, m2: np.ndarray) -> None:
        """Chan et al.'s parallel update of count, mean and sum of squared deviations."""
        total = self.count + count
        safe = np.maximum(total, 1)
        delta = mean - self.mean
        self.mean = self.mean + delta * (count / safe)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * count / safe)
        self.count = total


class BandStats:
    """Streaming statistics of ``bands`` bands of one dtype.

    Args:
        bands: number of bands of every array passed to :meth:`update`.
        dtype: pixel dtype (decides exact histograms or a strided sample for the quantiles).
        max_samples: float / 32-bit data: at most about this many sampled pixels per band for the quantiles.
        expected_pixels: pixels that will be seen in total, when known (a scene): the sampling stride is then
            fixed up front (an even sample of the whole scene, not of its first strips).
    """

    def __init__(self, bands: int, dtype: Any, max_samples: int = 1 << 20,
                 expected_pixels: int | None = None) -> None:
        self.bands = int(bands)
        self.dtype = np.dtype(dtype)
        self.max_samples = int(max_samples)
        zeros = np.zeros(self.bands, np.float64)
        self._moments = _Moments(zeros.copy(), zeros.copy(), zeros.copy())
        self.min = np.full(self.bands, np.inf)
        self.max = np.full(self.bands, -np.inf)
        self._offset = _histogram_offset(self.dtype)
        self._hist: np.ndarray | None = None
        self._samples: list[list[np.ndarray]] = [[] for _ in range(self.bands)]
        self._kept = 0
        self._stride = max(1, -(-int(expected_pixels) // self.max_samples)) if expected_pixels else 1
        self._fixed_stride = expected_pixels is not None
        self._phase = 0

    # ------------------------------------------------------------------------------------------- update
    def update(self, chw: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add the pixels of a ``(C, H, W)`` array; ``valid`` ``(H, W)`` False = nodata (excluded).

        Non-finite values of float data are nodata too (in any band: the pixel is excluded in all bands).
        """
        chw = np.asarray(chw)
        if chw.ndim == 2:
            chw = chw[None]
        if chw.shape[0] != self.bands:
            raise ValueError(f"BandStats of {self.bands} band(s) got an array of {chw.shape[0]}")
        flat = chw.reshape(self.bands, -1)
        keep = None if valid is None else np.asarray(valid, bool).reshape(-1)
        if np.issubdtype(flat.dtype, np.floating):
            finite = np.isfinite(flat).all(axis=0)
            if not finite.all():
                keep = finite if keep is None else keep & finite
        if keep is not None and not keep.all():
            flat = flat[:, keep]
        n = flat.shape[1]
        if n == 0:
            return
        mean, m2 = np.empty(self.bands), np.empty(self.bands)
        for c in range(self.bands):  # one band at a time in float64: memory stays a band's worth
            band = flat[c].astype(np.float64)
            mean[c] = band.mean()
            m2[c] = np.square(band - mean[c]).sum()
            self.min[c] = min(self.min[c], float(flat[c].min()))
            self.max[c] = max(self.max[c], float(flat[c].max()))
        self._moments.merge(np.full(self.bands, float(n)), mean, m2)
        if self._offset is not None:
            self._add_histogram(flat)
        else:
            self._add_samples(flat)

    def _add_histogram(self, flat: np.ndarray) -> None:
        size = 1 << (8 * self.dtype.itemsize) if self.dtype != np.bool_ else 2
        if self._hist is None:
            self._hist = np.zeros((self.bands, size), np.int64)
        for c in range(self.bands):
            self._hist[c] += np.bincount(flat[c].astype(np.int64) + self._offset, minlength=size)

    def _add_samples(self, flat: np.ndarray) -> None:
        n = flat.shape[1]
        take = np.arange((-self._phase) % self._stride, n, self._stride)
        self._phase = (self._phase + n) % self._stride
        for c in range(self.bands):
            self._samples[c].append(flat[c, take].astype(np.float64))
        self._kept += len(take)
        if not self._fixed_stride and self._kept > 2 * self.max_samples:  # keep it bounded: halve the sample
            for c in range(self.bands):
                self._samples[c] = [np.concatenate(self._samples[c])[::2]]
            self._kept = len(self._samples[0][0])
            self._stride *= 2

    def merge(self, other: BandStats) -> BandStats:
        """Add another accumulator's pixels (same band count and dtype); returns ``self``."""
        if other.bands != self.bands or other.dtype != self.dtype:
            raise ValueError(f"cannot merge statistics of {other.bands} {other.dtype} band(s) into {self.bands} "
                             f"{self.dtype}")
        m = other._moments
        self._moments.merge(m.count, m.mean, m.m2)
        self.min, self.max = np.minimum(self.min, other.min), np.maximum(self.max, other.max)
        if other._hist is not None:
            self._hist = other._hist.copy() if self._hist is None else self._hist + other._hist
        for c in range(self.bands):
            self._samples[c].extend(other._samples[c])
        self._kept += other._kept
        return self

    # ------------------------------------------------------------------------------------------ results
    @property
    def count(self) -> int:
        """Valid pixels seen (the same in every band)."""
        return int(self._moments.count[0]) if self.bands else 0

    @property
    def mean(self) -> np.ndarray:
        """``(C,)`` float64 mean per band (NaN before any valid pixel)."""
        return np.where(self._moments.count > 0, self._moments.mean, np.nan)

    @property
    def std(self) -> np.ndarray:
        """``(C,)`` float64 population standard deviation per band."""
        var = self._moments.m2 / np.maximum(self._moments.count, 1)
        return np.where(self._moments.count > 0, np.sqrt(np.maximum(var, 0)), np.nan)

    def quantiles(self, levels: Sequence[float] | np.ndarray) -> np.ndarray:
        """``(C, len(levels))`` values at quantile ``levels`` in [0, 1], increasing in each row.

        Histogram quantiles spread each integer value uniformly over ``[v - 0.5, v + 0.5]`` (clipped to the
        observed range), so the quantile function is continuous and strictly increasing wherever there is data:
        what histogram matching needs to map values between two dates without steps.
        """
        q = np.clip(np.asarray(levels, np.float64), 0, 1)
        out = np.full((self.bands, len(q)), np.nan)
        if self.count == 0:
            return out
        for c in range(self.bands):
            if self._hist is not None:
                out[c] = self._hist_quantiles(self._hist[c], q) - self._offset
            else:
                out[c] = np.quantile(np.concatenate(self._samples[c]), q)
            out[c] = np.clip(out[c], self.min[c], self.max[c])
        return out

    @staticmethod
    def _hist_quantiles(hist: np.ndarray, q: np.ndarray) -> np.ndarray:
        nz = np.flatnonzero(hist)
        counts = hist[nz].astype(np.float64)
        cum = np.concatenate([[0.0], np.cumsum(counts)])
        target = q * cum[-1]
        i = np.clip(np.searchsorted(cum, target, side="right") - 1, 0, len(nz) - 1)
        frac = (target - cum[i]) / counts[i]
        return nz[i] - 0.5 + np.clip(frac, 0, 1)

    def percentiles(self, percents: Sequence[float] = PERCENTILES) -> np.ndarray:
        """``(C, len(percents))`` values at ``percents`` (0..100)."""
        return self.quantiles(np.asarray(percents, np.float64) / 100)

    def summary(self, band_numbers: Sequence[int] | None = None,
                percents: Sequence[float] = PERCENTILES) -> list[dict[str, Any]]:
        """One JSON-ready dict per band: ``band`` (1-based file band), ``mean``, ``std``, ``min``, ``max``,
        ``valid_pixels`` and ``percentiles`` (``{"1": v, ...}``)."""
        numbers = list(band_numbers) if band_numbers is not None else list(range(1, self.bands + 1))
        pct = self.percentiles(percents)
        rows = []
        for c in range(self.bands):
            rows.append({
                "band": int(numbers[c]), "mean": float(self.mean[c]), "std": float(self.std[c]),
                "min": float(self.min[c]), "max": float(self.max[c]), "valid_pixels": self.count,
                "percentiles": {f"{p:g}": float(v) for p, v in zip(percents, pct[c], strict=True)},
            })
        return rows


def image_stats(chw: np.ndarray, valid: np.ndarray | None = None) -> BandStats:
    """The statistics of one ``(C, H, W)`` array (all its valid pixels)."""
    stats = BandStats(chw.shape[0], chw.dtype, expected_pixels=chw.shape[1] * chw.shape[2])
    stats.update(chw, valid)
    return stats
