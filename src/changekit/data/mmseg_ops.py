"""Two mmsegmentation training ops, ported exactly for recipes that come from mmseg/open-cd (ChangeCLIP).

* :class:`CatMaxRatioCrop`: mmseg's ``RandomCrop(crop_size, cat_max_ratio)``. A random crop is redrawn, up to 10
  times, while one class covers ``cat_max_ratio`` or more of its labelled pixels (pixels equal to
  ``ignore_index`` do not count) or only one class is present; after 10 redraws the last crop is kept. In change
  detection the classes are "no change" and "change", so the op favours crops that contain change.
* :class:`PhotoMetricDistortion`: mmseg's ``PhotoMetricDistortion`` on an 8-bit RGB image. Brightness (add
  ``U(-delta, delta)``), then contrast (multiply by ``U(lo, hi)``) either here or last (a coin flip), saturation
  (scale HSV S by ``U(lo, hi)``) and hue (add an integer from ``[-delta, delta)`` to OpenCV's 0-179 hue, mod 180).
  Each step runs with probability 1/2. Every step rounds to uint8 as mmseg's ``convert`` does (clip to 0-255,
  then truncate).

Both are albumentations transforms, so the joint pipeline of :mod:`changekit.data.transforms` seeds and
applies them like its other ops. The randomness comes from albumentations' generator, not numpy's global one,
so the sequences differ from mmseg's but the distributions are the same.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

from ..errors import ConfigError

_REDRAWS = 10  # mmseg's RandomCrop tries 10 times


class CatMaxRatioCrop(A.RandomCrop):
    """``A.RandomCrop`` that redraws crops dominated by one class of ``data["mask"]`` (mmseg's ``cat_max_ratio``).

    Args:
        cat_max_ratio: a crop is accepted when its most frequent class covers less than this share of the
            labelled pixels and at least two classes are present; 1 turns the check off.
        ignore_index: label value left out of the counts.
        Other arguments as ``A.RandomCrop``. When the image needs padding the check is skipped.
    """

    def __init__(self, *args: Any, cat_max_ratio: float = 0.75, ignore_index: int = 255, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not 0 < cat_max_ratio <= 1:
            raise ConfigError(f"cat_max_ratio: must be in (0, 1], got {cat_max_ratio}")
        self.cat_max_ratio = float(cat_max_ratio)
        self.ignore_index = int(ignore_index)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """mmseg's redraw loop around albumentations' crop draw."""
        out = super().get_params_dependent_on_data(params, data)
        mask = data.get("mask")
        if mask is None or self.cat_max_ratio >= 1 or out["pad_params"] is not None:
            return out
        for _ in range(_REDRAWS):
            if self._balanced(mask, out["crop_coords"]):
                break
            out = super().get_params_dependent_on_data(params, data)
        return out

    def _balanced(self, mask: np.ndarray, coords: tuple[int, int, int, int]) -> bool:
        x1, y1, x2, y2 = coords
        labels, counts = np.unique(mask[y1:y2, x1:x2], return_counts=True)
        counts = counts[labels != self.ignore_index]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio


class PhotoMetricDistortion(A.ImageOnlyTransform):
    """mmseg's ``PhotoMetricDistortion`` for 8-bit RGB images (see the module docstring).

    Args:
        brightness_delta: brightness offset range ``±delta`` (grey levels).
        contrast_range: ``(lo, hi)`` contrast factors.
        saturation_range: ``(lo, hi)`` saturation factors.
        hue_delta: hue offset range, in OpenCV's 0-179 hue units.
    """

    def __init__(self, brightness_delta: float = 32, contrast_range: tuple[float, float] = (0.5, 1.5),
                 saturation_range: tuple[float, float] = (0.5, 1.5), hue_delta: int = 18, p: float = 1.0) -> None:
        super().__init__(p=p)
        for name, (lo, hi) in (("contrast", contrast_range), ("saturation", saturation_range)):
            if not 0 <= lo <= hi:
                raise ConfigError(f"{name}: need 0 <= lo <= hi, got {[lo, hi]}")
        if brightness_delta < 0 or hue_delta < 0 or int(hue_delta) != hue_delta:
            raise ConfigError(f"brightness must be >= 0 and hue a whole number >= 0, got {brightness_delta}, "
                              f"{hue_delta}")
        self.brightness_delta = float(brightness_delta)
        self.contrast_range = (float(contrast_range[0]), float(contrast_range[1]))
        self.saturation_range = (float(saturation_range[0]), float(saturation_range[1]))
        self.hue_delta = int(hue_delta)

    def get_params(self) -> dict[str, Any]:
        """One draw of mmseg's coin flips and amounts (``None``: the step is skipped)."""
        r = self.py_random

        def maybe(draw: Any) -> Any:
            return draw() if r.random() < 0.5 else None

        d = self.brightness_delta
        return {
            "beta": maybe(lambda: r.uniform(-d, d)),
            "contrast_first": r.random() < 0.5,
            "alpha": maybe(lambda: r.uniform(*self.contrast_range)),
            "saturation": maybe(lambda: r.uniform(*self.saturation_range)),
            "hue": maybe(lambda: r.randint(-self.hue_delta, self.hue_delta - 1)) if self.hue_delta else None,
        }

    def apply(self, img: np.ndarray, beta: float | None = None, contrast_first: bool = True,
              alpha: float | None = None, saturation: float | None = None, hue: int | None = None,
              **params: Any) -> np.ndarray:
        """Brightness, contrast (first or last), saturation, hue."""
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ConfigError(f"transform 'photometric_mmseg' needs 8-bit 3-band images, got {img.dtype} with shape "
                              f"{img.shape}; use 'brightness_contrast' for other data")
        if beta is not None:
            img = _convert(img, beta=beta)
        if contrast_first and alpha is not None:
            img = _convert(img, alpha=alpha)
        if saturation is not None:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=saturation)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if hue is not None:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[:, :, 0] = (hsv[:, :, 0].astype(np.int32) + hue) % 180
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if not contrast_first and alpha is not None:
            img = _convert(img, alpha=alpha)
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:  # noqa: D102
        return ("brightness_delta", "contrast_range", "saturation_range", "hue_delta")


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """mmseg's ``convert``: ``img * alpha + beta`` in float32, clipped to 0-255, truncated to uint8."""
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)
