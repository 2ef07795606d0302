"""``predict``: change masks for image pairs (folders or single files, PNG or GeoTIFF) from a checkpoint."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.bands import check_bands, checkpoint_bands
from ..data.discover import pair_folders
from ..data.io import atomic_dir, atomic_path, image_size, read_image, write_image, write_png
from ..errors import CheckpointError, ConfigError, DatasetNotFoundError, PairingError, SizeMismatchError
from ..inference.scene import predict_scene
from ..inference.sliding import sliding_window_predict
from ..safety import check_output, removes_new_folders
from .checkpoint import load_checkpoint
from .outputs import GEO_SUFFIXES, PredictionLayout, mask_suffix

log = logging.getLogger(__name__)


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
    clip_weights: str | Path | None = None, clip_classes: str | Path | None = None, overwrite: bool = False,
) -> list[Path]:
    """Write a 0/255 change mask per pair (GeoTIFF in, GeoTIFF out); returns the mask files.

    Where every file goes is decided in :mod:`changekit.engine.outputs`: a folder ``out`` holds only masks
    (``eval-masks --pred OUT`` scores it; semantic models write ``OUT/change``, ``OUT/label1``, ``OUT/label2``,
    which ``eval-masks --task semantic`` reads), ``save_prob`` / ``save_overlay`` go to the sibling folders
    ``OUT_prob`` / ``OUT_overlay``; ``out`` ending in ``.png``/``.tif`` names the one pair's mask file. Class maps
    are palette PNGs (pixel value = class index, colours from the run's class table; see
    :func:`semantic_palette`), or GeoTIFFs with a colour table for GeoTIFF inputs. Overlays are drawn for PNG
    inputs only (a warning says so for GeoTIFF scenes).

    ``threshold`` (default: the checkpoint's ``trainer.threshold``) turns change probabilities into the mask.
    ``amp`` runs the model under autocast (bfloat16 on CPU, float16 on CUDA); probabilities are accumulated in
    float32. Outputs that are, contain or lie inside an input are refused, existing ones need ``overwrite``;
    everything is written under temporary names and appears only when every pair is done.

    Models that take CLIP tags (ChangeCLIP) read them from the tag files beside the inputs (``changekit
    clip-tag``), or, with ``tile_tags``, tag every tile with CLIP (``clip_model`` with local ``clip_weights``,
    ``clip_classes`` or the bundled 56 names; the seed's ``mm_slide`` mode): see
    :class:`~changekit.clip_tags.TileTagger`.

    Raises:
        OutputError: an output overlaps an input, exists without ``overwrite``, or cannot be written.
        ConfigError: ``threshold`` is outside [0, 1].
    """
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"--threshold: must be within [0, 1], got {threshold:g}")
    pairs = pair_inputs(a, b)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg = load_checkpoint(ckpt, map_location=dev)
    bands = checkpoint_bands(model, cfg)
    for _, fa, fb in pairs:  # header reads: another band count than the model's is one line, not a traceback
        for path in (fa, fb):
            check_bands(path, image_size(path)[2], bands, ckpt)
    semantic = getattr(model, "task", "binary") == "semantic"
    layout = PredictionLayout.plan(out, len(pairs), semantic, save_prob, save_overlay)
    geo = [stem for stem, fa, _ in pairs if fa.suffix.lower() in GEO_SUFFIXES]
    roots = layout.roots(with_overlay=len(geo) < len(pairs))
    for path in roots.values():
        check_output(path, inputs=[a, b, ckpt], overwrite=overwrite, kind="file" if layout.single_file else "folder")
    if save_overlay and geo:
        log.warning("--overlay: not drawn for GeoTIFF inputs (%d pair(s), e.g. %s); view the mask over the scene "
                    "in a GIS instead", len(geo), geo[0])
    thr = float(cfg["trainer"]["threshold"] if threshold is None else threshold)
    palette = semantic_palette(cfg, int(getattr(model, "num_classes", 0))) if semantic else None
    tagger: Any = None
    if tile_tags:
        from ..clip_tags import TileTagger

        tagger = TileTagger.for_run(cfg, model, ckpt, clip_model, clip_weights, clip_classes, dev)
    run = _PairRunner(model, cfg, dev, thr, palette, tile, overlap, batch_size, amp, tagger)
    written: list[Path] = []
    with removes_new_folders(*roots.values()), contextlib.ExitStack() as stack:
        writer = atomic_path if layout.single_file else atomic_dir
        tmp_roots = {k: stack.enter_context(writer(p)) for k, p in roots.items()}
        for stem, fa, fb in pairs:
            suffix = layout.out.suffix if layout.single_file else mask_suffix(fa)
            run(stem, fa, fb, layout.files(stem, suffix, tmp_roots))
            written.append(layout.files(stem, suffix, roots)["mask"])
            log.info("predicted %s", stem)
    log.info("wrote %s", layout.describe(roots))
    return written


class _PairRunner:
    """Predicts one pair and writes its files (the paths come from :class:`PredictionLayout`)."""

    def __init__(self, model: torch.nn.Module, cfg: dict[str, Any], device: torch.device, threshold: float,
                 palette: np.ndarray | None, tile: int, overlap: int, batch_size: int, amp: bool,
                 tagger: Any) -> None:
        self.model, self.cfg, self.device, self.thr, self.palette = model, cfg, device, threshold, palette
        self.window = dict(tile=tile, overlap=overlap, batch_size=batch_size, amp=amp, tile_extras=tagger)
        self.takes_tags = "tags_a" in getattr(model, "extra_inputs", ()) and tagger is None

    def __call__(self, stem: str, fa: Path, fb: Path, files: dict[str, Path]) -> None:
        extras = None
        if self.takes_tags:  # ChangeCLIP: each date's CLIP tags from the tag files
            from ..data.tags import pair_extras

            t = self.cfg["data"].get("tags") or {}
            extras = pair_extras(fa, fb, t.get("suffix", "clipcls_56_vit16"), t.get("top_k", 9),
                                 bool(t.get("allow_missing")))
        mean, std = self.cfg["data"]["mean"], self.cfg["data"]["std"]
        if fa.suffix.lower() in GEO_SUFFIXES:
            predict_scene(self.model, fa, fb, files["mask"], threshold=self.thr, write_prob=files.get("prob"),
                          mean=mean, std=std, device=self.device, extras=extras, palette=self.palette,
                          sem_a_path=files.get("sem_a"), sem_b_path=files.get("sem_b"), **self.window)
            return
        ia, ib = read_image(fa), read_image(fb)
        if ia.shape != ib.shape:
            raise SizeMismatchError(f"{fa} is {_hwc(ia)} but {fb} is {_hwc(ib)} (H x W x C); the two dates must "
                                    "match in size and bands")
        res: dict[str, Any] = sliding_window_predict(
            self.model, _normalise(ia, mean, std), _normalise(ib, mean, std), device=self.device, extras=extras,
            **self.window)
        prob = res["change"] if isinstance(res, dict) else res
        prob = prob.cpu().numpy() if torch.is_tensor(prob) else np.asarray(prob)
        mask = (prob > self.thr).astype(np.uint8) * 255
        write_image(files["mask"], mask)
        if self.palette is not None:
            if not (isinstance(res, dict) and "sem_a" in res):
                raise CheckpointError(f"{fa}: the semantic model returned no class maps")
            for key in ("sem_a", "sem_b"):
                classes = res[key].argmax(0).to(torch.uint8).cpu().numpy()
                _write_class_map(files[key], classes, self.palette)
        if "prob" in files:
            write_image(files["prob"], np.round(prob * 255).astype(np.uint8))
        if "overlay" in files:
            from ..report import overlay_on_image

            write_png(files["overlay"], overlay_on_image(ib[:, :, :3], mask > 0))


def _hwc(img: np.ndarray) -> str:
    return " x ".join(str(int(v)) for v in img.shape)


def _write_class_map(path: Path, classes: np.ndarray, palette: np.ndarray) -> None:
    """A palette PNG, or a GeoTIFF (no georeferencing: PNG input) for ``.tif`` paths."""
    if path.suffix.lower() in GEO_SUFFIXES:
        write_image(path, classes)
    else:
        write_png(path, classes, palette=palette)
