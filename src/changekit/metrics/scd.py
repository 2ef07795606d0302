"""Streaming semantic-change-detection metrics: the standard SECOND protocol and ClearSCD's variants.

One :class:`SCDMetrics` keeps only integer confusion matrices (plus ClearSCD's "GT codes seen" sets), so it
streams over batches, merges across DDP processes with :meth:`SCDMetrics.sync` and gives exactly the
one-shot result. Every formula and where ClearSCD departs from the standard is in ``docs/metrics.md``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..errors import LabelValueError
from .binary import binary_metrics
from .confusion import ConfusionMatrix, all_reduce_sum, as_numpy_matrix, kappa, safe_div
from .semantic import mean_iou_over_seen, second_metrics, sek, semantic_metrics

logger = logging.getLogger(__name__)


class SCDMetrics:
    """Semantic change metrics of per-date class maps plus a binary change map.

    Inputs of :meth:`update` are integer tensors of one shape: ``pred_a``/``pred_b`` class indices
    ``0..C-1`` (argmax of the semantic heads), ``pred_change`` 0/1 (M), ``gt_a``/``gt_b`` class indices or
    ``ignore_index``, ``gt_change`` 0/1 or ``change_ignore_index``. ``pred_change=None`` uses the
    post-classification comparison ``pred_a != pred_b``; ``gt_change=None`` uses ``gt_a != gt_b`` (ignored
    where either date is ignored).

    Args:
        num_classes: C, the land-cover classes (no "no change" class among them).
        ignore_index: semantic ignore value; must lie outside ``[0, C)`` (Hi-UCD after ClearSCD's conversion
            uses C = 9, other sets 255). ClearSCD's code tests ``label == C``; here the value is a parameter
            and is mapped to C internally, so every ClearSCD variant counts exactly as in ClearSCD.
        change_ignore_index: ignore value of the binary change label (255).
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, change_ignore_index: int = 255) -> None:
        c = int(num_classes)
        if c < 2:
            raise ValueError(f"SCDMetrics needs num_classes >= 2, got {num_classes}")
        if 0 <= int(ignore_index) < c:
            raise ValueError(f"ignore_index {ignore_index} must lie outside the class range [0, {c})")
        if int(change_ignore_index) in (0, 1):
            raise ValueError(f"change_ignore_index {change_ignore_index} collides with the change values 0/1")
        self.num_classes = c
        self.ignore_index = int(ignore_index)
        self.change_ignore_index = int(change_ignore_index)
        self.std = ConfusionMatrix(c + 1, None)  # per-date SCD maps, 0 = no change, k+1 = class k
        self.bcd = ConfusionMatrix(2, None)
        self.bcd_mod = ConfusionMatrix(2, None)
        self.seg = ConfusionMatrix(c, None)  # A and B pooled
        self.fromto = ConfusionMatrix(c * c + 1, None)  # from-to codes, C^2 = no change
        self.sc = ConfusionMatrix(c * (c - 1) + 1, None)  # mIoU_sc change types
        self.nc = ConfusionMatrix(c + 1, None)  # mIoU_nc no-change types
        self.bc = ConfusionMatrix(2, None)  # mIoU_bc: M as reference, PCC as prediction
        self._sc_seen = torch.zeros(c * c + 1, dtype=torch.int64)
        self._nc_seen = torch.zeros(c + 2, dtype=torch.int64)
        self.num_pixels = 0

    def _matrices(self) -> list[ConfusionMatrix]:
        return [self.std, self.bcd, self.bcd_mod, self.seg, self.fromto, self.sc, self.nc, self.bc]

    def reset(self) -> None:
        """Zero all counts."""
        for cm in self._matrices():
            cm.reset()
        self._sc_seen = torch.zeros_like(self._sc_seen)
        self._nc_seen = torch.zeros_like(self._nc_seen)
        self.num_pixels = 0

    def sync(self) -> SCDMetrics:
        """Sum all counts over DDP processes in place (no-op when not distributed); call once, at the end."""
        for cm in self._matrices():
            cm.sync()
        self._sc_seen = all_reduce_sum(self._sc_seen)
        self._nc_seen = all_reduce_sum(self._nc_seen)
        self.num_pixels = int(all_reduce_sum(torch.tensor([self.num_pixels], dtype=torch.int64))[0])
        return self

    # ------------------------------------------------------------------ inputs
    def _validate(self, name: str, x: torch.Tensor, allowed_extra: tuple[int, ...], upper: int) -> None:
        bad = ((x < 0) | (x >= upper)) & ~torch.isin(x, torch.tensor(allowed_extra, device=x.device))
        if bool(bad.any()):
            vals = torch.unique(x[bad])[:10].tolist()
            extra = f" or {list(allowed_extra)}" if allowed_extra else ""
            msg = f"{name} holds values {vals} outside [0, {upper}){extra}"
            if name.startswith("gt"):
                raise LabelValueError(msg)
            raise ValueError(msg)

    @torch.no_grad()
    def update(
        self,
        pred_a: torch.Tensor,
        pred_b: torch.Tensor,
        pred_change: torch.Tensor | None,
        gt_a: torch.Tensor,
        gt_b: torch.Tensor,
        gt_change: torch.Tensor | None = None,
    ) -> SCDMetrics:
        """Count one batch (any shape, e.g. ``(N, H, W)``).

        Raises:
            ValueError: shapes differ or a prediction is out of range.
            LabelValueError: a ground-truth map holds a value that is neither a class nor an ignore value.
        """
        c, ign, cign = self.num_classes, self.ignore_index, self.change_ignore_index
        dev = torch.as_tensor(pred_a).device
        pa, pb, ga, gb = (torch.as_tensor(t, device=dev).long() for t in (pred_a, pred_b, gt_a, gt_b))
        if not pa.shape == pb.shape == ga.shape == gb.shape:
            raise ValueError(
                f"shapes differ: pred_a {tuple(pa.shape)}, pred_b {tuple(pb.shape)}, gt_a {tuple(ga.shape)}, "
                f"gt_b {tuple(gb.shape)}"
            )
        pc = (pa != pb).long() if pred_change is None else torch.as_tensor(pred_change, device=dev).long()
        if gt_change is None:
            gc = (ga != gb).long()
            gc[(ga == ign) | (gb == ign)] = cign
        else:
            gc = torch.as_tensor(gt_change, device=dev).long()
        if not pc.shape == gc.shape == pa.shape:
            raise ValueError(f"change maps {tuple(pc.shape)}/{tuple(gc.shape)} differ from {tuple(pa.shape)}")
        for name, x in (("pred_a", pa), ("pred_b", pb)):
            self._validate(name, x, (), c)
        self._validate("pred_change", pc, (), 2)
        for name, x in (("gt_a", ga), ("gt_b", gb)):
            self._validate(name, x, (ign,), c)
        self._validate("gt_change", gc, (cign,), 2)
        pa, pb, pc, ga, gb, gc = (t.reshape(-1) for t in (pa, pb, pc, ga, gb, gc))
        self.num_pixels += int(pa.numel())

        self._update_standard(pa, pb, pc, ga, gb, gc)
        # ClearSCD: BCD, BCD_mod (TP with P_A == P_B moved to FP), pooled segmentation, from-to matrix.
        self.bcd.update(pc, gc)
        self.bcd_mod.update(pc, torch.where((gc == 1) & (pc == 1) & (pa == pb), 0, gc))
        self.seg.update(torch.cat([pa, pb]), torch.cat([ga, gb]))
        gt_code = torch.where(ga == gb, c * c, ga * c + gb)
        gt_code[(ga == ign) | (gb == ign)] = -1  # ClearSCD's code 999: unlabeled in either date, dropped
        self.fromto.update(torch.where(pc == 0, c * c, pa * c + pb), gt_code)
        # ClearSCD's consistency metrics use the ignore value C; map ours onto it.
        ga_c = torch.where(ga == ign, c, ga)
        gb_c = torch.where(gb == ign, c, gb)
        gt_sc = self._change_type(ga_c, gb_c, gc, gc)
        self.sc.update(self._change_type(pa, pb, pc, gc), gt_sc)
        self._sc_seen = self._sc_seen.to(dev) + torch.bincount(gt_sc, minlength=c * c + 1)
        gt_nc = self._nochange_type(ga_c, gb_c, gc, gc)
        self.nc.update(self._nochange_type(pa, pb, pc, gc), gt_nc)
        self._nc_seen = self._nc_seen.to(dev) + torch.bincount(gt_nc, minlength=c + 2)
        self.bc.update((pa != pb).long(), pc)
        return self

    def _update_standard(
        self, pa: torch.Tensor, pb: torch.Tensor, pc: torch.Tensor, ga: torch.Tensor, gb: torch.Tensor, gc: torch.Tensor
    ) -> None:
        """SECOND protocol: per-date maps with 0 = no change and class + 1 elsewhere, both dates pooled."""
        for p, g in ((pa, ga), (pb, gb)):
            gt_scd = torch.where(gc == 1, g + 1, 0)
            gt_scd[(gc == self.change_ignore_index) | ((gc == 1) & (g == self.ignore_index))] = -1
            self.std.update(torch.where(pc == 1, p + 1, 0), gt_scd)

    def _change_type(
        self, t1: torch.Tensor, t2: torch.Tensor, change: torch.Tensor, change_label: torch.Tensor
    ) -> torch.Tensor:
        """ClearSCD ``cal_change_type``: from-to code minus the number of diagonal codes below it."""
        c = self.num_classes
        from_to = t1 * c + t2
        diagonals = torch.arange(c, device=t1.device, dtype=torch.int64) * (c + 1)
        out = from_to - torch.searchsorted(diagonals, from_to)
        out[change_label == self.change_ignore_index] = c * (c - 1) + 1  # unlabeled: dropped
        out[change == 0] = c * (c - 1)  # unchanged
        return out

    def _nochange_type(
        self, t1: torch.Tensor, t2: torch.Tensor, change: torch.Tensor, change_label: torch.Tensor
    ) -> torch.Tensor:
        """ClearSCD ``cal_nochange_type``: class index where unchanged and same class, C ("change") else."""
        c = self.num_classes
        same = (t1 == t2) & (t1 < c)  # a from-to code on the diagonal
        out = torch.where(same, t1, torch.full_like(t1, c))
        out[change_label == self.change_ignore_index] = c + 1  # unlabeled: dropped
        out[change == 1] = c
        return out

    # ----------------------------------------------------------------- results
    def compute(self) -> dict[str, Any]:
        """All metrics as floats (fractions, not percent); see ``docs/metrics.md`` for each key."""
        c = self.num_classes
        out: dict[str, Any] = dict(second_metrics(self.std.matrix))
        bcd = binary_metrics(self.bcd)
        bcd_mod = binary_metrics(self.bcd_mod)
        out.update(
            bcd_iou=bcd["iou"],
            bcd_f1=bcd["f1"],
            bcd_precision=bcd["precision"],
            bcd_recall=bcd["recall"],
            bcd_oa=bcd["oa"],
            bcd_kappa=bcd["kappa"],
            bcd_iou_mod=bcd_mod["iou"],
            bcd_f1_mod=bcd_mod["f1"],
        )
        seg = semantic_metrics(self.seg, absent="zero")
        out.update(seg_miou=seg["miou"], seg_mf1=seg["mf1"], seg_oa=seg["oa"], seg_iou_per_class=seg["iou_per_class"])
        ft = as_numpy_matrix(self.fromto)
        out["oa_scd"] = float(safe_div(ft.trace(), ft.sum()))
        out["kappa"] = kappa(ft)
        out["clearscd_sek"] = sek(ft, bcd["iou"], c * c)
        out["clearscd_sek_mod"] = sek(ft, bcd_mod["iou"], c * c)
        out["overall_score"] = 0.3 * bcd["iou"] + 0.7 * out["clearscd_sek"]
        out["overall_score_mod"] = 0.3 * bcd_mod["iou"] + 0.7 * out["clearscd_sek_mod"]
        out["miou_sc"] = mean_iou_over_seen(self.sc, int((self._sc_seen > 0).sum()))
        out["miou_nc"] = mean_iou_over_seen(self.nc, int((self._nc_seen > 0).sum()), last_iou=bcd["iou"])
        out["miou_bc"] = semantic_metrics(self.bc, absent="zero")["miou"]
        out["num_pixels"] = self.num_pixels
        return out
