"""The real-data benchmark machinery (benchmarks/realdata.py) on generated tiles: levers, few-shot tiles, table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from changekit.data.io import write_png

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def realdata() -> Any:
    sys.path.insert(0, str(BENCH_DIR))
    try:
        spec = importlib.util.spec_from_file_location("realdata", BENCH_DIR / "realdata.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["realdata"] = module  # its dataclasses look their module up
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH_DIR))


def _tiles(root: Path, n: int, changed: set[int]) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("A", "B", "label"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        write_png(root / "A" / f"t{i}.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        write_png(root / "B" / f"t{i}.png", rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
        label = np.zeros((16, 16), np.uint8)
        if i in changed:
            label[4:6, 4:6] = 255
        write_png(root / "label" / f"t{i}.png", label)
    return root


def test_few_tiles_draws_only_tiles_with_change_reproducibly(realdata: Any, tmp_path: Path) -> None:
    tiles = _tiles(tmp_path / "tiles", 12, changed={1, 3, 4, 7, 8, 11})
    first = realdata.few_tiles(tiles, 3, seed=0, work=tmp_path / "w0")
    stems = sorted(p.stem for p in (first / "label").iterdir())
    assert len(stems) == 3 and set(stems) <= {"t1", "t3", "t4", "t7", "t8", "t11"}
    for sub in ("A", "B"):
        assert sorted(p.stem for p in (first / sub).iterdir()) == stems
    again = realdata.few_tiles(tiles, 3, seed=0, work=tmp_path / "w1")
    assert sorted(p.stem for p in (again / "label").iterdir()) == stems
    other = _tiles(tmp_path / "other", 12, changed={0, 2, 5, 6, 9, 10})  # another split's tiles, same work folder
    drawn = realdata.few_tiles(other, 3, seed=0, work=tmp_path / "w0")
    assert drawn != first and len(list((drawn / "label").iterdir())) == 3
    stale = first / "label" / "t1.png"  # an older draw left in the folder is replaced, not added to
    (first / "label" / "zz.png").symlink_to(stale.resolve() if stale.exists() else tiles / "label" / "t1.png")
    redrawn = realdata.few_tiles(tiles, 3, seed=0, work=tmp_path / "w0")
    assert sorted(p.stem for p in (redrawn / "label").iterdir()) == stems
    with pytest.raises(SystemExit, match="only 6 training tiles show change"):
        realdata.few_tiles(tiles, 7, seed=0, work=tmp_path / "w2")


def test_levers_shape_the_config(realdata: Any, tmp_path: Path) -> None:
    paths = {"train": tmp_path / "t", "val": tmp_path / "v", "heldout": tmp_path / "h"}
    every = realdata.build_config("fc_ef", set(realdata.LEVERS), 20, 0, paths, 2)
    assert every["trainer"]["max_epochs"] == 1000 and every["schedule"]["budget_shaped"] is True
    assert every["loss"] == [{"name": "ce", "class_weights": "auto_sqrt"}]
    inverse = realdata.build_config("fc_ef", set(realdata.LEVERS), 20, 0, paths, 2, "auto")
    assert inverse["loss"] == [{"name": "ce", "class_weights": "auto"}]
    assert every["data"]["sampler"] == "change_balanced" and every["data"]["radiometric"] == "match_meanstd"
    assert every["trainer"]["threshold"] == "auto" and every["trainer"]["average_last"] == 5
    none = realdata.build_config("fc_ef", set(), 20, 0, paths, 2)
    assert none["trainer"]["max_epochs"] == 50 and none["schedule"]["budget_shaped"] is False
    assert none["loss"] == [{"name": "ce"}] and none["data"]["augment"] == "none"
    assert "sampler" not in none["data"] and "radiometric" not in none["data"]
    assert none["trainer"]["threshold"] == 0.5 and none["trainer"]["average_last"] == 0


def test_table_groups_runs_by_levers_budget_and_tiles(realdata: Any, tmp_path: Path) -> None:
    bench = realdata.Benchmark(name="demo", data=tmp_path, train=["a"], heldout=["b"],
                               anchor=[("Someone 2020", "0.5")])
    base = {"benchmark": "demo", "model": "fc_ef", "minutes": 20, "steps": 100, "train_wall_s": 1200,
            "precision": 0.5, "recall": 0.5, "tiles": None, "max_epochs": 1000}
    rows = [{**base, "ablate": [], "f1": 0.40}, {**base, "ablate": [], "f1": 0.44},
            {**base, "ablate": ["sampler"], "f1": 0.3}, {**base, "ablate": [], "f1": 0.2, "tiles": 10},
            {**base, "ablate": [], "f1": 0.6, "class_weights": "auto_sqrt"},
            {**base, "benchmark": "other", "ablate": [], "f1": 0.9}]
    results = tmp_path / "r.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    table = realdata.render_table(bench, results).splitlines()
    body = [line for line in table if line.startswith("| `fc_ef`")]
    assert len(body) == 4  # records without class_weights predate auto_sqrt: inverse-frequency weights
    assert ("| `fc_ef` | -; inverse-frequency weights | 2 | 20 | 20.0 | 100 | 0.500 | 0.500 | 0.420 +- 0.028 | "
            "0.440 |") in body
    assert "| `fc_ef` | - | 1 | 20 | 20.0 | 100 | 0.500 | 0.500 | 0.600 | 0.600 |" in body
    assert any("sampler" in line and line.endswith("0.300 | 0.300 |") for line in body)
    assert any("10 tiles only" in line and line.endswith("0.200 | 0.200 |") for line in body)
    assert table[-1] == "| Someone 2020 | (published) | | | | | | | 0.5 | |"


def _images(data: Path, names: tuple[str, ...], seed: int) -> Path:
    """Whole 32x32 pairs in the A|B|label layout, each with one inverted rectangle labelled as change."""
    rng = np.random.default_rng(seed)
    for sub in ("A", "B", "label"):
        (data / sub).mkdir(parents=True)
    for name in names:
        a = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
        b, label = a.copy(), np.zeros((32, 32), np.uint8)
        b[8:16, 8:20] = 255 - b[8:16, 8:20]
        label[8:16, 8:20] = 255
        write_png(data / "A" / f"{name}.png", a)
        write_png(data / "B" / f"{name}.png", b)
        write_png(data / "label" / f"{name}.png", label)
    return data


def test_run_trains_scores_and_appends_a_record(realdata: Any, tmp_path: Path) -> None:
    """One short run end to end on generated images: the record is written and holds what the table reads."""
    data = _images(tmp_path / "data", ("a", "b", "c", "d"), seed=1)
    bench = realdata.Benchmark(name="demo", data=data, train=["a", "b", "c"], heldout=["d"], val=["c"], tile=16)
    results = tmp_path / "results.jsonl"
    record = realdata.run(bench, "fc_ef", 0.05, {"average"}, seed=0, work=tmp_path / "work", results=results,
                          threads=1)
    written = json.loads(results.read_text().splitlines()[-1])
    assert written == json.loads(json.dumps(record))
    assert written["class_weights"] == "auto_sqrt" and written["ablate"] == ["average"]
    assert 0.0 <= written["f1"] <= 1.0 and written["steps"] > 0 and 0.0 <= written["threshold"] <= 1.0
    run_cfg = next((tmp_path / "work" / "runs").iterdir()) / "config.yaml"
    assert isinstance(yaml.safe_load(run_cfg.read_text())["loss"][0]["class_weights"], list)  # resolved numbers
    assert "`fc_ef` | average |" in realdata.render_table(bench, results)


def test_ensemble_of_two_seeds_is_scored_and_tabled(realdata: Any, tmp_path: Path) -> None:
    """``ensemble`` finds each seed's finished run, scores the probability-averaging checkpoint, and the table
    shows it as one row carrying both seeds."""
    data = _images(tmp_path / "data", ("a", "b", "d"), seed=2)
    bench = realdata.Benchmark(name="demo", data=data, train=["a", "b"], heldout=["d"], tile=16)
    results, work = tmp_path / "results.jsonl", tmp_path / "work"
    with pytest.raises(SystemExit, match="no finished run fc_ef-threshold-s0"):
        realdata.ensemble(bench, "fc_ef", {"threshold"}, [0, 1], work, results)
    members = [realdata.run(bench, "fc_ef", 0.03, {"threshold"}, seed=s, work=work, results=results, threads=1)
               for s in (0, 1)]
    record = realdata.ensemble(bench, "fc_ef", {"threshold"}, [0, 1], work, results)
    assert record["ensemble"] and record["seed"] == [0, 1] and 0.0 <= record["f1"] <= 1.0
    assert record["steps"] == sum(m["steps"] for m in members)
    assert record["members_f1"] == [m["f1"] for m in members]
    table = realdata.render_table(bench, results)
    assert "| `fc_ef` | threshold | 2 |" in table  # the two single-seed runs: one row, two seeds
    assert "| `fc_ef` | threshold; ensemble of seeds 0+1 | 2 |" in table
    with pytest.raises(SystemExit, match="2"):  # one seed is a usage error (argparse exits with 2)
        realdata.main(bench, ["ensemble", "--model", "fc_ef", "--seeds", "0", "--work", str(work)])
