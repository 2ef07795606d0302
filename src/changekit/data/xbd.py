"""Building / background class maps from xBD label JSON, the single-date source for ChangeAnywhere here.

xBD ships, per image, a JSON whose ``features.xy`` holds building polygons as WKT in pixel coordinates (column,
row) of the 1024 x 1024 tile, plus ``metadata`` (width, height, sensor, date). The pre-disaster polygons over the
pre-disaster image make a two-class semantic map: 0 background, 1 building. The development subset
(``../shared/data/xbd_subset``, see its ``SOURCES.md``) keeps the images as ``A/<stem>.png`` and the JSON as
``json/<stem>_pre_disaster.json``. Its licence (CC BY-NC-SA 4.0) forbids republishing: the maps are written to
a folder of the user's choice, never into the repository.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml

from ..errors import ConfigError, DatasetNotFoundError
from .io import atomic_dir, write_png

__all__ = ["XBD_CLASSES", "building_map", "write_building_maps"]

XBD_CLASSES = {"names": ["background", "building"], "colors": [[0, 0, 0], [230, 60, 40]], "ignore_index": 255}


def building_map(json_path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Rasterise the building polygons of one xBD label JSON to a ``(H, W)`` uint8 map (0 / 1).

    Args:
        json_path: an xBD label JSON.
        shape: ``(H, W)``; default the JSON's ``metadata`` height and width.

    Raises:
        DatasetNotFoundError: the file is missing.
        ConfigError: the file is not an xBD label JSON or holds invalid WKT.
    """
    from rasterio.features import rasterize
    from shapely import wkt
    from shapely.errors import ShapelyError

    path = Path(json_path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text())
        feats = data["features"]["xy"]
        meta = data.get("metadata", {})
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not an xBD label JSON ({exc.__class__.__name__}: {exc})") from None
    if shape is None:
        shape = (int(meta.get("height", 1024)), int(meta.get("width", 1024)))
    geoms = []
    for f in feats:
        if f.get("properties", {}).get("feature_type", "building") != "building":
            continue
        try:
            geoms.append(wkt.loads(f["wkt"]))
        except (ShapelyError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: invalid polygon ({exc})") from None
    if not geoms:
        return np.zeros(shape, np.uint8)
    # identity transform: x = column, y = row, as xBD's pixel-coordinate WKT
    return rasterize([(g, 1) for g in geoms], out_shape=shape, fill=0, dtype="uint8")


def write_building_maps(root: str | Path, out: str | Path, phase: str = "pre", overwrite: bool = False) -> list[Path]:
    """Write ``out/<stem>.png`` (palette PNG, 0 background / 1 building) for every ``json/<stem>_<phase>_disaster.json``
    of an xBD folder, plus ``out/classes.yaml``; the maps are sized like ``A/<stem>.png`` when it exists.

    ``out`` may be a new folder inside ``root`` (beside ``A/``, ``B/``); an existing one needs ``overwrite``.

    Raises:
        DatasetNotFoundError: ``root/json`` is missing or holds no ``*_<phase>_disaster.json``.
    """
    from ..safety import check_output
    from .io import image_size

    root = Path(root)
    check_output(out, inputs=[root], overwrite=overwrite, what="map folder", kind="folder", inside_ok=True)
    files = sorted((root / "json").glob(f"*_{phase}_disaster.json"))
    if not files:
        raise DatasetNotFoundError(f"{root / 'json'}: no *_{phase}_disaster.json files")
    written = []
    with atomic_dir(Path(out)) as tmp:
        for f in files:
            stem = f.name[: -len(f"_{phase}_disaster.json")]
            image = root / "A" / f"{stem}.png"
            shape = image_size(image)[:2] if image.is_file() else None
            write_png(tmp / f"{stem}.png", building_map(f, shape), palette=np.asarray(XBD_CLASSES["colors"]))
            written.append(Path(out) / f"{stem}.png")
        (tmp / "classes.yaml").write_text(yaml.safe_dump(XBD_CLASSES, sort_keys=False))
    return written
