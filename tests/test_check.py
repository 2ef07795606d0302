"""Validation of pairs (sizes, channels, CRS, label values) and the dataset check summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rasterio.crs import CRS
from affine import Affine

from changekit.data.check import check_dataset, format_summary, validate_pairs
from changekit.data.discover import discover_pairs
from changekit.data.io import GeoInfo, write_geotiff, write_png
from changekit.errors import ConfigError, ImageReadError, LabelValueError, SizeMismatchError

SIZE = 32


def _img(seed: int, size: int = SIZE, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size, channels), dtype=np.uint8)


def _label(seed: int, values: tuple[int, ...] = (0, 255), size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array(values, np.uint8), (size, size))


def make_set(root: Path, n: int = 3, values: tuple[int, ...] = (0, 255)) -> Path:
    for i in range(n):
        write_png(root / "A" / f"{i:03d}.png", _img(i))
        write_png(root / "B" / f"{i:03d}.png", _img(100 + i))
        write_png(root / "label" / f"{i:03d}.png", _label(i, values))
    return root


def test_valid_set_reports_encoding_and_values(tmp_path: Path) -> None:
    rep = validate_pairs(discover_pairs(make_set(tmp_path / "a")))
    assert (rep.encoding, rep.label_values, rep.channels) == ("0/255", [0, 255], 3)
    rep = validate_pairs(discover_pairs(make_set(tmp_path / "b", values=(0, 1, 255))))
    assert (rep.encoding, rep.label_values) == ("0/1", [0, 1, 255])


def test_image_size_mismatch_names_both_files(tmp_path: Path) -> None:
    make_set(tmp_path)
    write_png(tmp_path / "B" / "001.png", _img(0, size=24))
    with pytest.raises(SizeMismatchError) as err:
        validate_pairs(discover_pairs(tmp_path), check_values=False)
    msg = str(err.value)
    assert str(tmp_path / "A" / "001.png") in msg and str(tmp_path / "B" / "001.png") in msg
    assert "24 x 24 x 3 (B)" in msg


def test_label_size_and_channel_mismatch(tmp_path: Path) -> None:
    make_set(tmp_path)
    write_png(tmp_path / "label" / "002.png", _label(0, size=16))
    write_png(tmp_path / "B" / "000.png", _img(0)[:, :, 0])
    with pytest.raises(SizeMismatchError) as err:
        validate_pairs(discover_pairs(tmp_path))
    msg = str(err.value)
    assert "3 band(s) but" in msg and "has 1" in msg and str(tmp_path / "B" / "000.png") in msg
    assert "1 more problem" in msg
    recs = discover_pairs(tmp_path)[2:]
    with pytest.raises(SizeMismatchError, match=r"002.png is 16 x 16 \(label\)"):
        validate_pairs(recs)


def test_bad_label_values_name_file_and_values(tmp_path: Path) -> None:
    make_set(tmp_path)
    write_png(tmp_path / "label" / "001.png", _label(3, (0, 128, 255)))
    with pytest.raises(LabelValueError) as err:
        validate_pairs(discover_pairs(tmp_path))
    assert str(tmp_path / "label" / "001.png") in str(err.value) and "{0, 128, 255}" in str(err.value)
    validate_pairs(discover_pairs(tmp_path), check_values=False)  # sizes only: passes


def test_corrupt_png_raises_image_read_error(tmp_path: Path) -> None:
    make_set(tmp_path)
    (tmp_path / "A" / "001.png").write_bytes(b"not a png at all")
    with pytest.raises(ImageReadError, match="001.png"):
        validate_pairs(discover_pairs(tmp_path), check_values=False)


def _geo(epsg: int) -> GeoInfo:
    return GeoInfo(crs=CRS.from_epsg(epsg), transform=Affine(10, 0, 500000, 0, -10, 4000000))


def test_geotiff_crs_mismatch_names_files_and_crs(tmp_path: Path) -> None:
    write_geotiff(tmp_path / "A" / "t.tif", _img(0), _geo(32633))
    write_geotiff(tmp_path / "B" / "t.tif", _img(1), _geo(32633))
    write_geotiff(tmp_path / "label" / "t.tif", _label(0))
    validate_pairs(discover_pairs(tmp_path))  # same CRS: fine
    write_geotiff(tmp_path / "B" / "t.tif", _img(1), _geo(32634))
    with pytest.raises(SizeMismatchError) as err:
        validate_pairs(discover_pairs(tmp_path))
    msg = str(err.value)
    assert "EPSG:32633" in msg and "EPSG:32634" in msg
    assert str(tmp_path / "A" / "t.tif") in msg and str(tmp_path / "B" / "t.tif") in msg


def test_semantic_values_checked(tmp_path: Path) -> None:
    for d, seed in (("im1", 0), ("im2", 1)):
        write_png(tmp_path / d / "s.png", _img(seed))
    write_png(tmp_path / "label1" / "s.png", _label(0, (0, 1, 2)), palette=np.eye(3, dtype=np.uint8) * 255)
    write_png(tmp_path / "label2" / "s.png", _label(1, (0, 3, 6)))
    recs = discover_pairs(tmp_path)
    assert validate_pairs(recs, task="semantic").sem_values == [0, 1, 2, 3, 6]
    with pytest.raises(LabelValueError, match=r"label2.*\{3, 6\} outside 0\.\.2"):
        validate_pairs(recs, task="semantic", num_classes=3)
    write_png(tmp_path / "label2" / "s.png", _img(3))  # colours instead of class indices
    with pytest.raises(LabelValueError, match="colour image"):
        validate_pairs(discover_pairs(tmp_path), task="semantic")


def test_hiucd_mask_values_checked(tmp_path: Path) -> None:
    mask = np.stack([_label(0, (0, 8, 9)), _label(1, (2, 9)), _label(2, (0, 1, 255))], -1)
    for d, arr in (("a", _img(0)), ("b", _img(1)), ("m", mask)):
        write_png(tmp_path / d / "x.png", arr)
    (tmp_path / "l.txt").write_text("a/x.png b/x.png m/x.png m/x.png m/x.png\n")
    rep = validate_pairs(discover_pairs(tmp_path / "l.txt"), task="semantic")
    assert rep.sem_values == [0, 2, 8, 9] and rep.encoding is None
    mask[0, 0, 1] = 12
    write_png(tmp_path / "m" / "x.png", mask)
    with pytest.raises(LabelValueError, match=r"\{12\} outside 0\.\.8"):
        validate_pairs(discover_pairs(tmp_path / "l.txt"), task="semantic")


# --------------------------------------------------------------------------------------------- summary


def test_check_summary_values(tmp_path: Path) -> None:
    make_set(tmp_path, n=3)
    write_png(tmp_path / "A" / "big.png", _img(9, size=40))
    write_png(tmp_path / "B" / "big.png", _img(8, size=40))
    write_png(tmp_path / "label" / "big.png", np.zeros((40, 40), np.uint8))
    labels = [np.asarray(_label(i)) for i in range(3)]
    expected_ratio = sum((lab == 255).sum() for lab in labels) / (3 * SIZE * SIZE + 40 * 40)
    s = check_dataset(tmp_path)
    assert (s["pairs"], s["layout"], s["problems"]) == (4, "A|B|label", [])
    assert s["sizes"] == {"32 x 32": 3, "40 x 40": 1}
    assert (s["channels"], s["dtype"]) == ({3: 4}, {"uint8": 4})
    assert (s["label_values"], s["label_encoding"]) == ([0, 255], "0/255")
    assert s["change_ratio"] == pytest.approx(expected_ratio)
    text = format_summary(s)
    assert "A|B|label" in text and "32 x 32 (3)" in text and f"{100 * expected_ratio:.2f} %" in text
    assert "problems:      none" in text


def test_change_ratio_excludes_ignore(tmp_path: Path) -> None:
    lab = np.zeros((SIZE, SIZE), np.uint8)
    lab[:8] = 1
    lab[8:16] = 255
    write_png(tmp_path / "A" / "x.png", _img(0))
    write_png(tmp_path / "B" / "x.png", _img(1))
    write_png(tmp_path / "label" / "x.png", lab)
    s = check_dataset(tmp_path)
    assert s["label_encoding"] == "0/1" and s["change_ratio"] == pytest.approx(8 / 24)


def test_check_collects_all_problems(tmp_path: Path) -> None:
    make_set(tmp_path, n=6)
    (tmp_path / "B" / "000.png").unlink()  # unpaired
    write_png(tmp_path / "B" / "001.png", _img(0, size=24))  # size mismatch
    write_png(tmp_path / "label" / "002.png", _label(3, (0, 128, 255)))  # bad values
    good = (tmp_path / "A" / "003.png").read_bytes()
    (tmp_path / "A" / "003.png").write_bytes(good[: len(good) // 2])  # truncated: header fine, data cut
    (tmp_path / "label" / "004.png").write_bytes(b"garbage")  # corrupt
    s = check_dataset(tmp_path)
    probs = s["problems"]
    assert len(probs) == 5, probs
    for stem in ("000", "001", "002", "003", "004"):
        assert sum(f"{stem}" in p for p in probs) >= 1
    assert any("{0, 128, 255}" in p for p in probs)
    assert all("\n" not in p for p in probs)
    assert s["pairs"] == 5  # 000 has no partner; the rest are complete pairs with problems
    text = format_summary(s)
    assert "problems (5):" in text and text.count("\n  - ") == 5


def test_check_reports_orphan_label_duplicates_and_unlabelled_sets(tmp_path: Path) -> None:
    root = make_set(tmp_path / "a", n=2)
    write_png(root / "label" / "orphan.png", _label(0))
    write_geotiff(root / "B" / "001.tif", _img(0))
    probs = check_dataset(root)["problems"]
    assert len(probs) == 2
    assert any("'orphan'" in p and str(root / "A") in p and str(root / "B") in p for p in probs)
    assert any("001.png, 001.tif" in p for p in probs)
    unl = tmp_path / "u"
    for d in ("A", "B"):
        write_png(unl / d / "x.png", _img(0))
    s = check_dataset(unl)
    assert (s["layout"], s["pairs"], s["labelled"], s["change_ratio"], s["problems"]) == ("A|B", 1, 0, None, [])


def test_semantic_task_needs_class_maps(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="binary change label"):
        validate_pairs(discover_pairs(make_set(tmp_path)), task="semantic")


REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "oscd_rgb"


@pytest.mark.skipif(not REAL.is_dir(), reason="real data folder ../shared/data/oscd_rgb is absent")
def test_real_oscd_folder_and_comma_stem_list() -> None:
    s = check_dataset(REAL, decode_images=False)
    assert (s["pairs"], s["layout"], s["problems"], s["label_values"]) == (14, "A|B|label", [], [0, 255])
    assert 0 < s["change_ratio"] < 0.2
    recs = discover_pairs(REAL / "split_train.txt")  # one line of comma-separated stems
    assert len(recs) == 14 and recs[0].stem == "abudhabi"
