"""Learning-rate schedules and the EMA of weights."""

import pytest
import torch
from torch import nn

from changekit.config import DEFAULTS
from changekit.engine.ema import EMAWeights
from changekit.engine.schedules import build_optimizer, build_scheduler, lr_lambda
from changekit.errors import ConfigError


def _sched(**kw: object) -> dict:
    return {**DEFAULTS["schedule"], **kw}


def test_warmup_then_poly_matches_misgnet_formula() -> None:
    # MISGNet: one warm-up epoch (factor 1e-3 -> 1), then (1 - (it - warm) / ((epochs - 1) * iters)) ** 0.9
    iters, epochs = 10, 5
    f = lr_lambda(_sched(name="poly", power=0.9, warmup=iters, warmup_factor=1e-3), iters * epochs, iters, 1.0)
    assert f(0) == pytest.approx(1e-3)
    assert f(5) == pytest.approx(1e-3 + (1 - 1e-3) * 0.5)
    for it in (10, 17, 33, 49):
        assert f(it) == pytest.approx((1 - (it - iters) / ((epochs - 1) * iters)) ** 0.9)


def test_step_cosine_and_unknown() -> None:
    f = lr_lambda(_sched(name="step", step_size=10, gamma=0.9), 100, 0, 1.0)
    assert [f(0), f(9), f(10), f(25)] == pytest.approx([1, 1, 0.9, 0.81])
    g = lr_lambda(_sched(name="cosine"), 100, 0, 1.0)
    assert g(0) == pytest.approx(1) and g(50) == pytest.approx(0.5) and g(100) == pytest.approx(0)
    with pytest.raises(ConfigError, match="unknown schedule 'pol' \\(did you mean 'poly'\\?\\)"):
        lr_lambda(_sched(name="pol"), 10, 0, 1.0)


def test_scheduler_steps_learning_rate() -> None:
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, {**DEFAULTS["optim"], "name": "adamw", "lr": 1.0})
    sched = build_scheduler(opt, _sched(name="linear", interval="step"), steps_per_epoch=5, total_steps=10)["scheduler"]
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1.0) and lrs[5] == pytest.approx(0.5)


def test_no_decay_groups() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    opt = build_optimizer(model, {**DEFAULTS["optim"], "no_decay_bias_norm": True})
    assert [g["weight_decay"] for g in opt.param_groups] == [DEFAULTS["optim"]["weight_decay"], 0.0]
    assert len(opt.param_groups[0]["params"]) == 1  # the conv weight only


def test_lr_mult_groups_follow_open_cd_custom_keys(caplog: pytest.LogCaptureFixture) -> None:
    """open-cd's ``custom_keys={'head': dict(lr_mult=10), 'norm': dict(decay_mult=0)}``: the head learns 10x
    faster, norms are not decayed, the longest matching key wins, and the schedule scales every group alike."""
    model = nn.ModuleDict({"backbone": nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)),
                           "decode_head": nn.Linear(2, 2), "decode_head_aux": nn.Linear(2, 2)})
    model["backbone"][1].norm = nn.Parameter(torch.ones(1))  # name holds 'norm' and no multiplier key
    cfg = {**DEFAULTS["optim"], "lr": 0.1, "weight_decay": 0.05, "no_decay_keys": ["norm"],
           "lr_mult": {"head": 10, "decode_head_aux": 2, "unused": 3}}
    with caplog.at_level("WARNING"):
        opt = build_optimizer(model, cfg)
    assert "'unused' matches no trainable parameter" in caplog.text
    names = {id(p): n for n, p in model.named_parameters()}
    got = [(g["lr"], g["weight_decay"], sorted(names[id(p)] for p in g["params"])) for g in opt.param_groups]
    assert got == [
        (0.1, 0.05, ["backbone.0.bias", "backbone.0.weight", "backbone.1.bias", "backbone.1.weight"]),
        (0.1, 0.0, ["backbone.1.norm"]),
        (pytest.approx(0.2), 0.05, ["decode_head_aux.bias", "decode_head_aux.weight"]),
        (pytest.approx(1.0), 0.05, ["decode_head.bias", "decode_head.weight"]),
    ]
    sched = build_scheduler(opt, _sched(name="linear", interval="step"), steps_per_epoch=4, total_steps=4)
    opt.step()
    sched["scheduler"].step()
    sched["scheduler"].step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.05, 0.1, 0.5])
    assert len(build_optimizer(model, {**DEFAULTS["optim"]}).param_groups) == 1  # no keys: one group as before
    for bad in ({"head": 0}, {"head": "10"}, ["head"], {"": 2.0}):
        with pytest.raises(ConfigError, match="optim.lr_mult"):
            build_optimizer(model, {**cfg, "lr_mult": bad})


def test_ema_copies_then_averages() -> None:
    model = nn.Linear(1, 1, bias=False)
    ema = EMAWeights(model, beta=0.5, update_after_step=2)
    for value in (1.0, 2.0):  # steps 1 and 2: plain copies
        model.weight.data.fill_(value)
        ema.update(model)
        assert ema.module.weight.item() == value
    model.weight.data.fill_(4.0)
    ema.update(model)  # 0.5 * 2 + 0.5 * 4
    assert ema.module.weight.item() == pytest.approx(3.0)
    assert not ema.module.weight.requires_grad
    assert "module.weight" in ema.state_dict() and "step" in ema.state_dict()


def test_ema_decay_warmup() -> None:
    ema = EMAWeights(nn.Linear(1, 1), beta=0.9999, update_after_step=0, warmup_power=2 / 3)
    ema.step.fill_(1)
    assert ema.decay() == 0.0
    ema.step.fill_(11)
    assert ema.decay() == pytest.approx(1 - 11 ** (-2 / 3))
    ema.step.fill_(10**9)
    assert ema.decay() == 0.9999
    assert torch.equal(ema.step, torch.tensor(10**9))


def test_slide_evaluation_runs_the_sliding_window(synth_root, tiny_config) -> None:  # noqa: ANN001
    """trainer.eval_mode=slide evaluates through the shared sliding-window inference."""
    from changekit.config import resolve
    from changekit.engine.datamodule import ChangeDataModule
    from changekit.engine.task import ChangeTask

    base = tiny_config(synth_root)
    whole = ChangeTask(resolve(base)).eval()
    dm = ChangeDataModule(resolve(base)["data"])
    dm.setup("validate")
    batch = next(iter(dm.val_dataloader()))  # 64 x 64 images
    with torch.no_grad():
        pw = whole._padded_forward(whole.model, batch).change_prob()

    def slide(tile: int, stride: int) -> torch.Tensor:
        cfg = resolve({**base, "trainer": {**base["trainer"], "eval_mode": "slide", "eval_tile": tile,
                                           "eval_stride": stride}})
        task = ChangeTask(cfg).eval()
        task.model.load_state_dict(whole.model.state_dict())
        with torch.no_grad():
            return task._padded_forward(task.model, batch).change_prob()

    one_tile = slide(64, 32)  # a single window covers the image: same as whole-image evaluation
    assert one_tile.shape == pw.shape == batch["mask"].shape
    assert torch.allclose(one_tile, pw.clamp(1e-6, 1 - 1e-6), atol=1e-5)
    tiled = slide(32, 16)  # 3 x 3 windows: borders differ (fc_siam_diff sees less context), most pixels agree
    assert not torch.allclose(tiled, one_tile, atol=1e-4)
    assert ((tiled > 0.5) == (pw > 0.5)).float().mean() > 0.9
