"""Scene prediction through the raster layer: nodata in either date, --align, band selection, COG outputs and
interrupted runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
import torch

from changekit.engine.options import PredictOptions
from changekit.errors import SizeMismatchError
from changekit.inference.scene import SceneOutputs, predict_scene
from changekit.models.base import ChangeModel
from changekit.models.outputs import ChangeOutput
from changekit.raster.writer import CLASS_NODATA, MASK_NODATA

from .geotiffs import smooth, write_tif
from .test_reader import _reprojected

P = PredictOptions(tile=32, overlap=8)


class Diff(ChangeModel):
    """Change logit = 8 * mean over bands of (b - a) - 1: change where B is clearly brighter; classes = bands."""

    def __init__(self, in_channels: int = 3, num_classes: int = 0) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.task = "semantic" if num_classes else "binary"  # type: ignore[misc]
        self.scale = torch.nn.Parameter(torch.tensor(8.0))

    def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:
        logit = self.scale * (b - a).mean(1, keepdim=True) - 1
        if not self.num_classes:
            return ChangeOutput(logit)
        return ChangeOutput(logit, a[:, : self.num_classes], b[:, : self.num_classes])


def _pair(tmp_path: Path, h: int = 70, w: int = 90, **b_kwargs: Any) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    a = smooth(h, w) + 1
    b = a.copy()
    b[:, 20:40, 30:60] = np.minimum(a[:, 20:40, 30:60].astype(np.int64) + 20_000, 65_000)  # a brighter block
    return write_tif(tmp_path / "a.tif", a), write_tif(tmp_path / "b.tif", b, **b_kwargs), a, b


def test_nodata_in_either_date_is_no_change_and_written_as_nodata(tmp_path: Path) -> None:
    a = smooth(70, 90) + 1
    b = a.copy()
    b[:, 20:40, 30:60] += 20_000
    a[:, 0:10, :] = 0  # A: nodata border (nodata value 0)
    bf = b.astype(np.float32) / 65535  # B as float reflectance (the same values once normalised)
    bf[:, 25:30, 35:45] = np.nan  # B: a hole inside the changed block (NaN)
    pa = write_tif(tmp_path / "a.tif", a, nodata=0)
    pb = write_tif(tmp_path / "b.tif", bf)
    out = SceneOutputs(tmp_path / "m.tif", tmp_path / "p.tif", tmp_path / "sa.tif")
    predict_scene(Diff(num_classes=3), pa, pb, out, P, palette=np.eye(3, dtype=np.uint8) * 200)
    with rasterio.open(out.mask) as ds:
        mask, nodata = ds.read(1), ds.nodata
    with rasterio.open(out.prob) as ds:
        prob = ds.read(1)
    with rasterio.open(out.sem_a) as ds:
        sem, sem_nodata = ds.read(1), ds.nodata
    invalid = np.zeros(mask.shape, bool)
    invalid[0:10] = True
    invalid[25:30, 35:45] = True
    assert nodata == MASK_NODATA and sem_nodata == CLASS_NODATA
    np.testing.assert_array_equal(mask == MASK_NODATA, invalid)
    np.testing.assert_array_equal(np.isnan(prob), invalid)
    np.testing.assert_array_equal(sem == CLASS_NODATA, invalid)
    assert (mask[20:40, 30:60][~invalid[20:40, 30:60]] == 255).all()  # the change around the hole is found
    assert (mask[45:, :] == 0).all() and (mask[10:20] == 0).all()


def test_align_predicts_on_a_grid_mismatch_and_marks_outside_as_nodata(tmp_path: Path) -> None:
    a = smooth(60, 80, bands=3, scale=1.0, dtype=np.float32)  # reflectance in 0..1
    pa = write_tif(tmp_path / "a.tif", a)
    pb = _reprojected(pa, tmp_path / "b.tif", "EPSG:3035", 15.0, cols=50)  # same scene, other CRS and resolution
    with pytest.raises(SizeMismatchError, match="--align"):
        predict_scene(Diff(), pa, pb, SceneOutputs(tmp_path / "m.tif"), P)
    out = SceneOutputs(tmp_path / "m.tif", tmp_path / "p.tif")
    predict_scene(Diff(), pa, pb, out, PredictOptions(tile=32, overlap=8, align=True, resampling="bilinear"))
    with rasterio.open(out.mask) as ds:
        mask = ds.read(1)
        assert ds.crs.to_epsg() == 32633 and (ds.height, ds.width) == (60, 80)
    assert (mask[:, 53:] == MASK_NODATA).all()  # outside B's footprint
    inner = mask[5:-5, 5:45]
    assert (inner == 0).all()  # same surface on both dates: no change once aligned


def test_band_selection_equals_a_file_of_those_bands(tmp_path: Path) -> None:
    a4, b4 = smooth(40, 50, bands=4) + 1, smooth(40, 50, bands=4) + 1
    b4[1, 10:20, 10:30] += 30_000
    pa4, pb4 = write_tif(tmp_path / "a4.tif", a4), write_tif(tmp_path / "b4.tif", b4)
    pa3, pb3 = write_tif(tmp_path / "a3.tif", a4[[3, 1, 0]]), write_tif(tmp_path / "b3.tif", b4[[3, 1, 0]])
    predict_scene(Diff(), pa4, pb4, SceneOutputs(tmp_path / "m4.tif", tmp_path / "p4.tif"), P, bands=[4, 2, 1])
    predict_scene(Diff(), pa3, pb3, SceneOutputs(tmp_path / "m3.tif", tmp_path / "p3.tif"), P)
    with rasterio.open(tmp_path / "p4.tif") as d4, rasterio.open(tmp_path / "p3.tif") as d3:
        np.testing.assert_array_equal(d4.read(), d3.read())
    with rasterio.open(tmp_path / "m4.tif") as ds:
        assert (ds.read(1)[10:20, 10:30] == 255).all()


def test_outputs_are_cogs_and_an_interrupted_run_leaves_no_file(tmp_path: Path) -> None:
    pa, pb, _, _ = _pair(tmp_path, h=600, w=700)
    out = SceneOutputs(tmp_path / "out" / "m.tif", tmp_path / "out" / "p.tif")
    predict_scene(Diff(), pa, pb, out, PredictOptions(tile=256, overlap=32, compress="zstd"))
    for path in (out.mask, out.prob):
        with rasterio.open(path) as ds:
            assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and ds.overviews(1)
            assert ds.block_shapes[0] == (512, 512) and ds.compression.name.lower() == "zstd"

    class Boom(Diff):
        calls = 0

        def forward(self, a: torch.Tensor, b: torch.Tensor, **extras: Any) -> ChangeOutput:
            Boom.calls += 1
            if Boom.calls > 3:
                raise KeyboardInterrupt
            return super().forward(a, b)

    again = SceneOutputs(tmp_path / "new" / "m.tif", tmp_path / "new" / "p.tif")
    with pytest.raises(KeyboardInterrupt):
        predict_scene(Boom(), pa, pb, again, PredictOptions(tile=64, overlap=8, batch_size=1))
    assert list((tmp_path / "new").iterdir()) == []


def test_eval_masks_does_not_score_the_predictions_nodata(tmp_path: Path) -> None:
    from changekit.data.io import write_png
    from changekit.evaluation import eval_masks
    from changekit.raster.writer import RasterWriter

    pred = np.zeros((20, 20), np.uint8)
    pred[5:10, 5:10] = 255
    pred[:, 15:] = MASK_NODATA  # no data in either date there
    gt = np.zeros((20, 20), np.uint8)
    gt[5:10, 5:10] = 255
    gt[:, 15:] = 255  # change the prediction could not see: not counted against it
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    with RasterWriter(tmp_path / "pred" / "s.tif", 20, 20, "mask") as w:
        w.write(0, pred)
    write_png(tmp_path / "gt" / "s.png", gt)
    res = eval_masks(tmp_path / "pred", tmp_path / "gt")
    assert int(np.sum(res["confusion"])) == 20 * 15 and res["f1"] == pytest.approx(1.0)


def test_eval_masks_reads_a_scene_folder(tmp_path: Path) -> None:
    """predict names a GeoTIFF scene's files after the pair (<name>_change.tif, <name>_prob.tif): eval-masks pairs
    <name>_change.tif with the ground truth <name> and ignores the other files."""
    from changekit.data.io import write_png
    from changekit.evaluation import eval_masks
    from changekit.raster.writer import RasterWriter

    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    for name, flip in (("x", False), ("y", True)):
        mask = np.zeros((8, 8), np.uint8)
        mask[:4] = 255
        with RasterWriter(tmp_path / "pred" / f"{name}_change.tif", 8, 8, "mask") as w:
            w.write(0, mask)
        with RasterWriter(tmp_path / "pred" / f"{name}_prob.tif", 8, 8, "prob") as w:
            w.write(0, mask / 255.0)
        write_png(tmp_path / "gt" / f"{name}.png", 255 - mask if flip else mask)
    res = eval_masks(tmp_path / "pred", tmp_path / "gt")
    assert res["num_images"] == 2 and int(np.sum(res["confusion"])) == 128
    assert res["confusion"] == [[32, 32], [32, 32]]


def test_eval_masks_semantic_reads_a_scene_folder(tmp_path: Path) -> None:
    from changekit.data.io import write_png
    from changekit.evaluation import eval_masks
    from changekit.raster.writer import RasterWriter

    rng = np.random.default_rng(0)
    la, lb = rng.integers(0, 3, (2, 16, 16)).astype(np.uint8)
    change = np.where(la != lb, 255, 0).astype(np.uint8)
    for sub in ("label1", "label2", "change"):
        (tmp_path / "gt" / sub).mkdir(parents=True)
    write_png(tmp_path / "gt" / "label1" / "x.png", la)
    write_png(tmp_path / "gt" / "label2" / "x.png", lb)
    write_png(tmp_path / "gt" / "change" / "x.png", change)
    (tmp_path / "pred").mkdir()
    for tag, arr, kind in (("sem_a", la, "classes"), ("sem_b", lb, "classes"), ("change", change, "mask")):
        with RasterWriter(tmp_path / "pred" / f"x_{tag}.tif", 16, 16, kind) as w:
            w.write(0, arr)
    res = eval_masks(tmp_path / "pred", tmp_path / "gt", task="semantic", num_classes=3)
    assert res["num_images"] == 1 and res["sek"] == pytest.approx(1.0) and res["fscd"] == pytest.approx(1.0)
