"""Synthetic bi-temporal change-detection data with exact labels, in memory or written to disk.

Tests, the demo and benchmarks need realistic-looking pairs that we are free to generate and ship; the scene
generator lives in :mod:`changekit.data.synthetic_scene`. Here are the public entry points:

* :func:`make_scene` / :func:`make_large_scene`: one pair as arrays.
* :func:`synthesize`: ``n`` pairs as a binary (``A/B/label``) or SECOND-style semantic folder
  (``im1/im2/label1/label2`` plus ``label``), written atomically.
* :func:`synthesize_geotiff_pair`: one georeferenced pair (made-up UTM 33N grid) for GeoTIFF tests.

Labels are defined on the date-A grid: ``label == 255`` exactly where ``classes_a != classes_b``. The date-B
image carries a whole-image misregistration of up to ``max_shift`` pixels that no label follows, as residual
co-registration error would in real data. Pair ``i`` of a folder depends only on ``(seed, i)``, never on ``n``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..errors import ConfigError
from .io import GeoInfo, atomic_dir, write_geotiff, write_png
from .synthetic_render import draw_look, render
from .synthetic_scene import CLASS_NAMES, PALETTE, apply_changes, make_layout, noise

__all__ = [
    "CLASS_NAMES", "PALETTE", "IGNORE_INDEX", "DEFAULT_CHANGE_FRACTION", "make_scene", "make_large_scene",
    "pair_rng", "synthesize", "synthesize_geotiff_pair", "class_table", "Sensor", "draw_sensor", "acquire",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
DEFAULT_CHANGE_FRACTION = (0.04, 0.22)
_MARKER = "synthetic.yaml"  # provenance file; also marks a folder that synthesize may rewrite
_ALL_DIRS = ("A", "B", "label", "im1", "im2", "label1", "label2")
_HAZE = np.array([0.75, 0.78, 0.85], np.float32)
_GEO_CRS = "EPSG:32633"
_GEO_ORIGIN = (500_000.0, 5_000_000.0)  # made-up UTM 33N easting / northing of the top-left corner
_GEO_PIXEL = 0.5  # metres


def _check_args(size: int, change_fraction: Sequence[float], max_shift: float) -> tuple[float, float]:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 32:
        raise ConfigError(f"size: expected an integer >= 32, got {size!r}")
    try:
        lo, hi = (float(v) for v in change_fraction)
    except (TypeError, ValueError):
        raise ConfigError(f"change_fraction: expected (low, high), got {change_fraction!r}") from None
    if not 0.0 <= lo <= hi <= 0.9:
        raise ConfigError(f"change_fraction: expected 0 <= low <= high <= 0.9, got ({lo}, {hi})")
    if not isinstance(max_shift, (int, float, np.number)) or not 0.0 <= float(max_shift) <= 8.0:
        raise ConfigError(f"max_shift: expected 0..8 pixels, got {max_shift!r}")
    return lo, hi


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed: expected a non-negative integer, got {seed!r}")
    return int(seed)


@dataclass
class Sensor:
    """Per-date radiometry of the camera and atmosphere (white balance, gain, gamma, haze, noise)."""

    white: np.ndarray
    gain: float
    gamma: float
    bias: float
    haze: float
    noise: float


def draw_sensor(rng: np.random.Generator) -> Sensor:
    """Draw one date's radiometry: the two dates of a pair never share it, as with real acquisitions."""
    return Sensor(
        white=(1 + rng.uniform(-0.07, 0.07, 3)).astype(np.float32), gain=float(rng.uniform(0.82, 1.2)),
        gamma=float(rng.uniform(0.8, 1.25)), bias=float(rng.uniform(-0.04, 0.04)),
        haze=float(rng.uniform(0, 0.12)), noise=float(rng.uniform(0.006, 0.02)),
    )


def acquire(img: np.ndarray, sensor: Sensor, rng: np.random.Generator, shift: tuple[float, float]) -> np.ndarray:
    """Apply radiometry, a whole-image misregistration ``shift`` and sensor noise; return uint8 RGB.

    ``shift`` is ``(dy, dx)`` in pixels: content moves by ``+shift`` (bilinear resampling, edges replicated).
    """
    img = np.clip(img * sensor.white * sensor.gain, 0, 1) ** sensor.gamma
    img = img * (1 - sensor.haze) + sensor.haze * _HAZE + sensor.bias
    if shift != (0.0, 0.0):
        size = img.shape[0]
        for axis, d in enumerate(shift):
            pos = np.arange(size) - d
            i0 = np.floor(pos).astype(int)
            f = (pos - i0).astype(np.float32)
            lo, hi = np.take(img, np.clip(i0, 0, size - 1), axis), np.take(img, np.clip(i0 + 1, 0, size - 1), axis)
            f = f[:, None, None] if axis == 0 else f[None, :, None]
            img = lo * (1 - f) + hi * f
    img = img + noise(rng, img.shape) * np.float32(sensor.noise)
    return np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)


def make_scene(
    size: int,
    rng: np.random.Generator,
    semantic: bool = False,
    change_fraction: Sequence[float] = DEFAULT_CHANGE_FRACTION,
    max_shift: float = 2.0,
) -> dict[str, np.ndarray]:
    """Generate one bi-temporal pair in memory.

    Args:
        size: side length in pixels (>= 32); feature sizes are in pixels, so bigger scenes hold more of them.
        rng: the only source of randomness (same generator state -> identical scene).
        semantic: accepted for symmetry with :func:`synthesize`; the class maps are always returned and the
            pixels do not depend on it, so a pair is the same in binary and semantic folders.
        change_fraction: range of the target fraction of changed pixels (the reached fraction is close to it,
            limited by what the scene offers).
        max_shift: largest misregistration of the date-B image, pixels.

    Returns:
        ``image_a``, ``image_b``: uint8 ``(H, W, 3)``; ``label``: uint8 ``(H, W)`` 0/255;
        ``classes_a``, ``classes_b``: uint8 ``(H, W)`` class ids (see :data:`CLASS_NAMES`), all on the date-A
        grid, with ``label == 255 * (classes_a != classes_b)``.
    """
    del semantic  # documented no-op
    lo, hi = _check_args(size, change_fraction, max_shift)
    lay = make_layout(int(size), rng)
    classes_b, built_b = apply_changes(lay, rng, float(rng.uniform(lo, hi)))
    look_a = draw_look(rng)
    look_b = draw_look(rng, look_a)
    sensor_a, sensor_b = draw_sensor(rng), draw_sensor(rng)
    r, phi = rng.uniform(0, max_shift), rng.uniform(0, 2 * np.pi)
    shift = (float(r * np.sin(phi)), float(r * np.cos(phi)))
    image_a = acquire(render(lay, lay.cls, lay.built, look_a), sensor_a, rng, (0.0, 0.0))
    image_b = acquire(render(lay, classes_b, built_b, look_b), sensor_b, rng, shift)
    label = np.where(lay.cls != classes_b, 255, 0).astype(np.uint8)
    return {"image_a": image_a, "image_b": image_b, "label": label, "classes_a": lay.cls, "classes_b": classes_b}


def pair_rng(seed: int, index: int) -> np.random.Generator:
    """Generator of pair ``index`` under ``seed``: a spawned child seed, so it does not depend on ``n``."""
    return np.random.default_rng(np.random.SeedSequence(_check_seed(seed), spawn_key=(int(index),)))


def make_large_scene(size: int = 1024, seed: int = 0, **kwargs: Any) -> dict[str, np.ndarray]:
    """One large pair (e.g. for tiled whole-scene prediction), same keys as :func:`make_scene`."""
    rng = np.random.default_rng(np.random.SeedSequence(_check_seed(seed), spawn_key=(2**31,)))
    return make_scene(size, rng, **kwargs)


def _previous_run(out: Path, overwrite: bool) -> dict[str, Any] | None:
    """Parameters of an earlier :func:`synthesize` run in ``out`` (``None`` if there is none).

    Raises:
        OutputError: ``out`` is a file, or a non-empty folder (an earlier synthetic set included: replacing it
            deletes its pairs) and not ``overwrite``.
    """
    from ..safety import check_output

    check_output(out, overwrite=overwrite, kind="folder")
    marker = out / _MARKER
    if marker.is_file():
        try:
            meta = yaml.safe_load(marker.read_text())
        except yaml.YAMLError:
            meta = None
        return meta if isinstance(meta, dict) else None
    return None


def _remove_stale(out: Path, previous: dict[str, Any], dirs: Sequence[str], names: set[str]) -> None:
    """Delete the files of an earlier run that this run did not rewrite (and its now empty folders).

    Only names following the earlier run's own pattern are touched, so files a user added are kept.
    """
    pattern = re.compile(re.escape(str(previous.get("prefix", "synth"))) + r"_\d{5,}\.png")
    for d in _ALL_DIRS:
        folder = out / d
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            if pattern.fullmatch(f.name) and (d not in dirs or f.name not in names):
                f.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()
    if "im1" not in dirs and previous.get("semantic") and (out / "classes.yaml").is_file():
        (out / "classes.yaml").unlink()


def synthesize(
    out: str | Path,
    n: int,
    size: int = 256,
    seed: int = 0,
    semantic: bool = False,
    change_fraction: Sequence[float] = DEFAULT_CHANGE_FRACTION,
    max_shift: float = 2.0,
    prefix: str = "synth",
    overwrite: bool = False,
) -> Path:
    """Write ``n`` generated pairs to the folder ``out`` and return it.

    Binary layout: ``A/``, ``B/`` (RGB PNG) and ``label/`` (single-channel 0/255 PNG), stems
    ``{prefix}_00000``... With ``semantic=True`` the layout is SECOND-style ``im1/``, ``im2/``, ``label1/``,
    ``label2/`` (palette PNGs whose indices are the class ids) plus ``label/`` (binary) and ``classes.yaml``
    (names, colors, ignore_index), so one folder serves binary and semantic models. ``synthetic.yaml`` records
    the parameters. Everything is generated in a hidden temporary folder and moved into ``out`` only when
    complete (an interrupted run changes nothing); pairs of an earlier run in ``out`` that this run did not
    rewrite are then deleted, so the folder always holds exactly one consistent set.

    Raises:
        ConfigError: bad arguments.
        OutputError: ``out`` is a non-empty folder and not ``overwrite`` (with ``overwrite``, an earlier
            synthetic set there is replaced; in any other folder same-named files are replaced, others kept).
    """
    lo, hi = _check_args(size, change_fraction, max_shift)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ConfigError(f"n: expected a positive integer, got {n!r}")
    _check_seed(seed)
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", str(prefix)):
        raise ConfigError(f"prefix: expected a plain file-name prefix (letters, digits, _ . -), got {prefix!r}")
    out = Path(out)
    previous = _previous_run(out, overwrite)
    dirs = ("im1", "im2", "label1", "label2", "label") if semantic else ("A", "B", "label")
    names = {f"{prefix}_{i:05d}.png" for i in range(n)}
    changed = 0
    with atomic_dir(out) as tmp:
        for d in dirs:
            (tmp / d).mkdir()
        for i in range(n):
            s = make_scene(size, pair_rng(seed, i), change_fraction=(lo, hi), max_shift=max_shift)
            stem = f"{prefix}_{i:05d}.png"
            write_png(tmp / dirs[0] / stem, s["image_a"])
            write_png(tmp / dirs[1] / stem, s["image_b"])
            write_png(tmp / "label" / stem, s["label"])
            if semantic:
                write_png(tmp / "label1" / stem, s["classes_a"], palette=PALETTE)
                write_png(tmp / "label2" / stem, s["classes_b"], palette=PALETTE)
            changed += int(np.count_nonzero(s["label"]))
        if semantic:
            (tmp / "classes.yaml").write_text(yaml.safe_dump(class_table(), sort_keys=False))
        meta = dict(generator="changekit.data.synthetic", n=int(n), size=int(size), seed=int(seed),
                    semantic=bool(semantic), change_fraction=[lo, hi], max_shift=float(max_shift), prefix=prefix,
                    changed_fraction=round(changed / (n * size * size), 5))
        (tmp / _MARKER).write_text(yaml.safe_dump(meta, sort_keys=False))
    if previous is not None:
        _remove_stale(out, previous, dirs, names)
    logger.info("wrote %d synthetic pairs (%dx%d, %.1f%% changed) to %s", n, size, size,
                100 * meta["changed_fraction"], out)
    return out


def class_table() -> dict[str, Any]:
    """The class table written as ``classes.yaml``: names, display colours and the ignore value."""
    return {"names": list(CLASS_NAMES), "colors": PALETTE.tolist(), "ignore_index": IGNORE_INDEX}


def synthesize_geotiff_pair(out_dir: str | Path, size: int = 256, seed: int = 0) -> tuple[Path, Path, Path]:
    """Write one pair as GeoTIFFs on a made-up 0.5 m grid in EPSG:32633 (UTM 33N).

    Returns:
        ``(a_path, b_path, label_path)``: ``A.tif`` and ``B.tif`` (3-band uint8) and ``label.tif``
        (1-band uint8, 0/255), all with the same CRS and transform.
    """
    from rasterio.crs import CRS
    from rasterio.transform import Affine

    scene = make_scene(size, pair_rng(seed, 0))
    (x0, y0), px = _GEO_ORIGIN, _GEO_PIXEL
    geo = GeoInfo(crs=CRS.from_string(_GEO_CRS), transform=Affine(px, 0.0, x0, 0.0, -px, y0))
    out_dir = Path(out_dir)
    paths = (out_dir / "A.tif", out_dir / "B.tif", out_dir / "label.tif")
    for path, key in zip(paths, ("image_a", "image_b", "label"), strict=True):
        write_geotiff(path, scene[key], geo)
    return paths
