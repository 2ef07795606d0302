"""``ChangeDataset``: validated image pairs as the sample dicts of ``docs/architecture.md``.

An item is ``{"image_a", "image_b": float32 [C, H, W], "mask": int64 [H, W] (0/1, 255 = ignore), "stem"}`` plus
``sem_a`` / ``sem_b`` (int64 class maps) for ``task="semantic"``. The joint ``transform`` sees numpy arrays
(``image_*`` HWC in the file's dtype, ``mask`` / ``sem_*`` HW uint8 with labels already converted to 0/1/255)
*before* normalisation, so geometric augmentations stay exact on integers and normalisation happens once, as
one vectorised op per image.

Images are read through :class:`~changekit.raster.reader.RasterReader`: the selected bands (``data.bands``) and
its validity mask. Nodata pixels (the file's nodata value, internal masks, alpha bands, NaN / +-Inf) take the
image's mean valid value (a neutral input) and the pair's labels are set to ignore there wherever either date has
no data (``mask`` 255, ``sem_*`` ``ignore_index``), so they count in neither loss nor metrics.

Pixel normalisation is the model's :class:`~changekit.data.normalize.Normalisation` (``normalisation``; resolved
from ``data.normalize`` when a run starts and stored in its checkpoints), applied after the transform. Its
radiometric maps (``data.radiometric``) are fitted on the whole decoded pair *before* the transform, so a random
crop is matched with its image's statistics, not its own. Without a ``normalisation``, ``mean`` / ``std`` /
``value_scale`` describe one (values divided by ``value_scale``, default the dtype's full scale, and a warning
for integer data other than 8-bit, which a resolved normalisation never divides by 65,535 silently).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, LabelValueError, SizeMismatchError
from .check import require_semantic, validate_pairs
from .labels import (
    HIUCD_SEM_IGNORE,
    LabelPalette,
    binary_lut,
    check_binary_values,
    derive_change,
    encoding_from_counts,
    read_raw_labels,
)
from .discover import PairRecord, discover
from .io import image_size, size_text
from .normalize import IMAGENET_MEAN, IMAGENET_STD, Normalisation, dtype_scale  # noqa: F401 (re-exported)
from .radiometric import BandMap
from .transform_ops import CROP_HINT, crop_hint_mask

log = logging.getLogger(__name__)

TASKS = ("binary", "semantic")
ENCODINGS = ("auto", "0/255", "0/1")
Transform = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class ChangeDataset(Dataset):
    """Bi-temporal pairs of a folder, path list or record list, validated once at construction.

    Args:
        source: dataset folder, path-list / stem-list file, or a sequence of :class:`PairRecord`.
        root: root folder for lists (see :func:`changekit.data.discover.discover`).
        layout: ``"auto"`` or a layout name (``"A|B|label"``, ``"second"``, ...).
        task: ``"binary"`` (``mask`` only; semantic sets give their change mask) or ``"semantic"``.
        transform: joint augmentation on numpy arrays, applied before normalisation.
        mean, std: per-channel normalisation after scaling to [0, 1] (ImageNet by default).
        validate: check sizes, channels and CRSs of every pair now (header reads only).
        check_values: also decode every label and check its values (parallel). With ``label_encoding="auto"``
            the labels are decoded once anyway, to decide the binary encoding for the whole set.
        cache: keep decoded arrays in memory (per DataLoader worker) for small sets that are read every epoch.
        ignore_index: ignore value of ``sem_a`` / ``sem_b`` in items (0..255).
        num_classes: number of semantic classes, to check class values against (optional).
        label_encoding: ``"auto"``, ``"0/255"`` (255 = change) or ``"0/1"`` (255 = ignore). ``"auto"`` decides
            once for the whole set (:func:`~changekit.data.labels.encoding_from_counts`, as ``data check``,
            ``test`` and ``eval-masks`` do): any 1 makes it 0/1.
        label_palette: ``data.label_palette``: colours of change masks drawn in colour -> 0/1/255 (see
            :class:`~changekit.data.labels.LabelPalette`); without it a colour mask is an error.
        sem_ignore_value: value marking "ignore" in semantic label files; it becomes ``ignore_index``
            (default: ``ignore_index``; 9 for Hi-UCD 3-channel masks).
        value_scale: divide pixels by this before mean/std (default: by dtype, see module docstring).
        require_labels: False accepts unlabelled pairs (prediction); their items have no ``mask``.
        workers: threads for validation (default: CPU count, at most 8).
        normalisation: the model's resolved normalisation (bands, scaling, radiometric mode); replaces
            ``mean`` / ``std`` / ``value_scale``.
        check_range: warn (once per file) when an image's values lie far outside the normalisation's training
            statistics (evaluation sets: a checkpoint given data of another sensor or product).
        align, resampling: ``data.align``: warp each date B onto its date A's grid as it is read (another CRS,
            resolution or extent), with this resampling; pixels B does not cover are nodata (labels ignored).
    """

    def __init__(
        self,
        source: str | Path | Sequence[PairRecord],
        root: str | Path | None = None,
        layout: str = "auto",
        task: str = "binary",
        transform: Transform | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        validate: bool = True,
        check_values: bool = True,
        cache: bool = False,
        ignore_index: int = 255,
        num_classes: int | None = None,
        label_encoding: str = "auto",
        sem_ignore_value: int | None = None,
        value_scale: float | None = None,
        require_labels: bool = True,
        workers: int | None = None,
        label_palette: Any = None,
        normalisation: Normalisation | None = None,
        check_range: bool = False,
        align: bool = False,
        resampling: str = "bilinear",
    ) -> None:
        if task not in TASKS:
            raise ConfigError(f"task '{task}' is unknown; use one of {', '.join(TASKS)}")
        if label_encoding not in ENCODINGS:
            raise ConfigError(f"label_encoding '{label_encoding}' is unknown; use one of {', '.join(ENCODINGS)}")
        if not 0 <= ignore_index <= 255:
            raise ConfigError(f"ignore_index must be in 0..255 (labels are 8-bit), got {ignore_index}")
        if len(mean) != len(std) or not len(mean) or any(s <= 0 for s in std):
            raise ConfigError(f"data.mean {list(map(float, mean))} and data.std {list(map(float, std))}: need the "
                              "same number of values and every std > 0")
        if value_scale is not None and value_scale <= 0:
            raise ConfigError(f"value_scale must be > 0, got {value_scale}")
        self.task, self.transform, self.cache = task, transform, cache
        self.ignore_index, self.num_classes, self.sem_ignore_value = ignore_index, num_classes, sem_ignore_value
        self.norm = normalisation if normalisation is not None else Normalisation(
            tuple(mean), tuple(std), scale=value_scale)
        self.mean = np.asarray(self.norm.mean, np.float32)
        self.std = np.asarray(self.norm.std, np.float32)
        self.check_range = check_range
        self.align, self.resampling = align, resampling
        self._checked: set[Path] = set()
        self._maps: dict[int, tuple[BandMap | None, BandMap | None]] = {}
        self.palette = LabelPalette.parse(label_palette)
        self._cache: dict[int, dict[str, np.ndarray]] = {}

        if isinstance(source, str | Path):
            found = discover(source, root=root, layout=layout, require_labels=require_labels)
            self.source: str = str(found.source)
            self.layout: str = found.layout
            self.records: list[PairRecord] = found.records
        else:
            self.source, self.layout, self.records = "records", "records", list(source)
            if not self.records:
                raise ConfigError("ChangeDataset got an empty record list")
        if require_labels and (unl := [r for r in self.records if not r.has_labels]):
            raise ConfigError(f"{unl[0].a}: pair '{unl[0].stem}' has no label (training and testing need one per "
                              "pair)")
        if task == "semantic":
            require_semantic(self.records, f"{self.source} (layout {self.layout})")
        self.label_encoding = "0/1" if self.palette is not None and label_encoding == "auto" else label_encoding
        decide = self.label_encoding == "auto" and any(r.label is not None for r in self.records)
        if validate or decide:
            report = validate_pairs(self.records, task=task, check_values=check_values or decide,
                                    ignore_index=ignore_index, num_classes=num_classes, workers=workers,
                                    palette=self.palette, align=align)
            if decide and report.encoding is not None:
                self.label_encoding = report.encoding
            if report.channels is not None:  # the bands a reader gives (image_size), not the header's count
                self._check_channels(image_size(self.records[0].a)[2])
        self._lut = binary_lut(self.label_encoding) if self.label_encoding != "auto" else None
        log.info("%s: %d pairs (layout %s, task %s, labels %s)", self.source, len(self.records), self.layout,
                 task, self.label_encoding)

    # ------------------------------------------------------------------------------------------- access

    def __len__(self) -> int:
        return len(self.records)

    @property
    def stems(self) -> list[str]:
        return [r.stem for r in self.records]

    def pair(self, i: int) -> PairRecord:
        """The :class:`PairRecord` behind item ``i``."""
        return self.records[i]

    def __repr__(self) -> str:
        return f"ChangeDataset({self.source!r}, pairs={len(self)}, layout={self.layout!r}, task={self.task!r})"

    def __getitem__(self, i: int | tuple[int, tuple[int, int] | None]) -> dict[str, Any]:
        """Item ``i``; ``(i, (row, col))`` from :class:`~changekit.data.samplers.ChangeBalancedSampler` also
        asks the transform's ``random_crop`` to centre its crop on that pixel (ignored without a crop)."""
        i, hint = i if isinstance(i, tuple) else (i, None)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} pairs")
        i = i % len(self)
        arrays = self.load_arrays(i)
        maps = self._pair_maps(i)
        if self.transform is not None:
            arrays = {k: v.copy() for k, v in arrays.items()} if self.cache else dict(arrays)
            if hint is not None:
                arrays[CROP_HINT] = crop_hint_mask(arrays["image_a"].shape[:2], hint)
            arrays = self.transform(arrays)
            if not isinstance(arrays, dict) or not all(isinstance(arrays.get(k), np.ndarray)
                                                       for k in ("image_a", "image_b")):
                raise ConfigError("transform must return a dict of numpy arrays with 'image_a' and 'image_b'")
            arrays.pop(CROP_HINT, None)
        item: dict[str, Any] = {}
        for key, val in arrays.items():
            if key in ("image_a", "image_b"):
                rec = self.records[i]
                item[key] = self.norm.hwc(val, rec.a if key == "image_a" else rec.b, maps[key == "image_b"])
            elif key in ("mask", "sem_a", "sem_b"):
                item[key] = torch.from_numpy(np.asarray(val).astype(np.int64))
            else:
                item[key] = val
        item["stem"] = self.records[i].stem
        return item

    def change_mask(self, i: int) -> np.ndarray:
        """The 0/1/255 change mask of pair ``i`` (labels only; no image is read)."""
        rec = self.records[i]
        if not rec.has_labels:
            raise ConfigError(f"{rec.a}: pair '{rec.stem}' has no label")
        return self._labels(rec)["mask"]

    def load_arrays(self, i: int) -> dict[str, np.ndarray]:
        """Decoded arrays of pair ``i`` as the transform receives them (labels converted, not normalised)."""
        if self.cache and i in self._cache:
            return self._cache[i]
        rec = self.records[i]
        (a, nodata_a), (b, nodata_b) = self._read(rec.a), self._read(rec.b, rec.a if self.align else None)
        out = {"image_a": a, "image_b": b}
        if a.shape[:2] != b.shape[:2]:
            raise SizeMismatchError(f"{rec.a} is {size_text(a.shape, 'A')} but {rec.b} is {size_text(b.shape, 'B')} "
                                    "(H x W x bands)")
        if rec.has_labels:
            out.update(self._labels(rec))
            for key in ("mask", "sem_a", "sem_b"):
                if key in out and out[key].shape != a.shape[:2]:
                    raise SizeMismatchError(f"{rec.label}: label is {size_text(out[key].shape, 'label')} but {rec.a} "
                                            f"is {size_text(a.shape[:2], 'A')} (H x W)")
        nodata = nodata_a if nodata_b is None else nodata_b if nodata_a is None else nodata_a | nodata_b
        if nodata is not None:  # NaN / Inf pixels: zeroed above, ignored by the loss and the metrics here
            for key, value in (("mask", 255), ("sem_a", self.ignore_index), ("sem_b", self.ignore_index)):
                if key in out:
                    out[key] = np.where(nodata, np.uint8(value), out[key])
            log.debug("%s: %d nodata pixels ignored", rec.stem, int(nodata.sum()))
        if self.norm.radiometric != "none" and i not in self._maps:  # the whole pair, nodata excluded, pre-crop
            valid = None if nodata is None else ~nodata
            self._maps[i] = self.norm.fit_pair(np.moveaxis(a, -1, 0), np.moveaxis(b, -1, 0), valid, valid)
        if self.cache:
            self._cache[i] = out
        return out

    # ---------------------------------------------------------------------------------------- internals

    def _labels(self, rec: PairRecord) -> dict[str, np.ndarray]:
        raw = read_raw_labels(rec, self.palette)
        out: dict[str, np.ndarray] = {}
        if "sem_a" in raw and "sem_b" in raw:
            default = HIUCD_SEM_IGNORE if rec.label_kind == "hiucd" else self.ignore_index
            file_ignore = default if self.sem_ignore_value is None else self.sem_ignore_value
            sem_a, sem_b = raw["sem_a"], raw["sem_b"]
            if file_ignore != self.ignore_index:
                sem_a = np.where(sem_a == file_ignore, self.ignore_index, sem_a).astype(np.uint8)
                sem_b = np.where(sem_b == file_ignore, self.ignore_index, sem_b).astype(np.uint8)
            if self.task == "semantic":
                out["sem_a"], out["sem_b"] = sem_a, sem_b
            if "change" not in raw:
                out["mask"] = derive_change(sem_a, sem_b, self.ignore_index)
        if "change" in raw:
            path = rec.change if rec.label_kind == "semantic" else rec.label
            out["mask"] = self._binary(raw["change"], path, fixed=rec.label_kind == "hiucd")
        return out

    def _binary(self, raw: np.ndarray, path: Path | None, fixed: bool) -> np.ndarray:
        """Raw change label -> 0/1/255 through a lookup table (one vectorised op)."""
        lut = binary_lut("0/1") if fixed else self._lut
        if lut is None:  # unreachable with labels (decided set-wide at construction); kept for records added later
            counts = np.bincount(raw.ravel(), minlength=256)
            check_binary_values(counts, path)
            lut = binary_lut(encoding_from_counts(counts))
        mask = lut[raw]
        if (mask == 254).any():
            bad = np.unique(raw[mask == 254]).tolist()
            raise LabelValueError(f"{path}: label values {bad} are not allowed by label encoding "
                                  f"{'0/1' if fixed else self.label_encoding}")
        return mask

    def _check_channels(self, channels: int) -> None:
        """The files' band count fits the normalisation's band selection and per-band values."""
        bands = self.norm.bands
        if bands and max(bands) > channels:
            raise ConfigError(f"{self.records[0].a}: {channels} band(s), but data.bands selects {list(bands)}")
        n = len(bands) if bands else channels
        if len(self.mean) not in (1, n) or len(self.std) not in (1, n):
            raise ConfigError(f"{self.records[0].a}: {n} band(s), but data.mean and data.std have {len(self.mean)} "
                              f"values; set both with {n} values (or leave them unset)")

    def _read(self, path: Path, align_to: Path | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """The selected bands of an image ``(H, W, C)`` and its nodata mask (``None``: none).

        Nodata pixels take the mean of the image's valid pixels per band: a neutral value that every
        normalisation maps near 0, and that augmentations move with the image (their labels are ignored).
        ``align_to`` (``data.align``): warp the image onto that image's grid as it is read.
        """
        from ..raster.reader import RasterReader

        with contextlib.ExitStack() as stack:
            ref = stack.enter_context(RasterReader(align_to, bands=self.norm.bands)) if align_to else None
            reader = stack.enter_context(RasterReader(path, bands=self.norm.bands, align_to=ref,
                                                      resampling=self.resampling))
            data, valid = reader.read_valid()
        if self.check_range and path not in self._checked:
            self._checked.add(path)
            self.norm.check_range(data, path, valid)
        nodata = None if valid.all() else ~valid
        if nodata is not None:
            fill = data[:, valid].mean(axis=1) if valid.any() else np.zeros(data.shape[0])
            if np.issubdtype(data.dtype, np.integer):
                fill = np.round(fill)
            data = np.where(valid, data, fill.astype(data.dtype)[:, None, None])
        return np.moveaxis(data, 0, -1), nodata

    def _pair_maps(self, i: int) -> tuple[BandMap | None, BandMap | None]:
        """The radiometric maps :meth:`load_arrays` fitted for pair ``i``, fitted once per pair and worker (histogram
        tables only with ``cache``)."""
        if self.norm.radiometric == "none":
            return None, None
        maps = self._maps[i]
        if not self.cache and not all(m is None or m.affine for m in maps):
            del self._maps[i]  # histogram tables are large: kept with cached arrays only; affine maps always
        return maps
