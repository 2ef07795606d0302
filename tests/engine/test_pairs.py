"""``predict --pairs``: isolated pairs, skip on rerun, summaries and the table; ``--summary`` for one pair.

The model is the pointwise test model (no training); scenes are small GeoTIFFs in UTM 33N at 0.5 m.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import rasterio

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

from pointwise_ckpt import pointwise_checkpoint  # noqa: E402
from scene_pairs import write_scene_pair  # noqa: E402

from changekit.cli import main  # noqa: E402
from changekit.engine import pairs as P  # noqa: E402
from changekit.engine.pairs import predict_pairs, read_pairs  # noqa: E402
from changekit.errors import ConfigError, PairingError  # noqa: E402

OPTS = dict(tile=64, overlap=16)


def _scene(folder: Path, name: str, seed: int, h: int = 96, w: int = 80) -> tuple[Path, Path]:
    return write_scene_pair(folder / f"{name}_a.tif", folder / f"{name}_b.tif", (h, w),
                            [(slice(10, 40), slice(20, 60))], seed)


@pytest.fixture()
def ws(tmp_path: Path) -> Path:
    """``scenes/`` with three pairs (s0..s2), ``pairs.csv`` listing them, ``model.ckpt``."""
    scenes = tmp_path / "scenes"
    scenes.mkdir()
    for i in range(3):
        _scene(scenes, f"s{i}", i)
    (tmp_path / "pairs.csv").write_text("a,b\n" + "".join(f"scenes/s{i}_a.tif,scenes/s{i}_b.tif\n" for i in range(3)))
    pointwise_checkpoint(tmp_path / "model.ckpt")
    return tmp_path


def _files(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_read_pairs_relative_paths_names_and_errors(tmp_path: Path) -> None:
    (tmp_path / "l").mkdir()
    csv = tmp_path / "l" / "p.csv"
    csv.write_text("a,b,out,name\nx/a.tif,x/b.tif,,\n/abs/a2.tif,/abs/b2.tif,res/two.tif,\nc.tif,d.tif,,third\n")
    jobs = read_pairs(csv)
    assert [(j.name, j.a, j.b, j.out) for j in jobs] == [
        ("a", tmp_path / "l" / "x/a.tif", tmp_path / "l" / "x/b.tif", None),
        ("two", Path("/abs/a2.tif"), Path("/abs/b2.tif"), tmp_path / "l" / "res/two.tif"),
        ("third", tmp_path / "l" / "c.tif", tmp_path / "l" / "d.tif", None)]
    for text, err, words in [
        ("a,c\nx,y\n", ConfigError, "unknown column 'c'"),
        ("b\nx\n", ConfigError, "must name columns a and b"),
        ("a,b\nx.tif\n", ConfigError, "line 2 has 1 fields"),
        ("a,b\n", ConfigError, "no pairs"),
        ("a,b,out\nx,y,z.jpg\n", ConfigError, "must end in"),
        ("a,b\nd1/s.tif,d1/t.tif\nd2/s.tif,d2/t.tif\n", PairingError, "lines 2 and 3 both name a pair 's'"),
    ]:
        csv.write_text(text)
        with pytest.raises(err, match=words):
            read_pairs(csv)


def test_one_broken_pair_keeps_the_others_and_the_table_says_so(ws: Path, capsys: pytest.CaptureFixture) -> None:
    (ws / "scenes" / "s1_b.tif").write_bytes(b"II*\0 not really a tiff")  # the middle pair breaks
    out = ws / "pred"
    rc = main(["predict", "--ckpt", str(ws / "model.ckpt"), "--pairs", str(ws / "pairs.csv"), "--out", str(out),
               "--tile", "64", "--overlap", "16"])
    cap = capsys.readouterr()
    assert rc == 1, cap.err
    assert "2 done, 0 skipped, 1 failed" in cap.out and "failed s1_a:" in cap.out and "s1_b.tif" in cap.out
    assert "pairs 3/3" in cap.err and "tiles/s" in cap.err  # progress lines
    names = sorted(p.name for p in out.iterdir())
    assert names == ["pairs_summary.csv", "s0_a_change.tif", "s0_a_summary.json", "s2_a_change.tif",
                     "s2_a_summary.json"]
    assert not [p for p in ws.iterdir() if p.name.startswith(".")]  # no temporaries left beside the output
    rows = (out / "pairs_summary.csv").read_text().splitlines()
    assert rows[0].startswith("name,status") and [r.split(",")[1] for r in rows[1:]] == ["done", "failed", "done"]


def test_summary_numbers_match_the_mask(ws: Path) -> None:
    from scipy import ndimage

    run = predict_pairs(ws / "model.ckpt", ws / "pairs.csv", ws / "pred", **OPTS)
    assert [r.status for r in run.results] == ["done"] * 3
    s = json.loads((ws / "pred" / "s0_a_summary.json").read_text())
    with rasterio.open(ws / "pred" / "s0_a_change.tif") as ds:
        mask = ds.read(1)
    changed = int((mask == 255).sum())
    assert s["pixels"] == {"total": mask.size, "valid": mask.size, "changed": changed}
    assert s["changed_km2"] == pytest.approx(changed * 0.25 / 1e6)
    assert s["changed_ha"] == pytest.approx(changed * 0.25 / 1e4)
    assert s["changed_percent_of_valid"] == pytest.approx(100 * changed / mask.size)
    assert s["polygons"] == ndimage.label(mask == 255)[1]  # 4-connected, as polygonize
    assert s["valid_share"] == 1.0 and s["crs"] == "EPSG:32633"
    assert s["model"]["name"] == "_test_pointwise" and s["model"]["runtime"] == "torch"
    assert s["normalisation"]["mean"] and s["options"]["tile"] == 64
    assert s["tiles"] == 4 and set(s["timings_s"]) >= {"predict", "regions", "total"}
    assert run.table == ws / "pred" / "pairs_summary.csv"


def test_rerun_skips_finished_pairs_and_other_settings_need_overwrite(ws: Path) -> None:
    out = ws / "pred"
    predict_pairs(ws / "model.ckpt", ws / "pairs.csv", out, **OPTS)
    before = _files(out)
    run = predict_pairs(ws / "model.ckpt", ws / "pairs.csv", out, **OPTS)
    assert [r.status for r in run.results] == ["skipped"] * 3
    assert {k: v for k, v in _files(out).items() if k != "pairs_summary.csv"} == \
        {k: v for k, v in before.items() if k != "pairs_summary.csv"}  # nothing rewritten
    run = predict_pairs(ws / "model.ckpt", ws / "pairs.csv", out, tile=64, overlap=32)
    assert [r.status for r in run.results] == ["failed"] * 3
    assert "overlap 16, this run 32" in run.results[0].message and "--overwrite" in run.results[0].message
    run = predict_pairs(ws / "model.ckpt", ws / "pairs.csv", out, tile=64, overlap=32, overwrite=True)
    assert [r.status for r in run.results] == ["done"] * 3
    assert json.loads((out / "s0_a_summary.json").read_text())["options"]["overlap"] == 32


def test_a_file_of_no_finished_pair_is_not_replaced(ws: Path) -> None:
    out = ws / "pred"
    out.mkdir()
    (out / "s0_a_change.tif").write_bytes(b"mine")
    run = predict_pairs(ws / "model.ckpt", ws / "pairs.csv", out, **OPTS)
    assert [r.status for r in run.results] == ["failed", "done", "done"]
    assert "belongs to no finished pair" in run.results[0].message
    assert (out / "s0_a_change.tif").read_bytes() == b"mine"


def test_a_pair_failing_midway_leaves_no_file_under_a_final_name(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = P.run_pair

    def failing(session, name, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        summary = real(session, name, *args, **kw)  # the pair's files are complete (under temporary names)
        if name == "s1_a":
            raise RuntimeError("disk full")
        return summary

    monkeypatch.setattr(P, "run_pair", failing)
    run = predict_pairs(ws / "model.ckpt", ws / "pairs.csv", ws / "pred", report=True, **OPTS)
    assert [r.status for r in run.results] == ["done", "failed", "done"]
    assert run.results[1].message == "RuntimeError: disk full"
    names = sorted(p.name for p in (ws / "pred").iterdir())
    assert not [n for n in names if n.startswith("s1_a") or n.startswith(".")]
    assert "s0_a_report.html" in names and "s2_a_summary.json" in names
    assert not [p for p in ws.iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(P, "run_pair", real)
    run = predict_pairs(ws / "model.ckpt", ws / "pairs.csv", ws / "pred", report=True, **OPTS)
    assert [r.status for r in run.results] == ["skipped", "done", "skipped"]  # the rerun finishes the job


def test_out_column_writes_exactly_that_file(ws: Path) -> None:
    (ws / "pairs.csv").write_text("a,b,out\nscenes/s0_a.tif,scenes/s0_b.tif,maps/zero.tif\n"
                                  "scenes/s1_a.tif,scenes/s1_b.tif,\n")
    run = predict_pairs(ws / "model.ckpt", ws / "pairs.csv", ws / "pred", save_prob=True, **OPTS)
    assert [(r.name, r.status) for r in run.results] == [("zero", "done"), ("s1_a", "done")]
    assert sorted(p.name for p in (ws / "maps").iterdir()) == ["zero.tif", "zero_prob.tif", "zero_summary.json"]
    assert sorted(p.name for p in (ws / "pred").iterdir()) == ["pairs_summary.csv", "s1_a_change.tif", "s1_a_prob.tif",
                                                              "s1_a_summary.json"]  # a scene: its files in one folder
    assert not (ws / "pred_prob").exists()


def test_out_inside_an_input_is_refused_before_any_work(ws: Path) -> None:
    from changekit.errors import OutputError

    with pytest.raises(OutputError, match="lies inside the input"):
        predict_pairs(ws / "model.ckpt", ws / "pairs.csv", ws / "model.ckpt" / "x", **OPTS)
    with pytest.raises(OutputError, match="contains the input"):
        predict_pairs(ws / "model.ckpt", ws / "pairs.csv", ws, **OPTS)


def test_cli_needs_a_and_b_or_pairs(ws: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["predict", "--ckpt", str(ws / "model.ckpt"), "--out", str(ws / "p")])
    assert rc == 2 and "give --a and --b, or --pairs" in capsys.readouterr().err


def test_summary_for_one_pair_beside_the_file(ws: Path) -> None:
    from changekit.engine.predict import predict

    a, b = ws / "scenes" / "s0_a.tif", ws / "scenes" / "s0_b.tif"
    predict(ws / "model.ckpt", a, b, ws / "one.tif", summary=True, **OPTS)
    s = json.loads((ws / "one_summary.json").read_text())
    assert s["name"] == "s0_a" and s["outputs"] == {"mask": str(ws / "one.tif")}
    assert sorted(p.name for p in ws.iterdir()) == ["model.ckpt", "one.tif", "one_summary.json", "pairs.csv", "scenes"]


def test_polygon_count_comes_from_the_vector_file_when_asked(ws: Path) -> None:
    import pyogrio

    run = predict_pairs(ws / "model.ckpt", ws / "pairs.csv", ws / "pred", vector="polys.gpkg", min_area=2.0, **OPTS)
    assert [r.status for r in run.results] == ["done"] * 3
    s = json.loads((ws / "pred" / "s0_a_summary.json").read_text())
    vec = Path(s["outputs"]["vector"])
    assert vec.is_file() and s["polygons_from"] == f"vector file {vec.name}"
    assert s["polygons"] == pyogrio.read_info(vec)["features"] > 0
    with rasterio.open(ws / "pred" / Path(s["outputs"]["mask"]).name) as ds:
        from scipy import ndimage

        assert s["polygons"] < ndimage.label(ds.read(1) == 255)[1]  # min_area left the single pixels out


def test_a_killed_run_leaves_finished_pairs_only_and_the_rerun_completes(ws: Path) -> None:
    import signal
    import subprocess
    import time

    out = ws / "pred"
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(TESTS)!r})\n"
        "import pointwise_ckpt\n"
        "import changekit.engine.pairs as P\n"
        "real = P.run_pair\n"
        "def slow(session, name, *args, **kw):\n"
        "    summary = real(session, name, *args, **kw)\n"
        "    if name == 's1_a':\n"
        "        time.sleep(300)  # killed here: s1_a complete under temporary names only\n"
        "    return summary\n"
        "P.run_pair = slow\n"
        "from changekit.cli import main\n"
        f"main(['predict', '--ckpt', {str(ws / 'model.ckpt')!r}, '--pairs', {str(ws / 'pairs.csv')!r}, "
        f"'--out', {str(out)!r}, '--tile', '64', '--overlap', '16', '--report'])\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and not any(p.name.startswith(".pred") and any(p.rglob("s1_a*"))
                                                 for p in ws.iterdir()):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert sorted(p.name for p in out.iterdir()) == ["s0_a_change.tif", "s0_a_report.html", "s0_a_summary.json"]
    assert [p.name for p in ws.iterdir() if p.name.startswith(".pred")]  # the killed pair's temporary folder
    run = predict_pairs(ws / "model.ckpt", ws / "pairs.csv", out, report=True, **OPTS)
    assert [r.status for r in run.results] == ["skipped", "done", "done"]
    assert not [p for p in ws.iterdir() if p.name.startswith(".")]  # swept
