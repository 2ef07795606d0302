"""``predict``: change masks for image pairs (folders or single files, PNG or GeoTIFF) from a checkpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.bands import check_input_bands, checkpoint_bands
from ..data.discover import pair_folders
from ..data.io import atomic_dir, atomic_path, image_size, write_image, write_png
from ..data.normalize import Normalisation
from ..errors import CheckpointError, DatasetNotFoundError, PairingError, SizeMismatchError
from ..inference.scene import SceneOutputs, predict_scene
from ..inference.sliding import sliding_window_predict
from ..safety import check_output, removes_new_folders
from .checkpoint import load_checkpoint
from .distributed import Ranks
from .finish import decision_threshold
from .options import PredictOptions
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


def predict(
    ckpt: str | Path, a: str | Path, b: str | Path, out: str | Path, options: PredictOptions | None = None,
    **overrides: Any,
) -> list[Path]:
    """Write a 0/255 change mask per pair (GeoTIFF in, GeoTIFF out); returns the mask files.

    Args:
        ckpt: a changekit checkpoint.
        a, b: the two dates: two image files, or two folders paired by stem.
        out: a folder, or a ``.png``/``.tif`` file for one pair.
        options: tiling, threshold, device, extra outputs... (:class:`~changekit.engine.options.PredictOptions`);
            keywords (``tile=256``, ``save_prob=True``...) override single fields.

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
        ConfigError: an option is out of range.
    """
    opt = PredictOptions.build(options, **overrides)
    pairs = pair_inputs(a, b)
    ranks = Ranks.from_env()
    try:
        if ranks.distributed:  # every GeoTIFF scene's rows are shared by the ranks; rank 0 writes the outputs
            opt = dataclasses.replace(opt, device=ranks.device(opt.device))
        session = PredictSession(ckpt, opt)
        session.run.ranks = ranks if ranks.distributed else None
        for _, fa, fb in pairs:  # header reads: another band count than the model's is one line, not a traceback
            session.check_bands(fa, fb)
        if ranks.rank:
            for stem, fa, fb in pairs:
                if fa.suffix.lower() in GEO_SUFFIXES:
                    session.run(stem, fa, fb, {"mask": Path(f"{stem}.rank{ranks.rank}.unused.tif")})
            return []
        return _predict_pairs(session, pairs, a, b, out, ckpt)
    finally:
        ranks.close()


def _predict_pairs(session: PredictSession, pairs: list[tuple[str, Path, Path]], a: str | Path, b: str | Path,
                   out: str | Path, ckpt: str | Path) -> list[Path]:
    """:func:`predict` of one process (or rank 0): plan the outputs, run every pair, put the files in place."""
    opt = session.options
    layout = PredictionLayout.plan(out, len(pairs), session.semantic, opt.save_prob, opt.save_overlay, opt.vector)
    geo = [stem for stem, fa, _ in pairs if fa.suffix.lower() in GEO_SUFFIXES]
    roots = layout.roots(with_overlay=len(geo) < len(pairs), plain_pairs=len(geo) < len(pairs))
    for path in roots.values():
        check_output(path, inputs=[a, b, ckpt], overwrite=opt.overwrite,
                     kind="file" if layout.single_file else "folder")
    if opt.save_overlay and geo:
        log.warning("--overlay: not drawn for GeoTIFF inputs (%d pair(s), e.g. %s); view the mask over the scene "
                    "in a GIS instead", len(geo), geo[0])
    from .pair_job import run_pair
    from .progress import Progress
    from .summary import product_files, product_roots, write_summary

    extra_roots = product_roots(layout, opt)  # --summary / --report beside a one-file --out
    for path in extra_roots.values():
        check_output(path, inputs=[a, b, ckpt], overwrite=opt.overwrite, kind="file")
    progress = Progress(len(pairs), sum(session.tiles(fa) for _, fa, _ in pairs))
    written: list[Path] = []
    with removes_new_folders(*roots.values(), *extra_roots.values()), contextlib.ExitStack() as stack:
        writer = atomic_path if layout.single_file else atomic_dir
        tmp_roots = {k: stack.enter_context(writer(p)) for k, p in roots.items()}
        tmp_roots.update({k: stack.enter_context(atomic_path(p)) for k, p in extra_roots.items()})
        for stem, fa, fb in pairs:
            suffix = layout.out.suffix if layout.single_file else mask_suffix(fa)
            products = product_files(layout, stem, tmp_roots, opt)
            summary = run_pair(session, stem, fa, fb, layout.files(stem, suffix, tmp_roots), products,
                               layout.files(stem, suffix, roots), progress)
            if summary is not None:
                write_summary(products["summary"], summary)
            written.append(layout.files(stem, suffix, roots)["mask"])
            progress.pair_done()
            log.info("predicted %s", stem)
    log.info("wrote %s", layout.describe(roots))
    return written


class PredictSession:
    """A loaded model and everything one pair's prediction needs; ``predict`` and pair lists share it.

    Args:
        ckpt: a changekit checkpoint, or an ONNX model from ``changekit export`` when ``options.runtime`` is
            ``onnx``.
        options: the run's options (validated).

    Attributes:
        model, cfg: the model (in eval mode, on ``device``) and its run's resolved config.
        semantic: the model writes class maps of both dates too.
        threshold: the change probability above which a pixel is change.
        run: predicts one pair and writes its files (:class:`_PairRunner`).
    """

    def __init__(self, ckpt: str | Path, options: PredictOptions) -> None:
        self.ckpt, self.options = Path(ckpt), options
        self.device = torch.device(options.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if options.runtime == "onnx":
            from ..export.ort_model import check_tile, load_onnx

            self.model, self.cfg = load_onnx(ckpt, self.device)
            check_tile(self.model, options.tile)
        else:
            self.model, self.cfg = load_checkpoint(ckpt, map_location=self.device)
        self.bands = checkpoint_bands(self.model, self.cfg)
        #: the checkpoint's normalisation, reading ``options.bands`` when given (``--bands``)
        self.norm = Normalisation.from_config(self.cfg).with_bands(options.bands)
        self.semantic = getattr(self.model, "task", "binary") == "semantic"
        cfg, opt = self.cfg, options
        self.threshold = decision_threshold(cfg) if opt.threshold is None else float(opt.threshold)
        palette = semantic_palette(cfg, int(getattr(self.model, "num_classes", 0))) if self.semantic else None
        tagger: Any = None
        if opt.tile_tags:
            from ..clip_tags import TileTagger

            tagger = TileTagger.for_run(cfg, self.model, ckpt, opt.clip_model, opt.clip_weights, opt.clip_classes,
                                        self.device)
        self.run = _PairRunner(self.model, cfg, self.device, self.threshold, palette, opt, tagger, self.norm)
        self._grid: Any = None

    def check_bands(self, fa: Path, fb: Path) -> None:
        """Header reads of both dates: a missing band or another band count than the model's is one line, not a
        traceback."""
        for path in (fa, fb):
            check_input_bands(path, self.norm, self.bands, self.ckpt)

    def normalisation(self) -> Normalisation:
        """What turns this model's raw input pixels into network input (recorded in pair summaries)."""
        return self.norm

    def tiles(self, path: Path) -> int:
        """Tiles this run cuts an image of ``path``'s size into (0 when its header cannot be read)."""
        from ..errors import ChangekitError
        from ..inference.sliding import TilePredictor, stride_from

        try:
            h, w, _ = image_size(path)
        except ChangekitError:
            return 0
        if self._grid is None:
            opt = self.options
            self._grid = TilePredictor(self.model, opt.tile, stride_from(opt.tile, opt.overlap, None))
        grid = self._grid.grid(h, w)
        return len(grid.ys) * len(grid.xs)

    @functools.cached_property
    def fingerprint(self) -> str:
        """The checkpoint's bytes and the pixel-changing options, hashed (marks pairs this run finished)."""
        from .summary import fingerprint

        return fingerprint(self.ckpt_sha256, self.options, self.threshold)

    @functools.cached_property
    def ckpt_sha256(self) -> str:
        from .summary import file_sha256

        return file_sha256(self.ckpt)

    def model_record(self) -> dict[str, Any]:
        """The model of this run as a pair summary records it."""
        return {"name": self.cfg["model"]["name"], "checkpoint": str(self.ckpt), "sha256": self.ckpt_sha256,
                "runtime": self.options.runtime, "task": "semantic" if self.semantic else "binary",
                "in_channels": getattr(self.model, "in_channels", None)}


class _PairRunner:
    """Predicts one pair and writes its files (the paths come from :class:`PredictionLayout`)."""

    def __init__(self, model: torch.nn.Module, cfg: dict[str, Any], device: torch.device, threshold: float,
                 palette: np.ndarray | None, options: PredictOptions, tagger: Any, norm: Normalisation) -> None:
        self.model, self.cfg, self.device, self.thr, self.palette = model, cfg, device, threshold, palette
        self.norm = norm
        self.options, self.tagger = dataclasses.replace(options, threshold=threshold), tagger
        self.window = dict(**options.window(), tile_extras=tagger)
        self.takes_tags = "tags_a" in getattr(model, "extra_inputs", ()) and tagger is None
        self.ranks: Ranks | None = None  # several processes share each GeoTIFF scene's rows (predict under torchrun)

    def __call__(self, stem: str, fa: Path, fb: Path, files: dict[str, Path]) -> None:
        extras = None
        if self.takes_tags:  # ChangeCLIP: each date's CLIP tags from the tag files
            from ..data.tags import pair_extras

            t = self.cfg["data"].get("tags") or {}
            extras = pair_extras(fa, fb, t.get("suffix", "clipcls_56_vit16"), t.get("top_k", 9),
                                 bool(t.get("allow_missing")))
        norm = self.norm
        if fa.suffix.lower() in GEO_SUFFIXES:
            outputs = SceneOutputs(files["mask"], files.get("prob"), files.get("sem_a"), files.get("sem_b"))
            predict_scene(self.model, fa, fb, outputs, self.options, norm,
                          extras=extras, palette=self.palette, tile_extras=self.tagger, ranks=self.ranks)
            return
        (ia, valid_a), (ib, valid_b) = _read_bands(fa, norm), _read_bands(fb, norm)
        if ia.shape != ib.shape:
            raise SizeMismatchError(f"{fa} is {_hwc(ia)} but {fb} is {_hwc(ib)} (C x H x W); the two dates must "
                                    "match in size and bands")
        ta, tb = norm.pair(ia, ib, fa, fb, valid_a, valid_b)  # data.radiometric fitted on the whole pair
        res: dict[str, Any] = sliding_window_predict(self.model, ta, tb, device=self.device, extras=extras,
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

            write_png(files["overlay"], overlay_on_image(np.moveaxis(ib[:3], 0, -1), mask > 0))


def _read_bands(path: Path, norm: Normalisation) -> tuple[np.ndarray, np.ndarray]:
    """The bands ``norm`` selects of a whole image ``(C, H, W)`` and its validity; warns when far outside the
    training statistics."""
    from ..raster.reader import RasterReader

    with RasterReader(path, bands=norm.bands) as reader:
        raw, valid = reader.read_valid()
    norm.check_range(raw, path, valid)
    return raw, valid


def _hwc(img: np.ndarray) -> str:
    return " x ".join(str(int(v)) for v in img.shape)


def _write_class_map(path: Path, classes: np.ndarray, palette: np.ndarray) -> None:
    """A palette PNG, or a GeoTIFF (no georeferencing: PNG input) for ``.tif`` paths."""
    if path.suffix.lower() in GEO_SUFFIXES:
        write_image(path, classes)
    else:
        write_png(path, classes, palette=palette)
