"""eval_masks on PNG/TIFF masks written in tmp_path: pairing, label conventions, errors, JSON output."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from changekit.data.io import write_geotiff, write_png
from changekit.errors import ConfigError, DatasetNotFoundError, LabelValueError, PairingError, SizeMismatchError
from changekit.evaluation import eval_masks

# image 1: TP 2, FP 1, FN 1, TN 5 ; image 2: TP 1, TN 7, one ignored pixel
PRED1 = np.array([[1, 1, 1], [0, 0, 0], [0, 0, 0]])
GT1 = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]])
PRED2 = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 1]])
GT2 = np.array([[1, 0, 0], [0, 0, 0], [0, 0, 255]])


def _binary_set(tmp_path, pred_scale: int = 255, gt_scale: int = 1) -> tuple:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    write_png(pred / "a.png", PRED1 * pred_scale)
    write_png(pred / "b.png", PRED2 * pred_scale)
    write_png(gt / "a.png", GT1 * gt_scale)
    write_png(gt / "b.png", GT2)  # {0,1,255}: the set is 0/1, so 255 = ignore
    return pred, gt


def test_binary_hand_computed_and_json(tmp_path) -> None:
    pred, gt = _binary_set(tmp_path)
    out = tmp_path / "res" / "metrics.json"
    res = eval_masks(pred, gt, out=out)
    assert set(res) == {"precision", "recall", "f1", "iou", "oa", "kappa", "confusion", "num_images"}
    assert res["confusion"] == [[12, 1], [1, 3]]  # TN 5+7, FP 1, FN 1, TP 2+1
    assert res["num_images"] == 2
    assert res["precision"] == pytest.approx(3 / 4)
    assert res["recall"] == pytest.approx(3 / 4)
    assert res["f1"] == pytest.approx(3 / 4)
    assert res["iou"] == pytest.approx(3 / 5)
    assert res["oa"] == pytest.approx(15 / 17)
    pe = (13 * 13 + 4 * 4) / 17**2
    assert res["kappa"] == pytest.approx((15 / 17 - pe) / (1 - pe))
    assert json.loads(out.read_text()) == res
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # no temporary file left


def test_binary_zero_one_conventions_and_mixed_suffixes(tmp_path) -> None:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    write_png(pred / "a.png", PRED1)  # 0/1 prediction
    write_png(pred / "b.png", PRED2)
    write_geotiff(gt / "a.tif", GT1.astype(np.uint8))  # 0/1 label as GeoTIFF
    write_png(gt / "b.png", GT2)
    (gt / "notes.txt").write_text("not an image")
    res = eval_masks(pred, gt)
    assert res["confusion"] == [[12, 1], [1, 3]]


def test_binary_convention_is_decided_for_the_whole_ground_truth(tmp_path) -> None:
    """A 0/1/255 file holding only background and ignore keeps its ignored pixels ignored: the convention comes
    from the whole set (any 1 makes it 0/1), as in data check, train and test, never from one file."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    write_png(pred / "a.png", PRED1 * 255)
    write_png(pred / "b.png", np.zeros((3, 3), np.uint8))
    write_png(gt / "a.png", GT1)  # holds 1: the set is 0/1, 255 = ignore
    write_png(gt / "b.png", np.where(GT2 == 255, 255, 0).astype(np.uint8))  # ignore and background only
    res = eval_masks(pred, gt)
    assert res["confusion"] == [[5 + 8, 1], [1, 2]]  # b's ignored pixel is neither change nor missed change
    write_png(gt / "a.png", GT1 * 255)  # now no file holds 1: the set is 0/255 and 255 means change
    assert eval_masks(pred, gt)["confusion"] == [[5 + 8, 1], [1 + 1, 2]]


def test_binary_label_value_errors(tmp_path) -> None:
    pred, gt = _binary_set(tmp_path)
    write_png(gt / "a.png", GT1 * 128)
    with pytest.raises(LabelValueError, match=r"a\.png.*\{0, 128\}"):
        eval_masks(pred, gt)
    pred, gt = _binary_set(tmp_path / "p2")
    write_png(pred / "b.png", PRED2 * 7)
    with pytest.raises(LabelValueError, match=r"b\.png.*\[0, 7\]"):
        eval_masks(pred, gt)


def test_binary_pairing_errors(tmp_path) -> None:
    pred, gt = _binary_set(tmp_path)
    write_png(pred / "c.png", PRED1 * 255)
    with pytest.raises(PairingError, match=rf"'c'.*no ground truth in {gt}"):
        eval_masks(pred, gt)
    (pred / "c.png").unlink()
    write_png(gt / "d.png", GT1 * 255)
    with pytest.raises(PairingError, match=rf"'d'.*no prediction in {pred}"):
        eval_masks(pred, gt)
    write_png(pred / "d.tif", PRED1 * 255)
    write_png(pred / "d.png", PRED1 * 255)
    with pytest.raises(PairingError, match="twice"):
        eval_masks(pred, gt)


def test_binary_size_mismatch_and_missing_folder(tmp_path) -> None:
    pred, gt = _binary_set(tmp_path)
    write_png(pred / "b.png", np.zeros((4, 3), np.uint8))
    with pytest.raises(SizeMismatchError, match=r"pred/b\.png.*gt/b\.png"):
        eval_masks(pred, gt)
    with pytest.raises(DatasetNotFoundError):
        eval_masks(tmp_path / "nope", gt)
    with pytest.raises(ConfigError, match="did you mean 'binary'"):
        eval_masks(pred, gt, task="binnary")


# ----------------------------------------------------------------------------- semantic
GT_A = [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 255, 2]]
GT_B = [[0, 1, 1, 1], [0, 2, 1, 0], [2, 2, 0, 0], [2, 2, 255, 1]]
GT_C = [[0, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 1], [0, 255, 0, 1]]
PR_A = [[0, 0, 1, 1], [0, 0, 1, 2], [2, 2, 2, 2], [2, 2, 0, 2]]
PR_B = [[0, 1, 1, 0], [0, 0, 1, 0], [2, 1, 0, 2], [2, 2, 0, 1]]
PR_C = [[0, 1, 0, 1], [0, 1, 0, 1], [0, 1, 0, 1], [0, 0, 0, 1]]
PALETTE = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]])


def _semantic_set(tmp_path, with_change: bool = True) -> tuple:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    write_png(pred / "label1" / "t.png", np.array(PR_A), palette=PALETTE)  # palette indices
    write_png(pred / "label2" / "t.png", np.array(PR_B), palette=PALETTE)
    write_png(gt / "label1" / "t.png", np.array(GT_A))  # grey indices
    write_png(gt / "label2" / "t.png", np.array(GT_B))
    if with_change:
        write_png(pred / "change" / "t.png", np.array(PR_C) * 255)
        write_png(gt / "change" / "t.png", np.array(GT_C))
    return pred, gt


def test_semantic_with_change_folders_matches_hand_values(tmp_path) -> None:
    pred, gt = _semantic_set(tmp_path)
    res = eval_masks(pred, gt, out=tmp_path / "scd.json", task="semantic", num_classes=3)
    # the same hand-computed example as tests/test_metrics_scd.py
    assert res["num_images"] == 1
    assert res["sek"] == pytest.approx(47 / 191 * math.exp(10 / 16 - 1))
    assert res["fscd"] == pytest.approx(14 / 26)
    assert res["bcd_iou"] == pytest.approx(5 / 8)
    assert res["miou_sc"] == pytest.approx((1 + 7 / 11) / 6)
    assert json.loads((tmp_path / "scd.json").read_text())["sek"] == pytest.approx(res["sek"])


def test_semantic_without_change_folder_uses_label_difference(tmp_path) -> None:
    pred, gt = _semantic_set(tmp_path, with_change=False)
    res = eval_masks(pred, gt, task="semantic", num_classes=3)
    # pred change = PR_A != PR_B -> p1 p3 p7 p9 p10 p15; gt change = GT_A != GT_B -> p1 p5 p7 p10 p11 p15,
    # p14 (255 in both) ignored: TP p1 p7 p10 p15, FP p3 p9, FN p5 p11, TN 7
    assert res["bcd_iou"] == pytest.approx(4 / 8)
    assert res["bcd_precision"] == pytest.approx(4 / 6)
    assert res["bcd_recall"] == pytest.approx(4 / 6)
    assert res["bcd_oa"] == pytest.approx(11 / 15)


def test_semantic_errors(tmp_path) -> None:
    pred, gt = _semantic_set(tmp_path)
    with pytest.raises(ConfigError, match="--num-classes"):
        eval_masks(pred, gt, task="semantic")
    write_png(pred / "label2" / "t.png", np.array(PR_B) + 3)
    with pytest.raises(LabelValueError, match=r"label2/t\.png.*\[3, 4, 5\]"):
        eval_masks(pred, gt, task="semantic", num_classes=3)
    pred, gt = _semantic_set(tmp_path / "x")
    write_png(gt / "label1" / "t.png", np.array(GT_A) * 0 + 7)
    with pytest.raises(LabelValueError, match=r"gt/label1/t\.png.*\[7\]"):
        eval_masks(pred, gt, task="semantic", num_classes=3)
    pred, gt = _semantic_set(tmp_path / "y")
    write_png(gt / "change" / "t.png", np.zeros((5, 4), np.uint8))
    with pytest.raises(SizeMismatchError, match=r"change/t\.png"):
        eval_masks(pred, gt, task="semantic", num_classes=3)
    pred, gt = _semantic_set(tmp_path / "z")
    write_png(gt / "label2" / "u.png", np.array(GT_B))
    with pytest.raises(PairingError, match="'u'"):
        eval_masks(pred, gt, task="semantic", num_classes=3)
