"""Joint augmentation of both dates and their labels, built from a YAML-style list of ops.

A transform maps a sample dict of numpy arrays to a new dict::

    {"image_a": (H, W, C) uint8, "image_b": (H, W, C) uint8, "mask": (H, W) uint8,
     "sem_a": (H, W) uint8, "sem_b": (H, W) uint8 (optional), ...other keys untouched}

The pixel work is done by albumentations: ``image_b`` is registered as an extra "image" target and the labels
as "mask" targets, so one draw of parameters moves every array the same way, and labels always use nearest
interpolation. Label fill values (``mask_fill`` for the change mask, ``sem_fill`` for semantic maps) are applied
through a helper "valid" mask that goes through the same warp with fill 0, so each label gets its own ignore
value even though albumentations has only one ``fill_mask``.

Ops (their table and builders are in :mod:`.transform_ops`; ``p`` is the probability; image fill ``fill``
defaults to 0, ``mask_fill`` to 255, ``sem_fill`` to the ``ignore_index`` given to ``build_transforms``):

* ``hflip``, ``vflip``; ``rot90`` (``factors``: quarter turns to draw from, default [1, 2, 3]);
* ``rotate`` (``limit`` degrees or [lo, hi], ``interpolation``, ``expand``: rotate inside the frame shrunk to
  fit, i.e. ClearSCD's ``rotate(expand=True)`` + resize back, done in one warp by ``A.SafeRotate``);
* ``rot_flip``: open-cd's ``MultiImgRandomRotFlip`` (ChangerEx): rotate by ``degree`` (number or [lo, hi]) with
  probability ``rotate_p``, else with probability ``flip_p`` a random quarter turn and flip; ``p`` gates the op;
* ``random_crop``, ``center_crop`` (``size``; pad with the fills when the image is smaller), ``resize``;
  ``random_crop`` also takes mmseg's ``cat_max_ratio`` (:class:`~changekit.data.mmseg_ops.CatMaxRatioCrop`), and
  centres its crop on a changed pixel when the sample carries a crop hint (``data.sampler: change_balanced``);
* image-only, labels untouched, drawn separately per date when ``per_date`` (default true): ``photometric``
  (brightness, contrast, saturation, hue as in torchvision's ColorJitter), ``color_jitter`` (same, ClearSCD's
  defaults), ``brightness_contrast`` (any band count), ``gaussian_noise`` (``std`` as a fraction of 255),
  ``blur`` (``sigma``), ``photometric_mmseg`` (mmseg's PhotoMetricDistortion, exactly; 8-bit RGB);
* ``swap_dates``: exchange the dates (every ``*_a``/``*_b`` key pair); the change mask stays.

Seeding: albumentations 2 ignores ``np.random.seed``/``random.seed`` (each Compose owns its generators), and a
Compose copied into DataLoader workers would replay the same augmentations in every worker. A
``JointTransform`` therefore owns one numpy ``Generator`` and one ``random.Random`` shared by all its ops and
(re)creates them on the first call in every process:

* ``seed=None`` (default): the state is drawn from numpy's global RNG. That global RNG is seeded per worker by
  PyTorch (and by Lightning's ``seed_everything(..., workers=True)``) and in the main process by
  ``seed_everything``/``np.random.seed``, so runs are reproducible and workers (and epochs with
  non-persistent workers) differ.
* ``seed=int``: fixed stream in the main process; in a DataLoader worker it is mixed with the worker's torch
  seed (``get_worker_info().seed``), so workers still differ.

``reseed()`` restarts the stream explicitly.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from collections.abc import Mapping
from typing import Any

import albumentations as A
import cv2
import numpy as np

from ..errors import ConfigError, SizeMismatchError, suggest
from .transform_ops import _OPS, CROP_HINT, Sample, _SwapDates

log = logging.getLogger(__name__)

_LABEL_KEYS = ("mask", "sem_a", "sem_b")
_TARGETS = {"image_b": "image", "sem_a": "mask", "sem_b": "mask", "_valid": "mask", CROP_HINT: "mask"}

PRESETS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "flips": [{"name": "hflip", "p": 0.5}, {"name": "vflip", "p": 0.5}, {"name": "rot90", "p": 0.5}],
    # Modelled on the open-cd ChangerEx pipeline (flips/rotations, ExchangeTime, photometric distortion),
    # without its crop, whose size depends on the data set.
    "standard": [
        {"name": "hflip", "p": 0.5}, {"name": "vflip", "p": 0.5}, {"name": "rot90", "p": 0.5},
        {"name": "swap_dates", "p": 0.5},
        {"name": "photometric", "p": 0.5, "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05,
         "per_date": True},
    ],
    # ClearSCD dataset/datatransforms.get_train_transforms (seed-systems 1.3.3), normalisation excluded.
    "clearscd": [
        {"name": "hflip", "p": 0.5}, {"name": "vflip", "p": 0.5}, {"name": "rot90", "p": 0.5},
        {"name": "rotate", "limit": 30, "p": 0.5, "expand": True, "mask_fill": 255, "sem_fill": 9},
        {"name": "resize", "size": 512},
    ],
}


class _Group:
    """Consecutive albumentations ops run as one Compose over all arrays; at most one op fills labels."""

    def __init__(self) -> None:
        self.ops: list[A.BasicTransform] = []
        self.fill: tuple[int, int] | None = None
        self.compose: A.Compose | None = None

    def finish(self) -> None:
        self.compose = A.Compose(self.ops, additional_targets=_TARGETS, mask_interpolation=cv2.INTER_NEAREST)

    def __call__(self, data: Sample, gen: np.random.Generator, py: random.Random) -> None:
        kw = {"image": data["image_a"], "image_b": data["image_b"]}
        kw.update({k: data[k] for k in (*_LABEL_KEYS, CROP_HINT) if k in data})
        if self.fill is not None:
            kw["_valid"] = np.ones(data["image_a"].shape[:2], np.uint8)
        res = self.compose(**kw)  # type: ignore[misc]
        data["image_a"], data["image_b"] = res["image"], res["image_b"]
        if CROP_HINT in data:  # the crop centre moves with the pixels (random_crop reads it)
            data[CROP_HINT] = res[CROP_HINT]
        invalid = res["_valid"] == 0 if self.fill is not None else None
        for key in _LABEL_KEYS:
            if key not in data:
                continue
            arr = res[key]
            if invalid is not None and invalid.any():
                fill = self.fill[0] if key == "mask" else self.fill[1]  # type: ignore[index]
                arr = np.where(invalid, np.asarray(fill, arr.dtype), arr)
            data[key] = arr


class _PerDate:
    """An image-only op drawn independently for each date (labels untouched)."""

    def __init__(self, op: A.BasicTransform, name: str) -> None:
        self.op, self.name = op, name
        self.compose = A.Compose([op])

    def __call__(self, data: Sample, gen: np.random.Generator, py: random.Random) -> None:
        for key in ("image_a", "image_b"):
            data[key] = self.compose(image=data[key])["image"]


class JointTransform:
    """Callable applying the built ops in order with one shared, process-aware random state (see module doc)."""

    def __init__(self, steps: list[Any], spec: list[dict[str, Any]], seed: int | None = None) -> None:
        self.steps, self.spec, self.seed = steps, spec, seed
        self._pid: int | None = None
        self._gen = np.random.default_rng(0)
        self._py = random.Random(0)

    def reseed(self, seed: int | None = None) -> None:
        """Restart the random stream on the next call (``None``: draw it from numpy's global RNG)."""
        self.seed, self._pid = seed, None

    def _ensure_rng(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        worker_seed = _torch_worker_seed()
        if self.seed is None:
            entropy = [int(np.random.randint(0, 2**63 - 1, dtype=np.int64))]
        else:
            entropy = [int(self.seed)] + ([worker_seed] if worker_seed is not None else [])
        seq_np, seq_py = np.random.SeedSequence(entropy).spawn(2)
        self._gen = np.random.default_rng(seq_np)
        self._py = random.Random(int(seq_py.generate_state(1, np.uint64)[0]))
        for step in self.steps:
            if isinstance(step, (_Group, _PerDate)):
                step.compose.set_random_state(self._gen, self._py)  # type: ignore[union-attr]
        self._pid = pid

    def __call__(self, sample: Mapping[str, Any]) -> Sample:
        self._ensure_rng()
        data = dict(sample)
        _check_sample(data)
        for step in self.steps:
            step(data, self._gen, self._py)
        for key in ("image_a", "image_b", *_LABEL_KEYS):
            if key in data:
                data[key] = np.ascontiguousarray(data[key])
        return data

    def __repr__(self) -> str:
        return f"JointTransform({[d['name'] for d in self.spec]}, seed={self.seed})"


def _torch_worker_seed() -> int | None:
    data_mod = sys.modules.get("torch.utils.data")  # not imported -> not inside a DataLoader worker
    info = data_mod.get_worker_info() if data_mod is not None else None
    return None if info is None else int(info.seed)


def _check_sample(data: Sample) -> None:
    for key in ("image_a", "image_b"):
        if key not in data:
            raise KeyError(f"transform input lacks '{key}' (keys: {sorted(data)})")
    hw = data["image_a"].shape[:2]
    for key in ("image_b", *_LABEL_KEYS):
        if key in data and data[key].shape[:2] != hw:
            raise SizeMismatchError(
                f"{data.get('stem', 'sample')}: '{key}' is {data[key].shape[:2]} but image_a is {hw}")


def _resolve(spec: list[Any] | str | None) -> list[dict[str, Any]] | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in PRESETS:
            raise ConfigError(f"transforms: unknown preset '{spec}'{suggest(spec, PRESETS)}; "
                              f"presets: {sorted(PRESETS)}")
        return [dict(d) for d in PRESETS[spec]]
    if not isinstance(spec, (list, tuple)):
        raise ConfigError(f"transforms: expected a list of ops or a preset name, got {type(spec).__name__}")
    out = []
    for i, item in enumerate(spec):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or "name" not in item:
            raise ConfigError(f"transforms[{i}]: each op must be a mapping with a 'name' key, got {item!r}")
        out.append(dict(item))
    return out


def build_transforms(spec: list[Any] | str | None, *, ignore_index: int = 255,
                     seed: int | None = None) -> JointTransform | None:
    """Build a joint transform from a list of ``{name: ..., params}`` dicts or a preset name.

    Args:
        spec: op list (items may also be bare op names), a key of ``PRESETS``, or ``None``.
        ignore_index: semantic fill for ops whose ``sem_fill`` is not given (the data set's ignore index).
        seed: see the module docstring; ``None`` follows numpy's global seeding.

    Returns:
        The transform, or ``None`` when there is nothing to do.

    Raises:
        ConfigError: unknown op, preset or parameter, or an invalid value.
    """
    if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0):
        raise ConfigError(f"transforms: seed must be a non-negative integer or null, got {seed!r}")
    items = _resolve(spec)
    if not items:
        return None
    steps: list[Any] = []
    group: _Group | None = None
    for i, item in enumerate(items):
        name = item.pop("name")
        where = f"transforms[{i}] ({name})"
        if name not in _OPS:
            raise ConfigError(f"transforms[{i}]: unknown op '{name}'{suggest(str(name), _OPS)}; "
                              f"known ops: {', '.join(sorted(_OPS))}")
        defaults, builder, fills, image_only = _OPS[name]
        for key in item:
            if key not in defaults:
                raise ConfigError(f"{where}: unknown parameter '{key}'{suggest(str(key), defaults)}; "
                                  f"allowed: {', '.join(sorted(defaults))}")
        args = {**defaults, **item}
        if args.get("sem_fill", 0) is None:
            args["sem_fill"] = ignore_index
        missing = [k for k, v in args.items() if v is None]
        if missing:
            raise ConfigError(f"{where}: missing required parameter '{missing[0]}'")
        try:
            op = builder(where, args)
        except ConfigError:
            raise
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: invalid parameters ({str(exc).splitlines()[0]} "
                              f"{' '.join(str(exc).splitlines()[1:3])})".strip()) from None
        if isinstance(op, _SwapDates):
            steps.append(op)
            group = None
        elif image_only and args.get("per_date"):
            steps.append(_PerDate(op, name))
            group = None
        else:
            if group is None or (fills and group.fill is not None):
                group = _Group()
                steps.append(group)
            group.ops.append(op)
            if fills:
                group.fill = (int(args["mask_fill"]), int(args["sem_fill"]))
    for step in steps:
        if isinstance(step, _Group):
            step.finish()
    transform = JointTransform(steps, [dict(d) for d in (_resolve(spec) or [])], seed=seed)
    log.debug("built %r", transform)
    return transform
