"""ChangeMask (ClearSCD repository baseline): contract, parameter count, TST symmetry, semantic outputs."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import changekit.models.changemask  # noqa: F401  (registers the model until models/__init__ imports it)
from changekit.errors import ConfigError
from changekit.models import ChangeModel, build_model, count_parameters
from changekit.models.changemask import TST

from .base import BaseModelTester

SMALL = {"decoder_channels": [32, 16, 16, 8, 8]}


class TestChangeMask(BaseModelTester):
    model_name = "changemask"
    model_kwargs = SMALL
    change_channels = 1
    # unused by design: the encoder's head (as in ClearSCD) and the TST block of the raw-input level, which the
    # UNet decoder drops (the released re-implementation builds it too)
    unused_params = ("encoder._conv_head", "encoder._bn1", "tst.blocks.0.")

    def build(self, seed: int = 0, **kwargs: Any) -> ChangeModel:
        # one pair, one date per encoder pass in training: drop-connect may drop a block's branch for both dates,
        # which leaves it without gradient by chance
        model = super().build(seed, **kwargs)
        model.encoder._drop_connect_rate = 0.0
        return model


def test_parameter_count() -> None:
    """10,623,086 at the defaults: counted from the authors' model/ChangeMask.py built with smp 0.6 (its outputs
    equal ours with the same weights; see docs/models/clearscd.md)."""
    with torch.device("meta"):
        assert count_parameters(build_model("changemask")) == 10_623_086


def test_tst_is_symmetric_in_time() -> None:
    torch.manual_seed(0)
    tst = TST([4, 6]).eval()
    fa = [torch.randn(1, 4, 8, 8), torch.randn(1, 6, 4, 4)]
    fb = [torch.randn(1, 4, 8, 8), torch.randn(1, 6, 4, 4)]
    with torch.no_grad():
        for x, y in zip(tst(fa, fb), tst(fb, fa), strict=True):
            torch.testing.assert_close(x, y)


def test_semantic_outputs_at_input_size() -> None:
    model = build_model("changemask", num_classes=5, **SMALL).eval()
    assert model.task == "semantic" and model.num_classes == 5
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64))
    assert out.sem_a.shape == out.sem_b.shape == (2, 5, 64, 64) and out.change.shape == (2, 1, 64, 64)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="decoder_channels"):
        build_model("changemask", decoder_channels=[8, 8])
