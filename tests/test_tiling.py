"""Tiling grid (ClearSCD rule), paired folder tiling, GeoTIFF windows, and stitching tiles back."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from PIL import Image
from rasterio import windows
from rasterio.crs import CRS

from changekit.data.io import GeoInfo, read_image, write_geotiff, write_png
from changekit.data.tiling import (merge_arrays, merge_tiles, tile_array, tile_folder, tile_grid,
                                   tile_positions, vote_arrays)
from changekit.errors import ConfigError, DatasetNotFoundError, OutputError, SizeMismatchError


@pytest.mark.parametrize("length, size, stride, expected", [
    (1024, 512, 512, [0, 512]),
    (1000, 512, 512, [0, 488]),
    (1100, 256, 192, [0, 192, 384, 576, 768, 844]),
    (1024, 512, 256, [0, 256, 512]),
    (512, 512, 512, [0]),
    (300, 512, 512, [0]),  # shorter than a tile: one tile of the image's own extent
])
def test_tile_positions_follow_clip_image(length: int, size: int, stride: int, expected: list[int]) -> None:
    assert tile_positions(length, size, stride) == expected


def test_tile_grid_adds_last_row_column_and_corner() -> None:
    assert tile_grid((1000, 1024), 512) == [(0, 0), (0, 512), (488, 0), (488, 512)]
    with pytest.raises(ConfigError, match="stride"):
        tile_positions(100, 10, 0)


@pytest.mark.parametrize("shape, size, stride", [
    ((100, 77, 3), 32, 20), ((96, 64, 3), 32, 32), ((100, 77), 32, 32), ((20, 50, 2), 32, 16),
])
def test_tile_then_merge_reproduces_the_array(shape: tuple, size: int, stride: int) -> None:
    arr = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    tiles = tile_array(arr, size, stride)
    assert all(t.shape[:2] == (min(size, shape[0]), min(size, shape[1])) for _, _, t in tiles)
    assert all(np.array_equal(t, arr[r:r + size, c:c + size]) for r, c, t in tiles)
    merged = merge_arrays([t for *_, t in tiles], [(r, c) for r, c, _ in tiles], shape)
    assert np.array_equal(np.rint(merged).astype(np.uint8), arr)


def test_merge_arrays_averages_overlaps_and_weights() -> None:
    tiles = [np.full((2, 3), 10.0), np.full((2, 3), 40.0)]
    out = merge_arrays(tiles, [(0, 0), (0, 2)], (2, 5))
    assert out[0].tolist() == [10, 10, 25, 40, 40]
    out = merge_arrays(tiles, [(0, 0), (0, 2)], (2, 5), weights=np.array([[1.0, 1.0, 3.0]] * 2))
    assert out[0, 2] == pytest.approx((3 * 10 + 40) / 4)


def test_vote_arrays_majority_and_ties_to_smallest() -> None:
    tiles = [np.full((1, 3), 4), np.full((1, 3), 2), np.full((1, 3), 4)]
    out = vote_arrays(tiles, [(0, 0), (0, 1), (0, 2)], (1, 5))
    assert out[0].tolist() == [4, 2, 4, 2, 4]  # column 1 and 3 are 1:1 ties -> smaller class 2


def _pair_folder(root: Path, shape: tuple[int, int] = (100, 130)) -> dict:
    rng = np.random.default_rng(1)
    data = {}
    for stem in ("s1", "s2"):
        a = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        b = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
        lab = (rng.random(shape) > 0.5).astype(np.uint8) * 255
        for name, arr in (("A", a), ("B", b), ("label", lab)):
            write_png(root / name / f"{stem}.png", arr)
        data[stem] = {"A": a, "B": b, "label": lab}
    return data


def test_tile_folder_keeps_pairs_aligned_and_merge_restores_them(tmp_path: Path) -> None:
    data = _pair_folder(tmp_path / "src")
    manifest = tile_folder(tmp_path / "src", tmp_path / "tiles", size=64, stride=48)
    assert manifest["folders"] == ["A", "B", "label"]
    entry = manifest["sources"]["s1"]
    assert (entry["height"], entry["width"], entry["rows"], entry["cols"]) == (100, 130, [0, 36], [0, 48, 66])
    assert json.loads((tmp_path / "tiles" / "tiles.json").read_text()) == manifest
    for name in ("A", "B", "label"):
        files = sorted(p.name for p in (tmp_path / "tiles" / name).iterdir())
        assert len(files) == 12 and "s2_36_66.png" in files
        tile = read_image(tmp_path / "tiles" / name / "s1_36_48.png")
        src = data["s1"][name]
        assert np.array_equal(tile[..., 0] if src.ndim == 2 else tile, src[36:100, 48:112])
    for name in ("A", "label"):
        written = merge_tiles(tmp_path / "tiles" / name, tmp_path / f"merged_{name}")
        assert [p.name for p in written] == ["s1.png", "s2.png"]
        for stem in ("s1", "s2"):
            merged = read_image(tmp_path / f"merged_{name}" / f"{stem}.png")
            src = data[stem][name]
            assert np.array_equal(merged[..., 0] if src.ndim == 2 else merged, src)


def _tile_preds(root: Path, width: int, preds: dict[int, int], size: int, stride: int) -> Path:
    """A 1-row 'prediction' tile folder with constant tiles, plus its manifest."""
    cols = tile_positions(width, size, stride)
    manifest = {"version": 1, "sources": {"p": {"height": 4, "width": width, "rows": [0], "cols": cols}}}
    (root / "pred").mkdir(parents=True)
    (root / "tiles.json").write_text(json.dumps(manifest))
    for c in cols:
        write_png(root / "pred" / f"p_0_{c}.png", np.full((4, size), preds.get(c, 0), np.uint8))
    return root / "pred"


def test_merge_rules_majority_versus_changeclip(tmp_path: Path) -> None:
    pred = _tile_preds(tmp_path / "a", 64, {0: 255}, size=48, stride=8)  # starts 0, 8, 16
    maj = read_image(merge_tiles(pred, tmp_path / "maj")[0])[0, :, 0]
    cc = read_image(merge_tiles(pred, tmp_path / "cc", rule="changeclip")[0])[0, :, 0]
    assert maj[:8].tolist() == [255] * 8 and (maj[8:] == 0).all()  # 1 of 2 or 3 tiles: no majority
    assert (cc[:48] == 255).all() and (cc[48:] == 0).all()  # 0/255 tiles: any tile says change
    pred01 = _tile_preds(tmp_path / "b", 64, {0: 1, 8: 1}, size=48, stride=8)
    maj01 = read_image(merge_tiles(pred01, tmp_path / "maj01")[0])[0, :, 0]
    cc01 = read_image(merge_tiles(pred01, tmp_path / "cc01", rule="changeclip")[0])[0, :, 0]
    assert maj01.tolist() == [1] * 48 + [0] * 16  # 2 of 3 tiles in 16..47; a 1:1 tie in 48..55 -> 0
    assert cc01.tolist() == [255] * 16 + [0] * 48  # 0/1 tiles: only where all tiles say change
    vote = read_image(merge_tiles(pred01, tmp_path / "vote", mode="vote")[0])[0, :, 0]
    assert np.array_equal(vote, maj01)


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_geotiff_tiles_keep_crs_and_window_transform(tmp_path: Path) -> None:
    src_t = Affine(0.5, 0, 500000, 0, -0.5, 4000000)
    geo = GeoInfo(crs=CRS.from_epsg(32633), transform=src_t)
    arr = np.random.default_rng(2).integers(0, 1000, (90, 100, 2), dtype=np.uint16)
    write_geotiff(tmp_path / "src" / "A" / "g.tif", arr, geo)
    tile_folder(tmp_path / "src", tmp_path / "tiles", size=64)
    for r, c in tile_grid(arr.shape, 64):
        with rasterio.open(tmp_path / "tiles" / "A" / f"g_{r}_{c}.tif") as ds:
            assert ds.crs == geo.crs
            assert ds.transform == windows.transform(windows.Window(c, r, 64, 64), src_t)
            assert np.array_equal(np.moveaxis(ds.read(), 0, -1), arr[r:r + 64, c:c + 64])
    merged = merge_tiles(tmp_path / "tiles" / "A", tmp_path / "merged")[0]
    back, back_geo = read_image(merged, with_geo=True)
    assert merged.name == "g.tif" and np.array_equal(back, arr)
    assert back_geo.crs == geo.crs and back_geo.transform == src_t


def test_palette_labels_stay_indexed_and_jpeg_tiles_become_png(tmp_path: Path) -> None:
    lab = np.random.default_rng(3).integers(0, 4, (40, 40), dtype=np.uint8)
    palette = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)]
    write_png(tmp_path / "src" / "label" / "x.png", lab, palette=np.array(palette))
    (tmp_path / "src" / "A").mkdir()
    Image.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(tmp_path / "src" / "A" / "x.jpg")
    tile_folder(tmp_path / "src", tmp_path / "tiles", size=32)
    with Image.open(tmp_path / "tiles" / "label" / "x_8_0.png") as im:
        assert im.mode == "P" and np.asarray(im.getpalette()[:12]).reshape(4, 3).tolist() == \
            [list(p) for p in palette]
        assert np.array_equal(np.asarray(im), lab[8:40, 0:32])
    assert (tmp_path / "tiles" / "A" / "x_8_8.png").is_file()


def test_tiling_errors(tmp_path: Path) -> None:
    _pair_folder(tmp_path / "src", (64, 64))
    write_png(tmp_path / "src" / "B" / "s1.png", np.zeros((60, 64, 3), np.uint8))
    with pytest.raises(SizeMismatchError, match="s1.png"):
        tile_folder(tmp_path / "src", tmp_path / "tiles", size=32)
    write_png(tmp_path / "src" / "B" / "s1.png", np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        tile_folder(tmp_path / "src", tmp_path / "busy", size=32)
    with pytest.raises(OutputError, match="contains the input"):
        tile_folder(tmp_path / "src", tmp_path, size=32, overwrite=True)
    with pytest.raises(OutputError, match="lies inside the input"):
        tile_folder(tmp_path / "src", tmp_path / "src" / "tiles", size=32)
    tile_folder(tmp_path / "src", tmp_path / "tiles", size=32)
    (tmp_path / "tiles" / "label" / "s1_32_0.png").unlink()
    with pytest.raises(DatasetNotFoundError, match="s1_32_0"):
        merge_tiles(tmp_path / "tiles" / "label", tmp_path / "merged")
    with pytest.raises(ConfigError, match="single-band"):
        merge_tiles(tmp_path / "tiles" / "A", tmp_path / "voted", mode="vote")
    with pytest.raises(DatasetNotFoundError, match="tile manifest"):
        merge_tiles(tmp_path / "src" / "A", tmp_path / "merged2")


def test_flat_folder_is_tiled_in_place_of_sub_folders(tmp_path: Path) -> None:
    arr = np.random.default_rng(4).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    write_png(tmp_path / "scene" / "big.png", arr)
    manifest = tile_folder(tmp_path / "scene", tmp_path / "tiles", size=(32, 48), stride=(16, 48))
    assert manifest["sources"]["big"]["rows"] == [0, 16, 18] and manifest["sources"]["big"]["cols"] == [0, 22]
    assert (tmp_path / "tiles" / "big_18_22.png").is_file()
    merged = merge_tiles(tmp_path / "tiles", tmp_path / "merged")
    assert np.array_equal(read_image(merged[0]), arr)
