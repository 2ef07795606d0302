"""The type, range and choices of every config key, checked whenever a config is resolved.

:data:`SCHEMA` mirrors :data:`changekit.config.DEFAULTS`: each leaf is a small validator that either returns the
value (integral floats such as ``1e4`` become ints) or raises :class:`~changekit.errors.ConfigError` with one line
naming the key, the value found and what is expected::

    trainer.max_steps: 'abc' is not an integer
    data.batch_size: -4 must be >= 1
    schedule.name: 'cosin' is not one of none, poly, step, cosine, linear (did you mean 'cosine'?)

The error carries the dotted key as ``exc.key`` so that :func:`changekit.config.load_config` can add the file or
``--set`` the value came from. Only types, ranges and choices live here (cheap, no torch import): lists whose
items belong to other modules (loss terms, augmentation ops, model arguments) are checked by their owners, which
:func:`changekit.engine.validate.validate_run` calls before a run starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config_types import Bool, Choice, Int, ListOf, MappingOf, Number, Text, config_error, inferred, is_int, show
from .errors import ConfigError, suggest


def _model(key: str, value: Any) -> Any:
    """``model``: a mapping with a registry ``name``; its other keys are the model's own (checked by the registry)."""
    if not isinstance(value, Mapping):
        raise config_error(key, f"{show(value)} is not a mapping with at least 'name' (see `changekit models`)")
    if not value.get("name"):
        raise config_error(f"{key}.name", "is required (a registered model, see `changekit models`)")
    Text()(f"{key}.name", value["name"])
    return value


def _loss_terms(key: str, value: Any) -> Any:
    """``loss``: a list of mappings with a ``name`` (their parameters are checked by ``losses.build_loss``)."""
    if not isinstance(value, list) or not value:
        raise config_error(key, f"{show(value)} is not a non-empty list of loss terms ({{name: ce, ...}})")
    for i, term in enumerate(value):
        if not isinstance(term, Mapping) or not term.get("name"):
            raise config_error(f"{key}[{i}]", f"{show(term)} is not a mapping with a 'name' (ce, bce, dice, focal)")
    return value


def _augment(key: str, value: Any) -> Any:
    """``data.augment``: a preset name or a list of ops (names or mappings; checked by the transform table)."""
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and all(isinstance(v, str) or (isinstance(v, Mapping) and v.get("name"))
                                       for v in value):
        return value
    raise config_error(key, f"{show(value)} is not a preset name or a list of ops ({{name: hflip, p: 0.5}})")


def _layout(key: str, value: Any) -> Any:
    """``data.layout``: ``auto`` or a layout name / alias of :mod:`changekit.data.discover`."""
    Text()(key, value)
    if value == "auto":
        return value
    from .data.discover import LAYOUT_ALIASES, LAYOUTS

    names = ["auto"] + [lay.name for lay in LAYOUTS] + list(LAYOUT_ALIASES)
    if value.lower() not in [n.lower() for n in names]:
        raise config_error(key, f"{show(value)} is not one of {', '.join(names)}{suggest(value, names)}")
    return value


def _label_palette(key: str, value: Any) -> Any:
    """``data.label_palette``: null or ``{"R,G,B": 0 | 1 | 255}``, checked by its owner (``data.labels``)."""
    if value is not None:
        from .data.labels import LabelPalette

        try:
            LabelPalette.parse(value, key)
        except ConfigError as exc:
            exc.key = key  # type: ignore[attr-defined]
            raise
    return value


def _radiometry(parse: str) -> Any:
    """``data.bands`` / ``data.normalize`` / ``data.radiometric``: parsed by their owner (``data.norm_config``)."""

    def check(key: str, value: Any) -> Any:
        from .data import norm_config

        if parse == "bands":
            bands = norm_config.parse_bands(value, key)
            return None if bands is None else list(bands)
        if parse == "normalize":
            return norm_config.parse_normalize(value, key).text()
        return norm_config.check_radiometric(value, key)

    return check


def check_resampling(key: str, value: Any) -> Any:
    """``data.resampling``: a resampling method of the raster layer (``changekit.raster.reader.RESAMPLINGS``)."""
    from .raster.reader import RESAMPLINGS

    if value not in RESAMPLINGS:
        raise config_error(key, f"{show(value)} is not one of {', '.join(RESAMPLINGS)}"
                                f"{suggest(str(value), RESAMPLINGS)}")
    return value


def _resolved_normalize(key: str, value: Any) -> Any:
    """``data.resolved_normalize``: null, or the mapping training writes (checked by ``data.normalize``)."""
    if value is not None:
        from .data.normalize import Normalisation

        Normalisation.from_dict(value, key)  # its errors carry the key
    return value


def _devices(key: str, value: Any) -> Any:
    """``trainer.devices``: ``auto``, a count (``-1`` = all), a list of indices or a string like ``"0,1"``."""
    if value == "auto" or (is_int(value) and (value >= 1 or value == -1)):
        return value
    if isinstance(value, list) and value and all(is_int(v) and v >= 0 for v in value):
        return value
    if isinstance(value, str) and all(p.strip().isdigit() for p in value.split(",") if p.strip()) and value.strip():
        return value
    raise config_error(key, f"{show(value)} is not auto, a device count (>= 1, or -1 for all), a list of device "
                            "indices or a string like '0,1'")


def _limit_batches(key: str, value: Any) -> Any:
    """``limit_*_batches``: null, a batch count (int >= 0) or a fraction (float in 0..1)."""
    if value is None or (is_int(value) and value >= 0):
        return value
    if isinstance(value, float) and 0.0 <= value <= 1.0:
        return value
    raise config_error(key, f"{show(value)} is not null, a batch count (integer >= 0) or a fraction (0.0..1.0)")


def _threshold(key: str, value: Any) -> Any:
    """``trainer.threshold``: a probability in [0, 1], or ``auto`` (F1-optimal on the validation split)."""
    if value == "auto":
        return value
    try:
        return FRACTION(key, value)
    except ConfigError as exc:
        raise config_error(key, f"{str(exc).split(': ', 1)[1]}, or auto") from None


PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "64-true", "bf16-true", "16-true", "64", "32", "16", "bf16",
              64, 32, 16)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu", "hpu")
POSITIVE = Number(low=0, low_open=True)
NON_NEGATIVE = Number(low=0)
FRACTION = Number(low=0, high=1)
PATH = Text(optional=True, path=True)
MEAN_STD_ITEM = Number()

SCHEMA: dict[str, Any] = {
    "model": _model,
    "data": {
        "train": PATH, "val": PATH, "test": PATH, "root": PATH,
        "layout": _layout,
        "task": Choice(("binary", "semantic")),
        "ignore_index": Int(0, 255),
        "classes": PATH,
        "batch_size": Int(1),
        "val_batch_size": Int(1, optional=True),
        "num_workers": Int(0),
        "mean": ListOf(MEAN_STD_ITEM, "a list of numbers (one per band)", min_len=1),
        "std": ListOf(POSITIVE, "a list of numbers > 0 (one per band)", min_len=1),
        "augment": _augment,
        "check_values": Bool(),
        "drop_last": Bool(),
        "sampler": Choice(("uniform", "change_balanced")),
        "change_share": FRACTION,
        "label_palette": _label_palette,
        "tags": {
            "enabled": Choice(("auto", True, False)),
            "suffix": Text(),
            "top_k": Int(1),
            "allow_missing": Bool(),
        },
        "bands": _radiometry("bands"),
        "normalize": _radiometry("normalize"),
        "stats": PATH,
        "radiometric": _radiometry("radiometric"),
        "resolved_normalize": _resolved_normalize,
        "align": Bool(),
        "resampling": check_resampling,
    },
    "loss": _loss_terms,
    "optim": {
        "name": Choice(("adamw", "adam", "sgd"), fold_case=True),
        "lr": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "betas": ListOf(Number(low=0, high=1, high_open=True), "a list of two numbers in [0, 1)", 2, 2),
        "momentum": NON_NEGATIVE,
        "no_decay_keys": ListOf(Text(), "a list of parameter-name substrings"),
        "no_decay_bias_norm": Bool(),
        "lr_mult": MappingOf(POSITIVE, "a mapping of parameter-name substrings to lr multipliers > 0", optional=True),
    },
    "schedule": {
        "name": Choice(("none", "poly", "step", "cosine", "linear"), fold_case=True),
        "interval": Choice(("step", "epoch")),
        "power": POSITIVE,
        "step_size": Int(1),
        "gamma": POSITIVE,
        "min_lr": NON_NEGATIVE,
        "warmup": Int(0),
        "warmup_unit": Choice(("step", "epoch")),
        "warmup_factor": FRACTION,
        "plan_epochs": Int(1, optional=True),
        "plan_steps": Int(1, optional=True),
        "budget_shaped": Bool(),
    },
    "trainer": {
        "max_epochs": Int(1, special=(-1,)),
        "max_steps": Int(1, special=(-1,)),
        "max_time_minutes": Number(low=0, low_open=True, optional=True),
        "val_every_epochs": Int(1),
        "val_every_steps": Int(1, optional=True),
        "monitor": Text(optional=True),
        "mode": Choice(("max", "min")),
        "threshold": _threshold,
        "eval_mode": Choice(("whole", "slide")),
        "eval_tile": Int(1),
        "eval_stride": Int(1),
        "eval_blend": Choice(("mean", "gaussian")),
        "precision": Choice(PRECISIONS),
        "accelerator": Choice(ACCELERATORS, fold_case=True),
        "devices": _devices,
        "strategy": Text(),
        "num_nodes": Int(1),
        "seed": Int(0, 2**32 - 1),
        "deterministic": Bool(special=("warn",)),
        "log_every_n_steps": Int(1),
        "gradient_clip_val": Number(low=0, low_open=True, optional=True),
        "accumulate_grad_batches": Int(1),
        "channels_last": Bool(),
        "checkpoint_every_steps": Int(1, optional=True),
        "progress_bar": Bool(),
        "limit_train_batches": _limit_batches,
        "limit_val_batches": _limit_batches,
        "ema": {
            "enabled": Bool(),
            "beta": Number(low=0, high=1, low_open=True, high_open=True),
            "update_after_step": Int(0),
            "update_every": Int(1),
            "warmup_power": Number(low=0, low_open=True, optional=True),
        },
        "average_last": Int(0),
    },
    "init_from": PATH,
}


def check_config(cfg: dict[str, Any], defaults: Mapping[str, Any], schema: Mapping[str, Any] = SCHEMA,
                 prefix: str = "") -> None:
    """Check (and normalise in place) every key of a merged config against :data:`SCHEMA`.

    Raises:
        ConfigError: the first bad value (``exc.key`` holds its dotted key).
    """
    for key, default in defaults.items():
        full = f"{prefix}{key}"
        rule = schema.get(key)
        if isinstance(default, dict) and default and key != "model":
            check_config(cfg[key], default, rule if isinstance(rule, Mapping) else {}, prefix=f"{full}.")
            continue
        if rule is None:
            rule = inferred(default)
            if rule is None or cfg[key] is None:
                continue
        cfg[key] = rule(full, cfg[key])
    _check_together(cfg, prefix)


def _check_together(cfg: dict[str, Any], prefix: str) -> None:
    """Rules that tie two keys of one section together."""
    if prefix == "data.":
        if len(cfg["mean"]) != len(cfg["std"]):
            raise config_error("data.std", f"has {len(cfg['std'])} value(s) but data.mean has {len(cfg['mean'])}; "
                                           "give one mean and one std per band")
    elif prefix == "trainer.":
        if cfg["eval_stride"] > cfg["eval_tile"]:
            raise config_error("trainer.eval_stride", f"{cfg['eval_stride']} must be <= trainer.eval_tile "
                                                      f"({cfg['eval_tile']}), or pixels between windows are never seen")
