"""The model registry: names, argument checking, meta-device info, and a smoke test of every model."""

from __future__ import annotations

import pytest
import torch

from changekit.errors import ConfigError, UnknownModelError
from changekit.models import ChangeModel, ChangeOutput, build_model, count_parameters, list_models, model_info


def test_first_models_are_registered() -> None:
    names = list_models()
    assert {"fc_ef", "fc_siam_conc", "fc_siam_diff", "siam_unet"} <= set(names)
    assert names == sorted(names)
    assert list_models("fc_siam") == ["fc_siam_conc", "fc_siam_diff"]


def test_unknown_model_suggests_the_closest_name() -> None:
    with pytest.raises(UnknownModelError, match="did you mean 'fc_siam_diff'") as info:
        build_model("fc_siam_dif")
    assert isinstance(info.value, KeyError)
    assert "fc_siam_dif'" in str(info.value) and "available:" in str(info.value)


def test_unknown_argument_is_a_config_error_with_suggestion() -> None:
    with pytest.raises(ConfigError, match="no argument 'in_chanels'.*did you mean 'in_channels'"):
        build_model("fc_siam_diff", in_chanels=4)
    with pytest.raises(ConfigError, match="encoder_nam"):
        build_model("siam_unet", encoder_nam="resnet34")


def test_none_arguments_fall_back_to_defaults() -> None:
    model = build_model("fc_siam_diff", in_channels=None, dropout=None)
    assert model.in_channels == 3 and model.model_kwargs == {}
    assert build_model("fc_ef", in_channels=5).model_kwargs == {"in_channels": 5}


def test_model_info_on_meta_device() -> None:
    info = model_info("fc_siam_conc")
    assert info == {"name": "fc_siam_conc", "task": "binary", "params": 1_545_986}
    assert model_info("siam_unet", encoder_name="resnet34")["params"] > model_info("siam_unet")["params"]
    with torch.device("meta"):
        model = build_model("siam_unet")
    assert all(p.is_meta for p in model.parameters())
    assert count_parameters(model) == 14_328_354


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_builds_and_runs(name: str) -> None:
    """Registry-wide smoke test with defaults and a tiny input."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    assert isinstance(model, ChangeModel)
    assert model.task in ("binary", "semantic")
    assert count_parameters(model) == model_info(name)["params"] > 0
    extras = model.example_extras(1) if model.extra_inputs else {}  # e.g. ChangeCLIP's tags
    d = max(int(model.input_divisor), 1)
    size = -(-32 // d) * d
    a, b = torch.randn(1, 3, size, size), torch.randn(1, 3, size, size)
    with torch.no_grad():
        out = model(a, b, **extras)
    assert isinstance(out, ChangeOutput)
    assert out.change.shape[0] == 1 and out.change.shape[1] in (1, 2) and out.change.shape[2:] == (size, size)
    assert torch.isfinite(out.change).all()
    if model.task == "semantic":
        assert out.sem_a is not None and out.sem_a.shape[1] == model.num_classes
