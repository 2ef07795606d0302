"""``changekit data convert oscd``: OSCD's per-band Sentinel-2 files -> one multi-band GeoTIFF per date.

OSCD (Caye Daudt et al., IGARSS 2018) publishes, per city and date, 13 single-band uint16 GeoTIFFs of
Sentinel-2 L1C reflectance x 10,000 at their native 10 / 20 / 60 m sizes (``imgs_1/<product>_B01.tif`` ...),
approximate EPSG:4326 georeferencing, and a label ``cm/<city>-cm.tif`` coded 1 = no change, 2 = change,
without georeferencing. Changekit reads one multi-band file per date, so for each city:

* the reference grid is date 1's 10 m grid (B02's size, CRS and transform; the label has the same size). The
  dataset README: "in case of discrepancies in image size, the older images with resolution of 10 m per pixel
  is used" (hongkong's second date is 2 pixels smaller for the same bounds);
* every band of both dates is resampled onto that grid by its own transform (``rasterio.warp.reproject``,
  bilinear by default; the 10 m bands of date 1 are copied as they are);
* the label becomes 0/255 and takes the reference grid's georeferencing.

The output is a ``A|B|label`` folder that ``train``, ``test`` and ``predict`` read directly (``A/<city>.tif``:
13 (or ``bands``) uint16 bands in Sentinel-2 order), plus ``oscd.json`` with the band order, dates and sources.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DatasetNotFoundError, LabelValueError, SizeMismatchError
from .io import GeoInfo, atomic_dir, require_file, write_geotiff

log = logging.getLogger(__name__)

#: Sentinel-2's 13 bands in the order OSCD's authors stack them (and changekit writes them)
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
#: the 10 m band whose grid is the reference
REFERENCE_BAND = "B02"
RESAMPLINGS = ("nearest", "bilinear", "cubic", "average")
_BAND_FILE = re.compile(r"_(B\d\d|B8A)\.tif$", re.IGNORECASE)


def parse_band_names(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``None`` / ``all`` -> the 13 bands; ``rgb`` -> B04,B03,B02; else a comma list of band names.

    Raises:
        ConfigError: an unknown band name (names it and the valid ones).
    """
    if value is None or value == "all":
        return S2_BANDS
    if value == "rgb":
        return ("B04", "B03", "B02")
    names = [v.strip().upper() for v in (value.split(",") if isinstance(value, str) else value) if v.strip()]
    bad = [n for n in names if n not in S2_BANDS]
    if bad or not names:
        raise ConfigError(f"--bands: {bad[0] if bad else value!r} is not a Sentinel-2 band; use all, rgb or names "
                          f"from {','.join(S2_BANDS)}")
    return tuple(names)


def find_cities(src: Path) -> list[Path]:
    """The city folders under ``src`` (each with ``imgs_1``, ``imgs_2`` and ``cm``), sorted by name."""
    if not src.is_dir():
        raise DatasetNotFoundError(f"{src}: OSCD folder not found")
    cities = sorted(p for p in src.iterdir() if (p / "imgs_1").is_dir() and (p / "imgs_2").is_dir())
    if not cities:
        raise DatasetNotFoundError(f"{src}: no OSCD city folders (<city>/imgs_1, <city>/imgs_2) found")
    return cities


def band_files(folder: Path) -> dict[str, Path]:
    """``{band name: file}`` of one date folder (files found by their ``_B<nn>.tif`` suffix)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        m = _BAND_FILE.search(path.name)
        if m:
            found[m.group(1).upper()] = path
    return found


def _read_dates(city: Path) -> dict[str, str]:
    dates = city / "dates.txt"
    if not dates.is_file():
        return {}
    pairs = (line.split(":", 1) for line in dates.read_text().splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _resample(path: Path, ref: dict[str, Any], resampling: str) -> np.ndarray:
    """Band 1 of ``path`` on the reference grid ``(H, W)``, in the file's dtype."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    with rasterio.open(require_file(path)) as src:
        if src.count != 1:
            raise SizeMismatchError(f"{path}: an OSCD band file has 1 band, found {src.count}")
        data = src.read(1)
        if (src.height, src.width) == ref["shape"] and src.transform.almost_equals(ref["transform"]):
            return data
        out = np.zeros(ref["shape"], data.dtype)
        reproject(data, out, src_transform=src.transform, src_crs=src.crs or ref["crs"],
                  dst_transform=ref["transform"], dst_crs=ref["crs"], resampling=Resampling[resampling])
    return out


def _label(city: Path, shape: tuple[int, int]) -> np.ndarray:
    """The city's change label as 0/255 uint8 (OSCD codes 1 = no change, 2 = change)."""
    from .io import read_image

    files = sorted((city / "cm").glob("*-cm.tif")) if (city / "cm").is_dir() else []
    if not files:
        raise DatasetNotFoundError(f"{city / 'cm'}: no <city>-cm.tif label")
    with warnings.catch_warnings():  # OSCD labels carry no georeferencing; they take the 10 m grid's
        warnings.filterwarnings("ignore", message=".*no geotransform.*")
        raw = np.asarray(read_image(files[0]))[:, :, 0]
    if raw.shape != shape:
        raise SizeMismatchError(f"{files[0]}: label is {raw.shape[0]} x {raw.shape[1]} but the 10 m grid of "
                                f"{city / 'imgs_1'} is {shape[0]} x {shape[1]} (H x W)")
    values = set(np.unique(raw).tolist())
    if not values <= {1, 2}:
        raise LabelValueError(f"{files[0]}: OSCD labels are 1 (no change) and 2 (change), found "
                              f"{sorted(values)}; is it already converted?")
    return np.where(raw == 2, 255, 0).astype(np.uint8)


def convert_city(city: Path, out: Path, bands: Sequence[str] = S2_BANDS, resampling: str = "bilinear"
                 ) -> dict[str, Any]:
    """Write ``out/A/<city>.tif``, ``out/B/<city>.tif`` and ``out/label/<city>.tif``; returns its record."""
    import rasterio

    files = {d: band_files(city / d) for d in ("imgs_1", "imgs_2")}
    for date, found in files.items():
        missing = [b for b in (*bands, REFERENCE_BAND) if b not in found]
        if missing:
            raise DatasetNotFoundError(f"{city / date}: no file for band(s) {', '.join(sorted(set(missing)))} "
                                       "(*_B02.tif ...)")
    with rasterio.open(files["imgs_1"][REFERENCE_BAND]) as src:
        ref = {"shape": (src.height, src.width), "transform": src.transform, "crs": src.crs}
    geo = GeoInfo(crs=ref["crs"], transform=ref["transform"])
    for date, folder in (("imgs_1", "A"), ("imgs_2", "B")):
        stack = np.stack([_resample(files[date][b], ref, resampling) for b in bands], axis=-1)
        write_geotiff(out / folder / f"{city.name}.tif", stack, geo)
    write_geotiff(out / "label" / f"{city.name}.tif", _label(city, ref["shape"]), geo)
    h, w = ref["shape"]
    return {"city": city.name, "height": h, "width": w, "dates": _read_dates(city),
            "sources": {d: sorted({p.name.rsplit("_", 1)[0] for p in f.values()}) for d, f in files.items()}}


def convert_oscd(src: str | Path, out: str | Path, bands: str | Sequence[str] | None = None,
                 resampling: str = "bilinear", cities: Sequence[str] | None = None,
                 overwrite: bool = False) -> list[dict[str, Any]]:
    """Convert the OSCD cities under ``src`` into an ``A|B|label`` folder ``out`` (written atomically).

    Args:
        src: a folder of OSCD city folders (``<city>/imgs_1``, ``imgs_2``, ``cm``, ``dates.txt``).
        out: the folder to write.
        bands: ``all`` (default), ``rgb`` or Sentinel-2 band names in the order to stack them.
        resampling: how 20 m and 60 m bands (and a second date on another grid) reach the 10 m grid.
        cities: only these cities (default: every city found).
        overwrite: replace an existing ``out``.

    Returns:
        One record per city (size, dates, source products), also written to ``out/oscd.json``.
    """
    from ..safety import check_output, removes_new_folders

    src, out = Path(src), Path(out)
    names = parse_band_names(bands)
    if resampling not in RESAMPLINGS:
        raise ConfigError(f"--resampling: must be one of {', '.join(RESAMPLINGS)}, got {resampling!r}")
    found = find_cities(src)
    if cities:
        by_name = {c.name: c for c in found}
        unknown = [c for c in cities if c not in by_name]
        if unknown:
            raise DatasetNotFoundError(f"{src}: no city {unknown[0]!r} (found {', '.join(sorted(by_name))})")
        found = [by_name[c] for c in cities]
    out = check_output(out, inputs=[src], overwrite=overwrite, kind="folder")
    records = []
    with removes_new_folders(out), atomic_dir(out) as tmp:
        for city in found:
            records.append(convert_city(city, tmp, names, resampling))
            log.info("converted %s (%d x %d)", city.name, records[-1]["height"], records[-1]["width"])
        meta = {"source": str(src), "bands": list(names), "resampling": resampling,
                "reference_grid": f"imgs_1 {REFERENCE_BAND} (10 m)", "label": "0 = no change, 255 = change",
                "values": "Sentinel-2 L1C top-of-atmosphere reflectance x 10000 (uint16)", "cities": records}
        (tmp / "oscd.json").write_text(json.dumps(meta, indent=2))
    return records
