"""The benchmark API: result keys, types and positivity on a tiny model (timings are never asserted)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from changekit.bench import benchmark, count_gmacs, device_name, format_bench
from changekit.errors import ConfigError
from changekit.models.base import ChangeModel
from changekit.models.outputs import ChangeOutput
from changekit.models.registry import list_models, register_model


class _TinyCD(ChangeModel):
    """Conv + BatchNorm (so training changes buffers too), optional semantic heads."""

    input_divisor = 4

    def __init__(self, in_channels: int = 3, num_classes: int = 0) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.body = nn.Sequential(nn.Conv2d(2 * in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.change = nn.Conv2d(8, 2, 1)
        self.sem = nn.Conv2d(in_channels, num_classes, 1) if num_classes else None

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:
        self.check_input(a, b)
        change = self.change(self.body(torch.cat([a, b], 1)))
        if self.sem is None:
            return ChangeOutput(change)
        return ChangeOutput(change, self.sem(a), self.sem(b))


if "_test_tiny_cd" not in list_models():

    @register_model
    def _test_tiny_cd(*, in_channels: int = 3, num_classes: int = 0) -> nn.Module:
        return _TinyCD(in_channels=in_channels, num_classes=num_classes)


def _check_common(res: dict[str, Any], batch: int) -> None:
    for key in ("infer_time_s", "infer_pairs_per_s"):
        assert isinstance(res[key], float) and res[key] > 0
    assert res["infer_pairs_per_s"] == pytest.approx(batch / res["infer_time_s"])
    assert isinstance(res["infer_peak_mem_mib"], float) and res["infer_peak_mem_mib"] >= 0
    assert res["memory_method"] in ("proc_vmhwm", "ru_maxrss", "cuda_max_memory_allocated")
    assert res["torch"] == torch.__version__
    assert isinstance(res["threads"], int) and res["threads"] >= 1
    assert isinstance(res["device_name"], str) and res["device_name"]


def test_benchmark_by_registry_name() -> None:
    res = benchmark("_test_tiny_cd", size=32, batch=2, warmup=1, iters=1, model_kwargs={"num_classes": 0})
    _check_common(res, 2)
    assert res["model"] == "_test_tiny_cd" and res["task"] == "binary"
    assert res["params"] == sum(p.numel() for p in _TinyCD().parameters())
    assert len(res["infer_times_s"]) == 1
    assert isinstance(res["train_step_s"], float) and res["train_step_s"] > 0
    assert res["train_pairs_per_s"] == pytest.approx(2 / res["train_step_s"])
    assert res["train_peak_mem_mib"] >= 0
    s = res["settings"]
    assert (s["size"], s["batch"], s["in_channels"], s["iters"], s["device"]) == (32, 2, 3, 1, "cpu")
    assert s["model_kwargs"] == {"num_classes": 0} and s["amp"] is False and s["amp_dtype"] is None
    # multiply-adds of one pair: the 3x3 conv over 6 bands to 8 channels and the 1x1 conv to 2, at 32 x 32
    assert res["gmacs_per_pair"] == pytest.approx((6 * 8 * 9 + 8 * 2) * 32 * 32 / 1e9)
    text = format_bench(res)
    for part in ("_test_tiny_cd", "pairs/s", "training step", "2 x 3 x 32 x 32", res["device_name"], "GMACs"):
        assert part in text


def test_benchmark_semantic_module_restores_weights_mode_and_threads() -> None:
    model = _TinyCD(in_channels=4, num_classes=5).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    threads = torch.get_num_threads()
    res = benchmark(model, size=32, batch=2, in_channels=4, warmup=0, iters=1, threads=1)
    _check_common(res, 2)
    assert res["task"] == "semantic" and res["model"] == "_TinyCD"
    assert res["settings"]["threads"] == 1 and res["threads"] == 1
    assert res["train_step_s"] > 0
    assert torch.get_num_threads() == threads and not model.training
    for k, v in model.state_dict().items():  # AdamW steps and BN statistics were rolled back
        assert torch.equal(v, before[k]), k


def test_benchmark_without_training_step() -> None:
    res = benchmark(_TinyCD(), size=16, batch=1, warmup=0, iters=2, train_step=False, channels_last=True)
    _check_common(res, 1)
    assert res["train_step_s"] is None and res["train_pairs_per_s"] is None
    assert len(res["infer_times_s"]) == 2 and res["settings"]["channels_last"] is True
    assert "training step" not in format_bench(res)


def test_benchmark_amp_on_cpu_records_dtype() -> None:
    res = benchmark(_TinyCD(), size=16, batch=1, warmup=0, iters=1, train_step=False, amp=True)
    assert res["settings"]["amp_dtype"] == "bfloat16"
    assert "bfloat16" in format_bench(res)


def test_benchmark_rejects_bad_settings() -> None:
    with pytest.raises(ConfigError, match="input_divisor 4; try 32"):
        benchmark(_TinyCD(), size=30, batch=1, iters=1)
    with pytest.raises(ConfigError, match="iters"):
        benchmark(_TinyCD(), size=16, batch=1, iters=0)
    with pytest.raises(ConfigError, match="in_channels: 4 given"):
        benchmark(_TinyCD(in_channels=3), size=16, batch=1, in_channels=4, iters=1)


def test_device_name_cpu() -> None:
    name = device_name("cpu")
    assert isinstance(name, str) and name


def test_count_gmacs_of_a_model_with_extra_inputs_uses_its_dummy_extras_and_keeps_its_mode() -> None:
    class WithTags(_TinyCD):
        extra_inputs = ("tags_a",)

        def example_extras(self, batch: int) -> dict[str, Any]:
            return {"tags_a": [["x"]] * batch}

        def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:
            assert len(extras["tags_a"]) == a.shape[0]
            return super().forward(a, b)

    model = WithTags().train()
    assert count_gmacs(model, size=16) == pytest.approx((6 * 8 * 9 + 8 * 2) * 16 * 16 / 1e9)
    assert model.training
    res = benchmark(model, size=16, batch=3, warmup=0, iters=1, train_step=False)
    assert res["gmacs_per_pair"] == pytest.approx((6 * 8 * 9 + 8 * 2) * 16 * 16 / 1e9)


def test_zoo_table_renders_saved_results(tmp_path: Any, capsys: pytest.CaptureFixture) -> None:
    """benchmarks/zoo_table.py: the table of docs/benchmarks.md from saved results, errors kept as a row."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "zoo_table.py"
    spec = importlib.util.spec_from_file_location("zoo_table", path)
    assert spec is not None and spec.loader is not None
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    b8 = benchmark("_test_tiny_cd", size=32, batch=2, warmup=0, iters=1)
    b1 = benchmark("_test_tiny_cd", size=32, batch=1, warmup=0, iters=1, train_step=False)
    saved = tmp_path / "zoo.json"
    saved.write_text(json.dumps({"rows": [{"name": "tinycd", "batch8": b8, "batch1": b1},
                                          {"name": "broken", "batch8": {"model": "broken", "error": "boom"}}]}))
    assert zoo.main(["--table", str(saved), "--markdown", str(tmp_path / "t.md")]) == 0
    lines = (tmp_path / "t.md").read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("| model | task | parameters | GMACs")
    assert lines[2].startswith(f"| `tinycd` | binary | {b8['params']:,} | 0.00 |") and "0.28 M" in lines[2]
    assert "error: boom" in lines[3]
