"""Training loop of the two-stage generator: autoencoder first, then the conditioned latent diffusion model.

Single-date images and their class maps are matched by file stem. Each step draws random ``size`` crops with
flips. The loop is resumable: ``RUN/state.pt`` (written atomically every ``save_every`` steps and at each stage's
end) holds the stage, step, weights, optimiser and random states, so ``resume=True`` continues a killed run
where it stopped. Sample grids go to ``RUN/samples/`` every ``sample_every`` steps (autoencoder: inputs over
reconstructions; diffusion: class maps over real images over samples), and the finished generator is saved by
:meth:`changekit.generation.model.Generator.save`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.io import IMAGE_SUFFIXES, atomic_path, read_image, read_palette_indices, write_png
from ..errors import CheckpointError, ConfigError, DatasetNotFoundError, PairingError, SizeMismatchError
from ..safeload import load_tensors
from .autoencoder import autoencoder_loss
from .diffusion import diffusion_loss
from .model import Generator, load_module_state

__all__ = ["load_pairs", "train_generator", "to_tensor", "to_uint8", "colourise"]

log = logging.getLogger(__name__)


def _files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{folder}: folder not found")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def load_pairs(images: str | Path | None, masks: str | Path) -> list[tuple[str, np.ndarray | None, np.ndarray]]:
    """``(stem, image (H, W, 3) uint8 or None, class map (H, W))`` for every mask, matched by stem.

    Raises:
        DatasetNotFoundError: a folder is missing or holds no masks.
        PairingError: a mask without an image of the same stem.
        SizeMismatchError: an image and its mask differ in size.
    """
    mfiles = _files(Path(masks))
    if not mfiles:
        raise DatasetNotFoundError(f"{masks}: no class maps ({', '.join(sorted(IMAGE_SUFFIXES))})")
    ifiles = _files(Path(images)) if images is not None else {}
    missing = [s for s in mfiles if images is not None and s not in ifiles]
    if missing:
        raise PairingError(f"{len(missing)} class map(s) without an image in {images}: {', '.join(missing[:5])}")
    out = []
    for stem, mpath in mfiles.items():
        mask = read_palette_indices(mpath)
        img = None
        if images is not None:
            img = read_image(ifiles[stem])[..., :3]
            if img.shape[:2] != mask.shape:
                raise SizeMismatchError(f"{stem}: image {img.shape[:2]} and class map {mask.shape} differ in size")
        out.append((stem, img, mask))
    return out


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` uint8 to ``(N, 3, H, W)`` float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """``(N, 3, H, W)`` in [-1, 1] to ``(N, H, W, 3)`` uint8."""
    return ((images.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def colourise(masks: np.ndarray, colors: list[list[int]]) -> np.ndarray:
    """Class maps ``(N, H, W)`` as RGB (ignore and unknown values black)."""
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(colors)] = np.asarray(colors, np.uint8)
    return lut[masks]


def _batch(pairs: list, size: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    imgs, masks = [], []
    for _ in range(n):
        _, img, mask = pairs[int(rng.integers(len(pairs)))]
        y = int(rng.integers(mask.shape[0] - size + 1))
        x = int(rng.integers(mask.shape[1] - size + 1))
        im, m = img[y:y + size, x:x + size], mask[y:y + size, x:x + size]
        if rng.random() < 0.5:
            im, m = im[:, ::-1], m[:, ::-1]
        if rng.random() < 0.5:
            im, m = im[::-1], m[::-1]
        imgs.append(im)
        masks.append(m)
    return np.stack(imgs), np.stack(masks)


def _grid(rows: list[np.ndarray]) -> np.ndarray:
    """Stack rows of ``(N, H, W, 3)`` tiles into one image with 2-pixel white gutters."""
    padded = [np.pad(r, ((0, 0), (2, 2), (2, 2), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate([np.concatenate(list(r), axis=1) for r in padded], axis=0)


def _save_state(out: Path, gen: Generator, stage: str, step: int, opt: dict[str, Any] | None,
                rng: np.random.Generator, trng: torch.Generator, ae_done: int) -> None:
    """``stage`` is ``ae``, ``ldm`` or ``done``; ``step`` counts the steps of the current stage (for ``done``: of
    the diffusion stage), ``ae_done`` those of the autoencoder stage, so that a resume with larger step counts
    knows where each stage stands."""
    state = {"stage": stage, "step": step, "scale": gen.scale, "vae": gen.vae.state_dict(),
             "unet": gen.unet.state_dict(), "opt": opt,
             "rng": rng.bit_generator.state, "trng": trng.get_state(), "ae_done": ae_done}
    with atomic_path(out / "state.pt", durable=True) as tmp:
        torch.save(state, tmp)


def _extend(stage: str, step: int, ae_done: int | None, totals: dict[str, int], state_file: Path) -> tuple[str, int]:
    """Where a resumed run continues when its step counts were raised after it finished.

    A finished run whose ``train.ldm_steps`` grew continues the diffusion stage from its last step (with its
    optimiser state). The autoencoder cannot be extended once the diffusion stage has started: the latent space
    the diffusion model learnt would change under it.
    """
    if stage in ("ldm", "done") and ae_done is not None and totals["ae"] > ae_done:
        raise ConfigError(f"{state_file}: the autoencoder stage ended after {ae_done} steps and the diffusion stage "
                          f"has started; train.ae_steps={totals['ae']} cannot be added now (start a new run)")
    if stage == "done" and ae_done is None:  # a state written before step counts were kept
        log.warning("%s: this run's step counts were not recorded; it cannot be extended", state_file)
    elif stage == "done" and step < totals["ldm"]:
        log.info("continuing the diffusion stage from step %d to %d", step, totals["ldm"])
        return "ldm", step
    return stage, step


def _restore_state(state_file: Path, gen: Generator, rng: np.random.Generator, trng: torch.Generator
                   ) -> tuple[str, int, Any, int | None]:
    """Load ``state.pt`` (weights_only: tensors, numbers, strings and containers; a planted pickle is refused) into
    ``gen`` and the random generators; returns ``(stage, step, optimiser state, autoencoder steps done)``.

    Raises:
        CheckpointError: the file is unreadable or not a generator training state (one line naming it).
    """
    st = load_tensors(state_file, "generator training state")
    keys = ("stage", "step", "opt", "scale", "vae", "unet", "rng", "trng")  # and "ae_done" since 0.1.1
    if not isinstance(st, dict) or any(k not in st for k in keys) or st["stage"] not in ("ae", "ldm", "done") \
            or not isinstance(st["step"], int) or not isinstance(st["scale"], (int, float)) \
            or not isinstance(st["trng"], torch.Tensor) or not (st["opt"] is None or isinstance(st["opt"], dict)):
        raise CheckpointError(f"{state_file}: not a generator training state (expected {', '.join(keys)})")
    load_module_state(gen.vae, st["vae"], state_file)
    load_module_state(gen.unet, st["unet"], state_file)
    try:
        rng.bit_generator.state = st["rng"]
        trng.set_state(st["trng"])
    except (TypeError, ValueError, KeyError, RuntimeError) as exc:
        raise CheckpointError(f"{state_file}: its random-generator state is not valid ({exc})") from None
    gen.scale = float(st["scale"])
    ae_done = st.get("ae_done")
    return st["stage"], st["step"], st["opt"], ae_done if isinstance(ae_done, int) else None


def train_generator(images: str | Path, masks: str | Path, classes: dict[str, Any], out: str | Path,
                    settings: dict[str, Any], resume: bool = False, progress: bool = True) -> Generator:
    """Train (or resume) both stages and save the generator into ``out``.

    Args:
        images: folder of single-date images.
        masks: folder of class maps of the same stems (palette or grey PNG indices).
        classes: class table (:func:`changekit.generation.model.load_class_table`).
        out: run folder.
        settings: from :func:`changekit.generation.model.resolve_settings`.
        resume: continue from ``out/state.pt``.
        progress: show a progress bar.

    Raises:
        ConfigError: ``out`` holds a run and ``resume`` is off; crops larger than the images; sizes that the
            networks cannot halve.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    state_file = out / "state.pt"
    if resume and not state_file.is_file():
        raise DatasetNotFoundError(f"{state_file}: nothing to resume")
    if not resume and (state_file.exists() or (out / "generator.yaml").exists()):
        raise ConfigError(f"{out} already holds a generator run; pass --resume or choose another --out")
    pairs = load_pairs(images, masks)
    size, tr = int(settings["size"]), settings["train"]
    with torch.random.fork_rng():  # the initial weights depend on the run's seed only
        torch.manual_seed(int(tr["seed"]))
        gen = Generator(settings, classes)
    if size % gen.factor or size > min(min(m.shape) for _, _, m in pairs):
        raise ConfigError(f"size {size}: must be a multiple of {gen.factor} and fit every image")
    rng = np.random.default_rng(int(tr["seed"]))
    trng = torch.Generator().manual_seed(int(tr["seed"]))
    stage, step, opt_state, ae_done = "ae", 0, None, None
    totals = {"ae": int(tr["ae_steps"]), "ldm": int(tr["ldm_steps"])}
    if resume:
        stage, step, opt_state, ae_done = _restore_state(state_file, gen, rng, trng)
        stage, step = _extend(stage, step, ae_done, totals, state_file)
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples").mkdir(exist_ok=True)
    done_before = step + (totals["ae"] if stage == "ldm" else 0) if stage != "done" else sum(totals.values())
    ldm_done, ldm_opt = (step, opt_state) if stage == "done" else (0, None)
    bar = tqdm(total=sum(totals.values()), initial=done_before, disable=not progress, desc="generator")
    for name in ("ae", "ldm"):
        if stage == "done" or (name == "ae" and stage == "ldm"):
            continue
        module = gen.vae if name == "ae" else gen.unet
        gen.vae.train(name == "ae")
        gen.unet.train(name == "ldm")
        opt = torch.optim.AdamW(module.parameters(), lr=float(tr[f"{name}_lr"]), weight_decay=0.0)
        if opt_state is not None and stage == name:
            try:
                opt.load_state_dict(opt_state)
            except (KeyError, ValueError, TypeError, RuntimeError) as exc:
                raise CheckpointError(f"{state_file}: its optimiser state does not fit ({exc})") from None
        while step < totals[name]:
            imgs, ms = _batch(pairs, size, int(tr["batch_size"]), rng)
            x = to_tensor(imgs)
            if name == "ae":
                loss, recon = autoencoder_loss(gen.vae, x, float(tr["kl_weight"]), trng)
            else:
                loss = diffusion_loss(gen.unet, gen.scheduler, gen.encode(x), gen.condition(torch.from_numpy(ms)),
                                      float(tr["p_uncond"]), trng)
            if not math.isfinite(loss.item()):
                raise ConfigError(f"{name} loss is {loss.item()} at step {step}; lower train.{name}_lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            bar.update(1)
            bar.set_postfix(stage=name, loss=f"{loss.item():.4f}")
            if step % int(tr["sample_every"]) == 0 or step == totals[name]:
                _write_samples(out, gen, name, step, x, ms, recon if name == "ae" else None)
                module.train()
            if step % int(tr["save_every"]) == 0 and step < totals[name]:
                _save_state(out, gen, name, step, opt.state_dict(), rng, trng,
                            ae_done=step if name == "ae" else totals["ae"])
        if name == "ae":
            gen.scale = _latent_scale(gen, pairs, size, rng)
            stage, step, opt_state = "ldm", 0, None
            _save_state(out, gen, "ldm", 0, None, rng, trng, ae_done=totals["ae"])
        else:
            ldm_done, ldm_opt = step, opt.state_dict()
    bar.close()
    gen.eval()
    ae_final = ae_done if ae_done is not None and stage == "done" else totals["ae"]
    # the optimiser state is kept, so that raising train.ldm_steps later continues smoothly
    _save_state(out, gen, "done", ldm_done, ldm_opt, rng, trng, ae_done=ae_final)
    if ae_done is not None or stage != "done":  # generator.yaml records the steps actually trained
        gen.settings = {**gen.settings, "train": {**gen.settings["train"], "ae_steps": ae_final,
                                                  "ldm_steps": ldm_done}}
    gen.save(out)
    log.info("generator saved to %s (latent scale %.4f)", out, gen.scale)
    return gen


@torch.no_grad()
def _latent_scale(gen: Generator, pairs: list, size: int, rng: np.random.Generator) -> float:
    """``1 / std`` of the latents of a few random crops (LDM's scale factor)."""
    gen.vae.eval()
    imgs, _ = _batch(pairs, size, 16, rng)
    z = gen.vae.encode(to_tensor(imgs)).latent_dist.mode()
    return float(1.0 / max(z.std().item(), 1e-6))


@torch.no_grad()
def _write_samples(out: Path, gen: Generator, stage: str, step: int, x: torch.Tensor, masks: np.ndarray,
                   recon: torch.Tensor | None) -> None:
    k = min(4, x.shape[0])
    real = to_uint8(x[:k])
    if stage == "ae":
        rows = [real, to_uint8(recon[:k].detach())]
    else:
        gen.unet.eval()
        fake, _ = gen.sample(torch.from_numpy(masks[:k].copy()), torch.Generator().manual_seed(step))
        rows = [colourise(masks[:k], gen.classes["colors"]), real, to_uint8(fake)]
    write_png(out / "samples" / f"{stage}_{step:07d}.png", _grid(rows))
