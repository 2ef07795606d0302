"""Rendering of the procedural scenes of :mod:`changekit.data.synthetic_scene`: one image per date.

Both dates share the ground textures of the layout; each date draws its own conditions (:class:`DateLook`:
season, soil moisture and phenology patches, water turbidity, sun azimuth and shadow length), none of which
changes a land-cover class, so appearance changes without semantic change are part of every pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .synthetic_scene import ROAD, SOIL, VEGETATION, WATER, Layout

_VEG_SUMMER = np.array([0.20, 0.33, 0.14], np.float32)
_VEG_DRY = np.array([0.40, 0.42, 0.22], np.float32)
_SHADOW = np.array([0.42, 0.45, 0.56], np.float32)


@dataclass
class DateLook:
    """Per-date ground appearance (sun, season, moisture): nothing here changes a land-cover class."""

    sun: float  # azimuth (radians, image frame)
    shadow: float  # shadow length factor (low sun -> long shadows)
    season: float  # 0 summer green .. 1 dry
    moisture: float  # soil brightness factor
    turbidity: float
    patch_sign: float  # which end of the moisture / phenology fields forms this date's patches
    patch_thr: float


def draw_look(rng: np.random.Generator, previous: DateLook | None = None) -> DateLook:
    """Draw a date's conditions; a second date keeps the sun azimuth within ~40 degrees of the first."""
    sun = rng.uniform(0, 2 * np.pi) if previous is None else previous.sun + rng.uniform(-0.7, 0.7)
    return DateLook(
        sun=float(sun), shadow=float(rng.uniform(0.4, 1.0)), season=float(rng.uniform(0, 0.5)),
        moisture=float(rng.uniform(0.85, 1.1)), turbidity=float(rng.uniform(0, 1)),
        patch_sign=1.0 if previous is None else -1.0, patch_thr=float(rng.uniform(0.4, 1.4)),
    )


def _shift_int(a: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``out[y, x] = a[y - dy, x - dx]``, zero where that falls outside."""
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = a[max(-dy, 0):h + min(-dy, 0),
                                                                  max(-dx, 0):w + min(-dx, 0)]
    return out


def _blur(img: np.ndarray) -> np.ndarray:
    """Separable [1, 2, 1] / 4 blur (the optics' point-spread function), edges replicated."""
    p = np.pad(img, ((1, 1), (1, 1), (0, 0)), mode="edge")
    t = p[:-2] + 2 * p[1:-1] + p[2:]
    return (t[:, :-2] + 2 * t[:, 1:-1] + t[:, 2:]) / 16.0


def render(lay: Layout, cls: np.ndarray, built: np.ndarray, look: DateLook) -> np.ndarray:
    """Noise-free ``(H, W, 3)`` float32 reflectance-like image of one date's class map.

    Works on flat pixel indices per class (gathers and scatters by index are several times cheaper than
    boolean masks).
    """
    t, size, flat = {k: v.ravel() for k, v in lay.tex.items()}, lay.size, cls.ravel()
    img = np.zeros((size * size, 3), np.float32)
    i = np.flatnonzero(flat == SOIL)
    patch = np.clip((look.patch_sign * t["moist"][i] - look.patch_thr) * 2.0, 0, 1)
    shade = (1 + 0.10 * t["parcel"][i] + 0.06 * t["soil"][i] + 0.04 * t["fine"][i]) * (1 - 0.25 * patch)
    img[i] = lay.soil_col * (shade * look.moisture)[:, None]
    i = np.flatnonzero(flat == VEGETATION)
    patch = np.clip((look.patch_sign * t["pheno"][i] - look.patch_thr) * 2, 0, 1)
    dry = np.clip(look.season + 0.12 * t["parcel"][i] + 0.3 * patch, 0, 1)[:, None]
    trees = np.clip(t["veg"][i] * 0.8, 0.3, 1.0)  # denser canopy texture where vegetation is dense
    crown = 1 + trees * 0.22 * np.tanh(1.5 * t["canopy"][i]) + 0.05 * t["fine"][i] + 0.08 * t["parcel"][i]
    img[i] = (_VEG_SUMMER + (_VEG_DRY - _VEG_SUMMER) * dry) * crown[:, None]
    i = np.flatnonzero(flat == WATER)
    wcol = lay.water_col + look.turbidity * np.array([0.08, 0.07, 0.03], np.float32)
    img[i] = wcol * (1 + 0.05 * t["parcel"][i] + 0.02 * t["fine"][i])[:, None]
    i = np.flatnonzero(flat == ROAD)
    img[i] = lay.road_col * (1 + 0.04 * t["soil"][i] + 0.03 * t["fine"][i])[:, None]
    bid = np.where(built[lay.cand_id], lay.cand_id, 0)
    m = bid > 0
    i = np.flatnonzero(m)
    b = bid.ravel()[i]
    sun = np.array([np.cos(look.sun), np.sin(look.sun)], np.float32)
    lit = np.sign(lay.normal @ sun) * lay.gabled  # +1: roof half 0 faces the sun
    fac = 1 + 0.14 * lit[b] * (1 - 2 * (lay.cand.ravel()[i] % 2)) + 0.03 * t["fine"][i]
    img[i] = lay.roof[b] * fac[:, None]
    edge = m & ((_shift_int(bid, 1, 0) != bid) | (_shift_int(bid, -1, 0) != bid)
                | (_shift_int(bid, 0, 1) != bid) | (_shift_int(bid, 0, -1) != bid))
    img[np.flatnonzero(edge)] *= 0.82
    hmap = np.where(m, lay.height[bid], 0) * look.shadow
    shadow = np.zeros((size, size), bool)
    for k in range(1, int(np.ceil(hmap.max())) + 1):  # sweep the footprints away from the sun
        shadow |= _shift_int(hmap, int(round(-k * sun[1])), int(round(-k * sun[0]))) >= k
    img[np.flatnonzero(shadow & ~m)] *= _SHADOW
    return _blur(img.reshape(size, size, 3))
