"""xBD building polygons to building / background class maps (real-data tests skip when the subset is absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from changekit.cli import main
from changekit.data.io import read_image, read_palette_indices
from changekit.data.xbd import building_map
from changekit.errors import ConfigError

XBD = Path(__file__).resolve().parents[2] / "shared" / "data" / "xbd_subset"
needs_xbd = pytest.mark.skipif(not (XBD / "json").is_dir(), reason="xbd_subset not available")


def _label_json(path: Path, wkts: list[str]) -> Path:
    feats = [{"properties": {"feature_type": "building", "uid": str(i)}, "wkt": w} for i, w in enumerate(wkts)]
    path.write_text(json.dumps({"features": {"xy": feats, "lng_lat": []}, "metadata": {"width": 16, "height": 12}}))
    return path


def test_polygons_rasterise_in_pixel_coordinates(tmp_path: Path) -> None:
    m = building_map(_label_json(tmp_path / "a.json", ["POLYGON ((2 3, 10 3, 10 8, 2 8, 2 3))"]))
    assert m.shape == (12, 16) and m.dtype == np.uint8
    expected = np.zeros((12, 16), np.uint8)
    expected[3:8, 2:10] = 1  # x = column, y = row; pixel centres inside the polygon
    assert np.array_equal(m, expected)
    assert not building_map(_label_json(tmp_path / "b.json", [])).any()
    with pytest.raises(ConfigError, match="invalid polygon"):
        building_map(_label_json(tmp_path / "c.json", ["POLYGON ((1 2"]))
    (tmp_path / "d.json").write_text("{}")
    with pytest.raises(ConfigError, match="not an xBD label JSON"):
        building_map(tmp_path / "d.json")


@needs_xbd
def test_real_maps_cover_the_damage_labels(tmp_path: Path) -> None:
    out = tmp_path / "maps"
    assert main(["data", "xbd-masks", str(XBD), "--out", str(out)]) == 0
    maps = sorted(out.glob("*.png"))
    assert len(maps) == len(list((XBD / "json").glob("*_pre_disaster.json")))
    assert (out / "classes.yaml").is_file()
    covered, total = 0, 0
    for p in maps:
        m = read_palette_indices(p)
        damage = read_image(XBD / "label" / p.name)[..., 0] > 0
        assert set(np.unique(m)) <= {0, 1} and m.shape == damage.shape
        covered += int((m[damage] == 1).sum())
        total += int(damage.sum())
    assert covered / total > 0.9  # post-disaster damaged footprints lie on pre-disaster buildings
