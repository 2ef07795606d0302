"""One pair's prediction with its products: the change map, then its regions, summary and report.

Both ``predict`` (two files or folders) and pair lists call :func:`run_pair` for every pair, with the pair's
files under temporary names; the caller renames them into place and writes the returned summary last.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .progress import Progress
from .regions import mask_regions
from .summary import pair_summary

if TYPE_CHECKING:
    from .predict import PredictSession

log = logging.getLogger(__name__)


def run_pair(
    session: PredictSession,
    name: str,
    a: Path,
    b: Path,
    files: Mapping[str, Path],
    products: Mapping[str, Path],
    final: Mapping[str, Path],
    progress: Progress,
) -> dict[str, Any] | None:
    """Predict pair ``name`` into ``files``; with ``products`` also measure it and write its report.

    Args:
        session: the loaded model and options.
        a, b: the two dates.
        files: output key -> (temporary) file the runner writes.
        products: ``summary`` / ``report`` -> (temporary) file; empty: only the change map.
        final: output key -> the file's final name (what the summary records).
        progress: counts the tiles.

    Returns:
        The pair's summary (the caller writes it once the outputs are in place), or ``None`` without products.
    """
    start = time.perf_counter()
    files = dict(files)
    scratch: Path | None = None
    try:
        # the report's histogram and the polygons' mean / max probability need the probabilities
        if ("report" in products or "vector" in files) and "prob" not in files:
            scratch = Path(tempfile.mkdtemp(prefix=f".{name}_scratch.ck{os.getpid()}-",
                                            dir=Path(files["mask"]).parent))
            files["prob"] = scratch / f"prob{Path(files['mask']).suffix}"
        tiles0 = progress.tiles
        with progress.counting(session.model):
            session.run(name, a, b, files)
        timings = {"predict": time.perf_counter() - start}
        if "vector" in files:  # --vector: the change polygons of the files just written
            from ..raster.vector import vectorize

            t = time.perf_counter()
            sem = [files["sem_a"], files["sem_b"]] if "sem_a" in files else None
            vectorize(files["mask"], files["vector"], files.get("prob"), sem, session.options.min_area,
                      session.options.simplify)
            timings["vector"] = time.perf_counter() - t
        if not products:
            return None
        t = time.perf_counter()
        regions = mask_regions(files["mask"], files.get("prob"))
        timings["regions"] = time.perf_counter() - t
        summary = pair_summary(
            name, a, b, final, regions, model=session.model_record(), normalisation=session.normalisation(),
            options=session.options, threshold=session.threshold, timings=timings, tiles=progress.tiles - tiles0,
            fingerprint_=session.fingerprint, vector=files.get("vector"),
        )
        if "report" in products:
            from ..report.scene import write_scene_report

            t = time.perf_counter()
            write_scene_report(products["report"], summary, regions, a, b, files["mask"])
            summary["timings_s"]["report"] = round(time.perf_counter() - t, 3)
        summary["timings_s"]["total"] = round(time.perf_counter() - start, 3)
        return summary
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
