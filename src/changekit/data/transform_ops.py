"""The op table behind ``data.augment``: each op's name, defaults and builder (see :mod:`.transforms`).

Every builder turns a validated parameter dict into an albumentations transform, or into :class:`_SwapDates`,
which :mod:`.transforms` applies itself. Adding an op means adding one entry to ``_OPS``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np

from ..errors import ConfigError, suggest
from .mmseg_ops import CatMaxRatioCrop, PhotoMetricDistortion

Sample = dict[str, Any]  # a sample dict of numpy arrays (see :mod:`.transforms`)
_INTERP = {"nearest": cv2.INTER_NEAREST, "bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC,
           "area": cv2.INTER_AREA}
_CV_ROT = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}
_CV_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32, np.float64))


class _Rot90(A.RandomRotate90):
    """RandomRotate90 restricted to chosen quarter turns (ClearSCD rotates by 90/180/270, never 0)."""

    factors: tuple[int, ...] = (1, 2, 3)

    def get_params(self) -> dict[str, int]:
        return {"factor": self.py_random.choice(self.factors)}

    def apply(self, img: np.ndarray, factor: int, **params: Any) -> np.ndarray:
        # cv2.rotate returns a contiguous array ~10x faster than copying albumentations' np.rot90 view.
        if factor == 0 or (img.ndim == 3 and img.shape[2] > 4) or img.dtype not in _CV_DTYPES:
            return super().apply(img, factor, **params)
        out = cv2.rotate(img, _CV_ROT[factor])
        return out[..., None] if img.ndim == 3 and out.ndim == 2 else out


CROP_HINT = "_crop_hint"  # sample key of the crop-centre mask (see :func:`crop_hint_mask`)


def crop_hint_mask(shape: tuple[int, int], centre: tuple[int, int], radius: int = 2) -> np.ndarray:
    """A uint8 mask of ``shape`` marking a small disc around ``centre`` (row, col).

    The crop centre travels through the joint transform as a label-like target, so flips, rotations and
    resizes before ``random_crop`` move it with the pixels; a disc rather than one pixel survives nearest
    interpolation under rotation.
    """
    mask = np.zeros(shape, np.uint8)
    r, c = int(centre[0]), int(centre[1])
    mask[max(0, r - radius): r + radius + 1, max(0, c - radius): c + radius + 1] = 1
    return mask


class HintedCrop(CatMaxRatioCrop):
    """``random_crop``: mmseg's ``cat_max_ratio`` crop whose window is centred on the sample's crop hint when
    there is one (:class:`~changekit.data.samplers.ChangeBalancedSampler`), jittered by up to a quarter of the
    crop size so that change is not always in the middle; without a hint (or when it left the frame) the crop
    is drawn as usual."""

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:  # noqa: D102
        hint = data.get(CROP_HINT)
        if hint is None:
            return super().get_params_dependent_on_data(params, data)
        out = A.RandomCrop.get_params_dependent_on_data(self, params, data)
        rows, cols = np.nonzero(hint)
        if out["pad_params"] is not None or not rows.size:
            return out
        height, width = hint.shape[:2]
        jitter_r = self.py_random.uniform(-0.25, 0.25) * self.height
        jitter_c = self.py_random.uniform(-0.25, 0.25) * self.width
        top = int(np.clip(round(rows.mean() - self.height / 2 + jitter_r), 0, height - self.height))
        left = int(np.clip(round(cols.mean() - self.width / 2 + jitter_c), 0, width - self.width))
        out["crop_coords"] = (left, top, left + self.width, top + self.height)
        return out


class _SwapDates:
    """Swap the two dates: every ``X_a``/``X_b`` key pair (images, semantic maps, tags); the change mask stays."""

    def __init__(self, p: float) -> None:
        self.p = p

    def __call__(self, data: Sample, gen: np.random.Generator, py: random.Random) -> None:
        if py.random() >= self.p:
            return
        for key in [k for k in data if k.endswith("_a")]:
            other = key[:-2] + "_b"
            if other in data:
                data[key], data[other] = data[other], data[key]


# ----------------------------------------------------------------------------------------------- builders

def _size(where: str, value: Any) -> tuple[int, int]:
    vals = [value, value] if isinstance(value, (int, np.integer)) else value
    if (not isinstance(vals, Sequence) or len(vals) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in vals)):
        raise ConfigError(f"{where}: 'size' must be a positive integer or [height, width], got {value!r}")
    return int(vals[0]), int(vals[1])


def _interp(where: str, value: Any) -> int:
    if not isinstance(value, str) or value not in _INTERP:
        raise ConfigError(f"{where}: interpolation {value!r} unknown{suggest(str(value), _INTERP)}; "
                          f"use one of {sorted(_INTERP)}")
    return _INTERP[value]


def _sym(value: Any) -> Any:
    """A number means the symmetric range [-v, v]; a pair passes through (as albumentations expects)."""
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _rot90(w: str, a: dict[str, Any]) -> A.BasicTransform:
    factors = tuple(a["factors"])
    if not factors or any(f not in (0, 1, 2, 3) for f in factors):
        raise ConfigError(f"{w}: 'factors' must be quarter turns from [0, 1, 2, 3], got {a['factors']!r}")
    op = _Rot90(p=a["p"])
    op.factors = factors
    return op


def _rotate(w: str, a: dict[str, Any]) -> A.BasicTransform:
    cls = A.SafeRotate if a["expand"] else A.Rotate
    return cls(limit=_sym(a["limit"]), interpolation=_interp(w, a["interpolation"]), border_mode=cv2.BORDER_CONSTANT,
               fill=a["fill"], fill_mask=0, mask_interpolation=cv2.INTER_NEAREST, p=a["p"])


def _rot_flip(w: str, a: dict[str, Any]) -> A.BasicTransform:
    """open-cd's ``MultiImgRandomRotFlip``: a rotation by ``U(degree)`` with probability ``rotate_p``; otherwise,
    with probability ``flip_p``, a random quarter turn then a flip about a random axis (one of the square's 8
    symmetries, uniformly); else nothing."""
    for key in ("rotate_p", "flip_p"):
        if isinstance(a[key], bool) or not isinstance(a[key], (int, float)) or not 0 <= a[key] <= 1:
            raise ConfigError(f"{w}: '{key}' must be a probability in [0, 1], got {a[key]!r}")
    p_rotate, p_flip = float(a["rotate_p"]), (1 - float(a["rotate_p"])) * float(a["flip_p"])
    quarter = _Rot90(p=1.0)
    quarter.factors = (0, 1, 2, 3)
    flip = A.OneOf([A.HorizontalFlip(p=1.0), A.VerticalFlip(p=1.0)], p=1.0)
    branches = [(_rotate(w, {**a, "limit": a["degree"], "expand": False, "p": 1.0}), p_rotate),
                (A.Sequential([quarter, flip], p=1.0), p_flip)]
    branches = [(op, weight) for op, weight in branches if weight > 0]
    for op, weight in branches:
        op.p = weight  # OneOf draws its branch with these weights
    return A.OneOf([op for op, _ in branches], p=a["p"] * (p_rotate + p_flip)) if branches else A.NoOp(p=0.0)


def _crop(cls: type) -> Callable[[str, dict[str, Any]], A.BasicTransform]:
    def build(w: str, a: dict[str, Any]) -> A.BasicTransform:
        h, wd = _size(w, a["size"])
        extra = {"cat_max_ratio": a["cat_max_ratio"], "ignore_index": a["mask_fill"]} if "cat_max_ratio" in a else {}
        return cls(height=h, width=wd, pad_if_needed=True, border_mode=cv2.BORDER_CONSTANT, fill=a["fill"],
                   fill_mask=0, p=a["p"], **extra)
    return build


def _resize(w: str, a: dict[str, Any]) -> A.BasicTransform:
    h, wd = _size(w, a["size"])
    return A.Resize(height=h, width=wd, interpolation=_interp(w, a["interpolation"]),
                    mask_interpolation=cv2.INTER_NEAREST, p=a["p"])


def _jitter(w: str, a: dict[str, Any]) -> A.BasicTransform:
    b, c, s = (max(0.0, 1 - a[k]) for k in ("brightness", "contrast", "saturation"))
    return _ChannelCheckedJitter(brightness=(b, 1 + a["brightness"]), contrast=(c, 1 + a["contrast"]),
                                 saturation=(s, 1 + a["saturation"]), hue=(-a["hue"], a["hue"]), p=a["p"])


class _ChannelCheckedJitter(A.ColorJitter):
    """ColorJitter with a config-level error for multispectral input (it handles 1 or 3 bands only)."""

    def apply(self, img: np.ndarray, *args: Any, **params: Any) -> np.ndarray:
        if img.ndim == 3 and img.shape[2] not in (1, 3):
            raise ConfigError(f"transform 'photometric' needs 1- or 3-band images, got {img.shape[2]} bands; "
                              "use 'brightness_contrast' for multispectral data")
        return super().apply(img, *args, **params)


_FILL = {"mask_fill": 255, "sem_fill": None, "fill": 0}
_PHOTO = {"p": 0.5, "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.05, "per_date": True}

# name -> (defaults (None: from build_transforms), builder, fills labels, image-only)
_OPS: dict[str, tuple[dict[str, Any], Callable[[str, dict[str, Any]], Any], bool, bool]] = {
    "hflip": ({"p": 0.5}, lambda w, a: A.HorizontalFlip(p=a["p"]), False, False),
    "vflip": ({"p": 0.5}, lambda w, a: A.VerticalFlip(p=a["p"]), False, False),
    "rot90": ({"p": 0.5, "factors": [1, 2, 3]}, _rot90, False, False),
    "rotate": ({"p": 0.5, "limit": 30, "expand": False, "interpolation": "bilinear", **_FILL}, _rotate, True, False),
    "rot_flip": ({"p": 1.0, "rotate_p": 0.5, "flip_p": 0.5, "degree": 20, "interpolation": "bilinear", **_FILL},
                 _rot_flip, True, False),
    "random_crop": ({"p": 1.0, "size": None, "cat_max_ratio": 1.0, **_FILL}, _crop(HintedCrop), True, False),
    "center_crop": ({"p": 1.0, "size": None, **_FILL}, _crop(A.CenterCrop), True, False),
    "resize": ({"p": 1.0, "size": None, "interpolation": "bilinear"}, _resize, False, False),
    "photometric": (dict(_PHOTO), _jitter, False, True),
    # ClearSCD's optional ColorJitter(0.2, 0.4, 0.4, 0.1).
    "color_jitter": ({**_PHOTO, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}, _jitter, False, True),
    "brightness_contrast": ({"p": 0.5, "brightness": 0.2, "contrast": 0.2, "per_date": True},
                            lambda w, a: A.RandomBrightnessContrast(brightness_limit=_sym(a["brightness"]),
                                                                    contrast_limit=_sym(a["contrast"]), p=a["p"]),
                            False, True),
    "gaussian_noise": ({"p": 0.5, "std": [0.01, 0.05], "per_date": True},
                       lambda w, a: A.GaussNoise(std_range=tuple(a["std"]), p=a["p"]), False, True),
    "blur": ({"p": 0.5, "sigma": [0.5, 1.5], "per_date": True},
             lambda w, a: A.GaussianBlur(sigma_limit=tuple(a["sigma"]), p=a["p"]), False, True),
    "photometric_mmseg": ({"p": 1.0, "brightness": 32, "contrast": [0.5, 1.5], "saturation": [0.5, 1.5], "hue": 18,
                           "per_date": True}, lambda w, a: PhotoMetricDistortion(
                               a["brightness"], tuple(a["contrast"]), tuple(a["saturation"]), a["hue"], p=a["p"]),
                          False, True),
    "swap_dates": ({"p": 0.5}, lambda w, a: _SwapDates(a["p"]), False, False),
}
