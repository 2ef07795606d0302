"""Validate discovered pairs and summarise a dataset (``changekit data check DIR``).

Sizes, channel counts and georeferencing are read from file headers (cheap) for every pair. Label values need
every label decoded, so that part runs in a thread pool and can be switched off. Binary change labels must hold
values in {0, 255} (255 = change) or {0, 1, 255} (1 = change, 255 = ignore); the encoding is decided once for the
whole dataset (any label holding a 1 makes it 0/1), because a 0/1/255 tile that happens to hold no change would
read as "255 = change" if each file were decided alone.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import (
    ChangekitError,
    ConfigError,
    ImageReadError,
    LabelValueError,
    SizeMismatchError,
)
from .discover import MissingLabelsError, PairRecord, discover
from .io import _RASTERIO_SUFFIXES, image_size, nonfinite_pixels, read_image, size_text
from .labels import (
    HIUCD_SEM_IGNORE,
    LabelPalette,
    check_binary_values,
    derive_change,
    encoding_from_counts,
    read_raw_labels,
    values_text,
)

log = logging.getLogger(__name__)

_PIL_DTYPES = {"1": "bool", "I;16": "uint16", "I;16B": "uint16", "I": "int32", "F": "float32"}


# ---------------------------------------------------------------------------------------------- inspection


@dataclass
class PairInfo:
    """Header facts, label value counts and problems of one pair."""

    stem: str
    size: tuple[int, int] | None = None
    channels: int | None = None
    dtype: str | None = None
    change_counts: np.ndarray | None = None  # bincount of the raw binary change label (encoding to decide)
    fixed_counts: np.ndarray | None = None  # bincount of a change map already 0/1/255 (Hi-UCD, derived)
    sem_counts: np.ndarray | None = None  # bincount of both class maps
    errors: list[ChangekitError] = field(default_factory=list)


def _meta(path: Path, want_dtype: bool) -> tuple[int, int, int, str | None, Any]:
    """``(H, W, C, dtype, crs)`` from the file header."""
    if path.suffix.lower() in _RASTERIO_SUFFIXES:  # the bands RasterReader reads (alpha bands are masks)
        from ..raster.reader import RasterReader

        with RasterReader(path) as src:
            return src.height, src.width, src.count, src.dtype.name, src.crs
    h, w, c = image_size(path)
    dtype = None
    if want_dtype:
        try:
            with Image.open(path) as im:
                dtype = _PIL_DTYPES.get(im.mode, "uint8")
        except (UnidentifiedImageError, OSError) as exc:  # pragma: no cover - image_size would have raised
            raise ImageReadError(f"{path}: cannot read image ({exc})") from None
    return h, w, c, dtype, None


def _is_colour_label(path: Path) -> bool:
    if path.suffix.lower() in _RASTERIO_SUFFIXES:
        return False
    with Image.open(path) as im:
        return im.mode not in ("P", "L", "1", "I", "I;16", "I;16B", "F")


def _crs_text(crs: Any) -> str:
    return "none" if crs is None else (crs.to_string() or str(crs))


def inspect_pair(rec: PairRecord, check_values: bool = True, decode_images: bool = False,
                 ignore_index: int = 255, num_classes: int | None = None, want_dtype: bool = False,
                 palette: LabelPalette | None = None, align: bool = False) -> PairInfo:
    """Every problem of one pair (collected, never raised) plus what a summary needs.

    ``decode_images`` also decodes both images: a broken file, and NaN or infinite pixels in float imagery
    (which ``train`` and ``test`` treat as nodata and ``predict`` zeroes), are problems then. ``align``
    (``data.align``): date B is warped onto date A's grid when read, so its size and CRS may differ.
    """
    info = PairInfo(rec.stem)
    try:
        ha, wa, ca, info.dtype, crs_a = _meta(rec.a, want_dtype)
        info.size, info.channels = (ha, wa), ca
        hb, wb, cb, _, crs_b = _meta(rec.b, False)
        if (ha, wa) != (hb, wb) and not align:
            info.errors.append(SizeMismatchError(f"{rec.a} is {size_text((ha, wa, ca), 'A')} but {rec.b} is "
                                                 f"{size_text((hb, wb, cb), 'B')} (H x W x bands)"))
        if ca != cb:
            info.errors.append(SizeMismatchError(f"{rec.a} has {ca} band(s) but {rec.b} has {cb}"))
        if crs_a != crs_b and not align:
            info.errors.append(SizeMismatchError(
                f"{rec.a} (CRS {_crs_text(crs_a)}) and {rec.b} (CRS {_crs_text(crs_b)}) have different CRSs; "
                "reproject one onto the other's grid"))
        for lab in rec.label_files():
            hl, wl, cl, _, _ = _meta(lab, False)
            if (hl, wl) != (ha, wa):
                info.errors.append(SizeMismatchError(f"{lab} is {size_text((hl, wl), 'label')} but {rec.a} is "
                                                     f"{size_text((ha, wa), 'A')} (H x W)"))
            if rec.label_kind == "hiucd" and cl < 3:
                info.errors.append(SizeMismatchError(
                    f"{lab}: a Hi-UCD mask needs 3 channels (sem A, sem B, change), found {cl}"))
            if rec.label_kind == "semantic" and lab != rec.change and _is_colour_label(lab):
                info.errors.append(LabelValueError(
                    f"{lab}: semantic label is a colour image; save class indices (palette or grey PNG)"))
        if decode_images:
            for path in (rec.a, rec.b):
                bad = nonfinite_pixels(read_image(path))
                if bad is not None:
                    info.errors.append(ImageReadError(
                        f"{path}: {int(bad.sum())} of {bad.size} pixels are NaN or infinite (nodata?); train and "
                        "test ignore them, predict writes 0 (no change) there"))
        if check_values and rec.label is not None and not info.errors:
            _inspect_values(rec, info, ignore_index, num_classes, palette)
    except ChangekitError as exc:
        info.errors.append(exc)
    return info


def _inspect_values(rec: PairRecord, info: PairInfo, ignore_index: int, num_classes: int | None,
                    palette: LabelPalette | None = None) -> None:
    raw = read_raw_labels(rec, palette)
    if "sem_a" in raw:
        hiucd = rec.label_kind == "hiucd"
        file_ignore = HIUCD_SEM_IGNORE if hiucd else ignore_index
        k = num_classes if num_classes is not None else (HIUCD_SEM_IGNORE if hiucd else None)
        for key, path in (("sem_a", rec.label), ("sem_b", rec.label_b or rec.label)):
            if key not in raw:
                continue
            counts = np.bincount(raw[key].ravel(), minlength=256)
            info.sem_counts = counts if info.sem_counts is None else info.sem_counts + counts
            if k is not None:
                bad = np.setdiff1d(np.flatnonzero(counts), [*range(k), file_ignore])
                if bad.size:
                    info.errors.append(LabelValueError(
                        f"{path}: class values {values_text(bad)} outside 0..{k - 1} (ignore = {file_ignore})"))
        if "change" not in raw and "sem_b" in raw:
            derived = derive_change(raw["sem_a"], raw["sem_b"], file_ignore)
            info.fixed_counts = np.bincount(derived.ravel(), minlength=256)
    if "change" in raw:
        counts = np.bincount(raw["change"].ravel(), minlength=256)
        change_path = rec.change if rec.label_kind == "semantic" else rec.label
        check_binary_values(counts, change_path)
        if rec.label_kind == "hiucd":
            info.fixed_counts = counts
        else:
            info.change_counts = counts


def inspect_pairs(records: Sequence[PairRecord], workers: int | None = None, **kwargs: Any) -> list[PairInfo]:
    """:func:`inspect_pair` over all records in a thread pool (decoding releases the GIL), in record order."""
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(records) < 4:
        return [inspect_pair(r, **kwargs) for r in records]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda r: inspect_pair(r, **kwargs), records))


def require_semantic(records: Sequence[PairRecord], source: str = "dataset") -> None:
    """Raise ``ConfigError`` unless every labelled record carries per-date class maps (``task="semantic"``)."""
    flat = [r for r in records if r.has_labels and not r.is_semantic]
    if flat:
        raise ConfigError(
            f"{source}: task 'semantic' needs per-date class maps (im1|im2|label1|label2 folders, 4/5-path "
            f"lists), but {flat[0].label} is a binary change label"
        )


@dataclass
class ValidationReport:
    """What validation learned: the dataset's binary label encoding and the values seen."""

    encoding: str | None
    label_values: list[int]
    sem_values: list[int]
    channels: int | None


def validate_pairs(records: Sequence[PairRecord], task: str = "binary", check_values: bool = True,
                   ignore_index: int = 255, num_classes: int | None = None,
                   workers: int | None = None, palette: LabelPalette | None = None,
                   align: bool = False) -> ValidationReport:
    """Check sizes, channels, CRSs (always) and label values (``check_values``) of every pair.

    ``task="semantic"`` also requires class maps on every labelled pair. Semantic values are checked against
    ``num_classes`` (plus ``ignore_index``) when given; Hi-UCD masks against 0..8 + 9 by default.

    Raises:
        ConfigError: ``task="semantic"`` on binary labels, or an unknown task.
        SizeMismatchError, LabelValueError, ImageReadError, DatasetNotFoundError: the first problem found,
            with the count of the others (``changekit data check`` lists them all).
    """
    if task not in ("binary", "semantic"):
        raise ConfigError(f"task '{task}' is unknown; use binary or semantic")
    if task == "semantic":
        require_semantic(records)
    infos = inspect_pairs(records, workers=workers, check_values=check_values, ignore_index=ignore_index,
                          num_classes=num_classes, palette=palette, align=align)
    errors = [e for info in infos for e in info.errors]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more problem(s); `changekit data check` lists them all)" if len(
            errors) > 1 else ""
        raise type(first)(f"{first}{more}")
    channels = {i.channels for i in infos}
    if len(channels) > 1:
        examples: dict[int | None, Path] = {}
        for i, rec in zip(infos, records, strict=True):
            examples.setdefault(i.channels, rec.a)
        raise SizeMismatchError("pairs have different channel counts: "
                                + ", ".join(f"{p} has {c}" for c, p in examples.items()))
    change = _sum([i.change_counts for i in infos])
    sem = _sum([i.sem_counts for i in infos])
    return ValidationReport(
        encoding=encoding_from_counts(change, palette) if change is not None else None,
        label_values=np.flatnonzero(change).tolist() if change is not None else [],
        sem_values=np.flatnonzero(sem).tolist() if sem is not None else [],
        channels=channels.pop() if channels else None,
    )


def _sum(arrays: list[np.ndarray | None]) -> np.ndarray | None:
    present = [a for a in arrays if a is not None]
    return np.sum(present, axis=0) if present else None


# ---------------------------------------------------------------------------------------------- summary


def check_dataset(source: str | Path, root: str | Path | None = None, layout: str = "auto",
                  decode_images: bool = True, ignore_index: int = 255, num_classes: int | None = None,
                  workers: int | None = None, label_palette: Any = None) -> dict[str, Any]:
    """Summarise a dataset and list ALL its problems (one line each, naming the file) instead of stopping.

    ``label_palette`` is ``data.label_palette`` (colour-drawn change masks; see :class:`LabelPalette`).

    Returns a dict with ``source``, ``layout``, ``pairs``, ``sizes`` (``"H x W"`` -> count), ``channels``,
    ``dtype`` (value -> count), ``label_values`` (raw binary label values), ``label_encoding``,
    ``sem_values``, ``change_ratio`` (change / labelled pixels, ignore excluded; ``None`` without labels) and
    ``problems``.
    """
    try:
        found = discover(source, root=root, layout=layout, require_labels=True, strict=False)
    except MissingLabelsError:
        found = discover(source, root=root, layout=layout, require_labels=False, strict=False)
    palette = LabelPalette.parse(label_palette)
    infos = inspect_pairs(found.records, workers=workers, check_values=True, decode_images=decode_images,
                          ignore_index=ignore_index, num_classes=num_classes, want_dtype=True, palette=palette)
    problems = found.messages + [str(e) for i in infos for e in i.errors]
    unlabelled = sum(not r.has_labels for r in found.records)
    change = _sum([i.change_counts for i in infos])
    fixed = _sum([i.fixed_counts for i in infos])
    encoding = encoding_from_counts(change, palette) if change is not None else None
    n_change = n_total = 0
    if change is not None:
        pos = 255 if encoding == "0/255" else 1
        n_change, n_total = int(change[pos]), int(change[0] + change[pos])
    if fixed is not None:
        n_change, n_total = n_change + int(fixed[1]), n_total + int(fixed[0] + fixed[1])
    sem = _sum([i.sem_counts for i in infos])
    ok = [i for i in infos if i.size is not None]
    return {
        "source": str(found.source),
        "layout": found.layout,
        "pairs": len(found.records),
        "labelled": len(found.records) - unlabelled,
        "sizes": dict(Counter(size_text(i.size) for i in ok).most_common()),
        "channels": dict(Counter(i.channels for i in ok).most_common()),
        "dtype": dict(Counter(i.dtype for i in ok).most_common()),
        "label_values": np.flatnonzero(change).tolist() if change is not None else [],
        "label_encoding": encoding,
        "sem_values": np.flatnonzero(sem).tolist() if sem is not None else [],
        "change_ratio": n_change / n_total if n_total else None,
        "problems": problems,
    }


def _counts_text(counts: dict[Any, int], limit: int = 8) -> str:
    items = list(counts.items())
    text = ", ".join(f"{k} ({v})" for k, v in items[:limit]) or "-"
    return text + (f", and {len(items) - limit} more" if len(items) > limit else "")


def format_summary(summary: dict[str, Any], max_problems: int = 50) -> str:
    """Human-readable multi-line text of :func:`check_dataset`'s result (for the CLI)."""
    enc = summary.get("label_encoding")
    meaning = {"0/255": " (0 = no change, 255 = change)", "0/1": " (0 = no change, 1 = change, 255 = ignore)"}
    values = summary.get("label_values") or []
    ratio = summary.get("change_ratio")
    lines = [
        f"source:        {summary['source']}",
        f"layout:        {summary['layout']}",
        f"pairs:         {summary['pairs']} ({summary.get('labelled', summary['pairs'])} labelled)",
        f"size (H x W):  {_counts_text(summary['sizes'])}",
        f"channels:      {_counts_text(summary['channels'])}",
        f"dtype:         {_counts_text(summary['dtype'])}",
        f"label values:  {', '.join(map(str, values)) or '-'}{meaning.get(enc, '') if values else ''}",
    ]
    if summary.get("sem_values"):
        lines.append(f"class values:  {', '.join(map(str, summary['sem_values']))}")
    lines.append(f"change ratio:  {'-' if ratio is None else f'{100 * ratio:.2f} % of labelled pixels'}")
    problems = summary["problems"]
    if not problems:
        lines.append("problems:      none")
    else:
        lines.append(f"problems ({len(problems)}):")
        lines += [f"  - {p}" for p in problems[:max_problems]]
        if len(problems) > max_problems:
            lines.append(f"  ... and {len(problems) - max_problems} more")
    return "\n".join(lines)
