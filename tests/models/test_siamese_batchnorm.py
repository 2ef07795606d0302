"""What the layers with batch statistics see in training: each date alone, or both dates pooled.

A Siamese network runs one set of weights on both dates. Whether its BatchNorms normalise each date with that
date's statistics (the reference code calls the shared module once per date) or with both dates' statistics
pooled (one call on the concatenated batch) changes the training forward, the gradients and the running
statistics, although evaluation is the same either way. Each model class declares its training convention in
``siamese_bn``:

* ``"per_date"``: no layer with batch statistics pools the two dates (the paper's code runs the shared parts
  once per date);
* ``"joint"``: the Siamese layers normalise both dates as one batch;
* ``"none"``: no layer with batch statistics sees one date alone (early fusion).

The check records every train-mode ``torch.nn.functional.batch_norm`` call (``BatchNorm*d`` and ``SyncBatchNorm``
on one process go through it) during one training forward on ``(a, b)`` and one on ``(a, b')`` from the same
seed. Batch rows computed from date A alone are the same in both runs; every other row changes. A call that
holds both kinds of rows pools date A's statistics with date B's: the date-A rows then come out of it normalised
differently although they went in unchanged, which is checked on the numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from changekit.models import build_model, list_models

from .test_changeclip import TINY

# the families audited against their reference code (docs/models/*.md), and the faster switch of each
AUDITED = {
    "clearscd": ("per_date", {"siamese_batch": True}),
    "changemask": ("per_date", {"date_batched": True}),
    "fc_siam_conc": ("per_date", {"date_batched": True}),
    "fc_siam_diff": ("per_date", {"date_batched": True}),
    "fc_ef": ("none", None),
    "misgnet": ("per_date", None),
    "changeclip_rn50": ("per_date", {"date_batched": True}),
    "changeclip_vitb16": ("per_date", {"date_batched": True}),
    "siam_unet": ("joint", None),  # changekit's own baseline (no reference code): one batched encoder pass
}
SMALL: dict[str, dict[str, Any]] = {  # small widths: the convention does not depend on them
    "clearscd": {"pyramid_channels": 32, "segmentation_channels": 32},
    "changemask": {"decoder_channels": [32, 16, 16, 8, 8]},
    "changeclip_rn50": TINY["changeclip_rn50"],
    "changeclip_vitb16": TINY["changeclip_vitb16"],
}
CHANGE_MODELS = [n for n in list_models() if not n.startswith("_")]


def _model_class(name: str) -> type:
    with torch.device("meta"):
        return type(build_model(name, **SMALL.get(name, {})))


class _BatchNormCalls:
    """Records ``(input, output)`` of every ``F.batch_norm`` call that uses batch statistics."""

    def __init__(self) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def __call__(self, input: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:  # noqa: A002
        out = _BATCH_NORM(input, *args, **kwargs)
        training = kwargs.get("training", args[4] if len(args) > 4 else False)
        if training:
            self.calls.append((input.detach().clone(), out.detach().clone()))
        return out


_BATCH_NORM = F.batch_norm


@pytest.fixture
def record(monkeypatch: pytest.MonkeyPatch) -> Iterator[_BatchNormCalls]:
    rec = _BatchNormCalls()
    monkeypatch.setattr(F, "batch_norm", rec)
    yield rec


def _training_calls(name: str, kwargs: dict[str, Any], record: _BatchNormCalls
                    ) -> list[tuple[list[bool], float]]:
    """Per train-mode BatchNorm call: which batch rows depend on date A alone, and how much the outputs of those
    rows move when date B is replaced (0 when no row, or every row, is date A's)."""
    torch.manual_seed(0)
    model = build_model(name, **{**SMALL.get(name, {}), **kwargs}).train()
    size = max(64, model.input_divisor)
    gen = torch.Generator().manual_seed(1)
    a, b, b2 = (torch.randn(2, model.in_channels, size, size, generator=gen) for _ in range(3))
    extras = model.example_extras(2) if hasattr(model, "example_extras") else {}
    runs = []
    for second in (b, b2 * 2 + 1):
        record.calls = []
        torch.manual_seed(2)  # the same dropout / drop-path draws in both runs
        model(a, second, **extras)
        runs.append(record.calls)
    assert len(runs[0]) == len(runs[1]), "the two runs made different BatchNorm calls"
    result = []
    for (x1, y1), (x2, y2) in zip(*runs, strict=True):
        same = [torch.allclose(r1, r2, rtol=1e-5, atol=1e-6) for r1, r2 in zip(x1, x2, strict=True)]
        moved = 0.0
        if any(same) and not all(same):
            rows = torch.tensor(same)
            moved = float((y1[rows] - y2[rows]).abs().max())
        result.append((same, moved))
    return result


def _check(convention: str, calls: list[tuple[list[bool], float]]) -> None:
    assert calls, "no layer uses batch statistics in training: declare siamese_bn = 'none'"
    date_a_alone = [same for same, _ in calls if all(same)]
    pooled = [moved for same, moved in calls if any(same) and not all(same)]
    if convention == "per_date":
        assert not pooled, f"{len(pooled)} BatchNorm calls pool date A with date B"
        assert date_a_alone, "no BatchNorm call sees date A alone"
    elif convention == "joint":
        assert pooled, "no BatchNorm call pools the two dates"
        assert min(pooled) > 1e-3, "date A's rows are normalised the same whatever date B is"
        assert not date_a_alone, "some BatchNorm calls see date A alone"
    else:
        assert convention == "none", f"unknown siamese_bn value {convention!r}"
        assert not pooled and not date_a_alone, "a BatchNorm call sees date A's rows on their own"


@pytest.mark.parametrize("name", CHANGE_MODELS)
def test_training_batchnorm_follows_the_declared_convention(name: str, record: _BatchNormCalls) -> None:
    convention = getattr(_model_class(name), "siamese_bn", None)
    if convention is None:
        pytest.skip(f"{name}: its model class declares no siamese_bn (audit it against its reference code)")
    _check(convention, _training_calls(name, {}, record))


@pytest.mark.parametrize("name", [n for n, (_, switch) in AUDITED.items() if switch])
def test_the_faster_switch_pools_both_dates(name: str, record: _BatchNormCalls) -> None:
    _check("joint", _training_calls(name, AUDITED[name][1], record))  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(AUDITED))
def test_audited_families_declare_their_reference_convention(name: str) -> None:
    assert getattr(_model_class(name), "siamese_bn", None) == AUDITED[name][0]


def test_the_check_tells_the_conventions_apart(record: _BatchNormCalls) -> None:
    """The same model classified under each convention: only the right one passes."""
    calls = _training_calls("fc_siam_diff", {}, record)
    _check("per_date", calls)
    for wrong in ("joint", "none"):
        with pytest.raises(AssertionError):
            _check(wrong, calls)
    pooled = _training_calls("fc_siam_diff", {"date_batched": True}, record)
    with pytest.raises(AssertionError, match="pool date A with date B"):
        _check("per_date", pooled)
