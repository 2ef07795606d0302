"""Where ``predict`` writes: the one place that decides every output name.

GeoTIFF pairs are scenes: in a folder ``--out OUT`` every file of a pair is named after the pair (its name: A's
stem, or a pair list's ``name`` column) and lies in ``OUT``::

    OUT/<name>_change.tif    0/255 change mask (nodata 128), Cloud Optimized GeoTIFF on A's grid
    OUT/<name>_prob.tif      --prob: change probability (float32, nodata NaN)
    OUT/<name>_sem_a.tif     semantic models: date-A class map (colour table, nodata 255)
    OUT/<name>_sem_b.tif     semantic models: date-B class map
    OUT/<name>_change.gpkg   --vector x.gpkg (or .geojson / .parquet): change polygons

``eval-masks --pred OUT`` reads ``<name>_change.tif`` as the mask of ``<name>`` (``--task semantic`` the
``_sem_a`` / ``_sem_b`` / ``_change`` files). Plain image pairs (PNG/JPEG tiles of a benchmark) keep the layout that
``eval-masks`` has always read: a folder ``--out OUT`` holds masks only, and the optional extras go into sibling
folders::

    binary model                      semantic model
    OUT/<stem>.png   0/255 change     OUT/change/<stem>.png   0/255 change
                                      OUT/label1/<stem>.png   date-A class map (palette PNG)
                                      OUT/label2/<stem>.png   date-B class map
    OUT_prob/<stem>.png      --prob: change probability (x 255; float32 GeoTIFF for GeoTIFF inputs)
    OUT_overlay/<stem>.png   --overlay: changes in red on date B (PNG inputs only)
    OUT/<stem>.gpkg          --vector: change polygons beside each mask

The semantic folder is what ``eval-masks --task semantic --pred OUT`` reads (``label1/``, ``label2/``,
``change/``); ``eval-masks --pred OUT/change`` scores its binary change.

A file ``--out FILE.png`` (or ``.tif``) for one pair writes exactly that file, and its extras beside it:
``FILE_prob.png``, ``FILE_overlay.png``, ``FILE_label1.png``, ``FILE_label2.png``, and exactly the ``--vector``
file. GeoTIFF outputs are Cloud Optimized GeoTIFFs with nodata set (:mod:`changekit.raster.writer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import OutputError

#: ``--out`` with one of these suffixes names a file (one pair), anything else a folder.
FILE_SUFFIXES = (".png", ".tif", ".tiff")
GEO_SUFFIXES = (".tif", ".tiff")
#: Sub-folders of a semantic prediction (the layout ``eval-masks --task semantic`` reads).
SEMANTIC_FOLDERS = {"mask": "change", "sem_a": "label1", "sem_b": "label2"}
#: Extras beside the masks: output key -> suffix of the sibling folder (``OUT_prob``) or file (``FILE_prob``).
EXTRAS = {"prob": "prob", "overlay": "overlay"}
#: Files of a GeoTIFF scene in a folder ``--out``: output key -> ``<name>_<tag>`` (see the module docstring).
SCENE_TAGS = {"mask": "change", "prob": "prob", "sem_a": "sem_a", "sem_b": "sem_b"}


def mask_suffix(input_path: Path) -> str:
    """``.tif`` for GeoTIFF inputs (keeps the georeferencing), ``.png`` otherwise."""
    return ".tif" if input_path.suffix.lower() in GEO_SUFFIXES else ".png"


@dataclass(frozen=True)
class PredictionLayout:
    """The outputs of one ``predict`` call (see the module docstring).

    Attributes:
        out: the user's ``--out``.
        single_file: ``out`` names one file (one pair).
        semantic: the model writes class maps of both dates too.
        prob, overlay: the ``--prob`` / ``--overlay`` extras are requested.
        vector: the ``--vector`` file (its suffix picks the format), ``None``: no polygons.
    """

    out: Path
    single_file: bool
    semantic: bool
    prob: bool = False
    overlay: bool = False
    vector: Path | None = None

    @classmethod
    def plan(cls, out: str | Path, num_pairs: int, semantic: bool, prob: bool = False,
             overlay: bool = False, vector: str | Path | None = None) -> PredictionLayout:
        """Decide the layout; ``--out FILE.png`` for a folder of pairs is refused (one line)."""
        out = Path(out)
        single = out.suffix.lower() in FILE_SUFFIXES
        if single and num_pairs != 1:
            raise OutputError(f"{out}: --out names one file but --a and --b hold {num_pairs} pairs; give a folder "
                              f"(e.g. --out {out.with_suffix('')})")
        return cls(out, single, semantic, prob, overlay, Path(vector) if vector is not None else None)

    def roots(self, with_overlay: bool | None = None, plain_pairs: bool = True) -> dict[str, Path]:
        """The top-level outputs, each guarded before work starts and written atomically.

        Folder mode: ``mask`` (the ``--out`` folder) and the extras' sibling folders. File mode: every file.
        ``with_overlay=False`` leaves the overlay out (no pair can have one: GeoTIFF inputs); ``plain_pairs=False``
        (every pair is a GeoTIFF scene, whose files all lie in ``OUT``) leaves out every sibling folder.
        """
        overlay = self.overlay if with_overlay is None else self.overlay and with_overlay
        wanted = {"prob": self.prob and (plain_pairs or self.single_file), "overlay": overlay}
        out = self.out
        if not self.single_file:
            plain = out.name not in ("", ".", "..")  # '.', '..': name the siblings after the resolved folder
            parent, base = (out.parent, out.name) if plain else (out.resolve().parent, out.resolve().name)
            roots = {"mask": out}
            roots.update({k: parent / f"{base}_{tag}" for k, tag in EXTRAS.items() if wanted[k]})
            return roots
        roots = {"mask": out}
        roots.update({k: out.with_name(f"{out.stem}_{tag}{out.suffix if k == 'prob' else '.png'}")
                      for k, tag in EXTRAS.items() if wanted[k]})
        if self.semantic:
            roots.update({k: out.with_name(f"{out.stem}_{folder}{out.suffix}")
                          for k, folder in SEMANTIC_FOLDERS.items() if k != "mask"})
        if self.vector is not None:
            roots["vector"] = self.vector
        return roots

    def files(self, stem: str, suffix: str, roots: Mapping[str, Path]) -> dict[str, Path]:
        """The files of one pair under ``roots`` (the final roots, or their temporaries while writing).

        Args:
            stem: the pair's stem.
            suffix: the mask suffix (:func:`mask_suffix` of the input, or the file's own in file mode).
            roots: the outputs of :meth:`roots`, possibly replaced by temporary paths.
        """
        if self.single_file:
            return dict(roots)
        mask_root = roots["mask"]
        if suffix.lower() in GEO_SUFFIXES:  # a scene: every file named after the pair, in OUT
            keys = ["mask", *(["prob"] if self.prob else []), *(["sem_a", "sem_b"] if self.semantic else [])]
            files = {k: mask_root / f"{stem}_{SCENE_TAGS[k]}{suffix}" for k in keys}
            if self.vector is not None:
                files["vector"] = mask_root / f"{stem}_{SCENE_TAGS['mask']}{self.vector.suffix}"
            return files
        files = {"mask": mask_root / f"{stem}{suffix}"}
        if self.semantic:
            files = {k: mask_root / folder / f"{stem}{suffix}" for k, folder in SEMANTIC_FOLDERS.items()}
        if "prob" in roots:
            files["prob"] = roots["prob"] / f"{stem}{suffix}"
        if "overlay" in roots:
            files["overlay"] = roots["overlay"] / f"{stem}.png"
        if self.vector is not None:
            files["vector"] = files["mask"].with_suffix(self.vector.suffix)
        return files

    def describe(self, roots: Mapping[str, Path]) -> str:
        """One line for the user: where the masks and extras went."""
        if self.single_file:
            return ", ".join(str(p) for p in roots.values())
        masks = self.out / SEMANTIC_FOLDERS["mask"] if self.semantic else self.out
        parts = [f"masks in {masks}"]
        if self.semantic:
            parts.append(f"class maps in {self.out / 'label1'} and {self.out / 'label2'}")
        parts += [f"{k} in {roots[k]}" for k in EXTRAS if k in roots]
        return "; ".join(parts)
