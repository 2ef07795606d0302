"""Every check of a resolved run config that can be made before anything is written.

:func:`changekit.config.resolve` already checked each key's type, range and choices. :func:`validate_run` checks
what needs the outside world or another module, so that a mistake is refused before a run folder exists:

* the data sources, ``data.root`` (for list files) and ``init_from`` exist (the error names the key and path);
* the model builds with its ``model.*`` arguments (on the meta device: no memory, no weight download), local
  weight files it names exist, and its task fits ``data.task``;
* the loss terms build (:func:`changekit.losses.build_loss`), their targets exist for this model and their
  ignore values match the data's; the augmentation ops resolve (the transform op table);
* semantic class maps fit the model: every class value found is in ``0..model.num_classes-1`` or is
  ``data.ignore_index``, and a ``classes.yaml`` beside the data (or the ``data.classes`` table) lists as many
  classes, with the same ignore value.

Binary change labels (0/255, or 0/1 with 255 = ignore) and image sizes are checked when the data sets are built
(:class:`~changekit.data.datasets.ChangeDataset`), which training also does before its folder is created.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ChangekitError, ConfigError, DatasetNotFoundError, LabelValueError

log = logging.getLogger(__name__)


def validate_run(cfg: dict[str, Any], splits: Iterable[str] = ("train", "val"), resume: bool = False) -> None:
    """Check a resolved config against its data, model, loss and augmentation; create nothing.

    Args:
        cfg: a config from :func:`changekit.config.load_config` / :func:`~changekit.config.resolve`.
        splits: the data splits the command reads. ``train`` (for training) and ``test`` (for testing) must be
            set; other splits are checked when set. The augmentation and ``init_from`` are checked when ``train``
            is among them.
        resume: the run continues from its own checkpoint, so ``init_from`` is not read.

    Raises:
        ConfigError, DatasetNotFoundError, LabelValueError, UnknownModelError: one line naming the key or file,
            the value found and what is expected.
    """
    splits = tuple(splits)
    sources = _check_paths(cfg, splits, init_from="train" in splits and not resume)
    model = _meta_model(cfg)
    task = getattr(model, "task", "binary") if model is not None else None
    if task == "semantic" and cfg["data"]["task"] != "semantic":
        raise ConfigError(f"data.task: 'binary' does not fit model '{cfg['model']['name']}', which predicts class "
                          "maps; set data.task=semantic (data with label1/label2 class maps)")
    _check_loss(cfg, task)
    if "train" in splits:
        _check_augment(cfg)
    if task == "semantic" and cfg["data"]["task"] == "semantic":
        num_classes = int(getattr(model, "num_classes", 0)) or None
        if num_classes is not None:
            _check_class_tables(cfg, sources, num_classes)
            if cfg["data"]["check_values"]:
                for split, source in sources.items():
                    _check_class_values(cfg, split, source, num_classes)


def _check_paths(cfg: dict[str, Any], splits: tuple[str, ...], init_from: bool) -> dict[str, str]:
    """The data sources of ``splits`` that are set, after checking every path the run reads exists."""
    data = cfg["data"]
    sources: dict[str, str] = {}
    for split in splits:
        value = data.get(split)
        if value is None:
            if split in ("train", "test"):
                raise ConfigError(f"data.{split}: not set; set data.{split}=PATH (a pair folder or a path-list file)")
            continue
        if not Path(value).exists():
            null = "" if split in ("train", "test") else f", or data.{split}=null"
            raise DatasetNotFoundError(f"data.{split}: '{value}' does not exist ({Path(value).absolute()}); set "
                                       f"data.{split}=PATH (a pair folder or a path-list file){null}")
        sources[split] = str(value)
        root = data["root"]
        if root is not None and Path(value).is_file() and not Path(root).expanduser().is_dir():
            raise DatasetNotFoundError(f"data.root: '{root}' is not a folder ({Path(root).absolute()}); the list "
                                       f"file of data.{split} resolves its paths against it")
    if init_from and cfg.get("init_from") is not None and not Path(cfg["init_from"]).is_file():
        raise DatasetNotFoundError(f"init_from: checkpoint '{cfg['init_from']}' not found "
                                   f"({Path(cfg['init_from']).absolute()})")
    return sources


def _meta_model(cfg: dict[str, Any]) -> Any:
    """The configured model built on the meta device, or ``None`` when it cannot be built there.

    ``*weights`` arguments are checked for existence (local files) but not loaded.
    """
    import torch

    from ..models import build_model
    from ..models.siam_unet import _is_weight_file
    from .task import model_kwargs

    name, kwargs = model_kwargs(cfg)
    for key, value in kwargs.items():
        if key.endswith("weights") and isinstance(value, str) and _is_weight_file(value) and not Path(value).is_file():
            raise DatasetNotFoundError(f"model.{key}: weights file '{value}' not found ({Path(value).absolute()})")
    kwargs = {k: None if k.endswith("weights") else v for k, v in kwargs.items()}
    try:
        with torch.device("meta"):
            return build_model(name, **kwargs)
    except ChangekitError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model '{name}': {' '.join(str(exc).split())} (check the model.* keys)") from None
    except Exception as exc:  # noqa: BLE001 - a model that needs real tensors to build is checked when built
        log.debug("model %s not built on the meta device (%s); checked when the run builds it", name, exc)
        return None


def _check_loss(cfg: dict[str, Any], task: str | None) -> None:
    """Build the loss terms and check that their targets and ignore values fit the model and data."""
    from ..losses import build_loss

    loss = build_loss(cfg["loss"])
    data_ignore = int(cfg["data"]["ignore_index"])
    for i, (name, target, term) in enumerate(zip(loss.names, loss.targets, cfg["loss"], strict=True)):
        where = f"loss[{i}] ({name})"
        if target != "change":
            if task == "binary":
                raise ConfigError(f"{where}: target '{target}' needs a semantic model, but '{cfg['model']['name']}' "
                                  "predicts change only; remove the term or choose a semantic model")
            if cfg["data"]["task"] != "semantic":
                raise ConfigError(f"{where}: target '{target}' needs class maps; set data.task=semantic")
        ignore = term.get("ignore_index")
        expected = 255 if target == "change" else data_ignore
        if ignore is not None and ignore != expected:
            source = "the change mask marks ignored pixels with 255" if target == "change" else (
                f"data.ignore_index is {data_ignore}")
            raise ConfigError(f"{where}: ignore_index {ignore!r} does not fit the data ({source}); "
                              f"set it to {expected} or leave it out")


def _check_augment(cfg: dict[str, Any]) -> None:
    """Resolve the augmentation ops (the transform op table checks names and parameters)."""
    from ..data.transforms import build_transforms

    try:
        build_transforms(cfg["data"]["augment"], ignore_index=int(cfg["data"]["ignore_index"]))
    except ConfigError as exc:
        text = str(exc)
        raise ConfigError(f"data.augment{text[len('transforms'):]}" if text.startswith("transforms")
                          else f"data.augment: {text}") from None


def _check_class_tables(cfg: dict[str, Any], sources: dict[str, str], num_classes: int) -> None:
    """``data.classes`` and a ``classes.yaml`` beside each data source must list ``model.num_classes`` classes."""
    from ..data.classes import find_classes, load_classes

    data = cfg["data"]
    if data["classes"] is not None:
        table = load_classes(data["classes"])
        if table.num_classes != num_classes:
            raise ConfigError(f"data.classes: '{data['classes']}' lists {table.num_classes} classes but "
                              f"model.num_classes is {num_classes}; set data.classes to the data's table (or null)")
    for split, source in sources.items():
        table = find_classes({"data": {split: source, "root": data["root"]}})
        if table is None:
            continue
        names = ", ".join(table.names[:6]) + (", ..." if table.num_classes > 6 else "")
        if table.num_classes != num_classes:
            raise ConfigError(f"{source}: the data's classes.yaml lists {table.num_classes} classes ({names}) but "
                              f"model.num_classes is {num_classes}; set model.num_classes={table.num_classes} "
                              f"(data.{split})")
        if table.ignore_index != int(data["ignore_index"]) and not _is_hiucd(source, data):
            raise ConfigError(f"{source}: the data's classes.yaml marks ignored pixels with {table.ignore_index} but "
                              f"data.ignore_index is {data['ignore_index']}; set data.ignore_index="
                              f"{table.ignore_index} (data.{split})")


def _is_hiucd(source: str, data: dict[str, Any]) -> bool:
    """Whether ``source`` holds Hi-UCD 3-channel masks (their ignore value 9 is mapped to data.ignore_index)."""
    from ..data.discover import discover

    found = discover(source, root=data["root"], layout=data["layout"], require_labels=True)
    return any(r.label_kind == "hiucd" for r in found.records[:1])


def _check_class_values(cfg: dict[str, Any], split: str, source: str, num_classes: int) -> None:
    """Every class value of the split's class maps is in ``0..num_classes-1`` or is the ignore value."""
    from ..data.check import inspect_pairs
    from ..data.discover import discover
    from ..data.labels import HIUCD_SEM_IGNORE, read_raw_labels, values_text

    data = cfg["data"]
    found = discover(source, root=data["root"], layout=data["layout"], require_labels=True)
    infos = inspect_pairs(found.records, check_values=True, ignore_index=int(data["ignore_index"]),
                          align=bool(data.get("align")))
    errors = [e for info in infos for e in info.errors]
    if errors:
        raise errors[0]
    for rec, info in zip(found.records, infos, strict=True):
        if info.sem_counts is None:
            continue
        ignore = HIUCD_SEM_IGNORE if rec.label_kind == "hiucd" else int(data["ignore_index"])
        allowed = np.zeros(256, bool)
        allowed[:num_classes] = True
        allowed[ignore] = True
        if not (info.sem_counts[~allowed] > 0).any():
            continue
        raw = read_raw_labels(rec)
        for key, path in (("sem_a", rec.label), ("sem_b", rec.label_b or rec.label)):
            bad = np.setdiff1d(np.unique(raw[key]), np.flatnonzero(allowed)) if key in raw else np.array([])
            if bad.size:
                ignore_key = "the Hi-UCD unlabelled value" if rec.label_kind == "hiucd" else "data.ignore_index"
                raise LabelValueError(
                    f"{path}: class value(s) {values_text(bad)} outside 0..{num_classes - 1} (model.num_classes: "
                    f"{num_classes}) and not the ignore value {ignore} ({ignore_key}); set model.num_classes or "
                    f"data.ignore_index to fit the data (data.{split})")
