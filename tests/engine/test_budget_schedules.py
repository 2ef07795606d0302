"""Schedules shaped by the run's budget: warm-up and decay as fractions of the run actually made."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from changekit.cli import main
from changekit.config import DEFAULTS
from changekit.engine.callbacks import read_metrics_rows
from changekit.engine.schedules import BudgetShaper, SchedulePlan, build_optimizer, build_scheduler, horizon_lambda

# ChangeAnywhere's recipe: 50 epochs, 10 of them linear warm-up from 1e-6, then poly power 1
RECIPE = {**DEFAULTS["schedule"], "name": "poly", "power": 1.0, "warmup": 10, "warmup_unit": "epoch",
          "warmup_factor": 1e-6, "plan_epochs": 50}


def _curve(sched: dict, horizon, steps: int) -> list[float]:
    f = horizon_lambda(sched, horizon, 1.0)
    return [f(t) for t in range(steps + 1)]


def test_recipe_length_keeps_the_recipe() -> None:
    plan = SchedulePlan.from_config(RECIPE, steps_per_epoch=10, run_steps=500)
    assert (plan.steps, plan.warmup) == (500, 100)
    h = plan.horizon(500)
    assert (h.total, h.warmup) == (500, 100)
    assert not plan.shapes(500, None)
    longer = plan.horizon(800)  # a longer run keeps the absolute warm-up and decays over the whole run
    assert (longer.total, longer.warmup) == (800, 100)


def test_shorter_run_keeps_the_fractions() -> None:
    plan = SchedulePlan.from_config(RECIPE, steps_per_epoch=10, run_steps=20)  # --set trainer.max_epochs=2
    assert plan.shapes(20, None)
    h = plan.horizon(20)
    assert (h.total, h.warmup) == (20, 4)  # 10/50 of the run
    curve = _curve(RECIPE, h, 20)
    assert curve[0] == pytest.approx(1e-6) and curve[4] == pytest.approx(1.0) == max(curve)
    assert curve[12] == pytest.approx(0.5) and curve[20] == pytest.approx(0.0)
    # the unshaped recipe over 20 steps would never leave its warm-up
    unshaped = _curve(RECIPE, SchedulePlan.from_config(RECIPE, 10, 500).horizon(500), 20)
    assert max(unshaped) < 0.21


def test_plan_defaults_to_the_run_and_plan_steps_wins() -> None:
    sched = {**RECIPE, "plan_epochs": None}
    assert SchedulePlan.from_config(sched, 10, 20).steps == 20  # no plan key: the run is the recipe
    assert SchedulePlan.from_config({**RECIPE, "plan_steps": 300}, 10, 20).steps == 300
    step = {**DEFAULTS["schedule"], "name": "step", "interval": "epoch", "step_size": 10, "plan_epochs": 100}
    h = SchedulePlan.from_config(step, 5, 50).horizon(50)  # 10 of 100 epochs -> the period shrinks too
    assert (h.total, h.step_size) == (50, 5) and h.warmup == 0  # a 50-step period of 500 -> 5 of 50
    assert _curve({**step, "gamma": 0.5}, h, 50)[4:6] == pytest.approx([1.0, 0.5])


def test_time_budget_estimates_steps_and_updates() -> None:
    plan = SchedulePlan.from_config(RECIPE, steps_per_epoch=10, run_steps=500)
    shaper = BudgetShaper(plan, run_steps=500, budget_s=100.0)
    shaper.start(0.0, 0)
    for step in range(1, 11):  # one step per second
        assert not shaper.update(step, float(step))
    assert shaper.horizon.total == pytest.approx(100, abs=1) and shaper.horizon.warmup == pytest.approx(20, abs=1)
    for step in range(11, 31):  # the machine slows down to one step every 2 s: the plan shortens
        shaper.update(step, 10.0 + 2 * (step - 10))
    assert 55 <= shaper.horizon.total < 90  # 30 done + 50 s left at 0.5-1 step/s
    # a fast machine cannot plan past the run's own bound (max_epochs)
    fast = BudgetShaper(plan, run_steps=500, budget_s=100.0)
    fast.start(0.0)
    for step in range(1, 6):
        fast.update(step, step * 0.01)
    assert (fast.horizon.total, fast.horizon.warmup) == (500, 100)


def test_time_budget_survives_resume() -> None:
    plan = SchedulePlan.from_config(RECIPE, steps_per_epoch=10, run_steps=500)
    first = BudgetShaper(plan, 500, budget_s=60.0)
    first.start(0.0)
    for step in range(1, 31):
        first.update(step, float(step))
    state = first.state_dict(30.0)  # killed after 30 s, at step 30 of about 60
    assert state["elapsed_s"] == pytest.approx(30.0) and state["total"] == pytest.approx(60, abs=1)
    resumed = BudgetShaper(plan, 500, budget_s=60.0, state=state)
    assert resumed.horizon.total == state["total"] and resumed.horizon.warmup == state["warmup"]
    resumed.start(1000.0, 30)  # a new process: its clock restarts, the run's time spent does not
    spent = [resumed.update(step, 1000.0 + step - 30) for step in range(31, 62)]
    assert resumed.horizon.total == pytest.approx(60, abs=2)
    assert spent[-1] and not spent[0]  # stops when the whole run's budget (both invocations) is spent


def test_scheduler_reads_the_mutable_horizon() -> None:
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, {**DEFAULTS["optim"], "lr": 1.0})
    h = SchedulePlan.from_config(RECIPE, 10, 1000).horizon(100)
    sched = build_scheduler(opt, RECIPE, steps_per_epoch=10, total_steps=1000, horizon=h)
    assert sched["interval"] == "step"
    for _ in range(h.warmup):
        opt.step()
        sched["scheduler"].step()
    assert opt.param_groups[0]["lr"] == pytest.approx(1.0)
    h.total = h.warmup + 2  # a shorter estimate: the next steps decay faster
    opt.step()
    sched["scheduler"].step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5)


def _lrs(run: Path) -> list[float]:
    rows = read_metrics_rows(run / "logs" / "metrics.csv")
    key = next(k for k in rows[0] if k.startswith("lr-"))
    return [float(r[key]) for r in rows if r.get(key)]


def _recipe_run(root: Path, tiny_config, tmp: Path) -> Path:  # noqa: ANN001
    cfg = tiny_config(root)
    cfg["optim"] = {"name": "adamw", "lr": 1e-3}
    cfg["schedule"] = {k: v for k, v in RECIPE.items() if k in ("name", "power", "warmup", "warmup_unit",
                                                                 "warmup_factor", "plan_epochs")}
    cfg["trainer"]["max_epochs"] = 50
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_short_run_of_a_long_recipe_peaks_and_decays(synth_root: Path, tiny_config, tmp_path: Path) -> None:  # noqa: ANN001
    cfg = _recipe_run(synth_root, tiny_config, tmp_path)
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out), "--set", "trainer.max_epochs=4",
                 "trainer.limit_val_batches=1"]) == 0
    lrs = _lrs(out)  # 12 pairs, batch 4: 3 steps per epoch, 12 steps; warm-up 10/50 of them
    assert len(lrs) == 12
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(1e-3, rel=0.02) and 1 <= peak <= 3
    assert lrs[-1] < 0.2e-3 and all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:], strict=False))


class _FakeClock:
    """A monotonic clock that advances 0.5 s per reading: the run's 'speed' no longer depends on the machine."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        self.now += 0.5
        return self.now


def test_cli_time_bounded_run_peaks_and_decays(synth_root: Path, tiny_config, tmp_path: Path,  # noqa: ANN001
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import changekit.engine.task as task_module

    monkeypatch.setattr(task_module, "time", _FakeClock())
    cfg = _recipe_run(synth_root, tiny_config, tmp_path)
    out = tmp_path / "run"
    # validation on one batch every 5 epochs, so that the budget goes to training steps on a loaded machine
    assert main(["train", str(cfg), "--out", str(out), "--set", "trainer.max_time_minutes=0.2",
                 "trainer.val_every_epochs=5", "trainer.limit_val_batches=1", "data.batch_size=2"]) == 0
    lrs = _lrs(out)
    assert len(lrs) >= 5, lrs
    assert max(lrs) > 0.5e-3, lrs  # the 50-epoch recipe's warm-up alone would stay below 1e-5 here
    assert lrs[-1] < 0.5 * max(lrs), lrs
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["changekit_schedule"]["budget_s"] == pytest.approx(12.0)
    assert ckpt["changekit_schedule"]["total"] <= ckpt["global_step"] + 1
