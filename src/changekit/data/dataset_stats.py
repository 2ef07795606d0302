"""``changekit data stats``: per-band statistics of a data set's images, nodata excluded.

Both dates of every pair are pooled (the network normalises both the same way). Reading goes through
:class:`~changekit.raster.reader.RasterReader`, so band selection and nodata (the nodata value, internal masks,
alpha bands, non-finite values) are what ``train``, ``test`` and ``predict`` use. The JSON it writes is what
``data.stats`` reads::

    {"source": ..., "bands": [{"band": 4, "mean": ..., "std": ..., "min": ..., "max": ...,
                               "valid_pixels": ..., "percentiles": {"0.1": ..., "1": ..., ...}}, ...],
     "dtype": "uint16", "images": 12, "pixels": ..., "valid_share": ...}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, SizeMismatchError
from .band_stats import PERCENTILES, BandStats

log = logging.getLogger(__name__)

#: at most this many images are read to resolve a normalisation at the start of a run (evenly spaced)
RESOLVE_MAX_IMAGES = 400


@dataclass
class DatasetStats:
    """Statistics of the images of a data set.

    Attributes:
        source: the folder or list file.
        bands: 1-based band indices the statistics describe.
        dtype: pixel dtype of the images.
        images: images read (both dates count).
        pixels: pixels seen, valid or not.
        stats: the accumulated :class:`~changekit.data.band_stats.BandStats`.
    """

    source: str
    bands: list[int]
    dtype: str
    images: int
    pixels: int
    stats: BandStats

    def rows(self, percents: Sequence[float] = PERCENTILES) -> list[dict[str, Any]]:
        """The per-band rows (``data.stats`` format)."""
        return self.stats.summary(self.bands, percents)

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "dtype": self.dtype, "images": self.images, "pixels": self.pixels,
                "valid_share": self.stats.count / self.pixels if self.pixels else 0.0, "bands": self.rows()}


def image_paths(source: str | Path, root: str | Path | None = None, layout: str = "auto",
                dates: Sequence[str] = ("a", "b")) -> list[Path]:
    """The image files of both dates (``dates``: ``a``, ``b``) of a pair folder or list, in pair order."""
    from .discover import discover

    found = discover(source, root=root, layout=layout, require_labels=False)
    return [getattr(rec, d) for rec in found.records for d in dates]


def compute_stats(paths: Sequence[Path], bands: Sequence[int] | None = None, source: str = "",
                  max_images: int | None = None) -> DatasetStats:
    """Accumulate per-band statistics over ``paths`` (an evenly spaced subset of ``max_images`` of them).

    Raises:
        SizeMismatchError: the images differ in band count or dtype.
        ConfigError: a band index does not exist in an image.
    """
    from ..raster.reader import RasterReader

    paths = list(paths)
    if max_images is not None and len(paths) > max_images:
        keep = np.unique(np.linspace(0, len(paths) - 1, max_images).round().astype(int))
        log.info("statistics from %d of %d images (evenly spaced)", len(keep), len(paths))
        paths = [paths[i] for i in keep]
    if not paths:
        raise ConfigError(f"{source or 'data'}: no images to compute statistics from")
    with RasterReader(paths[0], bands=bands) as reader:
        total, chosen = BandStats(reader.count, reader.dtype), list(reader.bands)
    pixels = 0
    for path in paths:
        with RasterReader(path, bands=bands) as reader:
            if (reader.count, reader.dtype) != (total.bands, total.dtype):
                raise SizeMismatchError(f"{path}: {reader.count} band(s) of {reader.dtype}, but {paths[0]} has "
                                        f"{total.bands} of {total.dtype}; statistics need one band layout")
            data, valid = reader.read_valid()
        total.update(data, valid)
        pixels += data.shape[1] * data.shape[2]
    return DatasetStats(source or str(paths[0].parent), chosen, total.dtype.name, len(paths), pixels, total)


def dataset_stats(source: str | Path, root: str | Path | None = None, layout: str = "auto",
                  bands: Sequence[int] | None = None, dates: Sequence[str] = ("a", "b"),
                  max_images: int | None = None) -> DatasetStats:
    """:func:`compute_stats` over the images of a pair folder or list file."""
    for d in dates:
        if d not in ("a", "b"):
            raise ConfigError(f"--dates: {d!r} is not a date; use a, b or a,b")
    return compute_stats(image_paths(source, root, layout, dates), bands, str(source), max_images)


def write_stats(stats: DatasetStats, out: str | Path, overwrite: bool = False,
                inputs: Sequence[Any] = ()) -> Path:
    """Write the statistics JSON atomically (guarded like every output)."""
    from ..atomic import atomic_path
    from ..safety import check_output

    out = check_output(out, inputs=list(inputs), overwrite=overwrite, what="statistics file", kind="file",
                       inside_ok=True)
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(stats.to_json(), indent=2))
    return Path(out)


def format_stats(stats: DatasetStats) -> str:
    """The table ``changekit data stats`` prints: one row per band."""
    share = stats.stats.count / stats.pixels if stats.pixels else 0.0
    lines = [f"{stats.source}: {stats.images} images, {stats.dtype}, {stats.pixels:,} pixels "
             f"({100 * share:.2f} % valid)",
             f"{'band':>5} {'mean':>11} {'std':>11} {'min':>10} {'p1':>10} {'p50':>10} {'p99':>10} {'max':>10}"]
    for row in stats.rows():
        p = row["percentiles"]
        lines.append(f"{row['band']:>5} {row['mean']:>11.4g} {row['std']:>11.4g} {row['min']:>10.4g} "
                     f"{p['1']:>10.4g} {p['50']:>10.4g} {p['99']:>10.4g} {row['max']:>10.4g}")
    return "\n".join(lines)
