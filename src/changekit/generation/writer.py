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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ..data.io import atomic_dir, write_png
from ..errors import ChangekitError, ConfigError, LabelValueError
from ..safety import check_output, removes_new_folders
from .edits import EditConfig, simulate_change
from .model import Generator
from .synthesis import synthesize_pair
from .train import load_pairs

__all__ = ["GenerationError", "generate_dataset", "pair_rng"]

log = logging.getLogger(__name__)
_DIRS = ("A", "B", "label", "label1", "label2", "records")
#: The first pairs' edits are drawn before any image is synthesised: if none of them changes, nothing is made.
PROBE_PAIRS = 8


class GenerationError(ChangekitError, RuntimeError):
    """The edit settings produce no change on the given class maps."""


def pair_rng(seed: int, index: int, attempt: int = 0) -> np.random.Generator:
    """The random stream of pair ``index``: independent of how many pairs are generated.

    ``attempt`` > 0 gives the fresh streams of the retries of a pair whose edits all failed (attempt 0 is the
    pair's first and usual stream).
    """
    key = (int(index),) if attempt == 0 else (int(index), int(attempt))
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def _crop(rng: np.random.Generator, shape: tuple[int, ...], size: int) -> tuple[int, int]:
    return int(rng.integers(shape[0] - size + 1)), int(rng.integers(shape[1] - size + 1))


@dataclass
class _Plan:
    """One pair before synthesis: the crop, both class maps, the edit records and the seeds."""

    index: int
    source: int
    crop: tuple[int, int]
    m1: np.ndarray
    m2: np.ndarray
    records: list[dict[str, Any]]
    info: dict[str, Any]
    attempt: int
    torch_seed: int

    @property
    def changed(self) -> bool:
        return bool((self.m1 != self.m2).any())


def _plan_pair(i: int, seed: int, pairs: list, size: int, n_donors: int, names: list[str], edits: EditConfig,
               ignore: int) -> _Plan:
    """Crop, donors and edits of pair ``i``; a pair whose edits all failed is redrawn from fresh streams, up to
    ``edits.retries`` times (the last draw is kept, changed or not)."""
    src_i = i % len(pairs)
    mask = pairs[src_i][2]
    for attempt in range(1 + edits.retries):
        rng = pair_rng(seed, i, attempt)
        y, x = _crop(rng, mask.shape, size)
        m1 = mask[y:y + size, x:x + size]
        others = [j for j in range(len(pairs)) if j != src_i]
        donor_ids = [int(j) for j in rng.permutation(others)[:n_donors]] if others else []
        donors = []
        for j in donor_ids:
            dy, dx = _crop(rng, pairs[j][2].shape, size)
            donors.append(pairs[j][2][dy:dy + size, dx:dx + size])
        m2, records, info = simulate_change(m1, rng, names, edits, donors=donors, ignore_index=ignore)
        for r in records:
            if r.get("donor") is not None:
                r["donor"] = pairs[donor_ids[r["donor"]]][0]
        plan = _Plan(i, src_i, (y, x), m1, m2, records, info, attempt, int(rng.integers(2**62)))
        if plan.changed:
            break
    return plan


def generate_dataset(
    generator: str | Path | Generator, masks: str | Path, out: str | Path, n: int, seed: int = 0,
    images: str | Path | None = None, size: int | None = None, edits: EditConfig | None = None,
    strength: float = 0.5, guidance: float | None = None, steps: int | None = None, n_donors: int = 3,
    overwrite: bool = False,
) -> Path:
    """Generate ``n`` pairs from the class maps in ``masks`` (cycled in sorted order) and write them to ``out``.

    A pair whose edits all failed (no pixel changed) is redrawn with fresh seeds up to ``edits.retries`` times.
    If the first :data:`PROBE_PAIRS` pairs still have no change, the edit settings cannot change these maps:
    :class:`GenerationError`, before any image is synthesised and with nothing written. Otherwise pairs left
    without change are kept (a no-change pair is valid data), logged as a warning and listed in
    ``generation.yaml`` (``pairs_without_change``, ``stems_without_change``).

    Args:
        generator: a run folder or a loaded :class:`~changekit.generation.model.Generator`.
        masks: folder of single-date class maps.
        out: the new data set folder; it may not overlap an input, and an existing non-empty one needs
            ``overwrite``.
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
        OutputError: ``out`` overlaps an input, is a file, or is a non-empty folder without ``overwrite``.
        ConfigError: bad sizes or counts.
        GenerationError: no change in any of the first pairs.
    """
    if isinstance(n, bool) or int(n) < 1:
        raise ConfigError(f"--n: expected a positive integer, got {n}")
    out = Path(out)
    inputs = [masks, images, None if isinstance(generator, Generator) else generator]
    check_output(out, inputs=inputs, overwrite=overwrite, kind="folder")
    gen = generator if isinstance(generator, Generator) else Generator.load(generator)
    edits = edits or EditConfig()
    pairs = load_pairs(images, masks)
    size = int(size or gen.settings["size"])
    smallest = min(min(m.shape) for _, _, m in pairs)
    if size % gen.factor or size > smallest:
        raise ConfigError(f"--size {size}: must be a multiple of {gen.factor} and at most the smallest class map "
                          f"({smallest} pixels)")
    names, colors, ignore = gen.classes["names"], np.asarray(gen.classes["colors"]), gen.classes["ignore_index"]
    for stem, _, mask in pairs:
        bad = np.setdiff1d(np.unique(mask), [*range(len(names)), ignore])
        if bad.size:
            raise LabelValueError(f"{Path(masks) / stem}: class map values {bad.tolist()} are not classes of the "
                                  f"generator ({len(names)} classes, ignore {ignore})")
    settings = {"strength": float(strength), "guidance": guidance if guidance is not None else
                gen.settings["sample"]["guidance"], "steps": steps or gen.settings["sample"]["steps"],
                "size": size, "date1": "real" if images is not None else "generated",
                "edits": {**asdict(edits), "ops": dict(edits.ops)}}
    plan_args = (seed, pairs, size, n_donors, list(names), edits, ignore)
    probe = [_plan_pair(i, *plan_args) for i in range(min(int(n), PROBE_PAIRS))]
    if not any(p.changed for p in probe):
        raise GenerationError(
            f"{masks}: no change in any of the first {len(probe)} pair(s) after {1 + edits.retries} attempt(s) "
            "each; the edit settings cannot change these class maps (check --area and the --edits file's ops, "
            "transitions and min_object_pixels); nothing written")
    changed, empty = 0, []
    with removes_new_folders(out), atomic_dir(out) as tmp:
        for d in _DIRS:
            (tmp / d).mkdir()
        lines = []
        for i in range(int(n)):
            plan = probe[i] if i < len(probe) else _plan_pair(i, *plan_args)
            stem_src, img, _ = pairs[plan.source]
            (y, x), m1, m2 = plan.crop, plan.m1, plan.m2
            im1, im2 = synthesize_pair(gen, m1, m2, None if img is None else img[y:y + size, x:x + size],
                                       plan.torch_seed, strength=strength, guidance=guidance, steps=steps)
            label = np.where(m1 != m2, 255, 0).astype(np.uint8)
            stem = f"ca_{i:05d}"
            write_png(tmp / "A" / f"{stem}.png", im1)
            write_png(tmp / "B" / f"{stem}.png", im2)
            write_png(tmp / "label" / f"{stem}.png", label)
            write_png(tmp / "label1" / f"{stem}.png", m1, palette=colors)
            write_png(tmp / "label2" / f"{stem}.png", m2, palette=colors)
            record: dict[str, Any] = {
                "stem": stem, "index": i, "source": {"map": stem_src, "crop": [y, x, size]},
                "seeds": {"seed": int(seed), "index": i, "attempt": plan.attempt, "torch_seed": plan.torch_seed},
                "edits": plan.records, "edit_summary": plan.info, "settings": settings,
            }
            (tmp / "records" / f"{stem}.json").write_text(json.dumps(record, indent=1))
            lines.append(f"A/{stem}.png B/{stem}.png label1/{stem}.png label2/{stem}.png label/{stem}.png")
            changed += int(np.count_nonzero(label))
            if not plan.changed:
                empty.append(stem)
        (tmp / "semantic.txt").write_text("\n".join(lines) + "\n")
        (tmp / "classes.yaml").write_text(yaml.safe_dump(gen.classes, sort_keys=False))
        meta = {"generator": "changekit.generation", "n": int(n), "seed": int(seed), "masks": str(masks),
                "images": None if images is None else str(images), **settings,
                "changed_fraction": round(changed / (int(n) * size * size), 5),
                "pairs_without_change": len(empty), "stems_without_change": empty}
        (tmp / "generation.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    if empty:
        log.warning("%d of %d generated pairs have no change (their edits all failed after %d attempts; e.g. %s); "
                    "they are listed in %s", len(empty), n, 1 + edits.retries, empty[0], out / "generation.yaml")
    log.info("wrote %d generated pairs to %s (%.1f%% changed)", n, out, 100 * meta["changed_fraction"])
    return out
