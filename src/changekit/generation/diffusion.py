"""Stage 2 of the ChangeAnywhere generator: a semantic-mask-conditioned latent diffusion model.

The paper conditions a DDPM in the autoencoder's latent space on a semantic map; how exactly is not published.
We use the simplest conditioning that keeps the layout pixel-exact: the one-hot class map is area-resized to the
latent grid (so a cell holds the class fractions it covers) and concatenated to the noisy latent as extra input
channels of a diffusers :class:`~diffusers.UNet2DModel`. During training the condition is replaced by zeros with
probability ``p_uncond`` (condition dropout), which gives the unconditional branch of classifier-free guidance
(a valid condition sums to 1 per cell, the null condition to 0). Training is the DDPM noise-prediction loss;
sampling is DDIM with a guidance scale.

:func:`ddim_sample` also implements the *latent mixing* of pair synthesis: where ``keep`` is 1, the sample is
replaced at every step down to ``t_anchor`` by the date-1 latent noised to that step, then denoised freely; so the
unchanged regions keep date 1's layout while their appearance is regenerated, and ``t_anchor`` (the strength) sets
how much. Cells where ``keep`` is 0 (changed regions) are generated from pure noise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .autoencoder import require_diffusers

__all__ = ["build_unet", "build_scheduler", "mask_condition", "diffusion_loss", "ddim_sample"]


def build_unet(
    latent_channels: int,
    num_classes: int,
    block_out_channels: Sequence[int] = (128, 256, 384),
    layers_per_block: int = 2,
    attention_levels: Sequence[bool] = (False, True, True),
    norm_num_groups: int = 32,
    attention_head_dim: int = 32,
) -> Any:
    """A diffusers ``UNet2DModel`` taking ``latent_channels + num_classes`` channels, predicting the noise.

    Args:
        latent_channels: channels of the autoencoder latent.
        num_classes: classes of the semantic maps (one-hot conditioning channels).
        block_out_channels: widths per level.
        layers_per_block: ResNet blocks per level.
        attention_levels: self-attention per level (``False`` everywhere for tiny CPU models).
        norm_num_groups: GroupNorm groups; must divide every width.
        attention_head_dim: channels per attention head.

    Raises:
        ConfigError: mismatched level lists or widths not divisible by ``norm_num_groups``.
    """
    UNet2DModel = require_diffusers().UNet2DModel  # noqa: N806

    widths = tuple(int(c) for c in block_out_channels)
    attn = tuple(bool(a) for a in attention_levels)
    if not widths or len(attn) != len(widths) or any(c % norm_num_groups for c in widths):
        raise ConfigError(f"unet: block_out_channels {widths} and attention_levels {attn} must have the same "
                          f"length and widths divisible by norm_num_groups={norm_num_groups}")
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    return UNet2DModel(
        in_channels=latent_channels + num_classes, out_channels=latent_channels, block_out_channels=widths,
        layers_per_block=layers_per_block, down_block_types=down, up_block_types=up, norm_num_groups=norm_num_groups,
        attention_head_dim=attention_head_dim, add_attention=any(attn),
    )


def build_scheduler(num_train_timesteps: int = 1000, beta_schedule: str = "scaled_linear") -> Any:
    """The DDPM noise schedule used for training (DDIM sampling reads the same config)."""
    DDPMScheduler = require_diffusers().DDPMScheduler  # noqa: N806

    return DDPMScheduler(num_train_timesteps=num_train_timesteps, beta_schedule=beta_schedule,
                         beta_start=0.00085, beta_end=0.012, clip_sample=False)


def mask_condition(masks: torch.Tensor, num_classes: int, latent_hw: tuple[int, int],
                   ignore_index: int = 255) -> torch.Tensor:
    """One-hot ``(N, H, W)`` class maps area-resized to ``(N, K, h, w)`` class fractions; ignore pixels count 0.

    Raises:
        ConfigError: a class index outside ``0..num_classes-1`` that is not ``ignore_index``.
    """
    masks = masks.long()
    valid = masks != ignore_index
    if bool(((masks < 0) | (masks >= num_classes))[valid].any()):
        raise ConfigError(f"class map holds values outside 0..{num_classes - 1} (ignore {ignore_index})")
    onehot = F.one_hot(torch.where(valid, masks, 0), num_classes).permute(0, 3, 1, 2).float()
    onehot = onehot * valid[:, None].float()
    return F.interpolate(onehot, size=latent_hw, mode="area")


def diffusion_loss(unet: Any, scheduler: Any, latents: torch.Tensor, cond: torch.Tensor, p_uncond: float = 0.1,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """DDPM noise-prediction MSE with condition dropout (probability ``p_uncond`` per sample)."""
    n = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator, device=latents.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator, device=latents.device)
    keep = (torch.rand(n, generator=generator, device=latents.device) >= p_uncond).float()[:, None, None, None]
    noisy = scheduler.add_noise(latents, noise, t)
    pred = unet(torch.cat([noisy, cond * keep], 1), t).sample
    return F.mse_loss(pred, noise)


def _eps(unet: Any, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor, guidance: float) -> torch.Tensor:
    if guidance == 1.0:
        return unet(torch.cat([x, cond], 1), t).sample
    both = unet(torch.cat([torch.cat([x, x]), torch.cat([cond, torch.zeros_like(cond)])], 1), torch.cat([t, t])).sample
    eps_c, eps_u = both.chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


@torch.no_grad()
def ddim_sample(
    unet: Any, scheduler: Any, cond: torch.Tensor, latent_channels: int, steps: int = 50, guidance: float = 2.0,
    generator: torch.Generator | None = None, anchor: torch.Tensor | None = None, keep: torch.Tensor | None = None,
    strength: float = 1.0,
) -> torch.Tensor:
    """DDIM sampling (eta 0) under the class-fraction condition ``cond`` with classifier-free guidance.

    Args:
        cond: ``(N, K, h, w)`` condition from :func:`mask_condition`.
        steps: DDIM steps.
        guidance: guidance scale (1 = conditional only, no unconditional pass).
        generator: CPU generator; all noise is drawn from it, so equal seeds give equal samples.
        anchor: ``(N, C, h, w)`` date-1 latent for latent mixing (with ``keep``).
        keep: ``(N, 1, h, w)`` 1 where the sample must follow ``anchor`` (unchanged regions).
        strength: 0..1; the fraction of the schedule over which kept regions are free. 0 returns the anchor
            there unchanged; 1 regenerates them entirely (only the final layout ties them to date 1).
    """
    DDIMScheduler = require_diffusers().DDIMScheduler  # noqa: N806

    if not 0.0 <= strength <= 1.0:
        raise ConfigError(f"strength must be within 0..1, got {strength}")
    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(steps)
    n, _, h, w = cond.shape
    x = torch.randn((n, latent_channels, h, w), generator=generator).to(cond.device)
    fixed_noise = torch.randn(x.shape, generator=generator).to(cond.device)
    t_anchor = strength * scheduler.config.num_train_timesteps
    mixing = anchor is not None and keep is not None
    for i, t in enumerate(ddim.timesteps):
        if mixing and float(t) >= t_anchor:
            x = keep * ddim.add_noise(anchor, fixed_noise, t.reshape(1)) + (1 - keep) * x
        eps = _eps(unet, x, t.expand(n).to(cond.device), cond, guidance)
        x = ddim.step(eps, t, x, eta=0.0).prev_sample
    if mixing and strength == 0.0:
        x = keep * anchor + (1 - keep) * x
    return x
