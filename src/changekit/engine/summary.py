"""The per-pair products beside a change map: a JSON summary (and the HTML report that reads it).

``<name>_summary.json`` answers the analyst's first question (how much changed, where, with what model) without
opening a GIS: changed area in km² and ha and as a share of the valid area, the number of change polygons, the
valid-pixel share, the normalisation and model used, and timings. In a pair list it is also the mark of a
finished pair: written last, atomically, with a fingerprint of the checkpoint and the output-affecting options,
so a rerun skips exactly the pairs that this model and these settings already finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..atomic import atomic_path
from .regions import HIST_BINS, Regions

if TYPE_CHECKING:
    from .options import PredictOptions
    from .outputs import PredictionLayout

#: Bumped when the summary's fields change meaning.
SUMMARY_VERSION = 1
#: Options that do not change what is written (a rerun with other values still skips finished pairs).
_NEUTRAL_OPTIONS = ("device", "overwrite", "batch_size", "summary", "report", "save_prob", "save_overlay")


def product_roots(layout: PredictionLayout, options: PredictOptions) -> dict[str, Path]:
    """Files beside a one-file ``--out FILE.tif`` (``FILE_summary.json``, ``FILE_report.html``) when asked for.

    Folder outputs keep the products inside the mask folder (see :func:`product_files`), so they need no root.
    """
    if not layout.single_file:
        return {}
    out = layout.out
    wanted = {"summary": options.summary or options.report, "report": options.report}
    return {k: out.with_name(f"{out.stem}_{k}{'.json' if k == 'summary' else '.html'}") for k, on in
            wanted.items() if on}


def product_files(layout: PredictionLayout, name: str, roots: Mapping[str, Path],
                  options: PredictOptions) -> dict[str, Path]:
    """The summary / report files of pair ``name`` under ``roots`` (final roots or their temporaries)."""
    if layout.single_file:
        return {k: roots[k] for k in ("summary", "report") if k in roots}
    files = {}
    if options.summary or options.report:
        files["summary"] = roots["mask"] / f"{name}_summary.json"
    if options.report:
        files["report"] = roots["mask"] / f"{name}_report.html"
    return files


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fingerprint(ckpt_sha256: str, options: PredictOptions, threshold: float) -> str:
    """What makes two runs' outputs the same: the checkpoint's bytes and the options that change pixels."""
    opts = {k: str(v) for k, v in sorted(dataclasses.asdict(options).items()) if k not in _NEUTRAL_OPTIONS}
    opts["threshold"] = repr(float(threshold))
    text = json.dumps({"ckpt": ckpt_sha256, "options": opts}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plain_json(value: Any) -> Any:
    """JSON-ready copy: tuples to lists, paths to text, numpy scalars to Python numbers."""
    if callable(getattr(value, "to_dict", None)):  # e.g. Normalisation: its own plain form
        return plain_json(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain_json(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(plain_json(v) for v in value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _share(num: float, den: float) -> float | None:
    return num / den if den else None


def pair_summary(
    name: str, a: Path, b: Path, outputs: Mapping[str, Path], regions: Regions, *, model: Mapping[str, Any],
    normalisation: Any, options: PredictOptions, threshold: float, timings: Mapping[str, float], tiles: int,
    fingerprint_: str, vector: Path | None = None,
) -> dict[str, Any]:
    """The summary of one predicted pair (see the module docstring for what and why).

    Args:
        name: the pair's name; ``a``, ``b``: its two dates.
        outputs: key -> final file (``mask``, ``prob``, ...).
        regions: the mask's regions and tallies (:func:`~changekit.engine.regions.mask_regions`).
        model: ``name``, ``checkpoint``, ``sha256``, ``runtime``...
        normalisation: what turned raw pixels into network input (a dataclass or mapping).
        options, threshold: the run's options and the threshold applied.
        timings: seconds per stage (``predict``, ``regions``, ``report``, ``total``).
        tiles: tiles the model predicted for this pair.
        fingerprint_: :func:`fingerprint` of the run.
        vector: the pair's polygon file (``--vector``): the polygon count is its feature count (after
            ``min_area``), else the mask's 4-connected regions are counted.
    """
    r = regions
    km2 = None if r.changed_m2 is None else r.changed_m2 / 1e6
    summary: dict[str, Any] = {
        "version": SUMMARY_VERSION,
        "name": name,
        "a": str(a),
        "b": str(b),
        "outputs": {k: str(v) for k, v in outputs.items()},
        "changed_km2": km2,
        "changed_ha": None if r.changed_m2 is None else r.changed_m2 / 1e4,
        "changed_percent_of_valid": None if not r.valid else 100.0 * r.changed / r.valid,
        "valid_km2": None if r.valid_m2 is None else r.valid_m2 / 1e6,
        "valid_share": _share(r.valid, r.total),
        "polygons": r.count if vector is None else vector_features(vector),
        "polygons_from": ("mask (4-connected change regions)" if vector is None
                          else f"vector file {Path(outputs.get('vector', vector)).name}"),
        "largest_polygon_ha": (None if r.area_m2 is None or not r.count else float(r.area_m2.max()) / 1e4),
        "pixels": {"total": r.total, "valid": r.valid, "changed": r.changed},
        "crs": r.crs,
        "threshold": float(threshold),
        "model": dict(model),
        "normalisation": normalisation,
        "options": {k: v for k, v in dataclasses.asdict(options).items() if k not in ("overwrite",)},
        "tiles": int(tiles),
        "tiles_per_s": _share(tiles, timings.get("predict", 0.0)),
        "timings_s": {k: round(float(v), 3) for k, v in timings.items()},
        "fingerprint": fingerprint_,
    }
    if r.prob_hist is not None:
        summary["probability_histogram"] = {"bins": HIST_BINS, "counts": r.prob_hist.tolist()}
    return plain_json(summary)


def vector_features(path: str | Path) -> int:
    """Number of polygons in a vector file (GeoPackage, GeoJSON or GeoParquet) without reading geometries."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    import pyogrio

    return int(pyogrio.read_info(path)["features"])


def write_summary(path: Path, summary: Mapping[str, Any]) -> Path:
    """Write the summary JSON atomically (it marks a finished pair, so it must never be half there)."""
    with atomic_path(path, durable=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def _difference(old: Mapping[str, Any], model: Mapping[str, Any], options: PredictOptions) -> str:
    """What differs between an earlier summary and this run, in words (``''`` when nothing visible does)."""
    if (old.get("model") or {}).get("sha256") != model.get("sha256"):
        return f"checkpoint {(old.get('model') or {}).get('checkpoint')}, this run {model.get('checkpoint')}"
    now = plain_json(dataclasses.asdict(options))
    before = old.get("options") or {}
    for key, value in now.items():
        if key not in _NEUTRAL_OPTIONS and before.get(key) != value:
            return f"{key} {before.get(key)!r}, this run {value!r}"
    return ""


def finished(path: Path, fingerprint_: str, wanted: Mapping[str, Path], model: Mapping[str, Any] | None = None,
             options: PredictOptions | None = None) -> tuple[bool, str | None]:
    """Whether the pair whose summary is ``path`` is finished by this run: ``(done, why_not)``.

    ``done``: the summary exists, carries ``fingerprint_`` and every file in ``wanted`` exists. ``why_not`` is
    ``None`` when the summary is absent or ours (a missing extra is simply made again); otherwise it says what
    differs (another checkpoint or options: replaced only with ``--overwrite``).
    """
    if not path.is_file():
        return False, None
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return False, f"{path}: unreadable summary"
    if not isinstance(old, dict):
        return False, f"{path}: not a pair summary"
    if old.get("fingerprint") != fingerprint_:
        diff = _difference(old, model, options) if model is not None and options is not None else ""
        return False, f"{path}: made with another checkpoint or other options ({diff or 'fingerprint differs'})"
    return all(Path(p).exists() for p in wanted.values()), None
