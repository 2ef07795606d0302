"""``predict --pairs pairs.csv``: many scenes in one run, each pair on its own, resumable, shareable over ranks.

A list of scene pairs is a batch job that runs for hours, so it behaves like one:

* **isolated**: a pair that fails (unreadable file, other bands, another grid...) is reported and skipped; the
  pairs already finished stay where they are. Each pair's files are written under temporary names and renamed
  into place when the pair is complete; its ``<name>_summary.json`` comes last and marks it finished.
* **resumable**: a rerun skips the pairs whose summary carries this run's fingerprint (same checkpoint bytes,
  same pixel-changing options) and whose files all exist. Files of another checkpoint or other options, or of
  no finished pair, are replaced only with ``--overwrite`` (that pair fails with one line otherwise).
* **observable**: progress lines give tiles/s, pairs done and an ETA; the run ends with a summary table, written
  as ``OUT/pairs_summary.csv`` too.
* **distributed**: under ``torchrun`` / ``srun`` each rank takes every ``world``-th pair
  (:mod:`changekit.engine.distributed`); rank 0 gathers the rows and writes the table.

The CSV has a header with columns ``a`` and ``b`` and optionally ``out`` (one file for that pair's change map,
as ``--out FILE.tif`` for one pair) and ``name`` (default: ``out``'s stem, else A's stem). Paths are relative to
the CSV's folder.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from ..atomic import atomic_dir, atomic_path, make_dirs, sweep_stale_temps
from ..errors import ChangekitError, ConfigError, OutputError, PairingError, suggest
from ..safety import OVERWRITE_HINT, check_output
from .distributed import Ranks
from .options import PredictOptions
from .outputs import FILE_SUFFIXES, GEO_SUFFIXES, PredictionLayout, mask_suffix
from .pair_job import run_pair
from .predict import PredictSession
from .progress import Progress
from .summary import finished, product_files, product_roots, write_summary

log = logging.getLogger(__name__)

COLUMNS = ("a", "b", "out", "name")
TABLE_FILE = "pairs_summary.csv"
TABLE_FIELDS = ("name", "status", "changed_km2", "changed_percent_of_valid", "polygons", "seconds", "message")


@dataclass(frozen=True)
class PairJob:
    """One row of a pair list.

    Attributes:
        name: the pair's name (output file names start with it).
        a, b: the two dates.
        out: this pair's own change-map file (``None``: ``OUT/<name>...`` by the folder layout).
        row: the CSV line, for messages.
    """

    name: str
    a: Path
    b: Path
    out: Path | None
    row: int


@dataclass
class PairResult:
    """How one pair ended: ``status`` is ``done``, ``skipped`` (finished earlier) or ``failed``."""

    name: str
    status: str
    seconds: float = 0.0
    message: str = ""
    changed_km2: float | None = None
    changed_percent_of_valid: float | None = None
    polygons: int | None = None
    mask: str | None = None

    @classmethod
    def from_summary(cls, status: str, summary: dict[str, Any], seconds: float) -> PairResult:
        return cls(summary["name"], status, seconds, "", summary.get("changed_km2"),
                   summary.get("changed_percent_of_valid"), summary.get("polygons"),
                   summary.get("outputs", {}).get("mask"))


def read_pairs(path: str | Path) -> list[PairJob]:
    """Parse a pair list (see the module docstring); problems of the list itself are one ``ConfigError``.

    Missing image files are not checked here: such a pair fails on its own when it is run.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--pairs: {path} is not a file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--pairs: cannot read {path} ({exc})") from None
    rows = list(csv.reader(text.splitlines()))
    rows = [(i + 1, [c.strip() for c in r]) for i, r in enumerate(rows) if any(c.strip() for c in r)]
    if not rows:
        raise ConfigError(f"--pairs: {path} is empty; expected a header 'a,b[,out][,name]' and one row per pair")
    header = [h.lower() for h in rows[0][1]]
    for h in header:
        if h not in COLUMNS:
            raise ConfigError(f"--pairs: {path} has an unknown column '{h}'{suggest(h, COLUMNS)}; "
                              f"expected a header with {', '.join(COLUMNS)} (a and b required)")
    if "a" not in header or "b" not in header or len(set(header)) != len(header):
        raise ConfigError(f"--pairs: {path}: the header {','.join(header)} must name columns a and b once each "
                          "(optionally out and name)")
    base = path.parent
    jobs: list[PairJob] = []
    for line, cells in rows[1:]:
        if len(cells) != len(header):
            raise ConfigError(f"--pairs: {path} line {line} has {len(cells)} fields, the header {len(header)}")
        rec = dict(zip(header, cells, strict=True))
        if not rec["a"] or not rec["b"]:
            raise ConfigError(f"--pairs: {path} line {line}: a and b must both be given")
        a, b = base / rec["a"], base / rec["b"]
        out = base / rec["out"] if rec.get("out") else None
        if out is not None and out.suffix.lower() not in FILE_SUFFIXES:
            raise ConfigError(f"--pairs: {path} line {line}: out '{rec['out']}' must end in "
                              f"{', '.join(FILE_SUFFIXES)} (one file for the pair's change map)")
        name = rec.get("name") or (out.stem if out is not None else a.stem)
        jobs.append(PairJob(name, a, b, out, line))
    seen: dict[str, int] = {}
    for job in jobs:
        if job.name in seen:
            raise PairingError(f"--pairs: {path} lines {seen[job.name]} and {job.row} both name a pair "
                               f"'{job.name}'; add a name column (or an out column) to tell them apart")
        seen[job.name] = job.row
    if not jobs:
        raise ConfigError(f"--pairs: {path} has a header but no pairs")
    return jobs


@dataclass
class PairsRun:
    """The outcome of a pair-list run (rank 0 has every rank's results; other ranks their own)."""

    results: list[PairResult]
    table: Path | None

    @property
    def failed(self) -> list[PairResult]:
        return [r for r in self.results if r.status == "failed"]


class _PairsRunner:
    """Runs the jobs of this rank one by one (see the module docstring)."""

    def __init__(self, session: PredictSession, out: Path, progress: Progress, inputs: list[Path]) -> None:
        self.session, self.out, self.progress, self.inputs = session, out, progress, inputs
        self.options = session.options

    def layout(self, job: PairJob) -> PredictionLayout:
        opt = self.options
        vector = opt.vector if opt.vector is None or not job.out else job.out.with_suffix(Path(opt.vector).suffix)
        return PredictionLayout.plan(job.out or self.out, 1 if job.out else 2, self.session.semantic,
                                     opt.save_prob, opt.save_overlay and job.a.suffix.lower() not in GEO_SUFFIXES,
                                     vector)

    def __call__(self, job: PairJob, tiles: int) -> PairResult:
        start = time.perf_counter()
        try:
            result = self._run(job, start)
        except ChangekitError as exc:
            result = PairResult(job.name, "failed", time.perf_counter() - start, " ".join(str(exc).split()))
        except Exception as exc:  # noqa: BLE001  (a pair's bug or bad file must not end the other pairs)
            log.debug("pair %s failed", job.name, exc_info=True)
            result = PairResult(job.name, "failed", time.perf_counter() - start,
                                f"{type(exc).__name__}: {' '.join(str(exc).split())}")
        if result.status == "failed":
            log.warning("pair %s (line %d) failed: %s", job.name, job.row, result.message)
        self.progress.pair_done(skip_tiles=0 if result.status == "done" else tiles)
        return result

    def _run(self, job: PairJob, start: float) -> PairResult:
        opt, layout = self.options, self.layout(job)
        roots = layout.roots(plain_pairs=job.a.suffix.lower() not in GEO_SUFFIXES)
        extra = product_roots(layout, opt)
        suffix = layout.out.suffix if layout.single_file else mask_suffix(job.a)
        final = layout.files(job.name, suffix, roots)
        products = product_files(layout, job.name, {**roots, **extra}, opt)
        wanted = {**final, **{k: v for k, v in products.items() if k != "summary"}}
        done, why = finished(products["summary"], self.session.fingerprint, wanted, self.session.model_record(), opt)
        if done and not opt.overwrite:
            summary = json.loads(products["summary"].read_text())
            return PairResult.from_summary("skipped", summary, time.perf_counter() - start)
        if why is not None and not opt.overwrite:
            raise OutputError(f"{why}; {OVERWRITE_HINT}")
        ours = products["summary"].is_file() and why is None  # an earlier run of these settings: replaceable
        if not (ours or opt.overwrite):
            for path in (*wanted.values(), products["summary"]):
                if path.exists():
                    raise OutputError(f"{path}: exists but belongs to no finished pair of this run; {OVERWRITE_HINT}")
        if job.out is not None:
            for path in (*roots.values(), *extra.values()):
                check_output(path, inputs=self.inputs, overwrite=True, kind="file")
        self.session.check_bands(job.a, job.b)
        with contextlib.ExitStack() as stack:
            writer = atomic_path if layout.single_file else atomic_dir
            tmp = {k: stack.enter_context(writer(p)) for k, p in roots.items()}
            tmp.update({k: stack.enter_context(atomic_path(p)) for k, p in extra.items() if k != "summary"})
            tmp_products = product_files(layout, job.name, {**tmp, "summary": products["summary"]}, opt)
            summary = run_pair(self.session, job.name, job.a, job.b, layout.files(job.name, suffix, tmp),
                               tmp_products, final, self.progress)
        summary = cast(dict[str, Any], summary)  # pair lists always ask for the summary
        write_summary(products["summary"], summary)  # last: marks the pair finished
        return PairResult.from_summary("done", summary, time.perf_counter() - start)


def predict_pairs(ckpt: str | Path, pairs: str | Path, out: str | Path, options: PredictOptions | None = None,
                  **overrides: Any) -> PairsRun:
    """Predict every pair of a pair list into ``out`` (see the module docstring).

    Args:
        ckpt: a changekit checkpoint (or an ONNX export with ``runtime='onnx'``).
        pairs: the CSV pair list.
        out: the output folder (change maps of rows without ``out``, summaries, the summary table).
        options: as for :func:`~changekit.engine.predict.predict` (``summary`` is always on here).

    Returns:
        The results (every pair's on rank 0) and the summary table's path (``None`` on other ranks).

    Raises:
        ConfigError / PairingError: the list itself is unusable (nothing has been written then).
        OutputError: ``out`` overlaps an input or cannot be written.
    """
    opt = dataclasses.replace(PredictOptions.build(options, **overrides), summary=True)
    jobs = read_pairs(pairs)
    out = Path(out)
    if out.suffix.lower() in FILE_SUFFIXES:
        raise OutputError(f"{out}: with --pairs, --out is a folder (per-pair files go in the CSV's out column)")
    inputs = [Path(pairs), Path(ckpt), *(p for j in jobs for p in (j.a, j.b))]
    check_output(out, inputs=inputs, overwrite=True, kind="folder")
    ranks = Ranks.from_env()
    try:
        opt = dataclasses.replace(opt, device=ranks.device(opt.device))
        session = PredictSession(ckpt, opt)
        mine = ranks.share(jobs)
        layout = PredictionLayout.plan(out, 2, session.semantic, opt.save_prob, opt.save_overlay)
        plain = any(j.a.suffix.lower() not in GEO_SUFFIXES for j in jobs)
        for root in layout.roots(plain_pairs=plain).values():  # made up front: ranks then only move files in
            make_dirs(root)
            sweep_stale_temps(root.parent)
        tiles = [session.tiles(j.a) for j in mine]
        prefix = f"rank {ranks.rank}/{ranks.world} " if ranks.distributed else ""
        progress = Progress(len(mine), sum(tiles), prefix=prefix)
        runner = _PairsRunner(session, out, progress, inputs)
        results = [runner(job, n) for job, n in zip(mine, tiles, strict=True)]
        gathered = ranks.gather(results)
        table = None
        if gathered is not None:
            order = {j.name: i for i, j in enumerate(jobs)}
            results = sorted((r for part in gathered for r in part), key=lambda r: order[r.name])
            table = write_table(out / TABLE_FILE, results)
        ranks.barrier()
        return PairsRun(results, table)
    finally:
        ranks.close()


def write_table(path: Path, results: list[PairResult]) -> Path:
    """The run's summary table as CSV (atomically)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(TABLE_FIELDS)
        for r in results:
            w.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)
                        for v in (getattr(r, k) for k in TABLE_FIELDS)])
    return path


def format_table(results: list[PairResult]) -> str:
    """The summary table for a terminal: one row per pair, then the totals."""
    head = ("pair", "status", "changed km²", "% of valid", "polygons", "time")
    rows = [(r.name, r.status, "" if r.changed_km2 is None else f"{r.changed_km2:.4f}",
             "" if r.changed_percent_of_valid is None else f"{r.changed_percent_of_valid:.2f}",
             "" if r.polygons is None else f"{r.polygons:,}", f"{r.seconds:.1f}s") for r in results]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
             for row in [head, *rows]]
    counts = {s: sum(r.status == s for r in results) for s in ("done", "skipped", "failed")}
    km2 = sum(r.changed_km2 or 0.0 for r in results if r.status != "failed")
    lines.append(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed; "
                 f"changed {km2:.4f} km² in all")
    lines += [f"failed {r.name}: {r.message}" for r in results if r.status == "failed"]
    return "\n".join(lines)
