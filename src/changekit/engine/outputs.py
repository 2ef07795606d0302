"""Where ``predict`` writes: the one place that decides every output name.

A folder ``--out OUT`` (any number of pairs) holds masks only, so that ``changekit eval-masks --pred OUT``
scores it as it is; the optional extras go into sibling folders::

    binary model                      semantic model
    OUT/<stem>.png   0/255 change     OUT/change/<stem>.png   0/255 change
                                      OUT/label1/<stem>.png   date-A class map (palette PNG)
                                      OUT/label2/<stem>.png   date-B class map
    OUT_prob/<stem>.png      --prob: change probability (x 255; float32 GeoTIFF for GeoTIFF inputs)
    OUT_overlay/<stem>.png   --overlay: changes in red on date B (PNG inputs only)

The semantic folder is what ``eval-masks --task semantic --pred OUT`` reads (``label1/``, ``label2/``,
``change/``); ``eval-masks --pred OUT/change`` scores its binary change. GeoTIFF inputs give ``.tif`` masks and
class maps with the input's georeferencing. A file ``--out FILE.png`` (or ``.tif``) for one pair writes exactly
that file, and its extras beside it: ``FILE_prob.png``, ``FILE_overlay.png``, ``FILE_label1.png``,
``FILE_label2.png``. GeoTIFF outputs are Cloud Optimized GeoTIFFs with nodata set (:mod:`changekit.raster.writer`).

``--vector V.gpkg`` (or ``.geojson`` / ``.parquet``) adds each pair's change polygons: exactly ``V.gpkg`` with a
one-file ``--out``; beside each mask, with the mask's stem and ``V``'s suffix, with a folder ``--out``
(``OUT/<stem>.gpkg``, which ``eval-masks`` ignores).
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

    def roots(self, with_overlay: bool | None = None) -> dict[str, Path]:
        """The top-level outputs, each guarded before work starts and written atomically.

        Folder mode: ``mask`` (the ``--out`` folder) and the extras' sibling folders. File mode: every file.
        ``with_overlay=False`` leaves the overlay out (no pair can have one: GeoTIFF inputs).
        """
        overlay = self.overlay if with_overlay is None else self.overlay and with_overlay
        wanted = {"prob": self.prob, "overlay": overlay}
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
