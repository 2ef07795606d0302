"""The trained two-stage generator as one object: settings, class table, autoencoder, UNet and noise schedule.

A run folder holds ``generator.yaml`` (settings, class table, latent scale) and ``autoencoder.pt`` /
``unet.pt`` (state dicts); the networks are rebuilt from the settings, so no pickled module is ever loaded.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..config import yaml_load
from ..data.io import atomic_path
from ..errors import CheckpointError, ConfigError, DatasetNotFoundError, suggest
from ..safeload import load_tensors
from .autoencoder import build_autoencoder, decode, downsample_factor, encode
from .diffusion import build_scheduler, build_unet, ddim_sample, mask_condition

__all__ = ["PRESETS", "resolve_settings", "load_class_table", "Generator"]

_AE_FULL = {"block_out_channels": [64, 128, 256], "latent_channels": 4, "layers_per_block": 2,
            "norm_num_groups": 32, "mid_attention": True}
_UNET_FULL = {"block_out_channels": [128, 256, 384], "layers_per_block": 2, "attention_levels": [False, True, True],
              "norm_num_groups": 32, "attention_head_dim": 32}
PRESETS: dict[str, dict[str, Any]] = {
    # A GPU run: 256 crops, f=4 KL autoencoder, 3-level UNet with attention at 32x32 and 16x16.
    "default": {
        "size": 256, "autoencoder": _AE_FULL, "unet": _UNET_FULL,
        "train": {"ae_steps": 40000, "ldm_steps": 150000, "batch_size": 8, "ae_lr": 1.0e-4, "ldm_lr": 1.0e-4,
                  "kl_weight": 1.0e-6, "p_uncond": 0.1, "timesteps": 1000, "sample_every": 5000,
                  "save_every": 1000, "seed": 0},
        "sample": {"steps": 50, "guidance": 2.0},
    },
    # CPU smoke size for tests and the toy protocol: 32 crops, a few thousand parameters per stage.
    "tiny": {
        "size": 32,
        "autoencoder": {"block_out_channels": [8, 16], "latent_channels": 4, "layers_per_block": 1,
                        "norm_num_groups": 4, "mid_attention": False},
        "unet": {"block_out_channels": [16, 16], "layers_per_block": 1, "attention_levels": [False, False],
                 "norm_num_groups": 4, "attention_head_dim": 8},
        "train": {"ae_steps": 10, "ldm_steps": 10, "batch_size": 4, "ae_lr": 1.0e-3, "ldm_lr": 1.0e-3,
                  "kl_weight": 1.0e-6, "p_uncond": 0.1, "timesteps": 1000, "sample_every": 10,
                  "save_every": 5, "seed": 0},
        "sample": {"steps": 4, "guidance": 2.0},
    },
}


def _merge(base: dict[str, Any], over: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if key not in out:
            raise ConfigError(f"generator setting '{where}{key}' is unknown{suggest(str(key), list(out))}")
        out[key] = _merge(out[key], value, f"{where}{key}.") if isinstance(out[key], dict) else value
    return out


def resolve_settings(preset: str = "default", config: str | Path | Mapping[str, Any] | None = None,
                     overrides: list[str] | None = None) -> dict[str, Any]:
    """A preset, then a YAML file (or mapping), then ``a.b=value`` overrides; unknown keys are errors."""
    if preset not in PRESETS:
        raise ConfigError(f"generator preset '{preset}' is unknown{suggest(preset, PRESETS)}; known: {list(PRESETS)}")
    settings = copy.deepcopy(PRESETS[preset])
    if config is not None:
        if not isinstance(config, Mapping):
            path = Path(config)
            if not path.is_file():
                raise DatasetNotFoundError(f"{path}: generator config not found")
            config = yaml_load(path.read_text()) or {}
        settings = _merge(settings, config)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override '{item}': expected key=value")
        nested: dict[str, Any] = {}
        cur = nested
        parts = key.strip().split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
        cur[parts[-1]] = yaml_load(value)
        settings = _merge(settings, nested)
    return settings


def load_class_table(path: str | Path) -> dict[str, Any]:
    """``{"names", "colors", "ignore_index"}`` from a ``classes.yaml`` (colours default to a fixed palette)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path}: class table not found")
    data = yaml_load(path.read_text()) or {}
    names = data.get("names") if isinstance(data, dict) else None
    if not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: expected 'names: [class, ...]'")
    colors = data.get("colors") or np.random.default_rng(0).integers(0, 256, (len(names), 3)).tolist()
    if len(colors) != len(names):
        raise ConfigError(f"{path}: {len(colors)} colours for {len(names)} classes")
    ignore = data.get("ignore_index", data.get("ignore", 255))
    return {"names": list(names), "colors": [list(map(int, c)) for c in colors], "ignore_index": int(ignore)}


class Generator:
    """Autoencoder + conditioned UNet + DDPM schedule, with the class table they were trained on."""

    def __init__(self, settings: dict[str, Any], classes: dict[str, Any], scale: float = 1.0) -> None:
        self.settings, self.classes, self.scale = settings, classes, float(scale)
        ae = settings["autoencoder"]
        self.vae = build_autoencoder(**ae)
        self.unet = build_unet(ae["latent_channels"], len(classes["names"]), **settings["unet"])
        self.scheduler = build_scheduler(settings["train"]["timesteps"])

    @property
    def num_classes(self) -> int:
        return len(self.classes["names"])

    @property
    def factor(self) -> int:
        """Pixels per latent cell; image sides must be multiples of ``factor * 2 ** (unet levels - 1)``."""
        return downsample_factor(self.vae) * 2 ** (len(self.settings["unet"]["block_out_channels"]) - 1)

    def eval(self) -> "Generator":
        self.vae.eval()
        self.unet.eval()
        return self

    def condition(self, masks: torch.Tensor) -> torch.Tensor:
        """Latent-grid condition of ``(N, H, W)`` class maps."""
        f = downsample_factor(self.vae)
        return mask_condition(masks, self.num_classes, (masks.shape[-2] // f, masks.shape[-1] // f),
                              self.classes["ignore_index"])

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return encode(self.vae, images, self.scale)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return decode(self.vae, latents, self.scale)

    @torch.no_grad()
    def sample(self, masks: torch.Tensor, generator: torch.Generator, steps: int | None = None,
               guidance: float | None = None, anchor: torch.Tensor | None = None, keep: torch.Tensor | None = None,
               strength: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(N, 3, H, W)`` in [-1, 1] and their latents, generated under ``(N, H, W)`` class maps."""
        s = self.settings["sample"]
        latent_channels = self.settings["autoencoder"]["latent_channels"]
        z = ddim_sample(self.unet, self.scheduler, self.condition(masks), latent_channels,
                        steps=int(steps or s["steps"]), guidance=float(s["guidance"] if guidance is None else guidance),
                        generator=generator, anchor=anchor, keep=keep, strength=strength)
        return self.decode(z), z

    def save(self, run: str | Path) -> None:
        """Write ``generator.yaml``, ``autoencoder.pt`` and ``unet.pt`` into ``run`` (each atomically)."""
        run = Path(run)
        for name, module in (("autoencoder.pt", self.vae), ("unet.pt", self.unet)):
            with atomic_path(run / name) as tmp:
                torch.save(module.state_dict(), tmp)
        meta = {"settings": self.settings, "classes": self.classes, "scale": self.scale}
        with atomic_path(run / "generator.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(meta, sort_keys=False))

    @classmethod
    def load(cls, run: str | Path) -> "Generator":
        """Rebuild a generator saved by :meth:`save` (or by ``changekit generator train``).

        Raises:
            DatasetNotFoundError: ``run`` holds no finished generator.
        """
        run = Path(run)
        if not (run / "generator.yaml").is_file() or not (run / "unet.pt").is_file():
            raise DatasetNotFoundError(f"{run}: no trained generator (generator.yaml, unet.pt); train one with "
                                       "'changekit generator train'")
        meta = yaml_load((run / "generator.yaml").read_text())
        gen = cls(meta["settings"], meta["classes"], meta["scale"])
        for module, name in ((gen.vae, "autoencoder.pt"), (gen.unet, "unet.pt")):
            load_module_state(module, load_tensors(run / name, "generator weights file"), run / name)
        return gen.eval()


def load_module_state(module: torch.nn.Module, state: Any, source: str | Path) -> None:
    """``module.load_state_dict(state)`` with one error line naming ``source`` when the weights do not fit.

    Raises:
        CheckpointError: ``state`` is no state dict, or its keys or shapes differ from the module's.
    """
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: holds no state dict of tensors")
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise CheckpointError(f"{source}: the weights do not fit the generator's settings "
                              f"({first[0].strip()[:160]})") from None
