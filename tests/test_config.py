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


# ------------------------------------------------------------------------------------------ schema (issue 11)


@pytest.mark.parametrize(("user", "message"), [
    ({"trainer": {"max_steps": "abc"}}, "trainer.max_steps: 'abc' is not an integer"),
    ({"data": {"batch_size": -4}}, "data.batch_size: -4 must be >= 1"),
    ({"optim": {"lr": "fast"}}, "optim.lr: 'fast' is not a number"),
    ({"optim": {"lr": 0}}, "optim.lr: 0 must be > 0"),
    ({"schedule": {"name": "cosin"}},
     "schedule.name: 'cosin' is not one of none, poly, step, cosine, linear (did you mean 'cosine'?)"),
    ({"trainer": {"deterministic": "yes"}}, "trainer.deterministic: 'yes' is not true or false or 'warn'"),
    ({"trainer": {"val_every_steps": "often"}}, "trainer.val_every_steps: 'often' is not an integer or null"),
    ({"trainer": {"threshold": 1.5}}, "trainer.threshold: 1.5 must be >= 0 and <= 1"),
    ({"trainer": {"max_epochs": 0}}, "trainer.max_epochs: 0 must be >= 1 or -1"),
    ({"trainer": {"ema": {"beta": 1}}}, "trainer.ema.beta: 1 must be > 0 and < 1"),
    ({"trainer": {"devices": "two"}}, "trainer.devices: 'two' is not auto, a device count"),
    ({"trainer": {"precision": "half"}}, "trainer.precision: 'half' is not one of 32-true"),
    ({"data": {"ignore_index": 300}}, "data.ignore_index: 300 must be >= 0 and <= 255"),
    ({"data": {"task": "semantc"}}, "data.task: 'semantc' is not one of binary, semantic (did you mean 'semantic'?)"),
    ({"data": {"std": [0.2, 0, 0.2]}}, "data.std[1]: 0 must be > 0"),
    ({"data": {"mean": [0.5, 0.5]}}, "data.std: has 3 value(s) but data.mean has 2"),
    ({"data": {"check_values": "no"}}, "data.check_values: 'no' is not true or false"),
    ({"data": {"layout": "levr"}}, "data.layout: 'levr' is not one of auto"),
    ({"data": {"tags": {"enabled": 1}}}, "data.tags.enabled: 1 is not one of auto, true, false"),
    ({"data": {"augment": 3}}, "data.augment: 3 is not a preset name or a list of ops"),
    ({"data": {"train": 5}}, "data.train: 5 is not a path or null"),
    ({"optim": {"betas": [0.9]}}, "optim.betas: [0.9] has 1 item(s); expected 2"),
    ({"optim": {"no_decay_keys": "norm"}}, "optim.no_decay_keys: 'norm' is not a list of parameter-name substrings"),
    ({"optim": {"lr_mult": {"decode_head": -1}}}, "optim.lr_mult.decode_head: -1 must be > 0"),
    ({"optim": {"lr_mult": [10]}}, "optim.lr_mult: [10] is not a mapping of parameter-name substrings"),
    ({"data": {"label_palette": {"red": 1}}}, "data.label_palette: colour 'red' is not \"R,G,B\""),
    ({"loss": {"name": "ce"}}, "loss: {'name': 'ce'} is not a non-empty list of loss terms"),
    ({"loss": [{"weight": 1}]}, "loss[0]: {'weight': 1} is not a mapping with a 'name'"),
    ({"model": "fc_ef"}, "model: 'fc_ef' is not a mapping with at least 'name'"),
    ({"model": {"dropout": 0.1}}, "model.name: is required"),
    ({"trainer": 3}, "trainer: 3 is not a mapping"),
    ({"trainer": {"eval_tile": 64, "eval_stride": 128}}, "trainer.eval_stride: 128 must be <= trainer.eval_tile (64)"),
])
def test_schema_refuses_bad_values(user: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(user)
    assert str(info.value).startswith(message), str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_schema_accepts_and_normalises_good_values() -> None:
    cfg = resolve({
        "trainer": {"max_steps": 1e4, "precision": "bf16-mixed", "devices": [0, 1], "deterministic": "warn",
                    "limit_val_batches": 0.25, "limit_train_batches": 3, "max_time_minutes": 0.5},
        "data": {"tags": {"enabled": True}, "layout": "levir", "val_batch_size": None, "mean": [0.5], "std": [0.2]},
        "optim": {"name": "AdamW", "lr": 1, "betas": (0.9, 0.99), "lr_mult": {"decode_head": 10}},
        "schedule": {"name": "cosine", "warmup_factor": 0},
    })
    assert cfg["trainer"]["max_steps"] == 10000 and isinstance(cfg["trainer"]["max_steps"], int)
    assert cfg["optim"]["betas"] == [0.9, 0.99]
    assert cfg["trainer"]["devices"] == [0, 1]


def test_every_default_key_has_a_schema_entry() -> None:
    from changekit.config_schema import SCHEMA

    def missing(defaults: dict, schema: dict, prefix: str = "") -> list[str]:
        out = []
        for key, value in defaults.items():
            if key not in schema:
                out.append(f"{prefix}{key}")
            elif isinstance(value, dict) and value and key != "model":
                out += missing(value, schema[key], f"{prefix}{key}.")
        return out

    assert missing(DEFAULTS, SCHEMA) == []
    resolve({})  # the defaults pass their own schema


def test_errors_name_the_file_or_set_the_value_came_from(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("trainer: {max_steps: abc}\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\nmodel: {name: fc_ef}\n")
    with pytest.raises(ConfigError, match=r"trainer.max_steps: 'abc' is not an integer \(in .*base.yaml\)$"):
        load_config(tmp_path / "child.yaml")
    with pytest.raises(ConfigError, match=r"data.batch_size: 0 must be >= 1 \(from --set\)$"):
        load_config(tmp_path / "child.yaml", ["trainer.max_steps=3", "data.batch_size=0"])
    (tmp_path / "typo.yaml").write_text("trainer: {max_epoch: 3}\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'trainer.max_epoch' .*\(in .*typo.yaml\)$"):
        load_config(tmp_path / "typo.yaml")
    # an override that replaces a whole section owns the keys below it
    with pytest.raises(ConfigError, match=r"trainer.max_steps: 'x' is not an integer \(from --set\)$"):
        load_config(tmp_path / "child.yaml", ["trainer={max_steps: x}"])


# ------------------------------------------------------------------------------------------ composition


def test_several_files_compose_left_to_right(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("optim: {lr: 0.1, weight_decay: 0.5}\ntrainer: {max_epochs: 3}\n")
    (tmp_path / "model.yaml").write_text("model: {name: fc_ef, base_channels: 8}\noptim: {lr: 0.2}\n")
    (tmp_path / "data.yaml").write_text("data: {train: tr, batch_size: 2}\ntrainer: {max_epochs: 4}\n")
    cfg = load_config([tmp_path / "base.yaml", tmp_path / "model.yaml", str(tmp_path / "data.yaml")],
                      ["data.batch_size=3"])
    assert cfg["optim"] == {**DEFAULTS["optim"], "lr": 0.2, "weight_decay": 0.5}
    assert cfg["model"] == {"name": "fc_ef", "base_channels": 8}
    assert cfg["trainer"]["max_epochs"] == 4 and cfg["data"]["train"] == "tr" and cfg["data"]["batch_size"] == 3
    assert load_config({"model": {"name": "fc_ef"}}, ["optim.lr=0.3"])["optim"]["lr"] == 0.3  # a mapping too


def test_base_may_be_a_list(tmp_path: Path) -> None:
    (tmp_path / "sched.yaml").write_text("optim: {lr: 0.1}\nschedule: {name: step}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "data.yaml").write_text("data: {batch_size: 2}\noptim: {lr: 0.2}\n")
    (tmp_path / "run.yaml").write_text("_base_: [sched.yaml, sub/data.yaml]\ndata: {batch_size: 5}\n")
    cfg = load_config(tmp_path / "run.yaml")
    assert cfg["optim"]["lr"] == 0.2 and cfg["schedule"]["name"] == "step" and cfg["data"]["batch_size"] == 5
    # a diamond (two bases sharing one) is not a cycle
    (tmp_path / "a.yaml").write_text("_base_: sched.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: sched.yaml\ndata: {batch_size: 6}\n")
    (tmp_path / "d.yaml").write_text("_base_: [a.yaml, b.yaml]\n")
    assert load_config(tmp_path / "d.yaml")["data"]["batch_size"] == 6


def test_base_errors(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("_base_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_base_: [a.yaml]\n")
    with pytest.raises(ConfigError, match=r"b.yaml: _base_ cycle: a.yaml -> b.yaml -> a.yaml"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "self.yaml").write_text("_base_: self.yaml\n")
    with pytest.raises(ConfigError, match="_base_ cycle"):
        load_config(tmp_path / "self.yaml")
    (tmp_path / "m.yaml").write_text("_base_: [gone.yaml]\n")
    with pytest.raises(DatasetNotFoundError, match=r"m.yaml: _base_ file 'gone.yaml' not found"):
        load_config(tmp_path / "m.yaml")
    (tmp_path / "n.yaml").write_text("_base_: {x: 1}\n")
    with pytest.raises(ConfigError, match=r"n.yaml: _base_ must be a file name or a list of file names"):
        load_config(tmp_path / "n.yaml")
    (tmp_path / "list.yaml").write_text("- model\n- data\n")
    with pytest.raises(ConfigError, match=r"list.yaml: a config must be a mapping .* got list"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="no config file given"):
        load_config([])
