"""The Lightning system: one model, its losses, metrics, optimiser, schedule and optional EMA weights.

The network is a plain :class:`~changekit.models.base.ChangeModel`; this module owns everything around it, and
never looks inside it: it calls ``model(a, b, **extras)``, the configured loss on the returned
:class:`~changekit.models.outputs.ChangeOutput`, and ``model.extra_losses``. Checkpoints hold the state_dict and
the resolved config (``hyper_parameters["config"]``), so a model is rebuilt by name without pickled modules.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
import torch.nn.functional as F

from ..data.samplers import ChangeIndex
from ..losses import auto_terms, build_loss, resolve_auto_weights
from ..metrics import ConfusionMatrix, SCDMetrics, binary_metrics
from ..models import build_model
from ..models.outputs import ChangeOutput
from .ema import EMAWeights
from .finish import AVERAGE_DIR, decision_threshold, save_snapshot
from .guards import check_loss, check_weights
from .schedules import BudgetShaper, SchedulePlan, build_optimizer, build_scheduler

if TYPE_CHECKING:
    from ..inference.sliding import TileExtras

log = logging.getLogger(__name__)


def model_kwargs(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Registry name and constructor arguments from the config's ``model`` section."""
    kwargs = dict(config["model"])
    return kwargs.pop("name"), kwargs


class ChangeTask(L.LightningModule):
    """Trains, validates and tests any registered change model.

    Args:
        config: the resolved run configuration (see :mod:`changekit.config`).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = config
        name, kwargs = model_kwargs(config)
        self.model = build_model(name, **kwargs)
        tcfg = config["trainer"]
        if tcfg["channels_last"]:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.loss_fn = build_loss(config["loss"])
        ema = tcfg["ema"]
        self.ema = (
            EMAWeights(self.model, ema["beta"], ema["update_after_step"], ema["update_every"], ema["warmup_power"])
            if ema["enabled"] else None
        )
        self.threshold = decision_threshold(config)  # `auto` is chosen after training (engine.finish)
        self.task_type = getattr(self.model, "task", "binary")
        self._cm: dict[str, ConfusionMatrix] = {}
        self._scd: dict[str, SCDMetrics] = {}
        self.test_results: dict[str, Any] = {}
        self.samples: list[dict[str, Any]] = []
        self.max_samples = 0
        #: sliding-window evaluation: forward inputs computed per batch of tiles (``test --tile-tags``)
        self.tile_extras: TileExtras | None = None
        #: a schedule shaped to a run shorter than its recipe (see ``configure_optimizers``), and its saved state
        self.shaper: BudgetShaper | None = None
        self._shaper_state: dict[str, Any] | None = None

    # ---------------------------------------------------------------- forward
    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that are validated, tested and exported: the EMA copy when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:  # noqa: D102
        return self.eval_model(a, b, **extras)

    def _inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
        a, b = batch["image_a"], batch["image_b"]
        if self.config["trainer"]["channels_last"]:
            a, b = a.contiguous(memory_format=torch.channels_last), b.contiguous(memory_format=torch.channels_last)
        extras = {k: batch[k] for k in getattr(self.model, "extra_inputs", ()) if k in batch}
        return a, b, extras

    def _padded_forward(self, net: torch.nn.Module, batch: dict[str, Any]) -> ChangeOutput:
        """Evaluate at any size: reflect-pad to the model's input divisor and crop the logits back.

        With ``trainer.eval_mode: slide`` the images go through the shared sliding-window inference instead;
        its blended probabilities come back as log-probabilities, so argmax, softmax and the losses read them
        like logits.
        """
        a, b, extras = self._inputs(batch)
        tcfg = self.config["trainer"]
        if tcfg["eval_mode"] == "slide":
            return self._slide_forward(net, a, b, extras)
        if tcfg["eval_mode"] != "whole":
            from ..errors import ConfigError

            raise ConfigError(f"trainer.eval_mode must be 'whole' or 'slide', got {tcfg['eval_mode']!r}")
        d = int(getattr(self.model, "input_divisor", 1))
        h, w = a.shape[-2:]
        ph, pw = (-h) % d, (-w) % d
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            a, b = F.pad(a, (0, pw, 0, ph), mode=mode), F.pad(b, (0, pw, 0, ph), mode=mode)
        out = net(a, b, **extras)
        if ph or pw:
            crop = (..., slice(0, h), slice(0, w))
            out = ChangeOutput(
                out.change[crop],
                None if out.sem_a is None else out.sem_a[crop],
                None if out.sem_b is None else out.sem_b[crop],
                out.aux,
            )
        return out

    def _slide_forward(
        self, net: torch.nn.Module, a: torch.Tensor, b: torch.Tensor, extras: dict[str, Any]
    ) -> ChangeOutput:
        from ..inference.sliding import sliding_window_predict

        t = self.config["trainer"]
        res = sliding_window_predict(net, a, b, tile=int(t["eval_tile"]), overlap=None, stride=int(t["eval_stride"]),
                                     batch_size=max(1, a.shape[0]) * 4, blend=t["eval_blend"], extras=extras or None,
                                     tile_extras=self.tile_extras)
        p = res["change"].clamp(1e-6, 1 - 1e-6)
        change = torch.stack([torch.log1p(-p), torch.log(p)], 1)

        def log_probs(key: str) -> torch.Tensor | None:
            return res[key].clamp_min(1e-6).log() if key in res else None

        return ChangeOutput(change, log_probs("sem_a"), log_probs("sem_b"))

    # ---------------------------------------------------------------- training
    def resolve_auto_loss(self, dataset: Any) -> None:
        """Replace automatic loss weights by numbers from the change share the loss will see in ``dataset`` (the
        sampled share under ``data.sampler: change_balanced``), in the config itself (so the run's config.yaml and
        checkpoints hold the numbers) and in the loss."""
        if not auto_terms(self.config["loss"]):
            return
        index, data = ChangeIndex.of(dataset), self.config["data"]
        share, source = index.share, "training change share"
        if data.get("sampler") == "change_balanced":
            share = index.sampled_share(data["change_share"])
            source = f"change share as sampled (data.change_share {data['change_share']}; labels {index.share:.4f})"
        for line in resolve_auto_weights(self.config["loss"], share, source=source):
            log.info("%s", line)
        self.loss_fn = build_loss(self.config["loss"])

    def setup(self, stage: str) -> None:  # noqa: D102
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and datamodule is not None and "train" in getattr(datamodule, "datasets", {}):
            self.resolve_auto_loss(datamodule.datasets["train"])  # no-op when `train` resolved it already

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:  # noqa: D102
        a, b, extras = self._inputs(batch)
        out = self.model(a, b, **extras)
        loss, terms = self.loss_fn(out, batch)
        for key, value in self.model.extra_losses(out, batch).items():
            terms[key] = value
            loss = loss + value
        check_loss(loss, self.global_step, batch, terms)  # NaN / Inf: stop here, naming the step and the batch
        bs = a.shape[0]
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=bs)
        if len(terms) > 1:
            self.log_dict({f"train/{k}": v.detach() for k, v in terms.items()}, on_step=True, batch_size=bs)
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:  # noqa: D102
        check_weights(checkpoint.get("state_dict") or {}, self.global_step)  # never a non-finite checkpoint
        if self.shaper is not None:  # the run's planned length survives a resume
            checkpoint["changekit_schedule"] = self.shaper.state_dict(time.monotonic())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:  # noqa: D102
        self._shaper_state = checkpoint.get("changekit_schedule")  # read by configure_optimizers (called later)

    def on_train_start(self) -> None:  # noqa: D102
        if self.shaper is not None:
            self.shaper.start(time.monotonic(), self.global_step)
            if self.shaper.spent(time.monotonic()):  # a resume of a run whose budget is used up: say so
                log.warning("trainer.max_time_minutes: this run's time budget is already spent (%.1f of %.1f min); "
                            "nothing more is trained; raise it on resume (--set trainer.max_time_minutes=M) to "
                            "train longer", self.shaper.elapsed(time.monotonic()) / 60, self.shaper.budget_s / 60)
                self.trainer.should_stop = True

    def on_train_end(self) -> None:  # noqa: D102
        if self.shaper is not None and self.shaper.budget_s is not None and self.trainer.should_stop:
            log.warning("trainer.max_time_minutes: stopped at step %d, the run's time budget of %.1f min is spent "
                        "(all invocations count); `changekit train --resume --out RUN --set "
                        "trainer.max_time_minutes=M` trains longer", self.global_step, self.shaper.budget_s / 60)

    def on_train_epoch_start(self) -> None:  # noqa: D102
        self.model.current_epoch = self.current_epoch  # epoch-dependent terms (ClearSCD's SACL warm-up), 0-based

    def on_train_epoch_end(self) -> None:  # noqa: D102
        keep = int(self.config["trainer"].get("average_last") or 0)
        if keep > 1 and self.trainer.is_global_zero:  # trainer.average_last: the last K epochs' weights
            folder = Path(self.trainer.default_root_dir) / "checkpoints" / AVERAGE_DIR
            save_snapshot(folder, self.current_epoch, self.model, keep)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:  # noqa: D102
        if self.ema is not None:
            self.ema.update(self.model)
        if self.shaper is not None and self.shaper.update(self.global_step, time.monotonic()):
            self.trainer.should_stop = True  # the whole run's time budget (all invocations) is spent

    # ---------------------------------------------------------------- evaluation
    def _eval_step(self, batch: dict[str, Any], stage: str) -> ChangeOutput:
        out = self._padded_forward(self.eval_model, batch)
        loss, _ = self.loss_fn(out, batch)
        self.log(f"{stage}/loss", loss, on_epoch=True, sync_dist=True, batch_size=batch["image_a"].shape[0])
        pred = (out.change_prob() > self.threshold).long()
        if stage not in self._cm:
            self._cm[stage] = ConfusionMatrix(2, ignore_index=255)
        self._cm[stage].update(pred, batch["mask"])
        if self.task_type == "semantic" and out.sem_a is not None and "sem_a" in batch:
            if stage not in self._scd:
                self._scd[stage] = SCDMetrics(
                    num_classes=self.model.num_classes, ignore_index=int(self.config["data"]["ignore_index"])
                )
            self._scd[stage].update(
                out.sem_a.argmax(1), out.sem_b.argmax(1), pred, batch["sem_a"], batch["sem_b"], batch["mask"]
            )
        return out

    def _eval_epoch_end(self, stage: str) -> dict[str, Any]:
        results: dict[str, Any] = {}
        cm = self._cm.pop(stage, None)
        if cm is not None:
            cm.sync()
            results.update(binary_metrics(cm.matrix))
        scd = self._scd.pop(stage, None)
        if scd is not None:
            scd.sync()
            results["semantic"] = scd.compute()
        scalars = {f"{stage}/{k}": float(v) for k, v in results.items() if isinstance(v, (int, float))}
        if "semantic" in results:
            scalars.update({f"{stage}/{k}": float(v) for k, v in results["semantic"].items()
                            if isinstance(v, (int, float))})
        if scalars:
            self.log_dict(scalars, prog_bar=stage == "val", sync_dist=False, rank_zero_only=True)
        return results

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:  # noqa: D102
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:  # noqa: D102
        out = self._eval_step(batch, "test")
        if len(self.samples) < self.max_samples:
            self._keep_samples(batch, out)

    def on_test_epoch_end(self) -> None:  # noqa: D102
        self.test_results = self._eval_epoch_end("test")

    def _keep_samples(self, batch: dict[str, Any], out: ChangeOutput) -> None:
        from ..data.normalize import Normalisation

        norm = Normalisation.from_config(self.config)
        prob = out.change_prob()
        for i in range(batch["image_a"].shape[0]):
            if len(self.samples) >= self.max_samples:
                return

            def rgb(x: torch.Tensor) -> Any:
                return (norm.to_unit(x[:3].float().cpu()) * 255).byte().permute(1, 2, 0).numpy()

            sample = {
                "stem": batch["stem"][i], "image_a": rgb(batch["image_a"][i]), "image_b": rgb(batch["image_b"][i]),
                "label": batch["mask"][i].byte().cpu().numpy(), "prob": prob[i].float().cpu().numpy(),
                "pred": (prob[i] > self.threshold).byte().cpu().numpy(),
            }
            if out.sem_a is not None:
                sample["pred_sem_a"] = out.sem_a[i].argmax(0).byte().cpu().numpy()
                sample["pred_sem_b"] = out.sem_b[i].argmax(0).byte().cpu().numpy()
                for key in ("sem_a", "sem_b"):
                    if key in batch:
                        sample[key] = batch[key][i].byte().cpu().numpy()
            self.samples.append(sample)

    # ---------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:  # noqa: D102
        optimizer = build_optimizer(self.model, self.config["optim"])
        total = int(self.trainer.estimated_stepping_batches)  # also sets up the train loader
        batches = self.trainer.num_training_batches
        accumulate = max(1, self.trainer.accumulate_grad_batches)
        steps_per_epoch = max(1, int(batches) // accumulate) if batches not in (None, float("inf")) else total
        scfg, minutes = self.config["schedule"], self.config["trainer"]["max_time_minutes"]
        plan = SchedulePlan.from_config(scfg, steps_per_epoch, total)
        budget_s = float(minutes) * 60 if minutes else None
        horizon = None
        shaped = bool(scfg.get("budget_shaped", True)) and plan.shapes(total, budget_s)
        if shaped or budget_s is not None:  # a time budget is kept by the shaper even when it shapes nothing
            self.shaper = BudgetShaper(plan, total, budget_s, self._shaper_state)
        if shaped:  # shorter than the recipe, or bounded by time: warm up, peak and decay within the run
            horizon = self.shaper.horizon
        sched = build_scheduler(optimizer, scfg, steps_per_epoch, total, horizon=horizon)
        return optimizer if sched is None else {"optimizer": optimizer, "lr_scheduler": sched}
