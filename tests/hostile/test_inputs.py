"""Inputs are read as what they are (issue 11, section 6).

Hostile or unusual inputs, each through ``changekit.cli.main``: labels drawn in colour, grey labels saved as RGB,
0/1 and 0/255 sets, ignore-only label files, NaN / Inf strips in float GeoTIFFs, 1 / 2 / 4 / 13-band data, a
checkpoint applied to another band count, a geotransform without a CRS, a symbolic link loop, an unreadable file,
a truncated PNG and a folder named like an image. A refused case exits with code 2 (1 for ``data check``
listing problems) and prints exactly one ``error:`` line naming the file; every case leaves its inputs
byte-identical.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from pointwise_ckpt import Pointwise

from changekit.cli import main
from changekit.config import resolve
from changekit.data.io import GeoInfo, read_image, write_geotiff, write_png
from changekit.engine.checkpoint import read_checkpoint, save_checkpoint

SIZE = 32


def _hash(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for p in [root] if not root.is_dir() else sorted(root.rglob("*")):
            if p.is_symlink():
                out[str(p)] = "link:" + os.readlink(p)
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest() if os.access(p, os.R_OK, effective_ids=True) \
                    else "unreadable"
    return out


def _run(capsys: pytest.CaptureFixture, args: list[Any]) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def _refused(capsys: pytest.CaptureFixture, args: list[Any], names: Path | str, inputs: Path, rc: int = 2) -> str:
    """The command exits ``rc`` with one ``error:`` line naming ``names``; ``inputs`` are unchanged."""
    before = _hash(inputs)
    code, _, err = _run(capsys, args)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == rc, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert str(names) in lines[0], (names, lines[0])
    assert _hash(inputs) == before
    return lines[0]


def _problems(capsys: pytest.CaptureFixture, folder: Path) -> list[str]:
    """``data check`` on ``folder``: exit 1, the listed problem lines; the folder is unchanged."""
    before = _hash(folder)
    code, out, _ = _run(capsys, ["data", "check", folder])
    assert code == 1, out
    assert _hash(folder) == before
    return [ln.strip()[2:] for ln in out.splitlines() if ln.strip().startswith("- ")]


def _img(rng: np.random.Generator, bands: int, dtype: Any = np.uint8) -> np.ndarray:
    if np.issubdtype(dtype, np.floating):
        return rng.random((SIZE, SIZE, bands)).astype(dtype)
    return rng.integers(0, 256, (SIZE, SIZE, bands), dtype=np.uint8)


def _change(rng: np.random.Generator) -> np.ndarray:
    lab = np.zeros((SIZE, SIZE), np.uint8)
    lab[rng.integers(0, 16):, rng.integers(0, 16):] = 255
    return lab


def make_set(root: Path, n: int = 2, bands: int = 3, dtype: Any = np.uint8, tif: bool = False, seed: int = 0,
             labels: list[np.ndarray] | None = None) -> Path:
    """``n`` pairs A|B|label of SIZE x SIZE (GeoTIFF images when ``tif`` or non-8-bit data), 0/255 labels."""
    rng = np.random.default_rng(seed)
    tif = tif or bands not in (1, 3) or dtype != np.uint8
    for i in range(n):
        for date in ("A", "B"):
            img = _img(rng, bands, dtype)
            if tif:
                write_geotiff(root / date / f"p{i}.tif", img)
            else:
                write_png(root / date / f"p{i}.png", img)
        write_png(root / "label" / f"p{i}.png", labels[i] if labels is not None else _change(rng))
    return root


def _config(tmp: Path, data: Path, **data_cfg: Any) -> Path:
    cfg = {"model": {"name": "fc_siam_diff"},
           "data": {"train": str(data), "val": str(data), "batch_size": 2, "num_workers": 0, **data_cfg},
           "trainer": {"max_steps": 1, "accelerator": "cpu", "devices": 1, "progress_bar": False,
                       "log_every_n_steps": 1}}
    path = tmp / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _pointwise(path: Path, bands: int = 3) -> Path:
    """A trained-looking checkpoint of the pointwise model for ``bands``-band images (no training needed)."""
    from changekit.data.bands import default_normalisation

    mean, std = default_normalisation(bands)
    cfg = resolve({"model": {"name": "_test_pointwise", "in_channels": bands},
                   "data": {"num_workers": 0, "batch_size": 2, "mean": mean, "std": std},
                   "trainer": {"accelerator": "cpu", "devices": 1, "progress_bar": False}})
    return Path(save_checkpoint(path, Pointwise(bands), cfg))


def _nan_strip(path: Path, value: float = float("nan"), rows: slice = slice(4, 8)) -> None:
    """Write NaN (or Inf) into rows of band 0 of a float GeoTIFF."""
    arr, geo = read_image(path, with_geo=True)
    arr = arr.copy()
    arr[rows, :, 0] = value
    write_geotiff(path, arr, geo)


# ------------------------------------------------------------------------------------------------ labels
@pytest.mark.parametrize("colour", [(0, 0, 255), (0, 255, 0)])
def test_change_drawn_in_colour_is_refused_by_train(tmp_path: Path, colour: tuple[int, int, int],
                                                    capsys: pytest.CaptureFixture) -> None:
    """Change drawn in blue or green used to read as channel 0 = 'no change' everywhere (F1 0.0, no warning)."""
    data = make_set(tmp_path / "data")
    lab = np.zeros((SIZE, SIZE, 3), np.uint8)
    lab[8:20, 8:20] = colour
    write_png(data / "label" / "p1.png", lab)
    line = _refused(capsys, ["train", _config(tmp_path, data), "--out", tmp_path / "run"], data / "label" / "p1.png",
                    tmp_path)
    assert "colour label" in line and "data.label_palette" in line
    assert not (tmp_path / "run").exists()


def test_colour_label_is_a_problem_in_data_check(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_set(tmp_path / "data")
    lab = np.zeros((SIZE, SIZE, 4), np.uint8)  # RGBA, transparent background, change drawn in green
    lab[8:20, 8:20] = (0, 255, 0, 255)
    write_png(data / "label" / "p0.png", lab)
    problems = _problems(capsys, data)
    assert len(problems) == 1 and str(data / "label" / "p0.png") in problems[0] and "colour label" in problems[0]


def test_colour_label_is_refused_by_eval_masks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_set(tmp_path / "data")
    lab = np.zeros((SIZE, SIZE, 3), np.uint8)
    lab[:, :16] = (255, 0, 0)
    write_png(tmp_path / "data" / "label" / "p0.png", lab)
    _refused(capsys, ["eval-masks", "--pred", tmp_path / "data" / "label", "--gt", tmp_path / "data" / "label"],
             tmp_path / "data" / "label" / "p0.png", tmp_path)


def test_colour_labels_train_with_a_palette(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """With data.label_palette, blue change and red ignore are read as 1 and 255 (the set is then 0/1)."""
    from changekit.data.datasets import ChangeDataset

    labels = []
    for i in range(2):
        lab = np.zeros((SIZE, SIZE, 3), np.uint8)
        lab[4 + i:20, 4:20] = (0, 0, 255)
        lab[0, :] = (255, 0, 0)
        labels.append(lab)
    data = make_set(tmp_path / "data", labels=labels)
    palette = {"0,0,0": 0, "0,0,255": 1, "255,0,0": 255}
    ds = ChangeDataset(data, label_palette=palette)
    mask = ds[0]["mask"].numpy()
    assert ds.label_encoding == "0/1" and (mask[4:20, 4:20] == 1).all() and (mask[0] == 255).all()
    assert mask.sum() == 16 * 16 + 255 * SIZE
    before = _hash(data)
    rc, _, err = _run(capsys, ["train", _config(tmp_path, data, label_palette=palette), "--out", tmp_path / "run"])
    assert rc == 0, err
    assert _hash(data) == before
    rc, out, _ = _run(capsys, ["eval-masks", "--pred", data / "label", "--gt", data / "label"])  # no palette: refused there
    assert rc == 2


def test_grey_labels_saved_as_rgb_read_as_one_band(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    grey = [_change(np.random.default_rng(i)) for i in range(2)]
    data = make_set(tmp_path / "data", labels=[np.repeat(g[:, :, None], 3, 2) for g in grey])
    code, out, _ = _run(capsys, ["data", "check", data])
    assert code == 0 and "problems:      none" in out and "0, 255" in out
    rc, out, err = _run(capsys, ["eval-masks", "--pred", data / "label", "--gt", data / "label"])
    assert rc == 0, err
    from changekit.data.datasets import ChangeDataset

    np.testing.assert_array_equal(ChangeDataset(data)[1]["mask"].numpy(), grey[1] // 255)


def test_zero_one_and_zero_255_sets_decide_the_same_everywhere(tmp_path: Path, capsys: pytest.CaptureFixture
                                                               ) -> None:
    """A 0/1/255 set whose second file holds only background and ignore: data check, the dataset (train / test)
    and eval-masks all read that file's 255 as ignore, because the convention is decided for the whole set."""
    from changekit.data.check import check_dataset
    from changekit.data.datasets import ChangeDataset

    first = np.zeros((SIZE, SIZE), np.uint8)
    first[4:12, 4:12] = 1
    second = np.zeros((SIZE, SIZE), np.uint8)
    second[:, :8] = 255  # ignore only
    data = make_set(tmp_path / "data", labels=[first, second])
    assert check_dataset(data)["label_encoding"] == "0/1"
    assert set(ChangeDataset(data)[1]["mask"].unique().tolist()) == {0, 255}
    pred = tmp_path / "pred"
    write_png(pred / "p0.png", first * 255)
    write_png(pred / "p1.png", np.zeros((SIZE, SIZE), np.uint8))
    before = _hash(data, pred)
    rc, out, err = _run(capsys, ["eval-masks", "--pred", pred, "--gt", data / "label", "--out", tmp_path / "m.json"])
    assert rc == 0, err
    res = json.loads((tmp_path / "m.json").read_text())
    assert res["confusion"] == [[2 * SIZE * SIZE - 64 - 8 * SIZE, 0], [0, 64]]  # ignore counted nowhere
    assert res["f1"] == 1.0 and _hash(data, pred) == before


# -------------------------------------------------------------------------------------------- non-finite
def _float_set(root: Path, n: int = 2) -> Path:
    """Float32 GeoTIFF pairs: NaN in rows 4..7 of A/p0, +Inf in rows 20..21 of B/p1 (when there is a p1)."""
    data = make_set(root, n=n, dtype=np.float32)
    _nan_strip(data / "A" / "p0.tif")
    if n > 1:
        _nan_strip(data / "B" / "p1.tif", float("inf"), slice(20, 22))
    return data


def test_nan_strip_is_found_by_data_check(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _float_set(tmp_path / "data")
    problems = _problems(capsys, data)
    assert len(problems) == 2
    assert str(data / "A" / "p0.tif") in problems[0] and "128 of 1024 pixels are NaN or infinite" in problems[0]
    assert str(data / "B" / "p1.tif") in problems[1] and "64 of 1024" in problems[1]


def test_nan_strip_is_nodata_in_train(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """NaN / Inf pixels are zeroed and ignored: the loss stays finite and so does every checkpoint."""
    from changekit.data.datasets import ChangeDataset

    data = _float_set(tmp_path / "data")
    item = ChangeDataset(data)[0]
    assert torch.isfinite(item["image_a"]).all() and (item["mask"][4:8] == 255).all()
    before = _hash(data)
    rc, _, err = _run(capsys, ["train", _config(tmp_path, data), "--out", tmp_path / "run"])
    assert rc == 0, err
    for ckpt in (tmp_path / "run" / "model.ckpt", tmp_path / "run" / "checkpoints" / "last.ckpt"):
        weights, _ = read_checkpoint(ckpt)
        assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())
    assert _hash(data) == before


def test_nan_strip_is_not_scored_by_test(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _float_set(tmp_path / "data")
    ckpt = _pointwise(tmp_path / "model.ckpt")
    before = _hash(data)
    rc, _, err = _run(capsys, ["test", "--ckpt", ckpt, "--data", data, "--out", tmp_path / "eval", "--no-report"])
    assert rc == 0, err
    res = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    scored = int(np.sum(res["confusion"]))
    assert scored == 2 * SIZE * SIZE - 4 * SIZE - 2 * SIZE  # p0 loses rows 4..7 (A), p1 rows 20..21 (B)
    assert all(np.isfinite(v) for v in (res["f1"], res["precision"], res["recall"]))
    assert _hash(data) == before


def test_nan_strip_never_reaches_the_network_in_predict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = _float_set(tmp_path / "data", n=1)
    ckpt = _pointwise(tmp_path / "model.ckpt")
    seen: list[torch.Tensor] = []
    forward = Pointwise.forward
    Pointwise.forward = lambda self, a, b, **kw: seen.append(torch.cat([a, b])) or forward(self, a, b, **kw)
    try:
        before = _hash(data)
        rc, _, err = _run(capsys, ["predict", "--ckpt", ckpt, "--a", data / "A", "--b", data / "B", "--out",
                                   tmp_path / "pred", "--prob", "--threshold", "0"])
    finally:
        Pointwise.forward = forward
    assert rc == 0, err
    assert seen and all(torch.isfinite(x).all() for x in seen)
    mask = read_image(tmp_path / "pred" / "p0_change.tif")[:, :, 0]
    assert (mask[4:8] == 128).all()  # nodata: the mask's nodata value (raster.writer.MASK_NODATA), never change
    assert (np.delete(mask, slice(4, 8), 0) == 255).all()  # threshold 0: all else
    assert _hash(data) == before


def test_non_finite_loss_stops_training_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A loss that turns NaN stops training at that step, naming the step and the batch; no checkpoint is
    written with non-finite weights."""
    from changekit.losses import CompositeLoss

    data = make_set(tmp_path / "data")
    forward = CompositeLoss.forward

    def nan_loss(self: Any, out: Any, batch: Any) -> Any:
        loss, terms = forward(self, out, batch)
        return loss * float("nan"), terms

    monkeypatch.setattr(CompositeLoss, "forward", nan_loss)
    line = _refused(capsys, ["train", _config(tmp_path, data), "--out", tmp_path / "run"], "at step 0", data)
    assert "training loss is nan" in line and ("p0" in line or "p1" in line)
    assert not (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()


# -------------------------------------------------------------------------------------------- band counts
@pytest.mark.parametrize("bands", [1, 2, 4, 13])
def test_any_band_count_trains_without_config_edits(tmp_path: Path, bands: int, capsys: pytest.CaptureFixture
                                                    ) -> None:
    data = make_set(tmp_path / "data", bands=bands, dtype=np.uint8 if bands == 1 else np.uint16)
    before = _hash(data)
    rc, _, err = _run(capsys, ["train", _config(tmp_path, data), "--out", tmp_path / "run"])
    assert rc == 0, err
    cfg = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert cfg["model"]["in_channels"] == bands
    assert cfg["data"]["mean"] == [0.5] * bands and cfg["data"]["std"] == [0.25] * bands
    assert read_checkpoint(tmp_path / "run" / "model.ckpt")[1]["model"]["in_channels"] == bands
    assert _hash(data) == before


def test_a_wrong_in_channels_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_set(tmp_path / "data", bands=4)
    line = _refused(capsys, ["train", _config(tmp_path, data), "--out", tmp_path / "run", "--set",
                             "model.in_channels=3"], "model.in_channels", tmp_path)
    assert str(data / "A" / "p0.tif") in line and "4 band(s)" in line


@pytest.mark.parametrize("command", ["predict", "test"])
def test_band_count_mismatch_names_file_and_counts(tmp_path: Path, command: str, capsys: pytest.CaptureFixture
                                                   ) -> None:
    data = make_set(tmp_path / "data", bands=4)
    ckpt = _pointwise(tmp_path / "model.ckpt", bands=3)
    args = (["predict", "--ckpt", ckpt, "--a", data / "A", "--b", data / "B", "--out", tmp_path / "pred"]
            if command == "predict" else ["test", "--ckpt", ckpt, "--data", data, "--out", tmp_path / "eval"])
    line = _refused(capsys, args, data / "A" / "p0.tif", tmp_path)
    assert "4 band(s)" in line and "3-band" in line and str(ckpt) in line
    assert not (tmp_path / "pred").exists() and not (tmp_path / "eval").exists()


# -------------------------------------------------------------------------------------------- georeferencing
def test_geotransform_without_crs_survives_predict_tile_and_merge(tmp_path: Path, capsys: pytest.CaptureFixture
                                                                   ) -> None:
    from affine import Affine

    data = make_set(tmp_path / "data", n=1, tif=True)
    transform = Affine(0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0)
    for date in ("A", "B"):
        arr = read_image(data / date / "p0.tif")
        write_geotiff(data / date / "p0.tif", arr, GeoInfo(crs=None, transform=transform))
    assert read_image(data / "A" / "p0.tif", with_geo=True)[1].transform == transform
    ckpt = _pointwise(tmp_path / "model.ckpt")
    before = _hash(data)
    rc, _, err = _run(capsys, ["predict", "--ckpt", ckpt, "--a", data / "A", "--b", data / "B", "--out",
                               tmp_path / "pred"])
    assert rc == 0, err
    geo = read_image(tmp_path / "pred" / "p0_change.tif", with_geo=True)[1]
    assert geo.crs is None and geo.transform == transform
    rc, _, err = _run(capsys, ["data", "tile", data, "--out", tmp_path / "tiles", "--size", "16"])
    assert rc == 0, err
    tile = read_image(tmp_path / "tiles" / "A" / "p0_16_16.tif", with_geo=True)[1]
    assert tile.transform == transform @ Affine.translation(16, 16)
    rc, _, err = _run(capsys, ["data", "merge", tmp_path / "tiles" / "A", "--out", tmp_path / "merged"])
    assert rc == 0, err
    assert read_image(tmp_path / "merged" / "p0.tif", with_geo=True)[1].transform == transform
    assert _hash(data) == before


# -------------------------------------------------------------------------------------------- files
def test_symlink_loop_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_set(tmp_path / "data")
    loop = data / "A" / "p1.png"
    loop.unlink()
    loop.symlink_to(loop.name)
    line = _refused(capsys, ["train", _config(tmp_path, data), "--out", tmp_path / "run"], loop, tmp_path)
    assert "symbolic link loop" in line
    assert any(str(loop) in p and "loop" in p for p in _problems(capsys, data))
    _refused(capsys, ["eval-masks", "--pred", data / "A", "--gt", data / "label"], loop, tmp_path)


def test_folder_named_like_an_image_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_set(tmp_path / "data")
    (data / "label" / "p0.png").unlink()
    (data / "label" / "p0.png").mkdir()
    line = _refused(capsys, ["train", _config(tmp_path, data), "--out", tmp_path / "run"], data / "label" / "p0.png",
                    tmp_path)
    assert "is a folder" in line
    ckpt = _pointwise(tmp_path / "model.ckpt")
    _refused(capsys, ["predict", "--ckpt", ckpt, "--a", data / "A" / "p0.png", "--b", data / "label" / "p0.png",
                      "--out", tmp_path / "one.png"], data / "label" / "p0.png", tmp_path)


def test_truncated_png_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = make_set(tmp_path / "data")
    raw = (data / "B" / "p1.png").read_bytes()
    (data / "B" / "p1.png").write_bytes(raw[: len(raw) // 2])
    _refused(capsys, ["train", _config(tmp_path, data), "--out", tmp_path / "run"], data / "B" / "p1.png", tmp_path)
    assert not (tmp_path / "run").exists()
    assert any(str(data / "B" / "p1.png") in p for p in _problems(capsys, data))


@contextlib.contextmanager
def _unreadable(path: Path) -> Iterator[None]:
    """``path`` without read permission; root reads anything, so it then runs as the user ``nobody``."""
    mode = path.stat().st_mode
    path.chmod(0)
    euid = os.geteuid()
    try:
        if euid == 0:
            os.seteuid(65534)
        yield
    finally:
        if euid == 0:
            os.seteuid(0)
        path.chmod(stat.S_IMODE(mode))


def test_unreadable_file_is_one_line(capsys: pytest.CaptureFixture) -> None:
    root = Path(tempfile.mkdtemp(prefix="changekit-unreadable-"))  # world-traversable, also for 'nobody'
    try:
        root.chmod(0o755)
        data = make_set(root / "data")
        for p in [root, *root.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        target = data / "label" / "p1.png"
        with _unreadable(target):
            line = _refused(capsys, ["eval-masks", "--pred", data / "label", "--gt", data / "label"], target, data)
        assert "permission denied" in line
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)
