"""Procedural land-cover scenes for two dates: class maps, change events and ground appearance (numpy only).

Real change-detection data sets are licence-restricted, so tests, the demo and benchmarks use scenes generated
here (the sensor model and the public API are in :mod:`changekit.data.synthetic`). All steps are vectorised:

1. *Layout* (date A): smooth random fields (filtered noise, one FFT per resolution) decide urban areas,
   vegetation and lakes; a rotated street grid, an optional river and a grid of candidate building footprints
   (two roof halves each, drawn with ``PIL.ImageDraw``) complete the class map.
2. *Change events* (date B): buildings constructed or demolished, vegetation cleared or planted, water drained
   or dug, roads paved, until a target fraction of changed pixels is reached.
3. *Rendering* of each date with shared ground textures and per-date conditions that change no class:
   season (vegetation colour), soil moisture and phenology patches, water turbidity, sun azimuth and shadow
   length.

Both class maps live on the date-A pixel grid. Step 3 is in :mod:`changekit.data.synthetic_render`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

CLASS_NAMES: tuple[str, ...] = ("bare soil", "building", "road", "vegetation", "water")
SOIL, BUILDING, ROAD, VEGETATION, WATER = range(5)
#: Display colours of the classes (for palette PNGs and legends), one row per class id.
PALETTE = np.array([(190, 155, 110), (220, 40, 40), (120, 120, 120), (40, 150, 50), (30, 90, 210)], np.uint8)

_ROOFS = np.array(
    [(0.62, 0.30, 0.22), (0.55, 0.55, 0.56), (0.78, 0.77, 0.75), (0.32, 0.32, 0.34), (0.50, 0.55, 0.62),
     (0.70, 0.45, 0.30)], np.float32)
_TEXTURES = ("urban", "veg", "lake", "parcel", "soil", "canopy", "fine", "moist", "pheno")
_SIGMAS = (36.0, 20.0, 28.0, 14.0, 5.0, 1.6, 0.7, 22.0, 18.0)


def _upsample(field: np.ndarray, factor: int, size: int) -> np.ndarray:
    """Bilinear upsampling of ``(k, m, m)`` fields by an integer factor, cropped to ``size``."""
    pos = (np.arange(size) + 0.5) / factor - 0.5
    i0 = np.clip(np.floor(pos).astype(int), 0, field.shape[1] - 2)
    f = np.clip(pos - i0, 0, 1).astype(np.float32)
    rows = field[:, i0] * (1 - f)[None, :, None] + field[:, i0 + 1] * f[None, :, None]
    return rows[:, :, i0] * (1 - f) + rows[:, :, i0 + 1] * f


def _fft_len(n: int) -> int:
    """Smallest even 5-smooth length >= ``n`` (pocketfft is several times slower on large prime factors)."""
    while True:
        m = n + (n % 2)
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n + (n % 2)
        n += 1


def _binomial(field: np.ndarray, passes: int) -> np.ndarray:
    """``passes`` separable [1, 2, 1] / 4 blurs of ``(k, H, W)`` fields (variance 0.5 px^2 each), edges kept."""
    for _ in range(passes):
        p = np.pad(field, ((0, 0), (1, 1), (1, 1)), mode="edge")
        t = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]
        field = (t[:, :, :-2] + 2 * t[:, :, 1:-1] + t[:, :, 2:]) * np.float32(1 / 16)
    return field


def noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Zero-mean unit-variance float32 noise (triangular: two uniform bytes), ~5x cheaper than Gaussian draws."""
    u = rng.integers(0, 256, (2, *shape), dtype=np.uint8)
    return (u[0].astype(np.float32) + u[1] - np.float32(255.0)) * np.float32(1 / 104.5)


def _standardise(fields: np.ndarray) -> np.ndarray:
    """Zero mean, unit std per ``(H, W)`` field; statistics from every 4th row and column (plenty, 16x cheaper)."""
    sample = fields[..., ::4, ::4]
    fields -= sample.mean(axis=(-2, -1), keepdims=True)
    fields /= sample.std(axis=(-2, -1), keepdims=True) + np.float32(1e-8)
    return fields


def smooth_fields(rng: np.random.Generator, size: int, sigmas: tuple[float, ...]) -> np.ndarray:
    """``(k, size, size)`` float32 fields of Gaussian-smoothed noise, each zero-mean with unit std.

    Narrow fields (sigma < 2.5 px) are binomial blurs of white noise. Wide ones come from an FFT on a grid
    coarser by a power of two (keeping >= 2.5 px of blur there, at most 8x coarser) and upsampled; fields of
    one resolution share one FFT, and the noise is padded so that the FFT's wrap-around does not tie opposite
    image edges together.
    """
    sig = np.asarray(sigmas, np.float64)
    out = np.empty((len(sig), size, size), np.float32)
    for i in np.flatnonzero(sig < 2.5):
        out[i] = _standardise(_binomial(noise(rng, (1, size, size)), max(1, round(2 * sig[i] ** 2))))[0]
    wide = np.flatnonzero(sig >= 2.5)
    factors = np.minimum(2 ** np.floor(np.log2(sig[wide] / 2.5)).astype(int), 8)
    for factor in np.unique(factors):
        idx = wide[factors == factor]
        s = sig[idx] / factor
        m = -(-size // factor) + 1  # low-res samples covering the image
        n = _fft_len(m + int(min(size, 2 * s.max())))
        spec = np.fft.rfft2(noise(rng, (len(idx), n, n)))
        f2 = np.fft.fftfreq(n)[:, None] ** 2 + np.fft.rfftfreq(n)[None, :] ** 2
        spec *= np.exp(-2.0 * np.pi**2 * s[:, None, None] ** 2 * f2).astype(np.float32)
        low = np.fft.irfft2(spec, s=(n, n))[:, :m, :m]
        out[idx] = _standardise(low[:, :size, :size] if factor == 1 else _upsample(low, int(factor), size))
    return out


@dataclass
class Layout:
    """Date-A scene plus everything both dates share (textures, candidate buildings and their attributes)."""

    size: int
    cls: np.ndarray  # (H, W) uint8 date-A classes
    cand: np.ndarray  # (H, W) int32: 2 * building id + roof half, 0 = no candidate footprint
    cand_id: np.ndarray  # (H, W) int32: building id (cand // 2), 0 = none
    built: np.ndarray  # (N + 1,) bool: candidate built on date A (index 0 unused)
    centre: np.ndarray  # (N + 1, 2) int: footprint centre (x, y), clipped into the image
    roof: np.ndarray  # (N + 1, 3) roof colours
    height: np.ndarray  # (N + 1,) shadow length at unit sun elevation, pixels
    normal: np.ndarray  # (N + 1, 2) unit normal of roof half 0 (image x, y)
    gabled: np.ndarray  # (N + 1,) 1.0 for pitched roofs, 0.0 for flat ones
    angle: float  # street-grid orientation (radians)
    cell: float  # street-grid cell size (pixels); each footprint stays within its cell
    road_width: float
    tex: dict[str, np.ndarray]
    soil_col: np.ndarray
    water_col: np.ndarray
    road_col: np.ndarray


def _rotated(size: int, angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in a frame rotated by ``angle`` about the image centre."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) - (size - 1) / 2.0
    c, s = np.cos(angle), np.sin(angle)
    return xx * c + yy * s, -xx * s + yy * c


def _candidates(
    size: int, rng: np.random.Generator, angle: float, cell: float, road_w: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rasterise one building footprint per street-grid cell (two roof halves each) into an id map.

    Returns ``(cand, centre, normal)``; footprints keep clear of the street lines on the cell borders.
    """
    m = int(np.ceil(size * 0.75 / cell)) + 1
    iu, iv = np.meshgrid(np.arange(-m, m) + 0.5, np.arange(-m, m) + 0.5, indexing="ij")
    cu, cv = iu.ravel() * cell, iv.ravel() * cell
    c, s = np.cos(angle), np.sin(angle)
    cx, cy = cu * c - cv * s + (size - 1) / 2.0, cu * s + cv * c + (size - 1) / 2.0
    keep = (cx > -cell) & (cx < size + cell) & (cy > -cell) & (cy < size + cell)
    cx, cy = cx[keep], cy[keep]
    n = len(cx)
    room = cell / 2.0 - road_w / 2.0 - 1.0
    half = rng.uniform(0.55, 1.0, (n, 2)) * room
    jitter = rng.uniform(-1.0, 1.0, (n, 2)) * (room - half)
    theta = angle + rng.uniform(-0.08, 0.08, n)
    ct, st = np.cos(theta), np.sin(theta)
    ox = cx + jitter[:, 0] * c - jitter[:, 1] * s
    oy = cy + jitter[:, 0] * s + jitter[:, 1] * c
    long_u = half[:, 0] >= half[:, 1]  # ridge along the footprint's longer axis
    a, b = half[:, :1], half[:, 1:]
    z = np.zeros_like(a)
    # Corners (local u, v) of the two roof halves, split along the ridge: (n, 2 halves, 4 corners).
    cu = np.where(long_u[:, None, None], np.stack([np.hstack([-a, a, a, -a])] * 2, 1),
                  np.stack([np.hstack([-a, z, z, -a]), np.hstack([z, a, a, z])], 1))
    cv = np.where(long_u[:, None, None], np.stack([np.hstack([-b, -b, z, z]), np.hstack([z, z, b, b])], 1),
                  np.stack([np.hstack([-b, -b, b, b])] * 2, 1))
    px = ox[:, None, None] + cu * ct[:, None, None] - cv * st[:, None, None]
    py = oy[:, None, None] + cu * st[:, None, None] + cv * ct[:, None, None]
    corners = np.stack([px, py], -1).reshape(n, 2, 8).tolist()  # flat x0, y0, x1, ... per roof half
    im = Image.new("I", (size, size), 0)
    draw = ImageDraw.Draw(im)
    for i in range(n):  # only drawing calls in the loop: a few hundred per 256 px scene
        draw.polygon(corners[i][0], fill=2 * (i + 1))
        draw.polygon(corners[i][1], fill=2 * (i + 1) + 1)
    cand = np.asarray(im, dtype=np.int32)
    # Normal of half 0 points to local -v (ridge along u) or -u (ridge along v), rotated into the image.
    nu, nv = np.where(long_u, 0.0, -1.0), np.where(long_u, -1.0, 0.0)
    normal = np.stack([nu * ct - nv * st, nu * st + nv * ct], 1)
    centre = np.clip(np.stack([ox, oy], 1).round().astype(int), 0, size - 1)
    return cand, _with_slot0(centre), _with_slot0(normal.astype(np.float32))


def _with_slot0(arr: np.ndarray) -> np.ndarray:
    """Prepend a zero row so that per-building arrays can be indexed by id (id 0 = no building)."""
    return np.concatenate([np.zeros((1,) + arr.shape[1:], arr.dtype), arr])


def _ids_touching(cand: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """Boolean ``(n,)``: candidate ids with at least one footprint pixel inside ``mask``."""
    return np.bincount(cand[mask & (cand > 0)] // 2, minlength=n) > 0


def make_layout(size: int, rng: np.random.Generator) -> Layout:
    """Draw the date-A land cover, the candidate buildings and the shared ground textures."""
    tex = dict(zip(_TEXTURES, smooth_fields(rng, size, _SIGMAS), strict=True))
    angle = float(rng.uniform(0, np.pi / 2))
    cell, road_w = float(rng.uniform(16, 24)), float(rng.uniform(3.0, 5.5))
    u, v = _rotated(size, angle)
    t_urban = rng.uniform(-0.4, 1.2)
    urban = tex["urban"] > t_urban
    # Streets: every k-th grid line (some skipped), only where the area is at least suburban.
    k = int(rng.integers(3, 6))
    off = rng.integers(0, k, 2)
    on_u, on_v = rng.random(200) < 0.75, rng.random(200) < 0.75
    lu, lv = np.round(u / (k * cell) - off[0] / k), np.round(v / (k * cell) - off[1] / k)
    du = np.abs(u - (lu * k + off[0]) * cell)
    dv = np.abs(v - (lv * k + off[1]) * cell)
    road = ((du < road_w / 2) & on_u[lu.astype(int) % 200]) | ((dv < road_w / 2) & on_v[lv.astype(int) % 200])
    road &= tex["urban"] > t_urban - 0.6
    if rng.random() < 0.4:  # a straight highway at any angle
        hu, _ = _rotated(size, float(rng.uniform(0, np.pi)))
        road |= np.abs(hu - rng.uniform(-0.3, 0.3) * size) < rng.uniform(3.5, 5.5)
    lake = np.zeros((size, size), bool)
    if rng.random() < 0.6:
        k_lake = int(rng.uniform(0.03, 0.18) * size * size)  # lake pixels: the k highest of the field
        lake = tex["lake"] > np.partition(tex["lake"].ravel(), -k_lake)[-k_lake]
    river = np.zeros((size, size), bool)
    if rng.random() < 0.3:  # a meandering band across the scene
        along, across = _rotated(size, float(rng.uniform(0, np.pi)))
        wave = 2 * np.pi * along / (rng.uniform(0.6, 1.5, 2)[:, None, None] * size)
        offset, amplitude = rng.uniform(-0.25, 0.25) * size, rng.uniform(0.05, 0.12) * size
        middle = offset + amplitude * np.sin(wave[0] + rng.uniform(0, 6.3)) + 4 * np.sin(wave[1])
        river = np.abs(across - middle) < rng.uniform(3, 8) * (1 + 0.2 * tex["parcel"])
    veg = tex["veg"] - 0.6 * urban > rng.uniform(-0.7, 0.5)
    cls = np.full((size, size), SOIL, np.uint8)
    cls[veg] = VEGETATION
    cls[river | lake] = WATER
    cls[road & ~lake] = ROAD
    cand, centre, normal = _candidates(size, rng, angle, cell, road_w)
    n = len(centre)
    in_town = urban[centre[:, 1], centre[:, 0]] & (rng.random(n) < rng.uniform(0.55, 0.95))
    built = in_town & ~_ids_touching(cand, (cls == WATER) | (cls == ROAD), n)
    built[0] = False
    cand_id = cand // 2
    cls[built[cand_id]] = BUILDING
    roof = _ROOFS[rng.integers(0, len(_ROOFS), n)] * rng.uniform(0.9, 1.1, (n, 1)).astype(np.float32)
    return Layout(
        size=size, cls=cls, cand=cand, cand_id=cand_id, built=built, centre=centre, roof=roof,
        height=rng.uniform(2.5, 9.0, n).astype(np.float32), normal=normal,
        gabled=(rng.random(n) < 0.65).astype(np.float32), angle=angle, cell=cell, road_width=road_w, tex=tex,
        soil_col=np.array([0.62, 0.52, 0.40], np.float32) * np.float32(rng.uniform(0.85, 1.1))
        * (1 + rng.uniform(-0.04, 0.04, 3)).astype(np.float32),
        water_col=np.array([0.10, 0.18, 0.22], np.float32) * rng.uniform(0.8, 1.25, 3).astype(np.float32),
        road_col=np.full(3, rng.uniform(0.30, 0.42), np.float32) + rng.uniform(-0.02, 0.02, 3).astype(np.float32),
    )


# ---------------------------------------------------------------------------------------------- change events
_EVENTS = ("construct", "demolish", "clear", "plant", "drain", "dig", "pave")
_EVENT_P = np.array([3.0, 2.0, 2.0, 1.5, 0.7, 0.7, 1.0]) / 10.9
_SOURCE = {"construct": (SOIL, VEGETATION), "demolish": (BUILDING,), "clear": (VEGETATION,), "plant": (SOIL,),
           "drain": (WATER,), "dig": (SOIL, VEGETATION), "pave": (SOIL, VEGETATION)}
_SOURCE_LUT = {e: np.isin(np.arange(len(CLASS_NAMES)), c) for e, c in _SOURCE.items()}  # class -> is a source


def _region(rng: np.random.Generator, x: int, y: int, r: float, angle: float) -> np.ndarray:
    """Vertices of a random convex-ish polygon, or a street-aligned rectangular parcel, of radius ~``r``."""
    if rng.random() < 0.5:
        a, b = r * rng.uniform(0.7, 1.3), r * rng.uniform(0.5, 1.0)
        c, s = np.cos(angle), np.sin(angle)
        corners = np.array([(-a, -b), (a, -b), (a, b), (-a, b)])
        return np.stack([x + corners[:, 0] * c - corners[:, 1] * s, y + corners[:, 0] * s + corners[:, 1] * c], 1)
    phi = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(6, 11))))
    rad = r * rng.uniform(0.6, 1.1, len(phi))
    return np.stack([x + rad * np.cos(phi), y + rad * np.sin(phi)], 1)


def _window_mask(size: int, pts: np.ndarray, margin: int) -> tuple[np.ndarray, tuple[slice, slice]] | None:
    """Rasterise a polygon inside its bounding box grown by ``margin`` (clipped to the image).

    Change events then touch only that window instead of the whole scene. Returns ``(mask, window)`` or
    ``None`` when the box misses the image.
    """
    x0, y0 = np.maximum(np.floor(pts.min(0)).astype(int) - margin, 0)
    x1, y1 = np.minimum(np.ceil(pts.max(0)).astype(int) + 1 + margin, size)
    if x1 <= x0 or y1 <= y0:
        return None
    im = Image.new("L", (int(x1 - x0), int(y1 - y0)), 0)
    ImageDraw.Draw(im).polygon((pts - (x0, y0)).ravel().tolist(), fill=1)
    return np.asarray(im).astype(bool), (slice(int(y0), int(y1)), slice(int(x0), int(x1)))


def apply_changes(lay: Layout, rng: np.random.Generator, target: float) -> tuple[np.ndarray, np.ndarray]:
    """Apply change events to a copy of the date-A map until about ``target`` of the pixels changed.

    Returns:
        ``(classes_b, built_b)``: the date-B class map and which candidate buildings stand on date B.
    """
    size, n = lay.size, len(lay.built)
    cls, built = lay.cls.copy(), lay.built.copy()
    goal, changed = target * size * size, 0
    cx, cy = lay.centre[:, 0], lay.centre[:, 1]
    for _ in range(40 if target > 0 else 0):
        remaining = goal - changed
        if remaining < max(0.002 * size * size, 12):
            break
        event = _EVENTS[rng.choice(len(_EVENTS), p=_EVENT_P)]
        ys, xs = rng.integers(0, size, (2, 48))
        source = _SOURCE_LUT[event]
        hits = np.flatnonzero(source[cls[ys, xs]])
        if len(hits) == 0:
            continue
        x, y = int(xs[hits[0]]), int(ys[hits[0]])
        r = float(np.clip(np.sqrt(remaining / np.pi) * rng.uniform(0.45, 0.9), 5, size / 3))
        angle = lay.angle if rng.random() < 0.7 else float(rng.uniform(0, np.pi))
        if event == "pave":
            c, s, w = np.cos(angle), np.sin(angle), lay.road_width / 2
            half = min(remaining / (2 * w), size) / 2
            pts = np.array([(x - half * c - w * s, y - half * s + w * c), (x + half * c - w * s, y + half * s + w * c),
                            (x + half * c + w * s, y + half * s - w * c), (x - half * c + w * s, y - half * s - w * c)])
        else:
            pts = _region(rng, x, y, r, angle)
        # Building events reach a footprint's whole cell around a centre inside the polygon.
        margin = int(np.ceil(lay.cell)) if event in ("construct", "demolish") else 0
        drawn = _window_mask(size, pts, margin)
        if drawn is None:
            continue
        area, win = drawn
        now, before = cls[win], lay.cls[win]  # views: writes to `now` change `cls`
        was = np.count_nonzero(now != before)
        if event in ("construct", "demolish"):
            y0, x0 = win[0].start, win[1].start
            inside = (cx >= x0) & (cx < win[1].stop) & (cy >= y0) & (cy < win[0].stop)
            inside[inside] = area[cy[inside] - y0, cx[inside] - x0]
            ids = lay.cand_id[win]
            if event == "construct":
                blocked = np.bincount(ids[(now != SOIL) & (now != VEGETATION)], minlength=n) > 0
                new = inside & ~built & ~blocked
                new[0] = False
                built |= new
                now[new[ids]] = BUILDING
            else:
                gone = inside & built
                built &= ~gone
                now[gone[ids]] = SOIL if rng.random() < 0.75 else VEGETATION
        else:
            to = {"clear": SOIL, "plant": VEGETATION, "dig": WATER, "pave": ROAD}.get(event)
            if to is None:  # drain
                to = SOIL if rng.random() < 0.5 else VEGETATION
            hit = area & source[now]
            if np.count_nonzero(hit) < 0.3 * np.count_nonzero(area):
                continue  # mostly other classes: it would only leave slivers along class borders
            now[hit] = to
        changed += np.count_nonzero(now != before) - was
    return cls, built
