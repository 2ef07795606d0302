"""ChangeAnywhere-style synthetic change pairs from single-date semantic maps (extra ``diffusion``).

Tang & Chen, "ChangeAnywhere: Sample Generation for Remote Sensing Change Detection via Semantic Latent
Diffusion Model", arXiv 2404.08892 (2024). The authors released CD checkpoints, few-shot lists and the
ChangeAnywhere-100K data set, but not the generator; this package is changekit's own implementation of the
method as described (design choices and deviations in ``docs/changeanywhere.md``):

* :mod:`.autoencoder`: latent autoencoder (diffusers ``AutoencoderKL``) trained on single-date images;
* :mod:`.diffusion`: semantic-mask-conditioned latent diffusion (diffusers ``UNet2DModel``, one-hot mask
  concatenated on the latent grid, condition dropout, DDPM training, guided DDIM sampling, latent mixing);
* :mod:`.edits`: change simulation by editing the semantic map (remove / insert / convert, transition table,
  changed-area targets, every edit recorded);
* :mod:`.synthesis`: one pair from a date-1 map, its edit and (optionally) the real date-1 image;
* :mod:`.writer`: a ready ``A|B|label`` + ``label1|label2`` data set with a JSON record per pair;
* :mod:`.model` / :mod:`.train`: the saved generator and its resumable training loop.

Importing this package does not import diffusers; the modules that build networks import it when called.
"""

from __future__ import annotations

from .edits import EditConfig, simulate_change, transition_matrix

__all__ = ["EditConfig", "simulate_change", "transition_matrix"]
