"""Losses: hand-computed values on tiny tensors, ignore handling, logit layouts, config building."""

from __future__ import annotations

import math

import pytest
import torch

from changekit.errors import ConfigError, LabelValueError
from changekit.losses import BCELoss, CELoss, CompositeLoss, DiceLoss, FocalLoss, build_loss
from changekit.models.outputs import ChangeOutput

IGN = 255


def logits2(*pixels: tuple[float, float]) -> torch.Tensor:
    """Two-class logits ``(1, 2, 1, W)`` from per-pixel ``(l0, l1)`` pairs."""
    return torch.tensor([[list(p) for p in pixels]], dtype=torch.float32).permute(0, 2, 1).unsqueeze(2).contiguous()


def target(*values: int) -> torch.Tensor:
    return torch.tensor([[list(values)]])


# ----------------------------------------------------------------- hand-computed values
def test_ce_by_hand() -> None:
    # pixel 1: logits (0, 0), class 0 -> ln 2; pixel 2: logits (1, 3), class 1 -> -ln(e^3 / (e + e^3)) = ln(1 + e^-2)
    x = logits2((0, 0), (1, 3))
    expected = (math.log(2) + math.log(1 + math.exp(-2))) / 2
    assert CELoss()(x, target(0, 1)).item() == pytest.approx(expected, rel=1e-6)
    assert CELoss()(x, target(0, IGN)).item() == pytest.approx(math.log(2), rel=1e-6)


def test_ce_class_weights_are_a_weighted_mean() -> None:
    x = logits2((0, 0), (1, 3))
    l0, l1 = math.log(2), math.log(1 + math.exp(-2))
    got = CELoss(class_weights=[1.0, 3.0])(x, target(0, 1)).item()
    assert got == pytest.approx((1 * l0 + 3 * l1) / 4, rel=1e-6)
    ref = torch.nn.functional.cross_entropy(x, target(0, 1), weight=torch.tensor([1.0, 3.0]))
    assert got == pytest.approx(ref.item(), rel=1e-6)


def test_bce_by_hand() -> None:
    x = torch.tensor([0.0, 2.0]).view(1, 1, 1, 2)
    expected = (math.log(2) + math.log(1 + math.exp(2))) / 2  # target 1 at logit 0, target 0 at logit 2
    assert BCELoss()(x, target(1, 0)).item() == pytest.approx(expected, rel=1e-6)
    assert BCELoss()(x, target(IGN, 0)).item() == pytest.approx(math.log(1 + math.exp(2)), rel=1e-6)
    assert BCELoss(pos_weight=3.0)(x, target(1, 0)).item() == pytest.approx(
        (3 * math.log(2) + math.log(1 + math.exp(2))) / 2, rel=1e-6
    )


def test_focal_by_hand() -> None:
    # logits (0, 0): p_t = 0.5 -> -a (0.5)^g ln 0.5 ; logits (1, 3), class 1: p_t = 1 / (1 + e^-2)
    x = logits2((0, 0), (1, 3))
    pt2 = 1 / (1 + math.exp(-2))
    a, g = 0.2, 2.0
    expected = (a * 0.25 * math.log(2) + a * (1 - pt2) ** g * -math.log(pt2)) / 2
    assert FocalLoss(alpha=a, gamma=g)(x, target(0, 1)).item() == pytest.approx(expected, rel=1e-6)


def test_focal_with_gamma_0_alpha_1_is_ce() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 5, generator=gen)
    t = torch.randint(0, 3, (2, 5, 5), generator=gen)
    t[0, 0, :3] = IGN
    assert FocalLoss(alpha=1, gamma=0)(x, t).item() == pytest.approx(CELoss()(x, t).item(), rel=1e-6)
    assert FocalLoss(alpha=1, gamma=2)(x, t).item() < CELoss()(x, t).item()


def test_dice_binary_by_hand() -> None:
    x = torch.zeros(1, 1, 1, 2)  # p = 0.5, 0.5
    # target (1, 0): I = 0.5, sum p + sum y = 1 + 1 -> dice 0.5
    assert DiceLoss()(x, target(1, 0)).item() == pytest.approx(0.5, abs=1e-6)
    # target (1, ignore): I = 0.5, sums = 0.5 + 1 -> dice 2/3
    assert DiceLoss()(x, target(1, IGN)).item() == pytest.approx(1 / 3, abs=1e-6)
    # no change in the target: 1 - 0 = 1, or 0 with skip_empty (smp / ClearSCD convention)
    assert DiceLoss()(x, target(0, 0)).item() == pytest.approx(1.0, abs=1e-6)
    assert DiceLoss(skip_empty=True)(x, target(0, 0)).item() == 0.0
    assert DiceLoss(smooth=1.0)(x, target(1, 0)).item() == pytest.approx(1 - 2 / 3, abs=1e-6)


def test_dice_multiclass_is_misgnet_formula() -> None:
    """1 - mean over classes of 2 sum(p y) / (sum(p + y) + 1e-7), softmax p, ignored pixels dropped."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, 4, 4, generator=gen)
    t = torch.randint(0, 2, (2, 4, 4), generator=gen)
    t[1, 2] = IGN
    keep = t != IGN
    p = x.softmax(1).permute(0, 2, 3, 1)[keep]  # (M, 2)
    y = torch.nn.functional.one_hot(t[keep], 2).float()
    dice = 2 * (p * y).sum(0) / ((p + y).sum(0) + 1e-7)
    expected = 1 - dice.mean()
    assert DiceLoss(mode="multiclass")(x, t).item() == pytest.approx(expected.item(), rel=1e-6)


# ----------------------------------------------------------------- logit layouts
def test_one_and_two_channel_layouts_agree() -> None:
    gen = torch.Generator().manual_seed(2)
    x2 = torch.randn(2, 2, 6, 6, generator=gen)
    x1 = x2[:, 1:] - x2[:, :1]  # the sigmoid logit equivalent to the 2-class softmax
    t = torch.randint(0, 2, (2, 6, 6), generator=gen)
    t[:, 0] = IGN
    for loss in (BCELoss(), CELoss(), FocalLoss(alpha=0.5, gamma=2), DiceLoss(), DiceLoss(mode="multiclass")):
        assert loss(x1, t).item() == pytest.approx(loss(x2, t).item(), rel=1e-5), loss
    assert BCELoss()(x2, t).item() == pytest.approx(CELoss()(x2, t).item(), rel=1e-5)


def test_target_with_channel_dim_and_low_precision_logits() -> None:
    x = logits2((0, 0), (1, 3))
    ref = CELoss()(x, target(0, 1))
    assert CELoss()(x.bfloat16(), target(0, 1).unsqueeze(1)).dtype == torch.float32
    assert CELoss()(x, target(0, 1).unsqueeze(1)).item() == pytest.approx(ref.item())


# ----------------------------------------------------------------- ignore handling
@pytest.mark.parametrize(
    "loss", [BCELoss(), CELoss(), FocalLoss(), DiceLoss(), DiceLoss(mode="multiclass"), CELoss(class_weights=[1, 2])]
)
def test_all_ignore_gives_zero_with_a_graph(loss: torch.nn.Module) -> None:
    x = torch.randn(2, 2, 3, 3, requires_grad=True)
    out = loss(x, torch.full((2, 3, 3), IGN))
    assert out.item() == 0.0
    out.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) == 0


@pytest.mark.parametrize("loss", [BCELoss(), CELoss(), FocalLoss(), DiceLoss(), DiceLoss(mode="multiclass")])
def test_ignored_pixels_do_not_contribute(loss: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 2, 4, 4, generator=gen, requires_grad=True)
    t = torch.randint(0, 2, (1, 4, 4), generator=gen)
    t[0, :2] = IGN
    base = loss(x, t)
    base.backward()
    assert float(x.grad[..., :2, :].abs().sum()) == 0  # type: ignore[index]
    changed = x.detach().clone()
    changed[..., :2, :] = 1e4  # huge logits where ignored: must change nothing
    assert loss(changed, t).item() == pytest.approx(base.item(), rel=1e-6)


def test_bad_label_values_are_reported() -> None:
    with pytest.raises(LabelValueError, match=r"\[2\]"):
        CELoss()(logits2((0, 0), (1, 3)), target(0, 2))
    with pytest.raises(ValueError, match="do not match"):
        CELoss()(logits2((0, 0), (1, 3)), torch.zeros(1, 1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="use 'ce'"):
        BCELoss()(torch.zeros(1, 3, 1, 1), torch.zeros(1, 1, 1, dtype=torch.long))


# ----------------------------------------------------------------- config-built composite loss
def test_misgnet_hybrid_loss_from_config() -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 2, 8, 8, generator=gen)
    t = torch.randint(0, 2, (2, 8, 8), generator=gen)
    t[0, 0] = IGN
    loss = build_loss(
        [{"name": "focal", "weight": 0.5, "alpha": 0.2, "gamma": 2}, {"name": "dice", "mode": "multiclass"}]
    )
    assert isinstance(loss, CompositeLoss)
    total, parts = loss(ChangeOutput(change=x), {"mask": t})
    focal = FocalLoss(alpha=0.2, gamma=2)(x, t)
    dice = DiceLoss(mode="multiclass")(x, t)
    assert set(parts) == {"focal", "dice"}
    assert parts["focal"].item() == pytest.approx(focal.item()) and not parts["focal"].requires_grad
    assert total.item() == pytest.approx(0.5 * focal.item() + dice.item(), rel=1e-6)


def test_semantic_targets_and_term_names() -> None:
    gen = torch.Generator().manual_seed(5)
    out = ChangeOutput(
        change=torch.randn(1, 1, 4, 4, generator=gen, requires_grad=True),
        sem_a=torch.randn(1, 10, 4, 4, generator=gen),
        sem_b=torch.randn(1, 10, 4, 4, generator=gen),
    )
    batch = {
        "mask": torch.randint(0, 2, (1, 4, 4), generator=gen),
        "sem_a": torch.full((1, 4, 4), 9),  # all "unlabeled" (Hi-UCD ignore 9)
        "sem_b": torch.randint(0, 9, (1, 4, 4), generator=gen),
    }
    loss = build_loss(
        [
            {"name": "bce"},
            {"name": "dice"},
            {"name": "ce", "target": "sem_a", "ignore_index": 9},
            {"name": "ce", "target": "sem_b", "ignore_index": 9, "weight": 2},
            {"name": "ce", "target": "sem_b", "ignore_index": 9},
        ]
    )
    total, parts = loss(out, batch)
    assert list(parts) == ["bce", "dice", "ce_sem_a", "ce_sem_b", "ce_sem_b_2"]
    assert parts["ce_sem_a"].item() == 0.0
    ce_b = CELoss(ignore_index=9)(out.sem_b, batch["sem_b"]).item()
    assert total.item() == pytest.approx(parts["bce"].item() + parts["dice"].item() + 3 * ce_b, rel=1e-6)
    total.backward()
    assert out.change.grad is not None


def test_composite_loss_errors_at_run_time() -> None:
    loss = build_loss([{"name": "ce", "target": "sem_a"}])
    with pytest.raises(ConfigError, match="no sem_a logits"):
        loss(ChangeOutput(change=torch.zeros(1, 2, 2, 2)), {"mask": torch.zeros(1, 2, 2, dtype=torch.long)})
    with pytest.raises(ConfigError, match="batch key 'mask'"):
        build_loss([{"name": "ce"}])(ChangeOutput(change=torch.zeros(1, 2, 2, 2)), {})
    with pytest.raises(LabelValueError, match="loss term 'ce', batch key 'mask'"):
        build_loss([{"name": "ce"}])(ChangeOutput(change=torch.zeros(1, 2, 1, 1)), {"mask": target(7)})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([{"name": "focl"}], r"loss\[0\]: unknown loss 'focl' \(did you mean 'focal'\?\)"),
        ([{"name": "ce"}, {"name": "focal", "alpah": 0.2}], r"loss\[1\] \(focal\): unknown parameter 'alpah'.*'alpha'"),
        ([{"name": "ce", "target": "sem_c"}], r"unknown target 'sem_c'.*did you mean"),
        ([{"name": "ce", "weight": "high"}], r"loss\[0\] \(ce\): parameter 'weight'"),
        ([{"name": "focal", "gamma": -1}], "'gamma' must be a number >= 0"),
        ([{"name": "dice", "mode": "multi"}], "'mode' must be 'binary' or 'multiclass'"),
        ([{"name": "ce", "class_weights": "1,2"}], "class_weights"),
        ([{"weight": 1}], "'name' key"),
        ([], "non-empty list"),
    ],
)
def test_build_loss_errors(spec: list, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_loss(spec)


# ----------------------------------------------------------------- OHEM (mmseg's OHEMPixelSampler + CE)
def _mmseg_ohem_mask(logits: torch.Tensor, target: torch.Tensor, thresh: float, min_kept: int) -> torch.Tensor:
    """mmseg's rule written out: keep valid pixels whose true-class probability is below max(thresh, p_k), p_k
    the probability at sorted position min(min_kept * N, n_valid - 1)."""
    valid = target != IGN
    prob = logits.softmax(1).gather(1, torch.where(valid, target, 0).unsqueeze(1)).squeeze(1)
    ranked = prob[valid].sort().values
    kth = float(ranked[min(min_kept * logits.shape[0], ranked.numel() - 1)])
    return valid & (prob < max(kth, thresh))


def test_ohem_keeps_pixels_below_thresh_and_at_least_min_kept() -> None:
    from changekit.losses import OHEMCELoss

    # true-class probabilities: sigmoid(l1 - l0) for class 1, sigmoid(l0 - l1) for class 0
    x = logits2((0, 3), (0, 1), (0, 0), (0, -1), (2, 0), (0, 0.5))  # p_true below for targets 1,1,1,1,0,0
    t = target(1, 1, 1, 1, 0, IGN)
    p = [torch.sigmoid(torch.tensor(v)).item() for v in (3.0, 1.0, 0.0, -1.0, 2.0)]  # .95 .73 .5 .27 .88
    keep = OHEMCELoss(thresh=0.7, min_kept=1).kept(x.float(), t[0].clamp(max=1).unsqueeze(0), t != IGN)
    assert keep[0, 0].tolist() == [False, False, True, True, False, False]  # under 0.7; the ignored pixel never
    keep = OHEMCELoss(thresh=0.7, min_kept=3).kept(x.float(), t.clamp(max=1), t != IGN)
    assert keep[0, 0].tolist() == [False, True, True, True, False, False]  # the 3 hardest: p_3 = .88 raises it
    loss = OHEMCELoss(thresh=0.7, min_kept=1)(x, t)
    assert loss.item() == pytest.approx(-(math.log(p[2]) + math.log(p[3])) / 5, rel=1e-6)  # / valid pixels


@pytest.mark.parametrize(("thresh", "min_kept"), [(0.7, 10), (0.7, 5000), (0.2, 50), (0.99, 0)])
def test_ohem_matches_mmseg_rule_with_ignore_pixels(thresh: float, min_kept: int) -> None:
    from changekit.losses import OHEMCELoss

    gen = torch.Generator().manual_seed(int(thresh * 100) + min_kept)
    x = torch.randn(2, 2, 12, 12, generator=gen) * 3
    t = torch.randint(0, 2, (2, 12, 12), generator=gen)
    t[torch.rand(2, 12, 12, generator=gen) < 0.25] = IGN
    valid = t != IGN
    loss_fn = OHEMCELoss(thresh=thresh, min_kept=min_kept)
    keep = loss_fn.kept(x, torch.where(valid, t, 0), valid)
    assert torch.equal(keep, _mmseg_ohem_mask(x, t, thresh, min_kept))
    nll = torch.nn.functional.cross_entropy(x, torch.where(valid, t, 0), reduction="none")
    assert loss_fn(x, t).item() == pytest.approx(float((nll * keep).sum() / valid.sum()), rel=1e-5)
    if min_kept * 2 >= int(valid.sum()):  # min_kept beyond the valid pixels: all but the easiest are kept
        prob = x.softmax(1).gather(1, torch.where(valid, t, 0).unsqueeze(1)).squeeze(1)
        assert torch.equal(keep, valid & (prob < prob[valid].max()))


def test_ohem_loss_ranked_mode_all_ignored_and_config() -> None:
    from changekit.losses import OHEMCELoss

    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(1, 2, 4, 4, generator=gen, requires_grad=True), torch.randint(0, 2, (1, 4, 4), generator=gen)
    keep = OHEMCELoss(thresh=None, min_kept=5).kept(x.detach(), t, torch.ones_like(t, dtype=torch.bool))
    nll = torch.nn.functional.cross_entropy(x.detach(), t, reduction="none")
    assert int(keep.sum()) == 5 and float(nll[keep].min()) >= float(nll[~keep].max())  # the 5 largest losses
    zero = OHEMCELoss()(x, torch.full((1, 4, 4), IGN))
    assert zero.item() == 0 and zero.requires_grad
    one_channel = OHEMCELoss(thresh=0.7, min_kept=2)(x[:, 1:] - x[:, :1], t)  # [0, l1 - l0] = same softmax
    assert one_channel.item() == pytest.approx(OHEMCELoss(thresh=0.7, min_kept=2)(x, t).item(), rel=1e-5)
    loss = build_loss([{"name": "ohem_ce", "thresh": 0.7, "min_kept": 100000}])
    assert loss.names == ["ohem_ce"]
    for bad, message in (({"thresh": 1.5}, "thresh"), ({"min_kept": -1}, "min_kept"), ({"min_kept": 2.5}, "min_kept")):
        with pytest.raises(ConfigError, match=message):
            build_loss([{"name": "ohem_ce", **bad}])
