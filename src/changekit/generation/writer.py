"""Write a generated change-detection data set: ``A|B|label`` plus both dates' class maps and a record per pair.

Layout of ``out``::

    A/ B/            date-1 / date-2 images (RGB PNG)
    label/           binary change, 255 exactly where label1 != label2, else 0
    label1/ label2/  class maps (palette PNGs whose indices are the classes)
    records/         one JSON per pair: source map and crop, edits, seeds, settings
    classes.yaml     the generator's class table
    generation.yaml  the run's settings
    semantic.txt     ``A B label1 label2 label`` path list (for semantic change models)

Binary models train on the folder directly (layout ``A|B|label``). Pair ``i`` depends only on ``(seed, i)`` and
the inputs, never on ``n``. Everything is written into a hidden temporary folder and moved into ``out`` when
complete, so an interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..data.io import atomic_dir, write_png
from ..errors import ConfigError, LabelValueError
from .edits import EditConfig, simulate_change
from .model import Generator
from .synthesis import synthesize_pair
from .train import load_pairs

__all__ = ["generate_dataset", "pair_rng"]

log = logging.getLogger(__name__)
_DIRS = ("A", "B", "label", "label1", "label2", "records")


def pair_rng(seed: int, index: int) -> np.random.Generator:
    """The random stream of pair ``index``: independent of how many pairs are generated."""
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(index),)))


def _crop(rng: np.random.Generator, shape: tuple[int, ...], size: int) -> tuple[int, int]:
    return int(rng.integers(shape[0] - size + 1)), int(rng.integers(shape[1] - size + 1))


def generate_dataset(
    generator: str | Path | Generator, masks: str | Path, out: str | Path, n: int, seed: int = 0,
    images: str | Path | None = None, size: int | None = None, edits: EditConfig | None = None,
    strength: float = 0.5, guidance: float | None = None, steps: int | None = None, n_donors: int = 3,
    overwrite: bool = False,
) -> Path:
    """Generate ``n`` pairs from the class maps in ``masks`` (cycled in sorted order) and write them to ``out``.

    Args:
        generator: a run folder or a loaded :class:`~changekit.generation.model.Generator`.
        masks: folder of single-date class maps.
        out: the new data set folder.
        n: number of pairs.
        seed: base seed; pair ``i`` uses ``(seed, i)``.
        images: folder of the real date-1 images of the same stems (``None``: date 1 is generated).
        size: crop side (default: the generator's training size); maps larger than this are cropped at random.
        edits: change-simulation settings.
        strength: appearance drift of unchanged regions (0..1).
        guidance: classifier-free guidance scale (default: generator's).
        steps: DDIM steps (default: generator's).
        n_donors: other maps that objects may be inserted from, per pair.
        overwrite: write into an existing non-empty folder (same-named files replaced).

    Raises:
        ConfigError: bad sizes or counts, or ``out`` is a non-empty folder and not ``overwrite``.
    """
    gen = generator if isinstance(generator, Generator) else Generator.load(generator)
    edits = edits or EditConfig()
    if isinstance(n, bool) or int(n) < 1:
        raise ConfigError(f"n: expected a positive integer, got {n!r}")
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise ConfigError(f"{out}: exists and is not empty; choose another --out (or pass overwrite)")
    pairs = load_pairs(images, masks)
    size = int(size or gen.settings["size"])
    smallest = min(min(m.shape) for _, _, m in pairs)
    if size % gen.factor or size > smallest:
        raise ConfigError(f"size {size}: must be a multiple of {gen.factor} and at most the smallest map ({smallest})")
    names, colors, ignore = gen.classes["names"], np.asarray(gen.classes["colors"]), gen.classes["ignore_index"]
    for stem, _, mask in pairs:
        bad = np.setdiff1d(np.unique(mask), [*range(len(names)), ignore])
        if bad.size:
            raise LabelValueError(f"{stem}: class map values {bad.tolist()} are not classes of the generator "
                                  f"({len(names)} classes, ignore {ignore})")
    settings = {"strength": float(strength), "guidance": guidance if guidance is not None else
                gen.settings["sample"]["guidance"], "steps": steps or gen.settings["sample"]["steps"],
                "size": size, "date1": "real" if images is not None else "generated",
                "edits": {**asdict(edits), "ops": dict(edits.ops)}}
    changed = 0
    with atomic_dir(out) as tmp:
        for d in _DIRS:
            (tmp / d).mkdir()
        lines = []
        for i in range(int(n)):
            rng = pair_rng(seed, i)
            src_i = i % len(pairs)
            stem_src, img, mask = pairs[src_i]
            y, x = _crop(rng, mask.shape, size)
            m1 = mask[y:y + size, x:x + size]
            others = [j for j in range(len(pairs)) if j != src_i]
            donor_ids = [int(j) for j in rng.permutation(others)[:n_donors]] if others else []
            donors = []
            for j in donor_ids:
                dy, dx = _crop(rng, pairs[j][2].shape, size)
                donors.append(pairs[j][2][dy:dy + size, dx:dx + size])
            m2, records, info = simulate_change(m1, rng, names, edits, donors=donors, ignore_index=ignore)
            torch_seed = int(rng.integers(2**62))
            im1, im2 = synthesize_pair(gen, m1, m2, None if img is None else img[y:y + size, x:x + size],
                                       torch_seed, strength=strength, guidance=guidance, steps=steps)
            label = np.where(m1 != m2, 255, 0).astype(np.uint8)
            stem = f"ca_{i:05d}"
            write_png(tmp / "A" / f"{stem}.png", im1)
            write_png(tmp / "B" / f"{stem}.png", im2)
            write_png(tmp / "label" / f"{stem}.png", label)
            write_png(tmp / "label1" / f"{stem}.png", m1, palette=colors)
            write_png(tmp / "label2" / f"{stem}.png", m2, palette=colors)
            for r in records:
                if r.get("donor") is not None:
                    r["donor"] = pairs[donor_ids[r["donor"]]][0]
            record: dict[str, Any] = {
                "stem": stem, "index": i, "source": {"map": stem_src, "crop": [y, x, size]},
                "seeds": {"seed": int(seed), "index": i, "torch_seed": torch_seed},
                "edits": records, "edit_summary": info, "settings": settings,
            }
            (tmp / "records" / f"{stem}.json").write_text(json.dumps(record, indent=1))
            lines.append(f"A/{stem}.png B/{stem}.png label1/{stem}.png label2/{stem}.png label/{stem}.png")
            changed += int(np.count_nonzero(label))
        (tmp / "semantic.txt").write_text("\n".join(lines) + "\n")
        (tmp / "classes.yaml").write_text(yaml.safe_dump(gen.classes, sort_keys=False))
        meta = {"generator": "changekit.generation", "n": int(n), "seed": int(seed), "masks": str(masks),
                "images": None if images is None else str(images), **settings,
                "changed_fraction": round(changed / (int(n) * size * size), 5)}
        (tmp / "generation.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    log.info("wrote %d generated pairs to %s (%.1f%% changed)", n, out, 100 * meta["changed_fraction"])
    return out
