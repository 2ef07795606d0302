"""Pair synthesis (ChangeAnywhere's "non-change implies a reasonable change under the same semantics").

Date 1 is the real image (or one generated under the date-1 map). Date 2 is generated under the edited map with
latent mixing (:func:`changekit.generation.diffusion.ddim_sample`): latent cells with no changed pixel follow the
date-1 latent, noised, down to the step set by ``strength``, then are denoised freely, so their semantics stay and
their appearance varies (0: identical to date 1; 1: regenerated from the layout alone); cells touching a changed
pixel are generated from pure noise under their new classes.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .autoencoder import downsample_factor
from .model import Generator
from .train import to_tensor, to_uint8

__all__ = ["synthesize_pair", "keep_mask"]


def keep_mask(mask1: torch.Tensor, mask2: torch.Tensor, factor: int) -> torch.Tensor:
    """``(N, 1, h, w)``: 1 on latent cells whose ``factor x factor`` pixels have no class change."""
    changed = (mask1 != mask2).float()[:, None]
    return 1.0 - F.max_pool2d(changed, factor)


@torch.no_grad()
def synthesize_pair(gen: Generator, mask1: np.ndarray, mask2: np.ndarray, image1: np.ndarray | None,
                    seed: int, strength: float = 0.5, guidance: float | None = None,
                    steps: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image1, image2)`` pair of ``(H, W, 3)`` uint8 arrays for the maps ``mask1 -> mask2``.

    Args:
        gen: a trained generator (in eval mode).
        mask1: date-1 class map ``(H, W)``; ``H`` and ``W`` multiples of ``gen.factor``.
        mask2: edited date-2 class map, same shape.
        image1: the real date-1 image, or ``None`` to generate it under ``mask1``.
        seed: seeds every random draw of this pair (equal seeds give equal pairs).
        strength: how far unchanged regions may drift in appearance (0..1).
        guidance: classifier-free guidance scale (default: the generator's setting).
        steps: DDIM steps (default: the generator's setting).
    """
    g = torch.Generator().manual_seed(int(seed))
    m1 = torch.from_numpy(np.ascontiguousarray(mask1)).long()[None]
    m2 = torch.from_numpy(np.ascontiguousarray(mask2)).long()[None]
    if image1 is None:
        img1, z1 = gen.sample(m1, g, steps=steps, guidance=guidance)
        out1 = to_uint8(img1)[0]
    else:
        out1 = np.ascontiguousarray(image1[..., :3])
        z1 = gen.encode(to_tensor(out1[None]))
    keep = keep_mask(m1, m2, downsample_factor(gen.vae))
    img2, _ = gen.sample(m2, g, steps=steps, guidance=guidance, anchor=z1, keep=keep, strength=strength)
    return out1, to_uint8(img2)[0]
