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
    """The first date-A image of ``data[split]`` and its band count (header read only), or ``None`` when the
    split is not set."""
    from .discover import discover
    from .io import image_size

    source = data.get(split)
    if source is None:
        return None
    found = discover(source, root=data.get("root"), layout=data.get("layout", "auto"), require_labels=False)
    first = found.records[0].a
    return first, image_size(first)[2]


def fit_to_data(cfg: dict[str, Any]) -> dict[str, Any]:
    """Fill ``model.in_channels`` and fit ``data.mean`` / ``data.std`` to the training data (in place).

    Returns:
        ``cfg`` (changed in place), so the resolved values land in ``config.yaml`` and the checkpoints.

    Raises:
        ConfigError: ``model.in_channels`` or ``data.mean`` / ``data.std`` were set to another band count than the
            data has (names the key, the first image and both counts).
    """
    found = first_image_bands(cfg["data"], "train")
    if found is None:
        return cfg
    path, bands = found
    _fit_in_channels(cfg["model"], path, bands)
    data = cfg["data"]
    if len(data["mean"]) != bands:
        if list(data["mean"]) != IMAGENET_MEAN or list(data["std"]) != IMAGENET_STD:
            raise ConfigError(f"data.mean: {len(data['mean'])} value(s), but {path} has {bands} band(s); set "
                              f"data.mean and data.std with {bands} values each (or remove both to use the default "
                              "rule)")
        data["mean"], data["std"] = default_normalisation(bands)
        log.warning("%s has %d band(s): normalising each with mean %.2f, std %.2f after scaling to [0, 1]; set "
                    "data.mean and data.std for statistics of your own", path, bands, OTHER_MEAN, OTHER_STD)
    return cfg


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


def checkpoint_bands(model: Any, cfg: dict[str, Any]) -> int | None:
    """The band count a checkpoint's model takes: its ``in_channels``, else the length of its ``data.mean``."""
    bands = getattr(model, "in_channels", None) or cfg.get("model", {}).get("in_channels")
    if bands is None and cfg.get("data", {}).get("mean") is not None:
        bands = len(cfg["data"]["mean"])
    return int(bands) if bands is not None else None
