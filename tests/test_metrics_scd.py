"""SCDMetrics on a hand-made 4x4, 3-class example: standard SECOND metrics and ClearSCD's variants.

Pixel walk-through (row-major p0..p15; gt a/b/change | pred a/b/M):
p1  0 1 1 | 0 1 1  TP, both dates right      p3  1 1 0 | 1 0 1  FP
p5  0 2 1 | 0 0 1  TP with P_A == P_B         p7  1 0 1 | 2 0 1  TP, A wrong
p9  2 2 0 | 2 1 1  FP                         p10 2 0 1 | 2 0 0  FN
p11 2 0 1 | 2 2 1  TP with P_A == P_B         p13 2 2 255 | 2 2 0 change label ignored
p14 255 255 0 | 0 0 0 semantics unlabeled     p15 2 1 1 | 2 1 1  TP, both right
the rest are unchanged and right.
"""

from __future__ import annotations

import math

import pytest
import torch

from changekit.errors import LabelValueError
from changekit.metrics import SCDMetrics

GT_A = [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 255, 2]]
GT_B = [[0, 1, 1, 1], [0, 2, 1, 0], [2, 2, 0, 0], [2, 2, 255, 1]]
GT_C = [[0, 1, 0, 0], [0, 1, 0, 1], [0, 0, 1, 1], [0, 255, 0, 1]]
PR_A = [[0, 0, 1, 1], [0, 0, 1, 2], [2, 2, 2, 2], [2, 2, 0, 2]]
PR_B = [[0, 1, 1, 0], [0, 0, 1, 0], [2, 1, 0, 2], [2, 2, 0, 1]]
PR_C = [[0, 1, 0, 1], [0, 1, 0, 1], [0, 1, 0, 1], [0, 0, 0, 1]]


def _maps(ignore: int = 255) -> list[torch.Tensor]:
    out = [torch.tensor(m) for m in (PR_A, PR_B, PR_C, GT_A, GT_B, GT_C)]
    for t in out[3:5]:
        t[t == 255] = ignore
    return out


def _assert_same(got: dict, ref: dict) -> None:
    assert got.keys() == ref.keys()
    for key, value in ref.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key


@pytest.fixture(scope="module")
def result() -> dict:
    return SCDMetrics(3).update(*_maps()).compute()


def test_standard_second_metrics(result: dict) -> None:
    # per-date maps pooled, 4x4 matrix rows GT (0 = no change):
    # [[14,1,2,1],[1,3,0,1],[0,0,2,1],[1,1,0,2]]; p13 dropped (change label 255)
    iou_nc, iou_c = 14 / 20, 10 / 16
    assert result["iou_nc"] == pytest.approx(iou_nc)
    assert result["iou_c"] == pytest.approx(iou_c)
    assert result["miou_scd"] == pytest.approx(0.6625)
    k_n0 = 47 / 191  # N' = 16, trace' = 7, rows' (4,5,3,4), cols' (2,5,4,5)
    assert result["kappa_n0"] == pytest.approx(k_n0)
    assert result["sek"] == pytest.approx(k_n0 * math.exp(iou_c - 1))
    assert result["scd_precision"] == pytest.approx(7 / 14)
    assert result["scd_recall"] == pytest.approx(7 / 12)
    assert result["fscd"] == pytest.approx(14 / 26)
    assert result["score"] == pytest.approx(0.3 * 0.6625 + 0.7 * k_n0 * math.exp(iou_c - 1))


def test_clearscd_binary_and_mod(result: dict) -> None:
    # BCD [[7,2],[1,5]]; mod moves the 2 TPs with P_A == P_B (p5, p11) to FP: [[7,4],[1,3]]
    assert result["bcd_iou"] == pytest.approx(5 / 8)
    assert result["bcd_f1"] == pytest.approx(10 / 13)
    assert result["bcd_precision"] == pytest.approx(5 / 7)
    assert result["bcd_recall"] == pytest.approx(5 / 6)
    assert result["bcd_iou_mod"] == pytest.approx(3 / 8)
    assert result["bcd_f1_mod"] == pytest.approx(6 / 11)


def test_clearscd_segmentation_pooled(result: dict) -> None:
    # A and B pooled, p14 ignored in both: rows GT [[8,0,1],[1,7,1],[1,1,10]]
    assert result["seg_iou_per_class"] == pytest.approx([8 / 11, 7 / 10, 10 / 14])
    assert result["seg_miou"] == pytest.approx((8 / 11 + 7 / 10 + 10 / 14) / 3)
    assert result["seg_mf1"] == pytest.approx((16 / 19 + 14 / 17 + 20 / 24) / 3)
    assert result["seg_oa"] == pytest.approx(25 / 30)


def test_clearscd_fromto_kappa_and_sek(result: dict) -> None:
    # GT from-to: no change (9) from semantic equality, so p13 counts despite its 255 change label;
    # p14 (unlabeled semantics) dropped. 15 pixels, trace 9, sum(row*col) = 78.
    assert result["oa_scd"] == pytest.approx(9 / 15)
    assert result["kappa"] == pytest.approx((135 - 78) / (225 - 78))
    # (9,9) zeroed: N' = 8, trace' = 2, pe' = 8/64 -> kappa 1/7; IoU from the BCD evaluator
    assert result["clearscd_sek"] == pytest.approx(1 / 7 * math.exp(5 / 8 - 1))
    assert result["clearscd_sek_mod"] == pytest.approx(1 / 7 * math.exp(3 / 8 - 1))
    assert result["overall_score"] == pytest.approx(0.3 * 5 / 8 + 0.7 / 7 * math.exp(5 / 8 - 1))
    assert result["overall_score_mod"] == pytest.approx(0.3 * 3 / 8 + 0.7 / 7 * math.exp(3 / 8 - 1))


def test_clearscd_consistency_mious(result: dict) -> None:
    # mIoU_sc: 7 types (6 = unchanged); IoU sum = 1/2 + 1/2 + 7/11; GT codes seen {0,1,2,4,5,6,7} -> / 6.
    # (pred p5 (0,0) falls on type 0 and p11 (2,2) on "unchanged": ClearSCD's searchsorted quirk)
    assert result["miou_sc"] == pytest.approx((1 + 7 / 11) / 6)
    # mIoU_nc: IoU 2/3 for classes 0..2, change class replaced by BCD IoU 5/8; GT codes {0..4} -> / 4
    assert result["miou_nc"] == pytest.approx((2 + 5 / 8) / 4)
    # mIoU_bc: M as reference vs PCC, all 16 pixels: [[8,1],[2,5]]
    assert result["miou_bc"] == pytest.approx((8 / 11 + 5 / 8) / 2)
    assert result["num_pixels"] == 16


def test_ignore_value_is_a_parameter() -> None:
    ref = SCDMetrics(3).update(*_maps()).compute()
    got = SCDMetrics(3, ignore_index=3).update(*_maps(ignore=3)).compute()
    _assert_same(got, ref)


def test_streaming_equals_one_shot() -> None:
    maps = _maps()
    one = SCDMetrics(3).update(*maps).compute()
    stream = SCDMetrics(3)
    stream.update(*(m[:2] for m in maps))
    stream.update(*(m[2:] for m in maps))
    _assert_same(stream.compute(), one)
    stream.reset()
    assert stream.compute()["num_pixels"] == 0 and stream.compute()["sek"] == 0.0


def test_ignored_pixels_do_not_count_where_documented() -> None:
    maps = _maps()
    base = SCDMetrics(3).update(*maps).compute()
    changed = [m.clone() for m in maps]
    changed[2][3, 1] = 1  # predict change at p13 (change label 255)
    changed[0][3, 2] = 2  # other prediction at p14 (semantics unlabeled): only mIoU_nc/bc/sc see it
    moved = SCDMetrics(3).update(*changed).compute()
    for key in ("bcd_iou", "bcd_f1", "sek", "fscd", "miou_scd", "seg_miou"):
        assert moved[key] == pytest.approx(base[key]), key
    # ClearSCD's from-to matrix takes p13 as "no change" from semantic equality, so it does move
    assert moved["oa_scd"] == pytest.approx(8 / 15)


def test_derived_change_maps() -> None:
    pa, pb, _, ga, gb, _ = _maps()
    gc = (ga != gb).long()
    gc[(ga == 255) | (gb == 255)] = 255
    explicit = SCDMetrics(3).update(pa, pb, (pa != pb).long(), ga, gb, gc).compute()
    derived = SCDMetrics(3).update(pa, pb, None, ga, gb, None).compute()
    _assert_same(derived, explicit)


def test_bad_values_raise() -> None:
    pa, pb, pc, ga, gb, gc = _maps()
    with pytest.raises(LabelValueError, match="gt_a"):
        SCDMetrics(3).update(pa, pb, pc, ga + 7, gb, gc)
    with pytest.raises(LabelValueError, match="gt_change"):
        SCDMetrics(3).update(pa, pb, pc, ga, gb, gc * 2)
    with pytest.raises(ValueError, match="pred_b"):
        SCDMetrics(3).update(pa, pb + 3, pc, ga, gb, gc)
    with pytest.raises(ValueError, match="shapes"):
        SCDMetrics(3).update(pa, pb[:2], pc, ga, gb, gc)
    with pytest.raises(ValueError, match="outside the class range"):
        SCDMetrics(3, ignore_index=1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu() -> None:
    cpu = SCDMetrics(3).update(*_maps()).compute()
    gpu = SCDMetrics(3).update(*(m.cuda() for m in _maps())).compute()
    _assert_same(gpu, cpu)
