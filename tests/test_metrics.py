"""Metric formulas against hand-computed matrices, ignore handling, streaming and DDP summation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from changekit.metrics import (
    ConfusionMatrix,
    SCDMetrics,
    binary_metrics,
    kappa,
    second_metrics,
    semantic_metrics,
)

# ----------------------------------------------------------------------------- confusion core


def test_confusion_counts_rows_gt_and_drops_ignored_targets() -> None:
    target = torch.tensor([[0, 1, 1], [255, 2, 7]])
    pred = torch.tensor([[0, 0, 1], [9, 1, 1]])  # 9 and the pred under target 7 are never counted
    cm = ConfusionMatrix(3).update(pred, target)
    assert cm.matrix.dtype == torch.int64
    assert cm.matrix.tolist() == [[1, 0, 0], [1, 1, 0], [0, 1, 0]]


def test_confusion_ignore_index_inside_range_and_bad_inputs() -> None:
    cm = ConfusionMatrix(3, ignore_index=0).update(torch.tensor([1, 2, 2]), torch.tensor([0, 2, 1]))
    assert cm.matrix.sum() == 2 and cm.matrix[2, 2] == 1 and cm.matrix[1, 2] == 1
    with pytest.raises(ValueError, match="outside"):
        ConfusionMatrix(2).update(torch.tensor([0, 2]), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        ConfusionMatrix(2).update(torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(ValueError, match="integer"):
        ConfusionMatrix(2).update(torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))


def test_streaming_merge_add_equal_one_shot() -> None:
    gen = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (6, 9, 9), generator=gen)
    target = torch.randint(0, 5, (6, 9, 9), generator=gen)
    target[target == 4] = 255
    whole = ConfusionMatrix(4).update(pred, target)
    stream = ConfusionMatrix(4)
    for i in range(6):
        stream.update(pred[i], target[i])
    left = ConfusionMatrix(4).update(pred[:2], target[:2])
    right = ConfusionMatrix(4).update(pred[2:], target[2:])
    assert torch.equal(stream.matrix, whole.matrix)
    assert torch.equal((left + right).matrix, whole.matrix)
    assert torch.equal(left.copy().merge(right).matrix, whole.matrix)
    assert int(whole.matrix.sum()) == int((target != 255).sum())
    with pytest.raises(ValueError):
        left.merge(ConfusionMatrix(3))
    stream.reset()
    assert int(stream.matrix.sum()) == 0


def test_sync_is_noop_without_distributed() -> None:
    cm = ConfusionMatrix(2).update(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 0]))
    assert cm.sync().matrix.tolist() == [[1, 1], [0, 1]]


def _ddp_worker(rank: int, init_file: str, result_file: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    cm = ConfusionMatrix(2).update(torch.tensor([rank, 1]), torch.tensor([1, 1]))
    scd = SCDMetrics(2)
    scd.update(
        torch.tensor([rank]),
        torch.tensor([1]),
        torch.tensor([1]),
        torch.tensor([0]),
        torch.tensor([1]),
        torch.tensor([1]),
    )
    cm.sync()
    scd.sync()
    if rank == 0:
        torch.save({"cm": cm.matrix, "std": scd.std.matrix, "pixels": scd.num_pixels}, result_file)
    dist.destroy_process_group()


@pytest.mark.skipif(
    "fork" not in __import__("multiprocessing").get_all_start_methods() or not torch.distributed.is_available(),
    reason="needs fork and torch.distributed",
)
def test_sync_sums_over_two_gloo_processes(tmp_path) -> None:
    import torch.multiprocessing as mp

    result = tmp_path / "r.pt"
    # fork: the children reuse the imported torch (spawn would re-import it, seconds per process)
    mp.start_processes(
        _ddp_worker, args=(str(tmp_path / "init"), str(result)), nprocs=2, join=True, start_method="fork"
    )
    got = torch.load(result)
    # rank 0 adds (gt 1, pred 0) and (1, 1); rank 1 adds (1, 1) twice
    assert got["cm"].tolist() == [[0, 0], [1, 3]]
    # date A: gt 0+1 = 1; preds rank+1 -> one (1,1), one (1,2); date B: gt 2, pred 2 on both ranks
    assert got["std"].tolist() == [[0, 0, 0], [0, 1, 1], [0, 0, 2]]
    assert got["pixels"] == 2


# ----------------------------------------------------------------------------- binary


def test_binary_metrics_hand_computed() -> None:
    # TN 50, FP 10, FN 5, TP 35
    m = binary_metrics([[50, 10], [5, 35]])
    assert m["precision"] == pytest.approx(35 / 45)
    assert m["recall"] == pytest.approx(35 / 40)
    assert m["f1"] == pytest.approx(70 / 85)
    assert m["iou"] == pytest.approx(35 / 50)
    assert m["oa"] == pytest.approx(0.85)
    # pe = (60*55 + 40*45) / 100^2 = 0.51
    assert m["kappa"] == pytest.approx((0.85 - 0.51) / (1 - 0.51))
    assert m["precision_per_class"] == pytest.approx([50 / 55, 35 / 45])
    assert m["recall_per_class"] == pytest.approx([50 / 60, 35 / 40])
    assert m["f1_per_class"] == pytest.approx([100 / 115, 70 / 85])
    assert m["iou_per_class"] == pytest.approx([50 / 65, 35 / 50])
    assert m["miou"] == pytest.approx((50 / 65 + 35 / 50) / 2)
    assert m["mf1"] == pytest.approx((100 / 115 + 70 / 85) / 2)
    assert m["confusion"] == [[50, 10], [5, 35]]
    assert all(isinstance(m[k], float) for k in ("precision", "recall", "f1", "iou", "oa", "kappa"))


def test_binary_metrics_accepts_all_matrix_types() -> None:
    ref = binary_metrics([[50, 10], [5, 35]])
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([0] * 50 + [1] * 10 + [0] * 5 + [1] * 35), torch.tensor([0] * 60 + [1] * 40))
    for form in (cm, cm.matrix, np.array([[50, 10], [5, 35]])):
        assert binary_metrics(form) == ref
    with pytest.raises(ValueError, match="2x2"):
        binary_metrics(np.eye(3))


def test_binary_metrics_zero_division_is_zero() -> None:
    empty = binary_metrics([[0, 0], [0, 0]])
    assert all(empty[k] == 0.0 for k in ("precision", "recall", "f1", "iou", "oa", "kappa"))
    no_change = binary_metrics([[100, 0], [0, 0]])  # pe == 1 -> kappa 0
    assert (no_change["precision"], no_change["f1"], no_change["oa"], no_change["kappa"]) == (0.0, 0.0, 1.0, 0.0)


def test_binary_metrics_changeclip_smoothing() -> None:
    s = 1e-4
    m = binary_metrics([[50, 10], [5, 35]], smooth=s)
    assert m["precision"] == pytest.approx((35 + s) / (45 + 2 * s), rel=1e-12)
    assert m["iou"] == pytest.approx((35 + s) / (50 + 3 * s), rel=1e-12)
    assert m["oa"] == pytest.approx((85 + 2 * s) / (100 + 4 * s), rel=1e-12)
    assert m["precision"] != binary_metrics([[50, 10], [5, 35]])["precision"]
    assert m["confusion"] == [[50, 10], [5, 35]]
    # no change anywhere: the smoothing turns 0/0 into s/3s (ChangeCLIP quirk, documented)
    smoothed_empty = binary_metrics([[10, 0], [0, 0]], smooth=s)
    assert smoothed_empty["iou"] == pytest.approx(1 / 3)
    assert smoothed_empty["precision"] == pytest.approx(1 / 2)


# ----------------------------------------------------------------------------- semantic


def test_semantic_metrics_zero_and_nan_modes() -> None:
    cm = [[5, 1, 0], [2, 3, 0], [0, 0, 0]]  # class 2 absent from GT and prediction
    zero = semantic_metrics(cm)
    assert zero["iou_per_class"] == pytest.approx([5 / 8, 3 / 6, 0.0])
    assert zero["miou"] == pytest.approx((5 / 8 + 3 / 6) / 3)
    assert zero["mf1"] == pytest.approx((10 / 13 + 6 / 9) / 3)
    assert zero["oa"] == pytest.approx(8 / 11)
    assert zero["kappa"] == pytest.approx(26 / 59)  # po = 88/121, pe = (6*7 + 5*4)/121
    nan = semantic_metrics(cm, absent="nan")
    assert nan["miou"] == pytest.approx((5 / 8 + 3 / 6) / 2)
    assert nan["mf1"] == pytest.approx((10 / 13 + 6 / 9) / 2)
    assert nan["iou_per_class"][2] is None
    with pytest.raises(ValueError):
        semantic_metrics(cm, absent="skip")  # type: ignore[arg-type]


def test_kappa_degenerate_cases() -> None:
    assert kappa(np.zeros((3, 3))) == 0.0
    assert kappa([[4, 0], [0, 0]]) == 0.0
    assert kappa([[3, 0], [0, 3]]) == pytest.approx(1.0)


def test_second_metrics_hand_computed() -> None:
    hist = [[40, 3, 2], [6, 20, 6], [1, 4, 18]]  # index 0 = no change; rows GT
    m = second_metrics(hist)
    iou_nc, iou_c = 40 / (45 + 47 - 40), 48 / 60
    assert m["iou_nc"] == pytest.approx(iou_nc)
    assert m["iou_c"] == pytest.approx(iou_c)
    assert m["miou_scd"] == pytest.approx((iou_nc + iou_c) / 2)
    # zeroed (0,0): N' = 60, trace' = 38, rows' (5, 32, 23), cols' (7, 27, 26)
    k_n0 = (2280 - 1497) / (3600 - 1497)
    assert m["kappa_n0"] == pytest.approx(k_n0)
    assert m["sek"] == pytest.approx(k_n0 * math.exp(iou_c) / math.e)
    assert m["scd_precision"] == pytest.approx(38 / 53)
    assert m["scd_recall"] == pytest.approx(38 / 55)
    assert m["fscd"] == pytest.approx(76 / 108)
    assert m["score"] == pytest.approx(0.3 * (iou_nc + iou_c) / 2 + 0.7 * k_n0 * math.exp(iou_c - 1))
