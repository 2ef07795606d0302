"""Config loading: defaults, overrides, _base_ inheritance and typo detection."""

from pathlib import Path

import pytest

from changekit.config import DEFAULTS, load_config, parse_override, resolve
from changekit.errors import ConfigError, DatasetNotFoundError


def test_defaults_fill_missing_keys() -> None:
    cfg = resolve({"model": {"name": "fc_ef"}, "optim": {"lr": 0.5}})
    assert cfg["optim"]["lr"] == 0.5
    assert cfg["optim"]["name"] == DEFAULTS["optim"]["name"]
    assert cfg["trainer"]["ema"]["beta"] == 0.9999


def test_unknown_key_suggests_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer.max_epoch' \(did you mean 'max_epochs'\?\)"):
        resolve({"trainer": {"max_epoch": 3}})
    with pytest.raises(ConfigError, match="unknown config key 'optimiser'"):
        resolve({"optimiser": {}})


def test_overrides_parse_yaml_values(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("model: {name: fc_siam_diff}\ntrainer: {max_epochs: 5}\n")
    cfg = load_config(f, ["trainer.max_epochs=2", "optim.betas=[0.8, 0.9]", "data.val=null", "model.dropout=0.1"])
    assert cfg["trainer"]["max_epochs"] == 2
    assert cfg["optim"]["betas"] == [0.8, 0.9]
    assert cfg["data"]["val"] is None
    assert cfg["model"] == {"name": "fc_siam_diff", "dropout": 0.1}
    assert parse_override("a.b=1e-3") == ("a.b", 1e-3)
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("trainer.max_epochs")


def test_base_inheritance(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("optim: {lr: 0.1, weight_decay: 0.5}\nmodel: {name: fc_ef, dropout: 0.3}\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\noptim: {lr: 0.2}\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg["optim"]["lr"] == 0.2 and cfg["optim"]["weight_decay"] == 0.5
    assert cfg["model"] == {"name": "fc_ef", "dropout": 0.3}


def test_missing_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_config(bad)
