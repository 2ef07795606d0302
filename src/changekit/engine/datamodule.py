"""Lightning data module: the config's ``data`` section -> validated datasets and fast loaders."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, default_collate

from ..data.datasets import ChangeDataset
from ..data.io import image_size
from ..data.normalize import Normalisation
from ..data.samplers import ChangeBalancedSampler, ChangeIndex, ResumableShuffleSampler
from ..data.tags import maybe_add_tags
from ..data.transforms import build_transforms
from ..errors import ConfigError

SPLITS = ("train", "val", "test")


def build_dataset(
    cfg: dict[str, Any], split: str, augment: bool = False, extra_inputs: tuple[str, ...] = ()
) -> ChangeDataset:
    """The dataset of one split from the ``data`` config (augmented only when ``augment``)."""
    source = cfg.get(split)
    if source is None:
        raise ConfigError(f"config key 'data.{split}' is not set (a folder or a path-list file)")
    transform = build_transforms(cfg["augment"], ignore_index=int(cfg["ignore_index"])) if augment else None
    dataset = ChangeDataset(
        source, root=cfg["root"], layout=cfg["layout"], task=cfg["task"], transform=transform,
        check_values=cfg["check_values"], ignore_index=cfg["ignore_index"], label_palette=cfg.get("label_palette"),
        normalisation=Normalisation.from_data_config(cfg), check_range=split != "train",
        align=bool(cfg.get("align")), resampling=cfg.get("resampling") or "bilinear",
    )
    return maybe_add_tags(dataset, cfg, split, extra_inputs)


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Default collation with a clear error for pairs of different sizes in one batch."""
    shapes = {tuple(s["image_a"].shape) for s in batch}
    if len(shapes) > 1:
        raise ConfigError(
            f"a batch mixes image sizes {sorted(shapes)}; tile the data (`changekit data tile`), add a random_crop "
            "augmentation, or set data.val_batch_size=1 for evaluation"
        )
    return default_collate(batch)


def _uniform_sizes(ds: ChangeDataset) -> bool:
    """Whether all date-A images of ``ds`` share one size (read from headers, not pixels)."""
    records = getattr(ds, "records", None)
    if not records:
        return True
    return len({image_size(r.a)[:2] for r in records}) == 1


class ChangeDataModule(L.LightningDataModule):
    """Builds the train/val/test datasets in ``setup`` and their loaders with worker processes."""

    def __init__(self, data: dict[str, Any], seed: int = 42, extra_inputs: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.cfg = data
        self.seed = seed
        self.extra_inputs = tuple(extra_inputs)
        self.datasets: dict[str, ChangeDataset] = {}
        self._resume: tuple[int, int] | None = None  # (epoch, training batches done) from a checkpoint
        self._counted: tuple[int, int] = (-1, 0)  # (epoch, training batches done) in this process

    def setup(self, stage: str | None = None) -> None:  # noqa: D102
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "", SPLITS)
        for split in wanted:
            if split in self.datasets or self.cfg.get(split) is None:
                continue
            self.datasets[split] = build_dataset(self.cfg, split, augment=split == "train",
                                                 extra_inputs=self.extra_inputs)
        if stage == "fit" and "train" not in self.datasets:
            raise ConfigError("config key 'data.train' is not set (a folder or a path-list file)")

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.datasets[split]
        bs = self.cfg["batch_size"] if split == "train" else (self.cfg["val_batch_size"] or self.cfg["batch_size"])
        if split != "train" and not self.cfg["val_batch_size"] and not _uniform_sizes(ds):
            bs = 1  # whole scenes of different sizes (OSCD, untiled sets) are evaluated one by one
        workers = int(self.cfg["num_workers"])
        bs = min(int(bs), max(1, len(ds)))
        sampler = None
        if shuffle:
            sampler = (ChangeBalancedSampler(ChangeIndex.of(ds), self.seed, self.cfg["change_share"])
                       if self.cfg["sampler"] == "change_balanced" else ResumableShuffleSampler(len(ds), self.seed))
            if self._resume is not None:
                world = self.trainer.world_size if self.trainer is not None else 1
                sampler.resume_at(self._resume[0], self._resume[1] * bs * world)
        return DataLoader(
            ds, batch_size=bs, sampler=sampler, num_workers=workers,
            collate_fn=collate, pin_memory=torch.cuda.is_available(), persistent_workers=workers > 0,
            drop_last=bool(self.cfg["drop_last"]) and split == "train" and len(ds) > int(bs),
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:  # noqa: D102
        # counts the training batches handed to the model in the current epoch (the loader itself runs ahead)
        trainer = self.trainer
        if trainer is not None and trainer.training:
            epoch = int(trainer.current_epoch)
            if self._counted[0] != epoch:
                start = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
                self._counted = (epoch, start)
            self._counted = (epoch, self._counted[1] + 1)
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Where training stands in the current epoch, saved in every checkpoint (see :meth:`load_state_dict`)."""
        if self.trainer is None:
            return {}
        epoch = int(self.trainer.current_epoch)
        return {"epoch": epoch, "batches_done": self._counted[1] if self._counted[0] == epoch else 0}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """On resume, continue the interrupted epoch where it stopped instead of replaying it."""
        if state:
            self._resume = (int(state["epoch"]), int(state["batches_done"]))

    def train_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:  # noqa: D102
        return self._loader("val", shuffle=False) if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:  # noqa: D102
        return self._loader("test", shuffle=False)
