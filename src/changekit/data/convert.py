"""Converters from published semantic change detection formats to the ones changekit reads.

* :func:`convert_hiucd`: the Hi-UCD series (3-channel mask PNGs: semantic T1, semantic T2, change, raw codes
  with 0 = unlabeled) -> ClearSCD's ``deal_hiucd.py`` convention: classes minus one with unlabeled -> 9, change
  minus one with unlabeled -> 255; optionally cut into ``tile`` x ``tile`` tiles with ClearSCD's ``clip_image.py``
  grid (the foundation's :func:`~changekit.data.tiling.tile_array`), named ``{idx}_{name}``. The output holds
  ``A/``, ``B/``, ``mask/``, a ClearSCD path list ``list.txt`` (``A B mask mask mask``) that
  :class:`~changekit.data.datasets.ChangeDataset` reads directly, and ``classes.yaml``.
* :func:`convert_rgb_labels`: SECOND-style ``im1|im2|label1|label2`` folders whose labels are RGB-coded ->
  the same layout with palette PNG class indices (SECOND: 0 = no change), driven by a class table
  (:mod:`changekit.data.classes`), so LsSCD-style sets work with their own table.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import yaml

from ..errors import DatasetNotFoundError, LabelValueError, PairingError
from ..safety import check_output
from .classes import HIUCD, SECOND, ClassTable, load_classes
from .io import IMAGE_SUFFIXES, atomic_dir, read_image, write_png
from .tiling import tile_array

log = logging.getLogger(__name__)
HIUCD_UNLABELED_SEM = 9
HIUCD_UNLABELED_CHANGE = 255


def hiucd_mask(raw: np.ndarray, where: str = "mask") -> np.ndarray:
    """``deal_hiucd.py`` on one raw Hi-UCD mask ``(H, W, 3)``: semantic -1 (0 -> 9), change -1 (0 -> 255).

    Raises:
        LabelValueError: not 3 channels, semantic codes outside 0..9 or change codes outside 0..2.
    """
    if raw.ndim != 3 or raw.shape[2] < 3:
        raise LabelValueError(f"{where}: a Hi-UCD mask has 3 channels (T1, T2, change), got shape {raw.shape}")
    raw = raw[..., :3]
    sem, change = raw[..., :2], raw[..., 2]
    if sem.max(initial=0) > 9 or change.max(initial=0) > 2:
        raise LabelValueError(f"{where}: Hi-UCD codes are 0..9 (semantic) and 0..2 (change), found "
                              f"{int(sem.max())} and {int(change.max())}; is it already converted?")
    out = np.empty_like(raw, dtype=np.uint8)
    out[..., :2] = np.where(sem == 0, HIUCD_UNLABELED_SEM, sem.astype(np.int16) - 1)
    out[..., 2] = np.where(change == 0, HIUCD_UNLABELED_CHANGE, change.astype(np.int16) - 1)
    return out


def _images(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}


def find_hiucd_folders(src: Path) -> tuple[Path, Path, Path]:
    """``(date_a, date_b, mask)`` folders under a Hi-UCD split: the folder whose path says ``mask`` and two image
    folders, ordered by path (years ascend: ``2017/9`` before ``2018/9``)."""
    leaves = sorted({p.parent for p in src.rglob("*") if p.is_file() and p.suffix.lower() == ".png"})
    masks = [d for d in leaves if "mask" in str(d.relative_to(src)).lower()]
    images = [d for d in leaves if d not in masks]
    if len(masks) != 1 or len(images) != 2:
        raise PairingError(f"{src}: expected one mask folder and two image folders with PNGs, found masks "
                           f"{[str(m) for m in masks]} and images {[str(i) for i in images]}; pass --a/--b/--mask")
    return images[0], images[1], masks[0]


def convert_hiucd(src: str | Path, out: str | Path, tile: int = 512, a: str | Path | None = None,
                  b: str | Path | None = None, mask: str | Path | None = None,
                  overwrite: bool = False) -> dict[str, int]:
    """Convert one Hi-UCD split folder (see the module docstring); returns ``{"pairs", "tiles"}``.

    Args:
        src: the split folder (e.g. ``Hi-UCD-mini/train`` with ``2017/9``, ``2018/9``, ``mask_merge/2017_2018/9``).
        out: output folder (written atomically).
        tile: tile size (ClearSCD: 512); 0 keeps whole images.
        a, b, mask: the folders, when auto-detection cannot decide (relative to ``src`` or absolute).
        overwrite: write into an existing non-empty ``out`` (``--overwrite``).
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise DatasetNotFoundError(f"{src}: folder not found")
    check_output(out, inputs=[src, a, b, mask], overwrite=overwrite, kind="folder")
    if a is None or b is None or mask is None:
        fa, fb, fm = find_hiucd_folders(src)
    else:
        fa, fb, fm = (Path(p) if Path(p).is_absolute() else src / p for p in (a, b, mask))
    ia, ib, im = _images(fa), _images(fb), _images(fm)
    missing = sorted(set(im) - set(ia) | set(im) - set(ib))
    if missing or not im:
        raise PairingError(f"{fm}: {'no masks' if not im else 'no image pair for ' + ', '.join(missing[:5])}")
    lines, tiles = [], 0
    with atomic_dir(out) as tmp:
        for sub in ("A", "B", "mask"):
            (tmp / sub).mkdir()
        for stem in sorted(im):
            label = hiucd_mask(read_image(im[stem]), str(im[stem]))
            img_a, img_b = read_image(ia[stem]), read_image(ib[stem])
            if not img_a.shape[:2] == img_b.shape[:2] == label.shape[:2]:
                raise PairingError(f"{stem}: images and mask differ in size")
            arrays = (img_a, img_b, label)
            if tile and max(label.shape[:2]) > tile:
                parts = [tile_array(x, tile) for x in arrays]
                named = [(f"{i}_{stem}", tuple(p[i][2] for p in parts)) for i in range(len(parts[0]))]
            else:
                named = [(stem, arrays)]
            for name, (ta, tb, tm) in named:
                for sub, arr in (("A", ta), ("B", tb), ("mask", tm)):
                    write_png(tmp / sub / f"{name}.png", np.ascontiguousarray(arr[..., :3]))
                lines.append(f"A/{name}.png B/{name}.png mask/{name}.png mask/{name}.png mask/{name}.png")
                tiles += 1
        (tmp / "list.txt").write_text("\n".join(lines) + "\n")
        (tmp / "classes.yaml").write_text(yaml.safe_dump(HIUCD.to_dict(), sort_keys=False))
    log.info("converted %d Hi-UCD pairs into %d tiles in %s", len(im), tiles, out)
    return {"pairs": len(im), "tiles": tiles}


def convert_rgb_labels(src: str | Path, out: str | Path, classes: str | Path | ClassTable = SECOND,
                       folders: tuple[str, ...] = ("im1", "im2", "label1", "label2"),
                       overwrite: bool = False) -> dict[str, int]:
    """Convert RGB-coded ``label1``/``label2`` to palette PNG class indices; images are copied.

    Args:
        src: folder with ``im1/ im2/ label1/ label2/`` (SECOND).
        out: output folder (same sub-folders plus ``classes.yaml``), written atomically.
        classes: the class table whose colours decode the labels (built-in name, YAML path or table).
        overwrite: write into an existing non-empty ``out`` (``--overwrite``).

    Raises:
        LabelValueError: a label holds a colour absent from the table (names the file).
    """
    src, out = Path(src), Path(out)
    check_output(out, inputs=[src], overwrite=overwrite, kind="folder")
    table = load_classes(classes)
    dirs = [src / f for f in folders]
    for d in dirs:
        if not d.is_dir():
            raise DatasetNotFoundError(f"{d}: folder not found (expected {'/'.join(folders)} under {src})")
    index = [_images(d) for d in dirs]
    stems = sorted(index[0])
    for d, idx in zip(dirs[1:], index[1:]):
        missing = sorted(set(stems) - set(idx))
        if missing:
            raise PairingError(f"{d}: no file for {', '.join(missing[:5])}")
    with atomic_dir(out) as tmp:
        for f in folders:
            (tmp / f).mkdir()
        for stem in stems:
            for f, idx in zip(folders[:2], index[:2]):
                shutil.copy2(idx[stem], tmp / f / idx[stem].name)
            for f, idx in zip(folders[2:], index[2:]):
                rgb = read_image(idx[stem])
                write_png(tmp / f / f"{stem}.png", table.encode_rgb(rgb, str(idx[stem])), palette=table.colors)
        (tmp / "classes.yaml").write_text(yaml.safe_dump(table.to_dict(), sort_keys=False))
    log.info("converted %d RGB-labelled pairs into %s", len(stems), out)
    return {"pairs": len(stems)}
