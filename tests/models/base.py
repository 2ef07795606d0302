"""Shared contract tests for change models: subclass ``BaseModelTester`` and set ``model_name``.

Example::

    class TestFCSiamDiff(BaseModelTester):
        model_name = "fc_siam_diff"

Class attributes tune the checks for a family: ``model_kwargs`` (passed to ``build_model``), ``change_channels``
(1 or 2), ``size`` (side of the square test pair), ``unused_params`` (name prefixes of parameters that are
registered but, by design, get no gradient from the outputs).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from changekit.models import ChangeModel, ChangeOutput, build_model


def train_losses(step_loss: Callable[[], torch.Tensor], opt: torch.optim.Optimizer, steps: int) -> list[float]:
    """Take ``steps`` optimiser steps on ``step_loss()`` and return the losses (for "the loss falls" tests)."""
    losses = []
    for _ in range(steps):
        loss = step_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    return losses


def train_recipe_via_cli(recipe: Path, root: Path, out: Path, *overrides: str) -> dict[str, Any]:
    """``changekit train RECIPE`` for two CPU steps on the generated set ``root`` (``synth_root``); returns the
    resolved config the run wrote. ``overrides`` are further ``--set`` items."""
    import yaml

    from changekit.cli import main

    items = [f"data.train={root / 'train'}", f"data.val={root / 'val'}", f"data.test={root / 'val'}",
             "data.batch_size=2", "data.num_workers=0", "trainer.max_steps=2", "trainer.limit_val_batches=1",
             "trainer.accelerator=cpu", "trainer.devices=1", "trainer.progress_bar=false",
             "trainer.log_every_n_steps=1", *overrides]
    assert main(["train", str(recipe), "--out", str(out), *(a for item in items for a in ("--set", item))]) == 0
    assert (out / "model.ckpt").is_file()
    return yaml.safe_load((out / "config.yaml").read_text())


def _outputs(out: ChangeOutput) -> list[torch.Tensor]:
    tensors = [out.change] + [t for t in (out.sem_a, out.sem_b) if t is not None]
    return tensors + [t for t in out.aux.values() if isinstance(t, torch.Tensor) and t.is_floating_point()]


class BaseModelTester:
    """Contract every registered change model must meet (see ``docs/architecture.md``)."""

    model_name: ClassVar[str] = ""
    model_kwargs: ClassVar[dict[str, Any]] = {}
    change_channels: ClassVar[int] = 2
    size: ClassVar[int] = 64
    odd_size: ClassVar[int] = 70
    unused_params: ClassVar[tuple[str, ...]] = ()

    def build(self, seed: int = 0, **kwargs: Any) -> ChangeModel:
        torch.manual_seed(seed)
        return build_model(self.model_name, **{**self.model_kwargs, **kwargs})  # type: ignore[return-value]

    def pair(
        self, n: int = 1, channels: int = 3, size: int | None = None, seed: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        s = size or self.size
        return torch.randn(n, channels, s, s, generator=gen), torch.randn(n, channels, s, s, generator=gen)

    def test_output_contract(self) -> None:
        model = self.build()
        assert isinstance(model, ChangeModel)
        assert model.model_name == self.model_name
        a, b = self.pair()
        out = model(a, b)
        assert isinstance(out, ChangeOutput)
        assert out.change.shape == (1, self.change_channels, self.size, self.size)
        assert out.change.dtype == torch.float32
        prob = out.change_prob()
        assert prob.shape == (1, self.size, self.size)
        assert 0 <= float(prob.min()) <= float(prob.max()) <= 1

    def test_gradient_reaches_every_parameter(self) -> None:
        model = self.build().train()
        a, b = self.pair()
        out = model(a, b)
        gen = torch.Generator().manual_seed(3)
        # A random projection: a plain sum would give zero gradients through BatchNorm and softmax-like layers.
        loss = sum((t * torch.randn(t.shape, generator=gen)).sum() for t in _outputs(out))
        loss.backward()  # type: ignore[union-attr]
        dead = [
            name
            for name, p in model.named_parameters()
            if p.requires_grad
            and not name.startswith(self.unused_params)
            and (p.grad is None or not bool(p.grad.abs().sum() > 0))
        ]
        assert not dead, f"parameters without gradient: {dead[:10]}"

    @pytest.mark.parametrize("train", [True, False])
    def test_no_nans(self, train: bool) -> None:
        model = self.build().train(train)
        a, b = self.pair(n=2)
        with torch.set_grad_enabled(train):
            out = model(a * 10, b * 10)  # large inputs too
        for t in _outputs(out):
            assert torch.isfinite(t).all()

    def test_odd_size(self) -> None:
        model = self.build().eval()
        a, b = self.pair(size=self.odd_size)
        try:
            out = model(a, b)
        except ValueError as exc:
            assert "padding" in str(exc)
        else:
            assert out.change.shape == (1, self.change_channels, self.odd_size, self.odd_size)
            assert torch.isfinite(out.change).all()

    def test_state_dict_round_trip(self, tmp_path: Any) -> None:
        model = self.build(seed=0).train()
        a, b = self.pair(n=2)
        with torch.no_grad():
            model(a, b)  # moves BatchNorm running statistics away from their initial values
        model.eval()
        torch.save(model.state_dict(), tmp_path / "w.pt")
        other = self.build(seed=1).eval()
        with torch.no_grad():
            expected = model(a, b).change
            assert not torch.equal(other(a, b).change, expected)
            other.load_state_dict(torch.load(tmp_path / "w.pt", weights_only=True))
            assert torch.equal(other(a, b).change, expected)

    def test_four_input_channels(self) -> None:
        model = self.build(in_channels=4).eval()
        a, b = self.pair(channels=4)
        with torch.no_grad():
            out = model(a, b)
        assert out.change.shape == (1, self.change_channels, self.size, self.size)
        with pytest.raises(ValueError, match="4 input channels"):
            model(*self.pair(channels=3))

    def test_batch_items_are_independent_in_eval(self) -> None:
        """Catches a siamese batch that is split or paired wrongly: item 1 must not see item 0's dates."""
        model = self.build().eval()
        a, b = self.pair(n=2)
        with torch.no_grad():
            both = model(a, b).change
            second = model(a[1:], b[1:]).change
        torch.testing.assert_close(both[1:], second, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(both[0], both[1])

    def test_channels_last_input_gives_same_output(self) -> None:
        model = self.build().eval()
        a, b = self.pair(n=2)
        with torch.no_grad():
            ref = model(a, b).change
            cl = model.to(memory_format=torch.channels_last)(
                a.contiguous(memory_format=torch.channels_last), b.contiguous(memory_format=torch.channels_last)
            ).change
        torch.testing.assert_close(cl, ref, atol=1e-4, rtol=1e-4)
