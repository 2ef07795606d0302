"""Tests of the HTML report and the overlay pictures (changekit.report)."""

from __future__ import annotations

import base64
import csv
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from changekit.report import colorize, overlay_errors, overlay_on_image, to_rgb8, write_report
from changekit.report.gallery import sample_f1
from changekit.report.plots import history_series, load_history

WHITE, RED, GREEN, BLACK, GREY = (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 0), (128, 128, 128)


def _images(html: str) -> dict[str, list[np.ndarray]]:
    """alt text -> decoded images of every embedded PNG."""
    found: dict[str, list[np.ndarray]] = {}
    for tag in re.findall(r"<img[^>]*>", html):
        src = re.search(r'src="data:image/png;base64,([^"]+)"', tag)
        assert src is not None, f"image without a PNG data URI: {tag[:80]}"
        alt = re.search(r'alt="([^"]*)"', tag).group(1)
        found.setdefault(alt, []).append(np.asarray(Image.open(io.BytesIO(base64.b64decode(src.group(1))))))
    return found


def _history_csv(path: Path) -> Path:
    """A sparse Lightning-CSVLogger-like history: step rows with train loss, epoch rows with val metrics."""
    rows = []
    for epoch in range(3):
        for k in range(2):
            step = epoch * 2 + k
            rows.append({"epoch": epoch, "step": step, "train/loss_step": 1.0 / (step + 1)})
        rows.append({"epoch": epoch, "step": epoch * 2 + 1, "val/f1": 0.5 + 0.1 * epoch, "val/loss": 0.9 - 0.2 * epoch})
    names = ["epoch", "step", "train/loss_step", "val/f1", "val/loss"]
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=names)
        writer.writeheader()
        writer.writerows(rows)
    return path


def _sample(size: int = 32, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    label = np.zeros((size, size), np.uint8)
    label[4:12, 4:12] = 1
    label[0, :] = 255
    pred = np.zeros((size, size), np.uint8)
    pred[6:14, 6:14] = 1
    return {
        "stem": "pair_<01>",
        "image_a": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "image_b": rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
        "label": label,
        "pred": pred,
        "prob": rng.random((size, size)).astype(np.float32),
    }


METRICS = {"precision": 0.912345, "recall": 0.87655, "f1": 0.894081, "iou": 0.808461, "oa": 0.990123,
           "kappa": 0.888712, "loss": 0.123456}


# --- overlays -------------------------------------------------------------------------------------------------


def test_overlay_errors_exact_colours() -> None:
    pred = np.array([[1, 1], [0, 0]])
    label = np.array([[1, 0], [1, 0]])
    out = overlay_errors(pred, label)
    assert out.dtype == np.uint8 and out.shape == (2, 2, 3)
    assert tuple(out[0, 0]) == WHITE  # TP
    assert tuple(out[0, 1]) == RED  # FP
    assert tuple(out[1, 0]) == GREEN  # FN
    assert tuple(out[1, 1]) == BLACK  # TN


def test_overlay_errors_ignore_and_validation() -> None:
    out = overlay_errors(np.array([[1, 0], [1, 0]]), np.array([[255, 255], [1, 0]]))
    assert tuple(out[0, 0]) == GREY and tuple(out[0, 1]) == GREY
    assert tuple(out[1, 0]) == WHITE and tuple(out[1, 1]) == BLACK
    with pytest.raises(ValueError, match="shape"):
        overlay_errors(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\[7\]"):
        overlay_errors(np.zeros((2, 2)), np.array([[0, 7], [1, 0]]))


def test_colorize_with_ignore() -> None:
    palette = np.array([[10, 20, 30], [40, 50, 60], [70, 80, 90]])
    out = colorize(np.array([[0, 1], [2, 255]]), palette, ignore_index=255)
    assert out.dtype == np.uint8
    assert out[0, 0].tolist() == [10, 20, 30] and out[0, 1].tolist() == [40, 50, 60]
    assert out[1, 0].tolist() == [70, 80, 90] and out[1, 1].tolist() == list(GREY)
    with pytest.raises(ValueError, match="index 3"):
        colorize(np.array([[0, 3]]), palette)
    with pytest.raises(ValueError, match="palette"):
        colorize(np.array([[0]]), np.zeros((3, 4)))


def test_overlay_on_image_blends_inside_mask_only() -> None:
    image = np.full((2, 2, 3), 100, np.uint8)
    out = overlay_on_image(image, np.array([[1, 0], [0, 0]]), color=(255, 0, 0), alpha=0.5)
    assert out[0, 0].tolist() == [178, 50, 50]  # rint(0.5 * 100 + 0.5 * 255) = rint(177.5) = 178
    assert (out[1] == 100).all() and (out[0, 1] == 100).all()
    with pytest.raises(ValueError, match="alpha"):
        overlay_on_image(image, np.zeros((2, 2)), alpha=2.0)


def test_to_rgb8_stretches_non_uint8() -> None:
    img = np.stack([np.linspace(0, 4000, 100).reshape(10, 10)] * 4, axis=-1).astype(np.uint16)
    out = to_rgb8(img)
    assert out.shape == (10, 10, 3) and out.dtype == np.uint8
    assert out.min() == 0 and out.max() == 255
    assert to_rgb8(np.zeros((3, 3), np.uint8)).shape == (3, 3, 3)
    chw = np.arange(3 * 8 * 9, dtype=np.uint8).reshape(3, 8, 9)
    np.testing.assert_array_equal(to_rgb8(chw), np.moveaxis(chw, 0, -1))


def test_sample_f1() -> None:
    s = _sample()
    valid = s["label"] != 255
    gt, pr = (s["label"] == 1) & valid, (s["pred"] == 1) & valid
    tp, fp, fn = (gt & pr).sum(), (~gt & pr).sum(), (gt & ~pr).sum()
    assert sample_f1(s["pred"], s["label"]) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert sample_f1(np.zeros((2, 2)), np.zeros((2, 2))) is None


# --- history --------------------------------------------------------------------------------------------------


def test_history_parsing_sparse_csv(tmp_path: Path) -> None:
    rows = load_history(_history_csv(tmp_path / "metrics.csv"))
    series = history_series(rows)
    assert series["val/f1"] == ([1.0, 3.0, 5.0], pytest.approx([0.5, 0.6, 0.7]))
    assert series["train/loss_step"][0] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert "epoch" not in series and "step" not in series
    assert load_history(tmp_path / "missing.csv") == []
    assert load_history(tmp_path) == rows  # a log folder is searched for metrics.csv


# --- write_report ---------------------------------------------------------------------------------------------


def test_write_report_is_self_contained_with_metrics_and_confusion(tmp_path: Path) -> None:
    out = write_report(
        tmp_path / "r" / "report.html", title="Test <run> & co", metrics={**METRICS, "miou": float("nan")},
        confusion=[[9812345, 40112], [51877, 412003]], info={"model": "bit <r18>"}, config={"lr": 1e-3},
    )
    assert out == tmp_path / "r" / "report.html"
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]
    html = out.read_text(encoding="utf-8")
    assert 'src="http' not in html and "<link" not in html and "<script" not in html
    assert "url(" not in html and "@import" not in html
    assert "Test &lt;run&gt; &amp; co" in html and "<run>" not in html
    assert "bit &lt;r18&gt;" in html
    for text in ("91.23", "87.66", "89.41", "80.85", "99.01", "88.87", "0.1235"):
        assert text in html, text
    assert "n/a" in html  # NaN metric
    assert "9,812,345" in html and "40,112" in html and "51,877" in html and "412,003" in html
    assert "99.59" in html and "11.18" in html  # row percentages
    assert "Training curves" not in html and "Samples" not in html  # absent inputs: no empty sections


def test_write_report_curves_from_csv(tmp_path: Path) -> None:
    csv_path = _history_csv(tmp_path / "metrics.csv")
    html = write_report(tmp_path / "a.html", title="t", metrics=METRICS, history=csv_path).read_text()
    curves = _images(html)["training curves"]
    assert len(curves) == 1 and curves[0].shape[0] > 100 and curves[0].shape[1] > 300
    assert curves[0][..., :3].std() > 10  # a real plot, not a blank image
    missing = write_report(tmp_path / "b.html", title="t", metrics=METRICS, history=tmp_path / "none.csv")
    assert "training curves" not in _images(missing.read_text())


def test_write_report_sample_gallery(tmp_path: Path) -> None:
    small, big = _sample(32, 0), _sample(300, 1)
    big["f1"] = 0.4242
    html = write_report(tmp_path / "g.html", title="t", metrics=METRICS, samples=[small, big]).read_text()
    images = _images(html)
    for alt in ("image A", "image B", "label", "prediction", "errors", "P(change)"):
        assert len(images[alt]) == 2, alt
    # Small samples are embedded exactly; large ones are cut down to 256 px.
    np.testing.assert_array_equal(images["errors"][0][..., :3], overlay_errors(small["pred"], small["label"]))
    np.testing.assert_array_equal(images["image A"][0][..., :3], small["image_a"])
    assert max(images["image A"][1].shape[:2]) == 256 and max(images["errors"][1].shape[:2]) == 256
    assert set(map(tuple, images["errors"][1][..., :3].reshape(-1, 3))) <= {WHITE, RED, GREEN, BLACK, GREY}
    assert f"F1 {100 * sample_f1(small['pred'], small['label']):.2f}" in html
    assert "F1 42.42" in html
    assert "pair_&lt;01&gt;" in html and "pair_<01>" not in html
    for word in ("TP", "FP", "FN", "false alarm", "missed change"):
        assert word in html


def test_write_report_semantic_section(tmp_path: Path) -> None:
    names = ["unchanged", "water", "low <veg> & grass"]
    palette = np.array([[255, 255, 255], [0, 0, 255], [0, 128, 0]])
    sample = _sample(16)
    sample["sem_a"] = np.zeros((16, 16), np.uint8)
    sample["sem_b"] = np.full((16, 16), 2, np.uint8)
    sample["sem_b"][0, 0] = 255
    transitions = np.array([[1000, 40000, 3], [5, 2000, 7], [11, 13, 3000]])
    html = write_report(
        tmp_path / "s.html", title="t", metrics={"miou": 0.5}, samples=[sample], class_names=names,
        palette=palette, transitions=transitions, pixel_area=0.25,
    ).read_text()
    assert "low &lt;veg&gt; &amp; grass" in html and "<veg>" not in html
    assert "rgb(0,0,255)" in html and "rgb(0,128,0)" in html  # legend swatches
    assert "40,000" in html and "1.00&#8239;ha" in html  # 40000 px * 0.25 m^2 = 1 ha
    assert "40,039" in html  # changed pixels: off-diagonal sum
    images = _images(html)
    np.testing.assert_array_equal(images["GT classes A"][0][..., :3], np.full((16, 16, 3), 255))
    sem_b = images["GT classes B"][0][..., :3]
    assert sem_b[0, 0].tolist() == list(GREY) and sem_b[5, 5].tolist() == [0, 128, 0]


def test_write_report_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="confusion"):
        write_report(tmp_path / "x.html", title="t", metrics=METRICS, confusion=[[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError, match="pred"):
        bad = [{"stem": "s", "label": np.zeros((2, 2))}]
        write_report(tmp_path / "x.html", title="t", metrics=METRICS, samples=bad)
    assert not list(tmp_path.iterdir())


def test_write_report_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.html"
    target.write_text("old report")

    def half_write(self: Path, text: str, **kwargs: object) -> int:
        with open(self, "w") as fh:
            fh.write(text[: len(text) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(Path, "write_text", half_write)
    with pytest.raises(OSError, match="disk full"):
        write_report(target, title="t", metrics=METRICS)
    monkeypatch.undo()
    assert target.read_text() == "old report"  # the previous report is untouched
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left behind
    (tmp_path / "new").mkdir()
    with pytest.raises(OSError):
        monkeypatch.setattr(Path, "write_text", half_write)
        write_report(tmp_path / "new" / "r.html", title="t", metrics=METRICS)
    assert not list((tmp_path / "new").iterdir())
