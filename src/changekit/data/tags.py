"""Per-image CLIP tags for ChangeCLIP: read ``*_clipcls_*.json`` files and add ``tags_a`` / ``tags_b`` to samples.

The JSON files (written by ``changekit clip-tag`` or by the seed's ``clip_inference.py``) sit beside each date
folder: ``train/A_clipcls_56_vit16.json`` holds the ranked classes of ``train/A/*``. An image's tags are the
first ``top_k`` (9) class keys of its entry, in file order, as the seed reads them. Entries are matched by
**file stem**, never by the stored path, so relative paths and the seed's absolute paths both work after the
data folder is moved.

Samples carry the tags as one string ``"name|name|..."`` per date: torch's default collate turns a batch of such
strings into a list with one string per image (a batch of *lists* would be transposed, and lists of different
lengths would not collate at all). ChangeCLIP accepts both forms.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from ..errors import ConfigError, DatasetNotFoundError

log = logging.getLogger(__name__)

DEFAULT_SUFFIX = "clipcls_56_vit16"
TAG_SEPARATOR = "|"
TAG_KEYS = ("tags_a", "tags_b")
#: ``data.tags`` defaults (to be merged into ``changekit.config.DEFAULTS["data"]["tags"]``).
TAGS_DEFAULTS: dict[str, Any] = {
    "enabled": "auto",  # auto: when the model takes tags_a/tags_b | true | false
    "suffix": DEFAULT_SUFFIX,  # JSON files are <date-folder>_<suffix>.json beside the date folders
    "top_k": 9,  # tags per image (keys 1..9 of the seed's JSON)
    "allow_missing": False,  # true: images without tags get none (the seed's silent fallback) instead of an error
}


def tags_file(folder: str | Path, suffix: str = DEFAULT_SUFFIX) -> Path:
    """The tag file of a date folder: ``<parent>/<folder-name>_<suffix>.json``."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}_{suffix}.json"


@functools.lru_cache(maxsize=64)
def _read_cached(path: str, mtime_ns: int, top_k: int) -> dict[str, tuple[str, ...]]:
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: unreadable tag file ({exc}); rerun `changekit clip-tag`") from None
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: a tag file must hold a list of objects with 'image_path'")
    out: dict[str, tuple[str, ...]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("image_path"), str):
            raise ConfigError(f"{path}: entry {i} is not an object with an 'image_path' string")
        stem = Path(entry["image_path"].replace("\\", "/")).stem
        if stem in out:
            raise ConfigError(f"{path}: two entries for the image stem '{stem}'")
        out[stem] = tuple(k for k in entry if k != "image_path")[:top_k]
    return out


def read_tags_file(path: str | Path, top_k: int = 9) -> dict[str, list[str]]:
    """``{image stem: top-k class names}`` of one tag file (cached until the file changes)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: tag file not found; run `changekit clip-tag DATA_ROOT`")
    return {k: list(v) for k, v in _read_cached(str(path.resolve()), path.stat().st_mtime_ns, int(top_k)).items()}


def image_tags(image: str | Path, suffix: str = DEFAULT_SUFFIX, top_k: int = 9) -> str | None:
    """The collate-safe tag string of one image (from the tag file beside its folder), ``None`` if untagged."""
    image = Path(image)
    file = tags_file(image.parent, suffix)
    found = read_tags_file(file, top_k).get(image.stem) if file.is_file() else None
    return None if found is None else TAG_SEPARATOR.join(found)


def pair_extras(a: str | Path, b: str | Path, suffix: str = DEFAULT_SUFFIX, top_k: int = 9,
                allow_missing: bool = False) -> dict[str, list[str]]:
    """Forward keywords ``{"tags_a": [...], "tags_b": [...]}`` of one pair (e.g. for ``predict``).

    Raises:
        DatasetNotFoundError: an image has no tags and ``allow_missing`` is false.
    """
    out = {}
    for key, image in (("tags_a", a), ("tags_b", b)):
        tags = image_tags(image, suffix, top_k)
        if tags is None and not allow_missing:
            raise DatasetNotFoundError(f"{image}: no CLIP tags in {tags_file(Path(image).parent, suffix)}; run "
                                       "`changekit clip-tag` on its folder")
        out[key] = [tags or ""]
    return out


class TaggedDataset(Dataset):
    """Wraps a pair dataset (with ``records`` holding ``a`` / ``b`` paths) and adds ``tags_a`` / ``tags_b``.

    Args:
        dataset: e.g. a :class:`~changekit.data.datasets.ChangeDataset`.
        suffix: tag-file suffix (``clipcls_56_vit16``).
        top_k: tags per image.
        allow_missing: give untagged images empty tags instead of raising.

    Raises:
        DatasetNotFoundError: an image has no tags (no file for its folder, or no entry for its stem) and
            ``allow_missing`` is false; the message names how many, the first image and the file searched.
    """

    def __init__(self, dataset: Any, suffix: str = DEFAULT_SUFFIX, top_k: int = 9, allow_missing: bool = False) -> None:
        records = getattr(dataset, "records", None)
        if records is None:
            raise ConfigError(f"{type(dataset).__name__}: cannot add CLIP tags to a dataset without pair records")
        self.dataset = dataset
        self.tags: dict[str, list[str]] = {"tags_a": [], "tags_b": []}
        missing: list[tuple[Path, Path]] = []
        for rec in records:
            for key, image in (("tags_a", Path(rec.a)), ("tags_b", Path(rec.b))):
                found = image_tags(image, suffix, top_k)
                if found is None:
                    missing.append((image, tags_file(image.parent, suffix)))
                self.tags[key].append(found or "")
        if missing:
            image, file = missing[0]
            where = "has no entry for it" if file.is_file() else "does not exist"
            msg = (f"{len(missing)} of {2 * len(records)} images have no CLIP tags, e.g. {image} ({file} {where}); "
                   "run `changekit clip-tag DATA_ROOT`, or set data.tags.allow_missing: true to train with empty tags")
            if not allow_missing:
                raise DatasetNotFoundError(msg)
            log.warning(msg)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int | tuple[int, Any]) -> dict[str, Any]:
        item = self.dataset[i]
        i = i[0] if isinstance(i, tuple) else i  # (index, crop hint) from a change-balanced sampler
        item["tags_a"], item["tags_b"] = self.tags["tags_a"][i], self.tags["tags_b"][i]
        return item

    def __getattr__(self, name: str) -> Any:  # records, stems, pair(), ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


def maybe_add_tags(dataset: Any, data_cfg: dict[str, Any], split: str, extra_inputs: tuple[str, ...] = ()) -> Any:
    """``dataset`` wrapped in :class:`TaggedDataset` when ``data.tags.enabled`` is true, or ``"auto"`` and the
    model takes ``tags_a`` (``extra_inputs``); otherwise ``dataset`` unchanged. ``split`` only labels messages."""
    cfg = {**TAGS_DEFAULTS, **(data_cfg.get("tags") or {})}
    enabled = cfg["enabled"]
    if enabled not in (True, False, "auto"):
        raise ConfigError(f"data.tags.enabled: expected true, false or auto, got {enabled!r}")
    if enabled is False or (enabled == "auto" and not set(TAG_KEYS) & set(extra_inputs)):
        return dataset
    try:
        return TaggedDataset(dataset, suffix=str(cfg["suffix"]), top_k=int(cfg["top_k"]),
                             allow_missing=bool(cfg["allow_missing"]))
    except DatasetNotFoundError as exc:
        raise DatasetNotFoundError(f"data.{split}: {exc}") from None
