"""``predict``: change masks for image pairs (folders or single files, PNG or GeoTIFF) from a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.discover import pair_folders
from ..data.io import atomic_dir, read_image, write_png
from ..errors import DatasetNotFoundError, PairingError, SizeMismatchError
from ..inference.scene import predict_scene
from ..inference.sliding import sliding_window_predict
from .checkpoint import load_checkpoint

log = logging.getLogger(__name__)
GEO_SUFFIXES = (".tif", ".tiff")


def pair_inputs(a: str | Path, b: str | Path) -> list[tuple[str, Path, Path]]:
    """``(stem, a_file, b_file)`` for two files, or two folders paired by stem (sorted)."""
    a, b = Path(a), Path(b)
    for p in (a, b):
        if not p.exists():
            raise DatasetNotFoundError(f"{p}: not found")
    if a.is_file() and b.is_file():
        return [(a.stem, a, b)]
    if a.is_file() != b.is_file():
        raise PairingError(f"{a} and {b}: give two files or two folders")
    return [(rec.stem, rec.a, rec.b) for rec in pair_folders(a, b)]


def semantic_palette(cfg: dict[str, Any], num_classes: int) -> np.ndarray:
    """``(K, 3)`` colours for class maps: the run's class table (``data.classes`` or a ``classes.yaml`` beside the
    data) when it has ``K`` classes, else the report's default palette."""
    from ..data.classes import find_classes_for_display
    from ..report.overlays import default_palette

    table = find_classes_for_display(cfg, num_classes)
    return table.colors if table is not None else default_palette(num_classes)


def _normalise(img: np.ndarray, mean: list[float], std: list[float]) -> torch.Tensor:
    scale = 255.0 if img.dtype == np.uint8 else float(np.iinfo(img.dtype).max) if img.dtype.kind in "ui" else 1.0
    x = torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1).div_(scale)
    c = x.shape[0]
    m = torch.tensor((list(mean) * c)[:c]).view(-1, 1, 1)
    s = torch.tensor((list(std) * c)[:c]).view(-1, 1, 1)
    return (x - m) / s


def predict(
    ckpt: str | Path, a: str | Path, b: str | Path, out: str | Path, tile: int = 512, overlap: int = 64,
    batch_size: int = 4, threshold: float | None = None, save_prob: bool = False, save_overlay: bool = False,
    device: str | None = None, amp: bool = False, tile_tags: bool = False, clip_model: str = "ViT-B-16",
    clip_weights: str | Path | None = None, clip_classes: str | Path | None = None,
) -> list[Path]:
    """Write a 0/255 change mask per pair into ``out`` (named by stem; GeoTIFF in, GeoTIFF out).

    Optional outputs: ``<stem>_prob.png`` (probability x 255) and ``<stem>_overlay.png`` (changes in red on B).
    Semantic models also write ``<stem>_sem_a.png`` and ``<stem>_sem_b.png``: both dates' class maps as palette
    PNGs (pixel value = class index, colours from the run's class table; see :func:`semantic_palette`); for
    GeoTIFF inputs ``<stem>_sem_a.tif`` / ``<stem>_sem_b.tif`` with the scene's georeferencing and a colour table.
    ``amp`` runs the model under autocast (bfloat16 on CPU, float16 on CUDA); probabilities are accumulated in
    float32. The whole folder appears only when every pair is done.

    Models that take CLIP tags (ChangeCLIP) read them from the tag files beside the inputs (``changekit
    clip-tag``), or, with ``tile_tags``, tag every tile with CLIP (``clip_model`` with local ``clip_weights``,
    ``clip_classes`` or the bundled 56 names; the seed's ``mm_slide`` mode): see
    :class:`~changekit.clip_tags.TileTagger`.
    """
    pairs = pair_inputs(a, b)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg = load_checkpoint(ckpt, map_location=dev)
    thr = float(cfg["trainer"]["threshold"] if threshold is None else threshold)
    mean, std = cfg["data"]["mean"], cfg["data"]["std"]
    palette = semantic_palette(cfg, int(getattr(model, "num_classes", 0))) \
        if getattr(model, "task", "binary") == "semantic" else None
    takes_tags = "tags_a" in getattr(model, "extra_inputs", ())
    tagger: Any = None
    if tile_tags:
        from ..clip_tags import TileTagger

        tagger = TileTagger.for_run(cfg, model, ckpt, clip_model, clip_weights, clip_classes, dev)
    written: list[Path] = []
    out = Path(out)
    with atomic_dir(out) as tmp:
        for stem, fa, fb in pairs:
            extras = None
            if takes_tags and tagger is None:  # ChangeCLIP: each date's CLIP tags from the tag files
                from ..data.tags import pair_extras

                t = cfg["data"].get("tags") or {}
                extras = pair_extras(fa, fb, t.get("suffix", "clipcls_56_vit16"), t.get("top_k", 9),
                                     bool(t.get("allow_missing")))
            if fa.suffix.lower() in GEO_SUFFIXES:
                sem = {f"{k}_path": tmp / f"{stem}_{k}.tif" for k in ("sem_a", "sem_b")} if palette is not None else {}
                predict_scene(model, fa, fb, tmp / f"{stem}.tif", tile=tile, overlap=overlap, batch_size=batch_size,
                              threshold=thr, write_prob=(tmp / f"{stem}_prob.tif") if save_prob else None,
                              mean=mean, std=std, device=dev, extras=extras, palette=palette, amp=amp,
                              tile_extras=tagger, **sem)
                written.append(out / f"{stem}.tif")
                continue
            ia, ib = read_image(fa), read_image(fb)
            if ia.shape != ib.shape:
                raise SizeMismatchError(f"{fa} ({ia.shape[1]}x{ia.shape[0]}x{ia.shape[2]}) and {fb} "
                                        f"({ib.shape[1]}x{ib.shape[0]}x{ib.shape[2]}) differ in size or bands")
            res: dict[str, Any] = sliding_window_predict(
                model, _normalise(ia, mean, std), _normalise(ib, mean, std), tile=tile, overlap=overlap,
                batch_size=batch_size, device=dev, extras=extras, amp=amp, tile_extras=tagger)
            prob = res["change"] if isinstance(res, dict) else res
            prob = prob.cpu().numpy() if torch.is_tensor(prob) else np.asarray(prob)
            mask = (prob > thr).astype(np.uint8) * 255
            write_png(tmp / f"{stem}.png", mask)
            if palette is not None and isinstance(res, dict) and "sem_a" in res:
                for key in ("sem_a", "sem_b"):
                    classes = res[key].argmax(0).to(torch.uint8).cpu().numpy()
                    write_png(tmp / f"{stem}_{key}.png", classes, palette=palette)
            if save_prob:
                write_png(tmp / f"{stem}_prob.png", np.round(prob * 255).astype(np.uint8))
            if save_overlay:
                from ..report import overlay_on_image

                write_png(tmp / f"{stem}_overlay.png", overlay_on_image(ib[:, :, :3], mask > 0))
            written.append(out / f"{stem}.png")
            log.info("predicted %s", stem)
    return written
