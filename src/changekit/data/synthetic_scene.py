"""Procedural bi-temporal land-cover scenes: class maps, change events and rendering (numpy only).

Real change-detection data sets are licence-restricted, so tests, the demo and benchmarks use scenes generated
here. A scene is built in three steps, all vectorised:

1. *Layout* (date A): smooth random fields (Gaussian-filtered noise via one batched FFT) decide urban areas,
   vegetation and lakes; a rotated street grid, an optional river and a grid of candidate building footprints
   (two roof halves each, drawn with ``PIL.ImageDraw``) complete the class map.
2. *Change events* (date B): buildings constructed or demolished, vegetation cleared or planted, water drained
   or dug, roads paved, until a target fraction of changed pixels is reached.
3. *Rendering* of each date with shared ground textures and per-date nuisances that change no class: season
   (vegetation colour), soil moisture and phenology patches, sun azimuth and shadow length, white balance,
   gain, gamma, haze, sensor noise and, for date B only, a sub-pixel misregistration of the whole image.

Both class maps, and hence the change label, live on the date-A pixel grid: the date-B *image* is shifted by up
to ``max_shift`` pixels, its class map is not, exactly as for a co-registered real pair with residual error.
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
_VEG_SUMMER = np.array([0.20, 0.33, 0.14], np.float32)
_VEG_DRY = np.array([0.40, 0.42, 0.22], np.float32)
_SHADOW = np.array([0.42, 0.45, 0.56], np.float32)
_HAZE = np.array([0.75, 0.78, 0.85], np.float32)
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


def smooth_fields(rng: np.random.Generator, size: int, sigmas: tuple[float, ...]) -> np.ndarray:
    """``(k, size, size)`` float32 fields of Gaussian-smoothed noise, each zero-mean with unit std.

    Narrow fields (sigma < 2.5 px) are binomial blurs of white noise. Wide ones come from an FFT on a grid
    coarser by a power of two (keeping >= 2 px of blur there), upsampled; fields of one resolution share one
    FFT, and the noise is padded so that the FFT's wrap-around does not tie opposite image edges together.
    """
    sig = np.asarray(sigmas, np.float64)
    out = np.empty((len(sig), size, size), np.float32)
    narrow = np.flatnonzero(sig < 2.5)
    for i in narrow:
        out[i] = _binomial(rng.standard_normal((1, size, size), dtype=np.float32), max(1, round(2 * sig[i] ** 2)))[0]
    wide = np.flatnonzero(sig >= 2.5)
    factors = 2 ** np.floor(np.log2(sig[wide] / 2.0)).astype(int)
    for factor in np.unique(factors):
        idx = wide[factors == factor]
        s = sig[idx] / factor
        n = _fft_len(-(-size // factor) + 2 + int(min(size, 2 * s.max())))
        spec = np.fft.rfft2(rng.standard_normal((len(idx), n, n), dtype=np.float32))
        f2 = np.fft.fftfreq(n)[:, None] ** 2 + np.fft.rfftfreq(n)[None, :] ** 2
        spec *= np.exp(-2.0 * np.pi**2 * s[:, None, None] ** 2 * f2).astype(np.float32)
        low = np.fft.irfft2(spec, s=(n, n))
        out[idx] = low[:, :size, :size] if factor == 1 else _upsample(low, int(factor), size)
    out -= out.mean(axis=(1, 2), keepdims=True)
    out /= out.std(axis=(1, 2), keepdims=True) + 1e-8
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


def _polygon_mask(size: int, points: np.ndarray) -> np.ndarray:
    im = Image.new("L", (size, size), 0)
    ImageDraw.Draw(im).polygon([tuple(p) for p in np.asarray(points, np.float64)], fill=1)
    return np.asarray(im).astype(bool)


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
    im = Image.new("I", (size, size), 0)
    draw = ImageDraw.Draw(im)
    a, b = half[:, 0], half[:, 1]
    for i in range(n):  # one polygon call per roof half: a few hundred per 256 px scene
        if long_u[i]:
            halves = ([(-a[i], -b[i]), (a[i], -b[i]), (a[i], 0), (-a[i], 0)],
                      [(-a[i], 0), (a[i], 0), (a[i], b[i]), (-a[i], b[i])])
        else:
            halves = ([(-a[i], -b[i]), (0, -b[i]), (0, b[i]), (-a[i], b[i])],
                      [(0, -b[i]), (a[i], -b[i]), (a[i], b[i]), (0, b[i])])
        for h, pts in enumerate(halves):
            draw.polygon([(ox[i] + u * ct[i] - v * st[i], oy[i] + u * st[i] + v * ct[i]) for u, v in pts],
                         fill=2 * (i + 1) + h)
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
    tex = dict(zip(_TEXTURES, smooth_fields(rng, size, _SIGMAS)))
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
        lake = tex["lake"] > np.quantile(tex["lake"], 1 - rng.uniform(0.03, 0.18))
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
        gabled=(rng.random(n) < 0.65).astype(np.float32), angle=angle, road_width=road_w, tex=tex,
        soil_col=np.array([0.62, 0.52, 0.40], np.float32) * rng.uniform(0.88, 1.1, 3).astype(np.float32),
        water_col=np.array([0.10, 0.18, 0.22], np.float32) * rng.uniform(0.8, 1.25, 3).astype(np.float32),
        road_col=np.full(3, rng.uniform(0.30, 0.42), np.float32) + rng.uniform(-0.02, 0.02, 3).astype(np.float32),
    )


# ---------------------------------------------------------------------------------------------- change events
_EVENTS = ("construct", "demolish", "clear", "plant", "drain", "dig", "pave")
_EVENT_P = np.array([3.0, 2.0, 2.0, 1.5, 0.7, 0.7, 1.0]) / 10.9
_SOURCE = {"construct": (SOIL, VEGETATION), "demolish": (BUILDING,), "clear": (VEGETATION,), "plant": (SOIL,),
           "drain": (WATER,), "dig": (SOIL, VEGETATION), "pave": (SOIL, VEGETATION)}


def _region(size: int, rng: np.random.Generator, x: int, y: int, r: float, angle: float) -> np.ndarray:
    """A random convex-ish polygon, or a street-aligned rectangular parcel, of radius ~``r`` around (x, y)."""
    if rng.random() < 0.5:
        a, b = r * rng.uniform(0.7, 1.3), r * rng.uniform(0.5, 1.0)
        c, s = np.cos(angle), np.sin(angle)
        corners = np.array([(-a, -b), (a, -b), (a, b), (-a, b)])
        pts = np.stack([x + corners[:, 0] * c - corners[:, 1] * s, y + corners[:, 0] * s + corners[:, 1] * c], 1)
    else:
        phi = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(6, 11))))
        rad = r * rng.uniform(0.6, 1.1, len(phi))
        pts = np.stack([x + rad * np.cos(phi), y + rad * np.sin(phi)], 1)
    return _polygon_mask(size, pts)


def apply_changes(lay: Layout, rng: np.random.Generator, target: float) -> tuple[np.ndarray, np.ndarray]:
    """Apply change events to a copy of the date-A map until about ``target`` of the pixels changed.

    Returns:
        ``(classes_b, built_b)``: the date-B class map and which candidate buildings stand on date B.
    """
    size, cand, n = lay.size, lay.cand, len(lay.built)
    cls, built = lay.cls.copy(), lay.built.copy()
    goal = target * size * size
    for _ in range(40 if target > 0 else 0):
        remaining = goal - np.count_nonzero(cls != lay.cls)
        if remaining < max(0.002 * size * size, 12):
            break
        event = _EVENTS[rng.choice(len(_EVENTS), p=_EVENT_P)]
        ys, xs = rng.integers(0, size, (2, 48))
        source = np.isin(np.arange(5), _SOURCE[event])  # class -> is a source class (lookup table)
        hits = np.flatnonzero(source[cls[ys, xs]])
        if len(hits) == 0:
            continue
        x, y = int(xs[hits[0]]), int(ys[hits[0]])
        r = float(np.clip(np.sqrt(remaining / np.pi) * rng.uniform(0.45, 0.9), 5, size / 3))
        angle = lay.angle if rng.random() < 0.7 else float(rng.uniform(0, np.pi))
        if event == "pave":
            c, s, w = np.cos(angle), np.sin(angle), lay.road_width / 2
            length = min(remaining / (2 * w), size) / 2
            pts = [(x - length * c - w * s, y - length * s + w * c), (x + length * c - w * s, y + length * s + w * c),
                   (x + length * c + w * s, y + length * s - w * c), (x - length * c + w * s, y - length * s - w * c)]
            area = _polygon_mask(size, np.array(pts))
        else:
            area = _region(size, rng, x, y, r, angle)
        if event == "construct":
            blocked = _ids_touching(cand, (cls != SOIL) & (cls != VEGETATION), n)
            new = ~built & ~blocked & area[lay.centre[:, 1], lay.centre[:, 0]]
            new[0] = False
            built |= new
            cls[new[lay.cand_id]] = BUILDING
        elif event == "demolish":
            gone = built & area[lay.centre[:, 1], lay.centre[:, 0]]
            built &= ~gone
            cls[gone[lay.cand_id]] = SOIL if rng.random() < 0.75 else VEGETATION
        else:
            to = {"clear": SOIL, "plant": VEGETATION, "dig": WATER, "pave": ROAD}.get(event)
            if to is None:  # drain
                to = SOIL if rng.random() < 0.5 else VEGETATION
            hit = area & source[cls]
            if np.count_nonzero(hit) < 0.3 * np.count_nonzero(area):
                continue  # mostly other classes: it would only leave slivers along class borders
            cls[hit] = to
    return cls, built


# ---------------------------------------------------------------------------------------------- rendering
@dataclass
class DateLook:
    """Per-date acquisition conditions: nothing here changes a land-cover class."""

    sun: float  # azimuth (radians, image frame)
    shadow: float  # shadow length factor (low sun -> long shadows)
    season: float  # 0 summer green .. 1 dry
    moisture: float  # soil brightness factor
    turbidity: float
    patch_sign: float  # which end of the moisture / phenology fields forms this date's patches
    patch_thr: float
    white: np.ndarray
    gain: float
    gamma: float
    bias: float
    haze: float
    noise: float


def draw_look(rng: np.random.Generator, previous: DateLook | None = None) -> DateLook:
    """Draw acquisition conditions; a second date keeps the sun azimuth within ~40 degrees of the first."""
    sun = rng.uniform(0, 2 * np.pi) if previous is None else previous.sun + rng.uniform(-0.7, 0.7)
    return DateLook(
        sun=float(sun), shadow=float(rng.uniform(0.4, 1.0)), season=float(rng.uniform(0, 0.5)),
        moisture=float(rng.uniform(0.85, 1.1)), turbidity=float(rng.uniform(0, 1)),
        patch_sign=1.0 if previous is None else -1.0, patch_thr=float(rng.uniform(0.4, 1.4)),
        white=(1 + rng.uniform(-0.07, 0.07, 3)).astype(np.float32), gain=float(rng.uniform(0.82, 1.2)),
        gamma=float(rng.uniform(0.8, 1.25)), bias=float(rng.uniform(-0.04, 0.04)),
        haze=float(rng.uniform(0, 0.12)), noise=float(rng.uniform(0.006, 0.02)),
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
    """Noise-free ``(H, W, 3)`` float32 reflectance-like image of one date's class map."""
    t, size = lay.tex, lay.size
    img = np.empty((size, size, 3), np.float32)
    patch = np.clip((look.patch_sign * t["moist"] - look.patch_thr) * 2.0, 0, 1)
    m = cls == SOIL
    shade = (1 + 0.10 * t["parcel"] + 0.06 * t["soil"] + 0.04 * t["fine"]) * (1 - 0.25 * patch) * look.moisture
    img[m] = lay.soil_col * shade[m, None]
    m = cls == VEGETATION
    dry = np.clip(look.season + 0.12 * t["parcel"]
                  + 0.3 * np.clip((look.patch_sign * t["pheno"] - look.patch_thr) * 2, 0, 1), 0, 1)[m, None]
    trees = np.clip(t["veg"][m] * 0.8, 0.3, 1.0)  # denser canopy texture where vegetation is dense
    crown = 1 + trees * 0.22 * np.tanh(1.5 * t["canopy"][m]) + 0.05 * t["fine"][m] + 0.08 * t["parcel"][m]
    img[m] = (_VEG_SUMMER + (_VEG_DRY - _VEG_SUMMER) * dry) * crown[:, None]
    m = cls == WATER
    wcol = lay.water_col + look.turbidity * np.array([0.08, 0.07, 0.03], np.float32)
    img[m] = wcol * (1 + 0.05 * t["parcel"][m] + 0.02 * t["fine"][m])[:, None]
    m = cls == ROAD
    img[m] = lay.road_col * (1 + 0.04 * t["soil"][m] + 0.03 * t["fine"][m])[:, None]
    on = built[lay.cand_id]
    bmap = np.where(on, lay.cand, 0)
    bid = np.where(on, lay.cand_id, 0)
    m = bid > 0
    sun = np.array([np.cos(look.sun), np.sin(look.sun)], np.float32)
    lit = np.sign(lay.normal @ sun) * lay.gabled  # +1: half 0 faces the sun
    fac = 1 + 0.14 * lit[bid[m]] * (1 - 2 * (bmap[m] % 2)) + 0.03 * t["fine"][m]
    img[m] = lay.roof[bid[m]] * fac[:, None]
    edge = m & ((_shift_int(bid, 1, 0) != bid) | (_shift_int(bid, -1, 0) != bid)
                | (_shift_int(bid, 0, 1) != bid) | (_shift_int(bid, 0, -1) != bid))
    img[edge] *= 0.82
    hmap = np.where(m, lay.height[bid], 0) * look.shadow
    shadow = np.zeros((size, size), bool)
    for k in range(1, int(np.ceil(hmap.max())) + 1):  # sweep the footprints away from the sun
        shadow |= _shift_int(hmap, int(round(-k * sun[1])), int(round(-k * sun[0]))) >= k
    img[shadow & ~m] *= _SHADOW
    return _blur(img)


def acquire(img: np.ndarray, look: DateLook, rng: np.random.Generator, shift: tuple[float, float]) -> np.ndarray:
    """Apply radiometry, misregistration ``shift`` (dy, dx pixels) and sensor noise; return uint8 RGB."""
    img = np.clip(img * look.white * look.gain, 0, 1) ** look.gamma
    img = img * (1 - look.haze) + look.haze * _HAZE + look.bias
    if shift != (0.0, 0.0):  # bilinear resampling, edges replicated
        size = img.shape[0]
        for axis, d in enumerate(shift):
            pos = np.arange(size) - d
            i0 = np.floor(pos).astype(int)
            f = (pos - i0).astype(np.float32)
            lo, hi = np.take(img, np.clip(i0, 0, size - 1), axis), np.take(img, np.clip(i0 + 1, 0, size - 1), axis)
            f = f[:, None, None] if axis == 0 else f[None, :, None]
            img = lo * (1 - f) + hi * f
    img = img + rng.standard_normal(img.shape, dtype=np.float32) * look.noise
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
