"""Stage 1 of the ChangeAnywhere generator: a latent autoencoder trained on single-date images.

ChangeAnywhere (Tang & Chen, arXiv 2404.08892) runs its diffusion model in the latent space of an autoencoder
(a VQ-regularised one, per reviews of the paper; the generation code was never released). We use diffusers'
:class:`~diffusers.AutoencoderKL` (the KL-regularised variant of the same latent-diffusion family), because its
continuous latent needs no codebook bookkeeping and trains stably at tiny sizes; the latent is scaled by
``1 / std`` measured after training, as in latent diffusion. Widths are constructor arguments so that tests run a
few-thousand-parameter model on CPU and a GPU run uses the full one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from ..errors import ConfigError

__all__ = ["build_autoencoder", "autoencoder_loss", "downsample_factor", "encode", "decode", "require_diffusers"]


def require_diffusers() -> Any:
    """The ``diffusers`` module, or a one-line error naming the extra to install."""
    try:
        import diffusers
    except ImportError:
        raise ConfigError("the generator needs diffusers: pip install 'changekit[diffusion]'") from None
    return diffusers


def build_autoencoder(
    in_channels: int = 3,
    block_out_channels: Sequence[int] = (64, 128, 256),
    latent_channels: int = 4,
    layers_per_block: int = 2,
    norm_num_groups: int = 32,
    mid_attention: bool = True,
) -> Any:
    """A diffusers ``AutoencoderKL`` that downsamples by ``2 ** (len(block_out_channels) - 1)``.

    Args:
        in_channels: image bands.
        block_out_channels: encoder widths per level (the decoder mirrors them).
        latent_channels: channels of the latent the diffusion model works in.
        layers_per_block: ResNet blocks per level.
        norm_num_groups: GroupNorm groups; must divide every width.
        mid_attention: self-attention in the bottleneck (off for tiny test models).

    Raises:
        ConfigError: a width not divisible by ``norm_num_groups``, or no level.
    """
    AutoencoderKL = require_diffusers().AutoencoderKL  # noqa: N806

    widths = tuple(int(c) for c in block_out_channels)
    if not widths or any(c % norm_num_groups for c in widths):
        raise ConfigError(f"autoencoder block_out_channels {widths} must be non-empty and divisible by "
                          f"norm_num_groups={norm_num_groups}")
    return AutoencoderKL(
        in_channels=in_channels, out_channels=in_channels, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * len(widths), up_block_types=("UpDecoderBlock2D",) * len(widths),
        block_out_channels=widths, layers_per_block=layers_per_block, norm_num_groups=norm_num_groups,
        mid_block_add_attention=mid_attention, scaling_factor=1.0,
    )


def downsample_factor(vae: Any) -> int:
    """Pixels per latent cell along one side."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def autoencoder_loss(vae: Any, images: torch.Tensor, kl_weight: float = 1e-6,
                     generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """L1 reconstruction plus a small KL term (images in [-1, 1]); returns ``(loss, reconstruction)``.

    The KL weight is tiny on purpose (1e-6, as in the LDM KL-f models): the latent only has to stay bounded for
    the diffusion stage, not follow a unit Gaussian.
    """
    posterior = vae.encode(images).latent_dist
    recon = vae.decode(posterior.sample(generator=generator)).sample
    kl = posterior.kl().mean() / images[0].numel()
    return F.l1_loss(recon, images) + kl_weight * kl, recon


def encode(vae: Any, images: torch.Tensor, scale: float, generator: torch.Generator | None = None,
           sample: bool = False) -> torch.Tensor:
    """Scaled latent of images in [-1, 1] (the posterior mean unless ``sample``)."""
    dist = vae.encode(images).latent_dist
    z = dist.sample(generator=generator) if sample else dist.mode()
    return z * scale


def decode(vae: Any, latents: torch.Tensor, scale: float) -> torch.Tensor:
    """Images in [-1, 1] from scaled latents."""
    return vae.decode(latents / scale).sample.clamp(-1, 1)
