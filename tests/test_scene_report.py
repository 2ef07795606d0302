"""The HTML scene report: self-contained (no network), polygons sorted by area, and working in a real headless
browser (Chromium from the distribution's packages; skipped with a reason where none is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pointwise_ckpt import pointwise_checkpoint  # noqa: E402
from scene_pairs import write_scene_pair  # noqa: E402

from changekit.engine.predict import predict  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report of a 300 x 260 UTM scene whose B has two inverted rectangles."""
    ws = tmp_path_factory.mktemp("report")
    write_scene_pair(ws / "a.tif", ws / "b.tif", (300, 260),
                     [(slice(20, 120), slice(30, 200)), (slice(200, 240), slice(100, 140))], low=60, high=200)
    pointwise_checkpoint(ws / "model.ckpt")
    predict(ws / "model.ckpt", ws / "a.tif", ws / "b.tif", ws / "out" / "scene.tif", report=True, tile=128,
            overlap=16)
    return ws / "out" / "scene_report.html"


def test_report_is_self_contained_and_sorted(report: Path) -> None:
    html = report.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", html)  # nothing fetched from anywhere
    assert "@import" not in html and "url(http" not in html
    assert html.count('src="data:image/png;base64,') == 3  # A, B and the change overlay
    assert (report.parent / "scene_summary.json").is_file()
    table = html[html.index('<table id="polygons">'):]
    areas = [float(v.replace(",", "")) for v in re.findall(r'<tr><td class="num">\d+</td><td class="num">([\d,.]+)<',
                                                           table)]
    assert len(areas) > 2 and areas == sorted(areas, reverse=True)
    assert "<svg class=\"hist\"" in html and html.count("<rect ") == 20


def _browser() -> str | None:
    return next((p for p in map(shutil.which, BROWSERS) if p), None)


def test_report_works_in_headless_chromium(report: Path, tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium installed (Debian: apt-get install chromium)")
    run = dict(capture_output=True, text=True, timeout=120, cwd=tmp_path)
    dom = subprocess.run([browser, *FLAGS, "--virtual-time-budget=3000", "--dump-dom", report.as_uri()], **run)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-swipe="ready"' in dom.stdout  # the page's script ran without an error before its last line
    assert re.search(r'id="after"[^>]*style="clip-path: inset\(0px 0px 0px 50%\);', dom.stdout)
    shot = tmp_path / "shot.png"
    res = subprocess.run([browser, *FLAGS, "--window-size=1200,1400", f"--screenshot={shot}", report.as_uri()], **run)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    px = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    red = (px[:, 0] > 200) & (px[:, 1] < 90) & (px[:, 2] < 90)
    assert red.sum() > 2000  # the change overlay is drawn over the images
