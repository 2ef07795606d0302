"""Turning predictions, labels and class maps into RGB pictures for the report.

Everything here is vectorised numpy (lookup tables and boolean masks), so a full scene can be rendered as fast
as a thumbnail. The colour conventions are fixed module constants so that tests, the HTML legend and the
pictures can never disagree.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

TP_COLOR = (255, 255, 255)
FP_COLOR = (255, 0, 0)
FN_COLOR = (0, 255, 0)
TN_COLOR = (0, 0, 0)
IGNORE_COLOR = (128, 128, 128)

#: (name, colour, explanation) rows of the error-overlay legend, in display order.
ERROR_LEGEND: tuple[tuple[str, tuple[int, int, int], str], ...] = (
    ("TP", TP_COLOR, "change found"),
    ("FP", FP_COLOR, "false alarm"),
    ("FN", FN_COLOR, "missed change"),
    ("TN", TN_COLOR, "no change"),
    ("ignored", IGNORE_COLOR, "not scored"),
)

# Distinct, print-friendly colours for class maps when the dataset brings no palette of its own.
_DEFAULT_PALETTE = np.array(
    [
        (255, 255, 255), (0, 0, 255), (128, 128, 128), (0, 128, 0), (0, 255, 0), (128, 0, 0), (255, 0, 0),
        (255, 165, 0), (128, 0, 128), (0, 255, 255), (255, 255, 0), (255, 0, 255), (0, 128, 128), (128, 128, 0),
        (0, 0, 128), (255, 192, 203),
    ],
    dtype=np.uint8,
)


def _as_2d(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected an (H, W) array, got shape {arr.shape}")
    return arr


def overlay_errors(pred: np.ndarray, label: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """Colour each pixel by its outcome so that false alarms and misses stand out at a glance.

    Args:
        pred: ``(H, W)`` prediction; any non-zero value counts as change.
        label: ``(H, W)`` ground truth with 0 (no change), 1 (change) and ``ignore_index``.
        ignore_index: label value that is not scored.

    Returns:
        ``(H, W, 3)`` uint8: TP white, FP red, FN green, TN black, ignored grey.

    Raises:
        ValueError: shapes differ or the label holds other values.
    """
    pred = _as_2d(pred, "pred") != 0
    label = _as_2d(label, "label")
    if pred.shape != label.shape:
        raise ValueError(f"pred shape {pred.shape} differs from label shape {label.shape}")
    ignore = label == ignore_index
    bad = ~ignore & (label != 0) & (label != 1)
    if bad.any():
        values = np.unique(label[bad])[:5].tolist()
        raise ValueError(f"label: values {values} are neither 0, 1 nor ignore_index {ignore_index}")
    gt = label == 1
    # Outcome code 0..4 indexes a lookup table: TN, FP, FN, TP, ignore.
    code = pred.astype(np.uint8) + 2 * gt.astype(np.uint8)
    code[ignore] = 4
    lut = np.array([TN_COLOR, FP_COLOR, FN_COLOR, TP_COLOR, IGNORE_COLOR], dtype=np.uint8)
    return lut[code]


def default_palette(num_classes: int) -> np.ndarray:
    """A ``(K, 3)`` uint8 palette: fixed distinct colours first, then deterministic random ones."""
    if num_classes <= len(_DEFAULT_PALETTE):
        return _DEFAULT_PALETTE[:num_classes].copy()
    rng = np.random.default_rng(0)
    extra = rng.integers(0, 256, size=(num_classes - len(_DEFAULT_PALETTE), 3), dtype=np.uint8)
    return np.concatenate([_DEFAULT_PALETTE, extra])


def as_palette(palette: np.ndarray | Sequence[Sequence[int]] | None, num_classes: int) -> np.ndarray:
    """Validate a palette (or make a default one) as ``(K, 3)`` uint8 with at least ``num_classes`` rows."""
    if palette is None:
        return default_palette(num_classes)
    pal = np.asarray(palette)
    if pal.ndim != 2 or pal.shape[1] != 3:
        raise ValueError(f"palette: expected (K, 3) RGB rows, got shape {pal.shape}")
    if pal.size and (pal.min() < 0 or pal.max() > 255):
        raise ValueError("palette: RGB values must lie in 0..255")
    if len(pal) < num_classes:
        raise ValueError(f"palette: {len(pal)} colours for {num_classes} classes")
    return pal.astype(np.uint8)


def colorize(classes: np.ndarray, palette: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """Map an ``(H, W)`` class-index map to ``(H, W, 3)`` uint8 colours; ``ignore_index`` pixels become grey.

    Raises:
        ValueError: the palette is malformed or a class index has no colour.
    """
    classes = _as_2d(classes, "classes")
    pal = as_palette(palette, 0)
    ignore = classes == ignore_index if ignore_index is not None else np.zeros(classes.shape, bool)
    valid = classes[~ignore]
    if valid.size and (valid.min() < 0 or valid.max() >= len(pal)):
        bad = valid[(valid < 0) | (valid >= len(pal))]
        raise ValueError(f"classes: index {int(bad[0])} has no colour in a palette of {len(pal)}")
    idx = np.where(ignore, 0, classes).astype(np.intp)
    out = pal[idx] if len(pal) else np.zeros(classes.shape + (3,), np.uint8)
    out[ignore] = IGNORE_COLOR
    return out


def to_rgb8(image: np.ndarray) -> np.ndarray:
    """Make any image displayable as ``(H, W, 3)`` uint8.

    uint8 data is kept as is; anything else (16-bit, reflectance floats) gets a 2-98 % per-band stretch,
    the usual quick look for remote-sensing rasters. One band is repeated to grey; more than three bands keep
    the first three. Channels-first ``(C, H, W)`` input (C <= 4) is accepted too.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim == 3 and img.shape[0] <= 4 < min(img.shape[1:]):  # (C, H, W) as datasets yield it
        img = np.moveaxis(img, 0, -1)
    if img.ndim != 3:
        raise ValueError(f"image: expected (H, W) or (H, W, C), got shape {img.shape}")
    img = img[:, :, :3]
    if img.dtype != np.uint8:
        data = img.astype(np.float64)
        finite = np.isfinite(data)
        lo = np.array([np.percentile(b[f], 2) if f.any() else 0.0 for b, f in zip(data.T, finite.T)])
        hi = np.array([np.percentile(b[f], 98) if f.any() else 1.0 for b, f in zip(data.T, finite.T)])
        scale = np.where(hi > lo, hi - lo, 1.0)
        data = np.clip((np.nan_to_num(data) - lo) / scale, 0.0, 1.0)
        img = (data * 255.0 + 0.5).astype(np.uint8)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 2:
        img = np.concatenate([img, img[:, :, :1]], axis=2)
    return img


def overlay_on_image(
    image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (255, 0, 0), alpha: float = 0.5
) -> np.ndarray:
    """Blend ``color`` into ``image`` where ``mask`` is non-zero, to show changes in their context.

    Returns:
        ``(H, W, 3)`` uint8; pixels outside the mask are unchanged.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    rgb = to_rgb8(image)
    mask = _as_2d(mask, "mask") != 0
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} differs from image shape {rgb.shape[:2]}")
    out = rgb.copy()
    blended = (1.0 - alpha) * rgb[mask].astype(np.float32) + alpha * np.asarray(color, np.float32)
    out[mask] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return out


def binary_to_rgb(mask: np.ndarray, ignore_index: int | None = 255) -> np.ndarray:
    """Show a 0/1 change map as black/white (``ignore_index`` pixels grey)."""
    m = _as_2d(mask, "mask")
    code = (m != 0).astype(np.uint8)
    if ignore_index is not None:
        code[m == ignore_index] = 2
    return np.array([TN_COLOR, TP_COLOR, IGNORE_COLOR], np.uint8)[code]


def probability_to_rgb(prob: np.ndarray) -> np.ndarray:
    """Colour a change probability in [0, 1] with a perceptually uniform map (viridis; grey without matplotlib)."""
    p = np.clip(np.nan_to_num(_as_2d(prob, "prob").astype(np.float32)), 0.0, 1.0)
    idx = np.rint(p * 255).astype(np.intp)
    try:
        from matplotlib import colormaps

        lut = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(np.uint8)
    except ImportError:  # matplotlib is optional for the report
        lut = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    return lut[idx]


def thumbnail(rgb: np.ndarray, max_side: int = 256, nearest: bool = False) -> np.ndarray:
    """Downsize so that the longer side is at most ``max_side``; ``nearest`` keeps label colours exact."""
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(rgb).resize(size, resample=resample))


def png_data_uri(rgb: np.ndarray) -> str:
    """Encode an ``(H, W, 3)`` or ``(H, W)`` uint8 array as a ``data:image/png;base64`` URI."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buf, format="PNG", optimize=True)
    return png_bytes_uri(buf.getvalue())


def png_bytes_uri(data: bytes) -> str:
    """Wrap already-encoded PNG bytes as a data URI."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
