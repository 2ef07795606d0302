"""ChangeDataset items: keys, dtypes, shapes, values, label conventions, transforms and caching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from changekit.data.datasets import IMAGENET_MEAN, IMAGENET_STD, ChangeDataset
from changekit.data.discover import discover_pairs
from changekit.data.io import write_geotiff, write_png
from changekit.errors import ConfigError, LabelValueError, SizeMismatchError

SIZE = 32


def _img(seed: int, channels: int = 3, size: int = SIZE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8)


def _label(seed: int, values: tuple[int, ...] = (0, 255)) -> np.ndarray:
    return np.random.default_rng(seed).choice(np.array(values, np.uint8), (SIZE, SIZE))


def make_set(root: Path, n: int = 3, values: tuple[int, ...] = (0, 255)) -> Path:
    for i in range(n):
        write_png(root / "A" / f"{i:03d}.png", _img(i))
        write_png(root / "B" / f"{i:03d}.png", _img(100 + i))
        write_png(root / "label" / f"{i:03d}.png", _label(i, values))
    return root


def _normalised(img: np.ndarray, scale: float = 255.0) -> np.ndarray:
    x = img.astype(np.float64) / scale
    return ((x - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)).transpose(2, 0, 1)


def test_binary_item_keys_dtypes_and_values(tmp_path: Path) -> None:
    ds = ChangeDataset(make_set(tmp_path))
    assert len(ds) == 3 and ds.stems == ["000", "001", "002"] and ds.layout == "A|B|label"
    item = ds[1]
    assert set(item) == {"image_a", "image_b", "mask", "stem"} and item["stem"] == "001"
    assert item["image_a"].dtype == torch.float32 and item["image_a"].shape == (3, SIZE, SIZE)
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (SIZE, SIZE)
    np.testing.assert_allclose(item["image_a"].numpy(), _normalised(_img(1)), atol=1e-5)
    np.testing.assert_allclose(item["image_b"].numpy(), _normalised(_img(101)), atol=1e-5)
    np.testing.assert_array_equal(item["mask"].numpy(), _label(1) // 255)  # 0/255 -> 0/1
    assert ds.pair(1).a == tmp_path / "A" / "001.png" and ds[-1]["stem"] == "002"
    with pytest.raises(IndexError):
        ds[3]


def test_zero_one_labels_keep_255_as_ignore(tmp_path: Path) -> None:
    ds = ChangeDataset(make_set(tmp_path, values=(0, 1, 255)))
    assert ds.label_encoding == "0/1"
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), _label(0, (0, 1, 255)))
    # without value checks the encoding is still decided once for the whole set, never per file
    ds = ChangeDataset(tmp_path, check_values=False)
    assert ds.label_encoding == "0/1"
    np.testing.assert_array_equal(ds[0]["mask"].numpy(), _label(0, (0, 1, 255)))


@pytest.mark.parametrize("check_values", [True, False])
def test_set_wide_encoding_keeps_ignore_in_a_file_without_ones(tmp_path: Path, check_values: bool) -> None:
    make_set(tmp_path, values=(0, 1, 255))
    write_png(tmp_path / "label" / "002.png", _label(2, (0, 255)))  # no change, but ignore pixels
    ds = ChangeDataset(tmp_path, check_values=check_values)
    assert set(ds[2]["mask"].unique().tolist()) == {0, 255}


def test_bad_values_at_load_time_without_validation(tmp_path: Path) -> None:
    make_set(tmp_path)
    write_png(tmp_path / "label" / "001.png", _label(3, (0, 128, 255)))
    ds = ChangeDataset(tmp_path, check_values=False, label_encoding="0/255")  # nothing decoded up front
    ds[0]
    with pytest.raises(LabelValueError, match="001.png"):
        ds[1]
    with pytest.raises(LabelValueError, match=r"\{0, 128, 255\}"):
        ChangeDataset(tmp_path)


def test_transform_sees_uint8_numpy_before_normalisation(tmp_path: Path) -> None:
    make_set(tmp_path)
    seen = {}

    def flip(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        seen.update({k: (v.dtype, v.shape) for k, v in sample.items()})
        seen["mask_values"] = set(np.unique(sample["mask"]).tolist())
        return {k: np.ascontiguousarray(v[:, ::-1]) for k, v in sample.items()}

    item = ChangeDataset(tmp_path, transform=flip)[0]
    assert seen["image_a"] == (np.uint8, (SIZE, SIZE, 3)) and seen["mask"] == (np.uint8, (SIZE, SIZE))
    assert seen["mask_values"] == {0, 1}
    np.testing.assert_allclose(item["image_a"].numpy(), _normalised(_img(0))[:, :, ::-1], atol=1e-5)
    np.testing.assert_array_equal(item["mask"].numpy(), _label(0)[:, ::-1] // 255)

    with pytest.raises(ConfigError, match="transform must return"):
        ChangeDataset(tmp_path, transform=lambda s: None)[0]


def test_dataloader_collates_batches(tmp_path: Path) -> None:
    loader = DataLoader(ChangeDataset(make_set(tmp_path, n=4)), batch_size=2)
    batch = next(iter(loader))
    assert batch["image_a"].shape == (2, 3, SIZE, SIZE) and batch["mask"].shape == (2, SIZE, SIZE)
    assert batch["stem"] == ["000", "001"]


def _second(root: Path, with_change: bool) -> Path:
    sem_a = np.zeros((SIZE, SIZE), np.uint8)
    sem_b = sem_a.copy()
    sem_a[:4], sem_b[:4] = 2, 2  # same class: no change
    sem_b[4:8] = 3  # 0 -> 3: change
    sem_a[8:12] = 255  # ignore on date A
    pal = np.random.default_rng(0).integers(0, 255, (7, 3))
    write_png(root / "im1" / "s.png", _img(0))
    write_png(root / "im2" / "s.png", _img(1))
    write_png(root / "label1" / "s.png", sem_a, palette=pal)
    write_png(root / "label2" / "s.png", sem_b, palette=pal)
    if with_change:
        write_png(root / "label" / "s.png", np.full((SIZE, SIZE), 255, np.uint8))
    return root


def test_semantic_items_and_derived_change(tmp_path: Path) -> None:
    ds = ChangeDataset(_second(tmp_path, False), task="semantic")
    item = ds[0]
    assert set(item) == {"image_a", "image_b", "mask", "sem_a", "sem_b", "stem"}
    assert item["sem_a"].dtype == torch.int64 and item["sem_b"].dtype == torch.int64
    assert item["sem_a"][0, 0] == 2 and item["sem_b"][5, 0] == 3 and item["sem_a"][9, 0] == 255
    mask = item["mask"]
    assert mask[:4].eq(0).all() and mask[4:8].eq(1).all() and mask[8:12].eq(255).all() and mask[12:].eq(0).all()
    binary = ChangeDataset(tmp_path)[0]  # binary task on a semantic set: the change mask only
    assert set(binary) == {"image_a", "image_b", "mask", "stem"} and torch.equal(binary["mask"], mask)


def test_semantic_change_label_is_used_when_present(tmp_path: Path) -> None:
    item = ChangeDataset(_second(tmp_path, True), task="semantic")[0]
    assert item["mask"].eq(1).all()


def test_semantic_task_on_binary_set_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="semantic"):
        ChangeDataset(make_set(tmp_path), task="semantic")


def test_hiucd_mask_from_clearscd_list(tmp_path: Path) -> None:
    mask = np.stack([_label(0, (0, 8, 9)), _label(1, (2, 9)), _label(2, (0, 1, 255))], -1)
    write_png(tmp_path / "2018" / "1_x.png", _img(0))
    write_png(tmp_path / "2019" / "1_x.png", _img(1))
    write_png(tmp_path / "mask" / "1_x.png", mask)
    (tmp_path / "train.txt").write_text("2018/1_x.png 2019/1_x.png mask/1_x.png mask/1_x.png mask/1_x.png\n")
    item = ChangeDataset(tmp_path / "train.txt", task="semantic")[0]
    exp_a = np.where(mask[..., 0] == 9, 255, mask[..., 0])
    exp_b = np.where(mask[..., 1] == 9, 255, mask[..., 1])
    np.testing.assert_array_equal(item["sem_a"].numpy(), exp_a)
    np.testing.assert_array_equal(item["sem_b"].numpy(), exp_b)
    np.testing.assert_array_equal(item["mask"].numpy(), mask[..., 2])
    item = ChangeDataset(tmp_path / "train.txt", task="semantic", ignore_index=9)[0]
    np.testing.assert_array_equal(item["sem_a"].numpy(), mask[..., 0])


def test_uint16_geotiffs_scale_by_dtype_or_value_scale(tmp_path: Path) -> None:
    a = np.random.default_rng(0).integers(0, 10000, (SIZE, SIZE, 4), dtype=np.uint16)
    write_geotiff(tmp_path / "A" / "t.tif", a)
    write_geotiff(tmp_path / "B" / "t.tif", a)
    write_geotiff(tmp_path / "label" / "t.tif", _label(0, (0, 1)))
    mean, std = (0.1,) * 4, (0.2,) * 4
    item = ChangeDataset(tmp_path, mean=mean, std=std)[0]
    np.testing.assert_allclose(item["image_a"].numpy(), ((a / 65535 - 0.1) / 0.2).transpose(2, 0, 1), atol=1e-4)
    item = ChangeDataset(tmp_path, mean=mean, std=std, value_scale=10000)[0]
    np.testing.assert_allclose(item["image_b"].numpy(), ((a / 10000 - 0.1) / 0.2).transpose(2, 0, 1), atol=1e-4)
    np.testing.assert_array_equal(item["mask"].numpy(), _label(0, (0, 1)))
    with pytest.raises(ConfigError, match="4 band"):
        ChangeDataset(tmp_path)  # ImageNet mean has 3 values


def test_cache_serves_from_memory_and_is_not_modified(tmp_path: Path) -> None:
    make_set(tmp_path, n=1)

    def invert(sample: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sample["image_a"] -= 1  # in place: must not reach the cache
        return sample

    ds = ChangeDataset(tmp_path, cache=True, transform=invert)
    first = ds[0]
    (tmp_path / "A" / "000.png").unlink()
    second = ds[0]
    assert torch.equal(first["image_a"], second["image_a"])


def test_unlabelled_records_and_record_source(tmp_path: Path) -> None:
    make_set(tmp_path, n=2)
    recs = discover_pairs(tmp_path)
    for r in recs:
        r.label = None
    with pytest.raises(ConfigError, match="has no label"):
        ChangeDataset(recs)
    ds = ChangeDataset(recs, require_labels=False)
    assert set(ds[0]) == {"image_a", "image_b", "stem"} and ds.source == "records"


def test_bad_arguments_and_unvalidated_size_mismatch(tmp_path: Path) -> None:
    make_set(tmp_path, n=1)
    for kwargs in ({"task": "scd"}, {"label_encoding": "0-1"}, {"ignore_index": 300}, {"std": (0, 1, 1)}):
        with pytest.raises(ConfigError):
            ChangeDataset(tmp_path, **kwargs)
    write_png(tmp_path / "B" / "000.png", _img(0, size=16))
    ds = ChangeDataset(tmp_path, validate=False, label_encoding="0/255")  # nothing read up front
    with pytest.raises(SizeMismatchError, match="000.png"):
        ds[0]
