"""Run configuration: plain YAML mirrored onto one documented default tree.

A config file holds any subset of :data:`DEFAULTS`; missing keys take the defaults, unknown keys are an error
that suggests the closest known key (a typo must never be silently ignored). ``model`` holds the registry name
plus the model's own constructor arguments (checked by the registry), and ``loss`` a list of loss terms
(checked by :func:`changekit.losses.build_loss`). ``--set a.b=value`` overrides parse ``value`` as YAML.
A file may start from others with ``_base_: relative/path.yaml`` or ``_base_: [a.yaml, b.yaml]`` (merged in
order, then the file itself), and several files compose left to right (``load_config([base, model, data])``),
so a protocol such as model x dataset x split is three small files. Every value is then checked against
:data:`changekit.config_schema.SCHEMA` (type, range, choices); an error names the key, the value, what is
expected and the file or ``--set`` it came from.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .config_schema import check_config
from .config_types import config_error, show
from .errors import ConfigError, DatasetNotFoundError, suggest


class _Loader(yaml.SafeLoader):
    """Safe YAML loader that also reads ``1e-3`` as a float (YAML 1.1 needs a dot: ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def yaml_load(text: str) -> Any:
    """Parse YAML text with :class:`_Loader`."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

DEFAULTS: dict[str, Any] = {
    "model": {"name": "fc_siam_diff"},
    "data": {
        "train": None,  # folder (A|B|label, time1|time2|label, im1|im2|label1|label2) or path-list file
        "val": None,
        "test": None,
        "root": None,  # root that relative paths in list files resolve against
        "layout": "auto",
        "task": "binary",  # binary | semantic
        "ignore_index": 255,  # ignore value of semantic class maps (the change mask always uses 255)
        "classes": None,  # semantic: path to a classes.yaml (names, colours, ignore)
        "batch_size": 8,
        "val_batch_size": None,  # None: same as batch_size
        "num_workers": 2,
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "augment": "none",  # preset name (none, flips, standard, ...) or a list of ops
        "check_values": True,  # decode every label once to check its values
        "label_palette": None,  # change masks drawn in colour: {"R,G,B": 0 | 1 | 255} (no change, change, ignore)
        "drop_last": False,
        "sampler": "uniform",  # uniform | change_balanced (a share of training crops centred on changed pixels)
        "change_share": 0.5,  # change_balanced: fraction of samples centred on change
        # ChangeCLIP's per-date CLIP tags (`changekit clip-tag` JSON files); enabled: auto | true | false
        "tags": {"enabled": "auto", "suffix": "clipcls_56_vit16", "top_k": 9, "allow_missing": False},
        # radiometry (docs/data.md "Bands and normalisation"): bands read (1-based, as GDAL; null: all), how raw
        # pixels become the network's input (auto | dtype | meanstd | scale:<N> | percentile:<lo>,<hi>), a
        # `changekit data stats` file, date B's radiometry onto date A's (none | match_meanstd | match_histogram |
        # standardize), and the resolved normalisation that training writes and every reader applies
        "bands": None,
        "normalize": "auto",
        "stats": None,
        "radiometric": "none",
        "resolved_normalize": None,
        # date B warped onto date A's grid as it is read (another CRS, resolution or extent; docs/scenes.md), and
        # its resampling (nearest | bilinear | cubic | cubic_spline | lanczos | average | mode)
        "align": False,
        "resampling": "bilinear",
    },
    "loss": [{"name": "ce"}],
    "optim": {
        "name": "adamw",  # adamw | adam | sgd
        "lr": 1e-3,
        "weight_decay": 1e-4,
        "betas": [0.9, 0.999],
        "momentum": 0.9,  # sgd only
        "no_decay_keys": [],  # parameter-name substrings with weight decay 0 (e.g. norm, pos_embed)
        "no_decay_bias_norm": False,  # also no decay on biases and 1-d (norm) parameters
        "lr_mult": {},  # parameter-name substring -> learning-rate factor (longest match wins), e.g. {decode_head: 10}
    },
    "schedule": {
        "name": "poly",  # none | poly | step | cosine | linear
        "interval": "step",  # step (per iteration) | epoch
        "power": 0.9,  # poly
        "step_size": 10,  # step: in units of `interval`
        "gamma": 0.1,  # step
        "min_lr": 0.0,  # poly / cosine floor
        "warmup": 0,  # warm-up length, in `warmup_unit`
        "warmup_unit": "step",  # step | epoch
        "warmup_factor": 1e-3,  # lr factor at the first warm-up iteration (linear to 1)
        # the recipe's own length; a shorter run (max_epochs/max_steps/max_time_minutes) gets warm-up and decay
        # as fractions of the run actually made. null: trainer.max_epochs / max_steps
        "plan_epochs": None,
        "plan_steps": None,
        "budget_shaped": True,  # false: keep the absolute schedule even when the run is cut shorter
    },
    "trainer": {
        "max_epochs": 10,
        "max_steps": -1,  # > 0: iteration-based schedule (overrides max_epochs)
        "max_time_minutes": None,  # stop (cleanly, with checkpoints) after this much wall time
        "val_every_epochs": 1,
        "val_every_steps": None,  # iteration-based validation interval
        "monitor": "val/f1",
        "mode": "max",
        "threshold": 0.5,  # change probability threshold for metrics and masks; auto: F1-optimal on data.val after training
        "eval_mode": "whole",  # whole | slide: validate/test whole images, or with a sliding window
        "eval_tile": 256,  # slide: window size
        "eval_stride": 128,  # slide: window stride
        "eval_blend": "mean",  # slide: mean (mmseg's averaging) | gaussian
        "precision": "32-true",  # 32-true | bf16-mixed | 16-mixed
        "accelerator": "auto",
        "devices": "auto",
        "strategy": "auto",  # auto | ddp | ddp_find_unused_parameters_true | ...
        "num_nodes": 1,
        "seed": 42,
        "deterministic": False,
        "log_every_n_steps": 10,
        "gradient_clip_val": None,
        "accumulate_grad_batches": 1,
        "channels_last": False,
        "checkpoint_every_steps": None,  # also write last.ckpt every N steps (resume after a kill mid-epoch)
        "progress_bar": True,
        "limit_train_batches": None,
        "limit_val_batches": None,
        "ema": {"enabled": False, "beta": 0.9999, "update_after_step": 0, "update_every": 1, "warmup_power": None},
        "average_last": 0,  # > 1: export the mean of the weights at the end of the last K epochs
    },
    "init_from": None,  # checkpoint whose model weights initialise this run (fine-tuning)
}

_FREE_SECTIONS = {"model"}  # keys checked elsewhere (model constructor)


ConfigSource = str | Path | Sequence[str | Path] | Mapping[str, Any] | None


def load_config(path: ConfigSource = None, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read YAML config(s) (or a mapping, or nothing: the defaults), apply ``key=value`` overrides and validate.

    Args:
        path: one YAML file, several (composed left to right: a later file's keys win), a config mapping, or
            ``None`` for the defaults.
        overrides: ``key=value`` strings applied last.

    Raises:
        DatasetNotFoundError: a file (or a ``_base_`` it names) does not exist.
        ConfigError: malformed YAML or overrides, unknown keys, or a value of the wrong type or range; the
            message names the file or ``--set`` the bad value came from.
    """
    origins: dict[str, str] = {}
    if path is None:
        user: dict[str, Any] = {}
    elif isinstance(path, Mapping):
        user = copy.deepcopy(dict(path))
    else:
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        if not paths:
            raise ConfigError("no config file given")
        user = {}
        for p in paths:
            data = _read_yaml_with_base(Path(p), origins)
            _deep_update(user, data)
    for item in overrides or []:
        key, value = parse_override(item)
        set_by_path(user, key, value)
        for known in [k for k in origins if k.startswith(f"{key}.")]:
            del origins[known]  # the override replaced that whole section
        origins[key] = "--set"
    try:
        return resolve(user)
    except ConfigError as exc:
        origin = _origin(getattr(exc, "key", None), origins)
        if origin is None:
            raise
        where = "from --set" if origin == "--set" else f"in {origin}"
        raise type(exc)(f"{exc} ({where})") from None


def resolve(user: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a user config onto :data:`DEFAULTS` and check every key (names, types, ranges, choices)."""
    if not isinstance(user, Mapping):
        raise ConfigError(f"a config must be a mapping of sections (model, data, ...), got {type(user).__name__}")
    cfg = copy.deepcopy(DEFAULTS)
    _merge(cfg, user, DEFAULTS, prefix="")
    check_config(cfg, DEFAULTS)
    return cfg


def _origin(key: str | None, origins: dict[str, str]) -> str | None:
    """The file (or ``--set``) that set ``key`` or the nearest section above it."""
    while key:
        if key in origins:
            return origins[key]
        key = key.rsplit("[", 1)[0] if key.endswith("]") else key.rsplit(".", 1)[0] if "." in key else ""
    return None


def _record_origins(data: Mapping[str, Any], where: str, origins: dict[str, str], prefix: str = "") -> None:
    for key, value in data.items():
        origins[f"{prefix}{key}"] = where
        if isinstance(value, Mapping):
            _record_origins(value, where, origins, f"{prefix}{key}.")


def _read_yaml_with_base(path: Path, origins: dict[str, str], chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The mapping of ``path`` on top of its ``_base_`` file(s); records which file set each key in ``origins``."""
    chain = (*chain, path.resolve())
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: config file not found")
    try:
        data = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of sections (model, data, ...), got "
                          f"{type(data).__name__}")
    base = data.pop("_base_", None)
    bases = base if isinstance(base, list) else [] if base is None else [base]
    if not all(isinstance(b, str) and b.strip() for b in bases):
        raise ConfigError(f"{path}: _base_ must be a file name or a list of file names, got {base!r}")
    merged: dict[str, Any] = {}
    for name in bases:
        base_path = (path.parent / name).resolve()
        if base_path in chain:
            raise ConfigError(f"{path}: _base_ cycle: {' -> '.join(p.name for p in (*chain, base_path))}")
        if not base_path.is_file():
            raise DatasetNotFoundError(f"{path}: _base_ file '{name}' not found ({base_path})")
        _deep_update(merged, _read_yaml_with_base(base_path, origins, chain))
    _record_origins(data, str(path), origins)
    _deep_update(merged, data)
    return merged


def _deep_update(dst: dict[str, Any], src: dict[str, Any]) -> None:
    for key, value in src.items():
        if isinstance(value, dict) and isinstance(dst.get(key), dict) and key != "model":
            _deep_update(dst[key], value)
        elif key == "model" and isinstance(value, dict) and isinstance(dst.get(key), dict):
            # a different model name starts its kwargs afresh; the same name merges
            if value.get("name", dst[key].get("name")) != dst[key].get("name"):
                dst[key] = copy.deepcopy(value)
            else:
                dst[key].update(value)
        else:
            dst[key] = copy.deepcopy(value)


def _merge(dst: dict[str, Any], src: dict[str, Any], schema: dict[str, Any], prefix: str) -> None:
    for key, value in src.items():
        full = f"{prefix}{key}"
        if key not in schema:
            exc = ConfigError(f"unknown config key '{full}'{suggest(str(key), schema)}")
            exc.key = full  # type: ignore[attr-defined]
            raise exc
        if key in _FREE_SECTIONS and not prefix:  # its keys are the model's own; the schema checks the name
            dst[key] = copy.deepcopy(dict(value) if isinstance(value, Mapping) else value)
        elif isinstance(schema[key], dict) and schema[key]:
            if not isinstance(value, Mapping):
                raise config_error(full, f"{show(value)} is not a mapping (of {', '.join(schema[key])})")
            _merge(dst[key], value, schema[key], prefix=f"{full}.")
        else:
            dst[key] = copy.deepcopy(value)


def parse_override(item: str) -> tuple[str, Any]:
    """``"a.b=3"`` -> ``("a.b", 3)``; the value is parsed as YAML (numbers, lists, null...)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like key=value (e.g. trainer.max_epochs=2)")
    key, raw = item.split("=", 1)
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def set_by_path(cfg: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``cfg[a][b] = value`` for ``dotted = "a.b"``, creating mappings as needed."""
    parts = dotted.split(".")
    node = cfg
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def dump_config(cfg: dict[str, Any]) -> str:
    """The resolved config as YAML (key order kept)."""
    return yaml.safe_dump(cfg, sort_keys=False)
