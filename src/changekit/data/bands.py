"""Band counts: a run's ``model.in_channels`` and ``data.mean`` / ``data.std`` follow the data it trains on.

Data with 1, 2, 4 or 13 bands trains without editing the config: :func:`fit_to_data` reads the band count of the
first training image (from its header) and

* sets ``model.in_channels`` when the config does not (and the model takes it);
* replaces the default normalisation when it does not fit: ImageNet mean/std for 3 bands (the default), and
  :data:`OTHER_MEAN` / :data:`OTHER_STD` per band for any other count. Pixels are scaled to [0, 1] by their dtype
  first (255 for uint8, 65535 for uint16, 1 for floats), so 0.5 / 0.25 centres that range; for calibrated
  statistics (Sentinel-2 reflectance and the like) set ``data.mean`` and ``data.std`` yourself.

Values the user did set are never replaced: an ``in_channels`` or a ``mean`` / ``std`` that contradicts the data is
one error line naming the key, the file and both counts. A checkpoint applied to images with another band count
(``test``, ``predict``) is one line naming the file, the checkpoint and both counts (:func:`check_bands`).

``data.bands`` (1-based, as GDAL) selects bands: the band count is then the number selected. Finally
:func:`fit_to_data` resolves the pixel normalisation (``data.normalize``, ``data.radiometric``; see
:mod:`changekit.data.norm_config`) against the training data's dtype and, when needed, its statistics, and stores
it as ``data.resolved_normalize``: from then on it is part of the model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..errors import ConfigError, SizeMismatchError

log = logging.getLogger(__name__)

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
#: per-band normalisation for anything but 3 bands (values already scaled to [0, 1] by dtype)
OTHER_MEAN = 0.5
OTHER_STD = 0.25


def default_normalisation(bands: int) -> tuple[list[float], list[float]]:
    """``(mean, std)`` for ``bands`` bands: ImageNet's for 3, ``0.5`` / ``0.25`` per band otherwise."""
    if bands == 3:
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    return [OTHER_MEAN] * bands, [OTHER_STD] * bands


def first_image_bands(data: dict[str, Any], split: str) -> tuple[Path, int] | None:
    """The first date-A image of ``data[split]`` and its band count (header read only; the number of
    ``data.bands`` when they are selected), or ``None`` when the split is not set.

    Raises:
        ConfigError: a band of ``data.bands`` does not exist in that image.
    """
    found = _first_image(data, split)
    if found is None:
        return None
    path, count, _ = found
    return path, count


def _first_image(data: dict[str, Any], split: str) -> tuple[Path, int, Any] | None:
    """``(path, selected band count, dtype)`` of the first date-A image of ``data[split]``."""
    from .discover import discover
    from .norm_config import parse_bands

    source = data.get(split)
    if source is None:
        return None
    found = discover(source, root=data.get("root"), layout=data.get("layout", "auto"), require_labels=False)
    first = found.records[0].a
    count, dtype = _header(first, parse_bands(data.get("bands")), "data.bands")
    return first, count, dtype


def _header(path: Path, bands: tuple[int, ...] | None, key: str) -> tuple[int, Any]:
    """``(selected band count, dtype)`` of an image, the band selection checked against its band count."""
    from ..raster.reader import RasterReader

    try:
        with RasterReader(path, bands=bands) as reader:
            return reader.count, reader.dtype
    except ConfigError as exc:  # the reader names --bands; the config key is what the user set here
        raise ConfigError(str(exc).replace("--bands", key, 1)) from None


def fit_to_data(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fill ``model.in_channels`` and fit ``data.mean`` / ``data.std`` to the training data (in place).

    Returns:
        ``cfg`` (changed in place), so the resolved values land in ``config.yaml`` and the checkpoints.

    Raises:
        ConfigError: ``model.in_channels`` or ``data.mean`` / ``data.std`` were set to another band count than the
            data has (names the key, the first image and both counts).
    """
    found = _first_image(cfg["data"], "train")
    if found is None:
        return cfg
    path, bands, dtype = found
    _fit_in_channels(cfg["model"], path, bands)
    data = cfg["data"]
    if len(data["mean"]) != bands:
        if list(data["mean"]) != IMAGENET_MEAN or list(data["std"]) != IMAGENET_STD:
            raise ConfigError(f"data.mean: {len(data['mean'])} value(s), but {path} has {bands} band(s); set "
                              f"data.mean and data.std with {bands} values each (or remove both to use the default "
                              "rule)")
        data["mean"], data["std"] = default_normalisation(bands)
        if _fit_normalisation(data, dtype) in ("dtype", "scale", "percentile"):  # modes that use data.mean/std
            log.warning("%s has %d band(s): normalising each with mean %.2f, std %.2f after scaling to [0, 1]; "
                        "set data.mean and data.std for statistics of your own", path, bands, OTHER_MEAN, OTHER_STD)
        return cfg
    _fit_normalisation(data, dtype)
    return cfg


def _fit_normalisation(data: dict[str, Any], dtype: Any) -> str:
    """Resolve ``data.normalize`` / ``data.radiometric`` into ``data.resolved_normalize`` (kept when a resumed
    run's request is unchanged, so a resumed run never changes what its network sees); returns its mode."""
    from .norm_config import parse_bands, parse_normalize, resolve_normalisation
    from .normalize import Normalisation

    request = parse_normalize(data.get("normalize", "auto"))
    bands = parse_bands(data.get("bands"))
    if data.get("resolved_normalize"):
        old = Normalisation.from_dict(data["resolved_normalize"])
        if (old.request, old.bands, old.radiometric) == (request.text(), bands, data.get("radiometric", "none")):
            return old.mode
        log.warning("data.resolved_normalize was resolved from another data.normalize / data.bands / "
                    "data.radiometric; resolving it again")
    stats, source = _training_stats(data, request, bands, dtype)
    norm = resolve_normalisation(data, dtype, stats, source)
    data["resolved_normalize"] = norm.to_dict()
    log.info("normalisation: %s", norm.describe())
    return norm.mode


def _training_stats(data: dict[str, Any], request: Any, bands: tuple[int, ...] | None,
                    dtype: Any) -> tuple[list[dict[str, Any]] | None, str]:
    """The statistics rows a normalisation request needs (from ``data.stats`` or the training images), or
    ``(None, ...)`` when it needs none. 8-bit data with ``auto`` needs none (nothing is read)."""
    import numpy as np

    from .band_stats import PERCENTILES
    from .dataset_stats import RESOLVE_MAX_IMAGES, dataset_stats
    from .norm_config import load_stats

    if data.get("stats"):
        return load_stats(data["stats"], bands), str(data["stats"])
    dtype = np.dtype(dtype)
    auto_stats = request.mode == "auto" and np.issubdtype(dtype, np.integer) and dtype != np.uint8
    if not (request.needs_stats or auto_stats) or data.get("radiometric") == "standardize":
        return None, ""
    stats = dataset_stats(data["train"], root=data.get("root"), layout=data.get("layout", "auto"), bands=bands,
                          max_images=RESOLVE_MAX_IMAGES)
    extra = (request.low, request.high) if request.mode == "percentile" else ()
    percents = tuple(sorted(set(PERCENTILES) | set(extra)))
    log.info("training statistics from %d images of %s", stats.images, data["train"])
    return stats.rows(percents), f"the training images of {data['train']}"


def _fit_in_channels(model: dict[str, Any], path: Path, bands: int) -> None:
    from ..models.registry import accepted_args, get_builder

    if "in_channels" in model:
        if model["in_channels"] != bands:
            raise ConfigError(f"model.in_channels: {model['in_channels']}, but {path} has {bands} band(s); set it "
                              f"to {bands}, or remove it to take it from the data")
        return
    builder = get_builder(model["name"])
    accepted = accepted_args(builder)
    if accepted is not None and "in_channels" not in accepted:
        if bands != 3:
            raise ConfigError(f"{path} has {bands} band(s), but model '{model['name']}' takes no in_channels "
                              "(3-band images only)")
        return
    if bands != _default_in_channels(builder):
        model["in_channels"] = bands
        log.info("model.in_channels = %d (from %s)", bands, path)


def _default_in_channels(builder: Any) -> int | None:
    """The default of ``in_channels`` in the builder's (or its model class's) signature, if it has one."""
    import inspect

    for fn in (builder, getattr(getattr(builder, "model_cls", None), "__init__", None)):
        if fn is None:
            continue
        param = inspect.signature(fn).parameters.get("in_channels")
        if param is not None and isinstance(param.default, int):
            return param.default
    return None


def check_bands(path: str | Path, found: int, expected: int | None, checkpoint: str | Path) -> None:
    """Raise when an image has another band count than the checkpoint's model was trained on.

    Raises:
        SizeMismatchError: naming the image, the checkpoint and both counts.
    """
    if expected is not None and int(found) != int(expected):
        raise SizeMismatchError(f"{path}: {found} band(s), but the checkpoint {checkpoint} was trained on "
                                f"{expected}-band images; use a checkpoint trained on {found}-band data")


def check_input_bands(path: str | Path, norm: Any, expected: int | None, checkpoint: str | Path) -> None:
    """Raise when an input cannot give the model its bands: a band the normalisation selects (``data.bands``,
    ``--bands``) is missing from the file, or the file has another band count than the model takes.

    Raises:
        SizeMismatchError: naming the file, the checkpoint and the bands or counts.
    """
    from .io import image_size

    count = image_size(path)[2]
    if norm.bands:
        if max(norm.bands) > count:
            raise SizeMismatchError(f"{path}: {count} band(s), but the checkpoint {checkpoint} reads bands "
                                    f"{list(norm.bands)}; pass --bands with {len(norm.bands)} of this file's bands "
                                    "in the training order")
        count = len(norm.bands)
    check_bands(path, count, expected, checkpoint)


def with_input_bands(cfg: dict[str, Any], bands: Any) -> Any:
    """The run's :class:`~changekit.data.normalize.Normalisation` reading other input ``bands`` (``test --bands``),
    written back into ``cfg`` (``data.bands`` and ``data.resolved_normalize``) so that datasets built from it read
    them; ``bands=None`` leaves ``cfg`` as it is.

    Raises:
        ConfigError: ``bands`` are not 1-based indices, or not as many as the model was trained on.
    """
    from .norm_config import parse_bands
    from .normalize import Normalisation

    norm = Normalisation.from_config(cfg).with_bands(parse_bands(bands, "--bands"))
    if bands is not None:
        cfg["data"]["bands"] = list(norm.bands or ())
        if cfg["data"].get("resolved_normalize"):
            cfg["data"]["resolved_normalize"] = norm.to_dict()
    return norm


def checkpoint_bands(model: Any, cfg: dict[str, Any]) -> int | None:
    """The band count a checkpoint's model takes: its ``in_channels``, else the length of its ``data.mean``."""
    bands = getattr(model, "in_channels", None) or cfg.get("model", {}).get("in_channels")
    if bands is None and cfg.get("data", {}).get("mean") is not None:
        bands = len(cfg["data"]["mean"])
    return int(bands) if bands is not None else None
