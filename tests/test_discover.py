"""Pair discovery: folder layouts, path lists, errors, and list writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from changekit.data.discover import LAYOUTS, PairRecord, detect_layout, discover, discover_pairs, get_layout
from changekit.data.io import write_geotiff, write_png
from changekit.data.lists import write_lists
from changekit.errors import ConfigError, DatasetNotFoundError, PairingError

SIZE = 32


def _img(seed: int, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (SIZE, SIZE, channels), dtype=np.uint8)


def _label(seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((SIZE, SIZE)) > 0.8).astype(np.uint8) * 255


def make_folder(root: Path, folders: tuple[str, ...], stems: list[str], skip: dict[str, list[str]] | None = None
                ) -> Path:
    """One PNG per stem in every folder; the first two folders are images, the rest labels."""
    skip = skip or {}
    for i, stem in enumerate(stems):
        for j, folder in enumerate(folders):
            if stem in skip.get(folder, []):
                continue
            write_png(root / folder / f"{stem}.png", _img(i) if j < 2 else _label(i))
    return root


STEMS = ["003", "001", "002"]


@pytest.mark.parametrize(
    ("folders", "name", "kind"),
    [
        (("A", "B", "label"), "A|B|label", "binary"),
        (("A", "B", "bcd"), "A|B|bcd", "binary"),
        (("time1", "time2", "label"), "time1|time2|label", "binary"),
        (("im1", "im2", "label1", "label2"), "im1|im2|label1|label2", "semantic"),
    ],
)
def test_each_labelled_layout_is_detected_and_paired_by_stem(tmp_path: Path, folders, name, kind) -> None:
    make_folder(tmp_path, folders, STEMS)
    found = discover(tmp_path)
    assert found.layout == name
    assert [r.stem for r in found.records] == ["001", "002", "003"]
    for rec in found.records:
        assert rec.a == tmp_path / folders[0] / f"{rec.stem}.png"
        assert rec.b == tmp_path / folders[1] / f"{rec.stem}.png"
        assert rec.label == tmp_path / folders[2] / f"{rec.stem}.png"
        assert rec.label_kind == kind
    if kind == "semantic":
        assert all(r.label_b == tmp_path / "label2" / f"{r.stem}.png" and r.change is None for r in found.records)
        assert found.records[0].is_semantic


def test_semantic_layout_picks_up_binary_change_folder(tmp_path: Path) -> None:
    make_folder(tmp_path, ("im1", "im2", "label1", "label2", "label"), STEMS)
    recs = discover_pairs(tmp_path)
    assert [r.change for r in recs] == [tmp_path / "label" / f"{s}.png" for s in ("001", "002", "003")]


def test_unlabelled_layout_needs_require_labels_false(tmp_path: Path) -> None:
    make_folder(tmp_path, ("A", "B"), STEMS)
    with pytest.raises(DatasetNotFoundError, match="require_labels=False"):
        discover_pairs(tmp_path)
    recs = discover_pairs(tmp_path, require_labels=False)
    assert [r.stem for r in recs] == ["001", "002", "003"] and all(r.label is None for r in recs)
    assert detect_layout(tmp_path, require_labels=False).name == "A|B"


def test_folder_names_are_case_insensitive(tmp_path: Path) -> None:
    make_folder(tmp_path, ("a", "b", "Label"), STEMS)
    recs = discover_pairs(tmp_path)
    assert recs[0].label == tmp_path / "Label" / "001.png"


def test_named_layout_and_alias(tmp_path: Path) -> None:
    make_folder(tmp_path, ("A", "B", "label", "bcd"), STEMS)
    assert discover(tmp_path).layout == "A|B|label"  # first in detection order
    assert discover(tmp_path, layout="open-cd").records[0].label.parent.name == "bcd"
    assert get_layout("SECOND").name == "im1|im2|label1|label2"
    with pytest.raises(ConfigError, match="did you mean"):
        discover(tmp_path, layout="A|B|labels")
    with pytest.raises(DatasetNotFoundError, match="time1"):
        discover(tmp_path, layout="sysu")


def test_sorting_and_mixed_suffixes_pair_by_stem_not_order(tmp_path: Path) -> None:
    for i, stem in enumerate(["b", "c", "a"]):
        write_png(tmp_path / "A" / f"{stem}.png", _img(i))
        write_geotiff(tmp_path / "B" / f"{stem}.tif", _img(i))
        write_png(tmp_path / "label" / f"{stem}.PNG", _label(i))
    (tmp_path / "A" / "notes.txt").write_text("x")
    (tmp_path / "A" / ".a.tmp.png").write_bytes(b"")
    recs = discover_pairs(tmp_path)
    assert [(r.stem, r.a.name, r.b.name, r.label.name) for r in recs] == [
        ("a", "a.png", "a.tif", "a.PNG"), ("b", "b.png", "b.tif", "b.PNG"), ("c", "c.png", "c.tif", "c.PNG")]


def test_missing_root_names_root_and_layouts(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(DatasetNotFoundError) as err:
        discover_pairs(missing)
    assert str(missing) in str(err.value)
    assert all(lay.name in str(err.value) for lay in LAYOUTS)


def test_unknown_layout_lists_folders_and_split_hint(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    with pytest.raises(DatasetNotFoundError, match="point at one of them") as err:
        discover_pairs(tmp_path)
    assert "train" in str(err.value)


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    for name in ("A", "B", "label"):
        (tmp_path / name).mkdir()
    with pytest.raises(DatasetNotFoundError, match="no images"):
        discover_pairs(tmp_path)


def test_unpaired_image_names_stem_and_expected_folder(tmp_path: Path) -> None:
    make_folder(tmp_path, ("A", "B", "label"), ["x", "y", "z"], skip={"B": ["y"]})
    with pytest.raises(PairingError) as err:
        discover_pairs(tmp_path)
    msg = str(err.value)
    assert "'y'" in msg and str(tmp_path / "B") in msg and "'x'" not in msg


def test_unpaired_label_is_reported(tmp_path: Path) -> None:
    make_folder(tmp_path, ("A", "B", "label"), ["x", "y"], skip={"label": ["x"]})
    write_png(tmp_path / "label" / "orphan.png", _label(0))
    with pytest.raises(PairingError) as err:
        discover_pairs(tmp_path)
    msg = str(err.value)
    assert "'x'" in msg and str(tmp_path / "label") in msg
    assert "'orphan'" in msg and str(tmp_path / "A") in msg


def test_many_unpaired_files_are_truncated_with_count(tmp_path: Path) -> None:
    stems = [f"s{i}" for i in range(8)]
    make_folder(tmp_path, ("A", "B", "label"), stems, skip={"B": stems[1:]})
    with pytest.raises(PairingError, match="and 2 more"):
        discover_pairs(tmp_path)
    found = discover(tmp_path, strict=False)
    assert [r.stem for r in found.records] == ["s0"] and len(found.problems) == 7


def test_two_files_with_one_stem_is_ambiguous(tmp_path: Path) -> None:
    make_folder(tmp_path, ("A", "B", "label"), ["x"])
    write_geotiff(tmp_path / "A" / "x.tif", _img(0))
    with pytest.raises(PairingError, match="x.png, x.tif|x.tif, x.png"):
        discover_pairs(tmp_path)


# ----------------------------------------------------------------------------------------------- lists


@pytest.fixture
def levir(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "levir", ("A", "B", "label"), ["001", "002", "003"])


def _rel_lines(root: Path, stems: list[str], sep: str = " ") -> str:
    return "\n".join(sep.join(f"{d}/{s}.png" for d in ("A", "B", "label")) for s in stems) + "\n"


def test_three_path_list_relative_to_list_folder(levir: Path) -> None:
    lst = levir / "train.txt"
    lst.write_text("# comment\n\n" + _rel_lines(levir, ["003", "001"]))
    found = discover(lst)
    assert found.layout == "paths(A B label)"
    assert [r.stem for r in found.records] == ["001", "003"]
    assert found.records[0].label == levir / "label" / "001.png"


def test_list_relative_to_given_root(levir: Path, tmp_path: Path) -> None:
    lst = tmp_path / "lists" / "val.txt"
    lst.parent.mkdir()
    lst.write_text(_rel_lines(levir, ["002"]))
    with pytest.raises(DatasetNotFoundError, match="line 1"):
        discover_pairs(lst)
    recs = discover_pairs(lst, root=levir)
    assert recs[0].a == levir / "A" / "002.png"


def test_changeclip_two_space_absolute_list(levir: Path, tmp_path: Path) -> None:
    lines = ["  ".join(str(levir / d / f"{s}.png") for d in ("A", "B", "label")) for s in ("002", "001")]
    lst = tmp_path / "clip.txt"
    lst.write_text("\n".join(lines))
    recs = discover_pairs(lst, root=tmp_path / "elsewhere")  # absolute paths ignore root
    assert [(r.stem, r.b) for r in recs] == [("001", levir / "B" / "001.png"), ("002", levir / "B" / "002.png")]


def test_clearscd_five_path_line_is_one_hiucd_mask(tmp_path: Path) -> None:
    write_png(tmp_path / "2018" / "7_a.png", _img(0))
    write_png(tmp_path / "2019" / "7_a.png", _img(1))
    write_png(tmp_path / "mask" / "7_a.png", _img(2))
    lst = tmp_path / "train.txt"
    lst.write_text("2018/7_a.png 2019/7_a.png mask/7_a.png mask/7_a.png mask/7_a.png\n")
    found = discover(lst)
    rec = found.records[0]
    assert (rec.stem, rec.label_kind, rec.label, rec.label_b, rec.change) == (
        "7_a", "hiucd", tmp_path / "mask" / "7_a.png", None, None)
    assert "ClearSCD" in found.layout and rec.is_semantic


def test_four_and_distinct_five_path_lines_are_semantic(tmp_path: Path) -> None:
    make_folder(tmp_path, ("im1", "im2", "label1", "label2", "label"), ["p"])
    lst = tmp_path / "l.txt"
    lst.write_text("im1/p.png im2/p.png label1/p.png label2/p.png\n")
    rec = discover_pairs(lst)[0]
    assert (rec.label_kind, rec.label.parent.name, rec.label_b.parent.name, rec.change) == (
        "semantic", "label1", "label2", None)
    lst.write_text("im1/p.png im2/p.png label1/p.png label2/p.png label/p.png\n")
    assert discover_pairs(lst)[0].change == tmp_path / "label" / "p.png"


def test_two_path_list_is_unlabelled(levir: Path) -> None:
    lst = levir / "pred.txt"
    lst.write_text("A/001.png B/001.png\nA/002.png\tB/002.png\n")
    with pytest.raises(DatasetNotFoundError, match="require_labels=False"):
        discover_pairs(lst)
    recs = discover_pairs(lst, require_labels=False)
    assert [r.stem for r in recs] == ["001", "002"] and all(r.label is None for r in recs)


def test_stem_list_resolves_against_root(levir: Path, tmp_path: Path) -> None:
    lst = tmp_path / "dataset_list" / "sysucd-train-1%.txt"
    lst.parent.mkdir()
    lst.write_text("003\n001\n")
    with pytest.raises(DatasetNotFoundError, match="pass root="):
        discover_pairs(lst)  # the list's own folder holds no dataset
    found = discover(lst, root=levir)
    assert found.layout == "stems(A|B|label)"
    assert [(r.stem, r.label) for r in found.records] == [
        ("001", levir / "label" / "001.png"), ("003", levir / "label" / "003.png")]


def test_stem_list_in_root_folder_and_comma_form(levir: Path) -> None:
    (levir / "few.txt").write_text("002,001\n")
    assert [r.stem for r in discover_pairs(levir / "few.txt")] == ["001", "002"]


def test_stem_list_unknown_stem_names_line_and_folder(levir: Path) -> None:
    (levir / "few.txt").write_text("001\n999\n")
    with pytest.raises(PairingError) as err:
        discover_pairs(levir / "few.txt")
    msg = str(err.value)
    assert "line 2" in msg and "'999'" in msg and str(levir / "A") in msg


def test_wrong_field_count_names_file_and_line(levir: Path) -> None:
    lst = levir / "bad.txt"
    lst.write_text(_rel_lines(levir, ["001", "002"]) + "A/003.png B/003.png\n")
    with pytest.raises(PairingError) as err:
        discover_pairs(lst)
    assert str(lst) in str(err.value) and "line 3" in str(err.value)
    lst.write_text("a b c d e f\n")
    with pytest.raises(PairingError, match="6 fields"):
        discover_pairs(lst)


def test_list_duplicate_stem_and_empty_list(levir: Path) -> None:
    lst = levir / "dup.txt"
    lst.write_text(_rel_lines(levir, ["001", "001"]))
    with pytest.raises(PairingError, match="line 2: stem '001' already used on line 1"):
        discover_pairs(lst)
    lst.write_text("# only a comment\n")
    with pytest.raises(DatasetNotFoundError, match="no entries"):
        discover_pairs(lst)


def test_windows_separators_in_relative_list(levir: Path) -> None:
    (levir / "win.txt").write_text("A\\001.png B\\001.png label\\001.png\r\n")
    assert discover_pairs(levir / "win.txt")[0].label == levir / "label" / "001.png"


# -------------------------------------------------------------------------------------------- writing


def test_write_paths_relative_round_trips(levir: Path) -> None:
    out = levir / "all.txt"
    assert write_lists(levir, out) == 3
    assert out.read_text().splitlines()[0] == "A/001.png B/001.png label/001.png"
    assert discover_pairs(out) == discover_pairs(levir)
    assert not [p for p in levir.iterdir() if p.name.startswith(".")]  # no temp file left


def test_write_paths_absolute_and_stems(levir: Path, tmp_path: Path) -> None:
    out = tmp_path / "lists" / "abs.txt"
    write_lists(levir, out, absolute=True)
    assert out.read_text().split()[0] == str((levir / "A" / "001.png").absolute())
    assert discover_pairs(out) == discover_pairs(levir)
    stems = tmp_path / "lists" / "stems.txt"
    assert write_lists(levir, stems, fmt="stems", stems=["003", "001"]) == 2
    assert stems.read_text() == "001\n003\n"
    assert [r.stem for r in discover_pairs(stems, root=levir)] == ["001", "003"]


def test_write_semantic_lists_and_errors(tmp_path: Path) -> None:
    make_folder(tmp_path / "second", ("im1", "im2", "label1", "label2"), ["a"])
    write_lists(tmp_path / "second", tmp_path / "second" / "l.txt")
    assert (tmp_path / "second" / "l.txt").read_text() == "im1/a.png im2/a.png label1/a.png label2/a.png\n"
    rec = discover_pairs(tmp_path / "second" / "l.txt")[0]
    assert rec == PairRecord("a", *(tmp_path / "second" / d / "a.png" for d in ("im1", "im2", "label1", "label2")),
                             label_kind="semantic")
    with pytest.raises(ConfigError, match="stems"):
        write_lists(tmp_path / "second", tmp_path / "x.txt", fmt="csv")
    spaced = make_folder(tmp_path / "with space", ("A", "B", "label"), ["a"])
    with pytest.raises(ConfigError, match="whitespace"):
        write_lists(spaced, tmp_path / "y.txt", absolute=True)


def test_pair_record_from_strings_and_bad_kind() -> None:
    rec = PairRecord("x", "a/x.png", "b/x.png", "l/x.png")
    assert rec.a == Path("a/x.png") and rec.files() == [Path("a/x.png"), Path("b/x.png"), Path("l/x.png")]
    assert not rec.is_semantic and PairRecord("x", "a", "b", "m", label_kind="hiucd").is_semantic
    with pytest.raises(ConfigError, match="label_kind"):
        PairRecord("x", "a", "b", label_kind="rgb")


def test_pair_folders_for_prediction(tmp_path: Path) -> None:
    """Two separate folders pair by stem; partners and duplicates are checked like layouts."""
    from changekit.data.discover import pair_folders

    img = np.zeros((8, 8, 3), np.uint8)
    for folder, stems in (("x", ["p1", "p2"]), ("y", ["p2", "p1"])):
        for stem in stems:
            write_png(tmp_path / folder / f"{stem}.png", img)
    recs = pair_folders(tmp_path / "x", tmp_path / "y")
    assert [(r.stem, r.a.parent.name, r.b.parent.name) for r in recs] == [("p1", "x", "y"), ("p2", "x", "y")]
    write_png(tmp_path / "x" / "p3.png", img)
    with pytest.raises(PairingError, match=r"'p3' .* has no partner in .*y"):
        pair_folders(tmp_path / "x", tmp_path / "y")
    with pytest.raises(DatasetNotFoundError, match="folder not found"):
        pair_folders(tmp_path / "x", tmp_path / "nope")
