"""Hi-UCD and SECOND converters on generated files in the published formats, and class tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changekit.cli import app
from changekit.data.classes import HIUCD, SECOND, ClassTable, load_classes
from changekit.data.convert import convert_hiucd, convert_rgb_labels, hiucd_mask
from changekit.data.datasets import ChangeDataset
from changekit.data.io import read_palette_indices
from changekit.errors import ConfigError, LabelValueError


def _rgb(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)


def _hiucd_split(root: Path, size: int = 48, n: int = 2) -> dict[str, np.ndarray]:
    """Hi-UCD mini layout: 2017/9, 2018/9 images and mask_merge/2017_2018/9 raw 3-channel masks."""
    rng = np.random.default_rng(0)
    masks = {}
    for i in range(n):
        name = f"{i}_{i + 7}"
        for year in ("2017", "2018"):
            _rgb(root / year / "9" / f"{name}.png", rng.integers(0, 255, (size, size, 3)))
        raw = np.stack([rng.integers(0, 10, (size, size)), rng.integers(0, 10, (size, size)),
                        rng.integers(0, 3, (size, size))], -1)
        _rgb(root / "mask_merge" / "2017_2018" / "9" / f"{name}.png", raw)
        masks[name] = raw
    return masks


def test_hiucd_mask_follows_deal_hiucd() -> None:
    raw = np.array([[[0, 1, 0], [9, 10 - 1, 1], [5, 0, 2]]], np.uint8)
    out = hiucd_mask(raw)
    assert out[0, 0].tolist() == [9, 0, 255]  # unlabeled -> 9 (semantic), 255 (change)
    assert out[0, 1].tolist() == [8, 8, 0]
    assert out[0, 2].tolist() == [4, 9, 1]
    with pytest.raises(LabelValueError, match="already converted"):
        hiucd_mask(np.full((2, 2, 3), 255, np.uint8))


def test_convert_hiucd_tiles_and_reads_back(tmp_path: Path) -> None:
    masks = _hiucd_split(tmp_path / "train")
    res = convert_hiucd(tmp_path / "train", tmp_path / "out", tile=32)
    assert res == {"pairs": 2, "tiles": 8}  # 48 px with 32 px tiles: ClearSCD adds the last row/column
    names = sorted(p.stem for p in (tmp_path / "out" / "mask").iterdir())
    assert names[0] == "0_0_7" and len(names) == 8
    first = np.asarray(Image.open(tmp_path / "out" / "mask" / "3_0_7.png"))  # tile (16, 16): bottom-right
    np.testing.assert_array_equal(first, hiucd_mask(masks["0_7"])[16:48, 16:48])
    line = (tmp_path / "out" / "list.txt").read_text().splitlines()[0].split()
    assert len(line) == 5 and line[2] == line[3] == line[4]
    assert load_classes(tmp_path / "out" / "classes.yaml").names == HIUCD.names
    ds = ChangeDataset(tmp_path / "out" / "list.txt", task="semantic", ignore_index=9, num_classes=9)
    item = ds[0]
    assert set(item) >= {"sem_a", "sem_b", "mask"} and int(item["sem_a"].max()) <= 9
    assert set(np.unique(item["mask"].numpy())) <= {0, 1, 255}


def test_convert_hiucd_cli(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    _hiucd_split(tmp_path / "val", size=32, n=1)
    res = CliRunner().invoke(app, ["data", "convert", "hiucd", str(tmp_path / "val"), "--out", str(tmp_path / "o"),
                                   "--tile", "0"])
    assert res.exit_code == 0, res.output
    assert "1 pairs" in res.output and (tmp_path / "o" / "list.txt").is_file()


def _second(root: Path, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    cls_a = rng.integers(0, 7, (size, size))
    cls_b = np.where(cls_a == 0, 0, rng.integers(1, 7, (size, size)))
    for folder, cls in (("label1", cls_a), ("label2", cls_b)):
        _rgb(root / folder / "00001.png", SECOND.colors[cls])
    for folder in ("im1", "im2"):
        _rgb(root / folder / "00001.png", rng.integers(0, 255, (size, size, 3)))
    return cls_a, cls_b


def test_convert_second_rgb_labels(tmp_path: Path) -> None:
    cls_a, cls_b = _second(tmp_path / "second")
    convert_rgb_labels(tmp_path / "second", tmp_path / "out")
    np.testing.assert_array_equal(read_palette_indices(tmp_path / "out" / "label1" / "00001.png"), cls_a)
    np.testing.assert_array_equal(read_palette_indices(tmp_path / "out" / "label2" / "00001.png"), cls_b)
    ds = ChangeDataset(tmp_path / "out", task="semantic", num_classes=7)
    np.testing.assert_array_equal(ds[0]["sem_a"].numpy(), cls_a)
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), (cls_a != cls_b).astype(np.uint8))


def test_convert_second_rejects_unknown_colours(tmp_path: Path) -> None:
    _second(tmp_path / "second")
    _rgb(tmp_path / "second" / "label2" / "00001.png", np.full((16, 16, 3), 7))
    with pytest.raises(LabelValueError, match=r"label2.*\(7, 7, 7\)"):
        convert_rgb_labels(tmp_path / "second", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_class_tables(tmp_path: Path) -> None:
    assert HIUCD.num_classes == 9 and HIUCD.ignore_index == 9 and SECOND.names[0] == "no change"
    assert load_classes("synthetic").num_classes == 5
    path = tmp_path / "c.yaml"
    path.write_text("names: [a, b]\ncolors: [[1, 2, 3], [4, 5, 6]]\nignore_index: 2\n")
    table = load_classes(path)
    assert table.encode_rgb(np.array([[[4, 5, 6], [1, 2, 3]]])).tolist() == [[1, 0]]
    path.write_text("names: [a, b]\ncolors: [[1, 2, 3]]\n")
    with pytest.raises(ConfigError, match="one RGB colour"):
        load_classes(path)
    with pytest.raises(ConfigError, match="share a colour"):
        ClassTable(("a", "b"), np.zeros((2, 3)))
