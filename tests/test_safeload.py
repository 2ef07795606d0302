"""changekit.safeload and io.require_file: what each bad file becomes (one CheckpointError line naming it)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from changekit.data.io import require_file
from changekit.errors import CheckpointError, DatasetNotFoundError, ImageReadError
from changekit.safeload import MAX_NESTING, check_nesting, extract_state_dict, load_tensors, restricted_load


def test_plain_state_dict_and_safetensors_load(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    state = {"w": torch.arange(4.0), "b": torch.ones(2, dtype=torch.int64)}
    torch.save({"state_dict": state}, tmp_path / "a.pth")
    save_file(state, str(tmp_path / "a.safetensors"))
    assert torch.equal(load_tensors(tmp_path / "a.pth")["state_dict"]["w"], state["w"])
    loaded = load_tensors(tmp_path / "a.safetensors")
    assert set(loaded) == {"w", "b"} and torch.equal(loaded["b"], state["b"])
    (tmp_path / "bad.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match=r"bad\.safetensors: not a readable safetensors"):
        load_tensors(tmp_path / "bad.safetensors")


def test_nesting_limits_and_cycles() -> None:
    deep: list = []
    node = deep
    for _ in range(MAX_NESTING + 5):
        node.append([])
        node = node[0]
    with pytest.raises(CheckpointError, match="nest more than"):
        check_nesting(deep, Path("x.pt"))
    cyclic: dict = {}
    cyclic["self"] = {"again": cyclic}
    with pytest.raises(CheckpointError, match="contains itself"):
        check_nesting(cyclic, Path("x.pt"))
    check_nesting(cyclic, Path("x.pt"), cycles=False)  # foreign pickled modules may point back at a parent
    shared = [1, 2]
    check_nesting({"a": shared, "b": shared, "c": (shared, shared)}, Path("x.pt"))  # shared is no cycle
    assert extract_state_dict({"state_dict": cyclic, "model": cyclic}) == {}  # ends instead of recursing


def test_restricted_load_turns_every_global_into_a_stub(tmp_path: Path) -> None:
    marker = tmp_path / "ran"

    class Plant:
        def __reduce__(self) -> tuple:
            return os.mkdir, (str(marker),)

    torch.save({"model": {"w": torch.ones(1)}, "meta": Plant()}, tmp_path / "foreign.pth")
    obj = restricted_load(tmp_path / "foreign.pth")
    assert not marker.exists() and repr(obj["meta"]) == "<stub posix.mkdir>"
    assert obj["meta"].stub_args == (str(marker),)
    assert torch.equal(extract_state_dict(obj)["w"], torch.ones(1))
    with pytest.raises(CheckpointError, match="never loaded"):
        load_tensors(tmp_path / "foreign.pth")
    assert not marker.exists()


def test_unpicklable_bytes_and_odd_paths_are_one_line(tmp_path: Path) -> None:
    (tmp_path / "junk.pt").write_bytes(pickle.dumps([1, 2])[:-1])
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_tensors(tmp_path / "junk.pt")
    with pytest.raises(DatasetNotFoundError, match="missing.pt: checkpoint not found"):
        load_tensors(tmp_path / "missing.pt")
    (tmp_path / "folder.pt").mkdir()
    with pytest.raises(CheckpointError, match="folder.pt: is a folder, but a checkpoint is expected"):
        restricted_load(tmp_path / "folder.pt")
    (tmp_path / "loop.pt").symlink_to("loop.pt")
    with pytest.raises(CheckpointError, match="symbolic link loop"):
        load_tensors(tmp_path / "loop.pt")
    (tmp_path / "dangling.png").symlink_to("nowhere.png")
    with pytest.raises(DatasetNotFoundError, match="broken symbolic link"):
        require_file(tmp_path / "dangling.png")
    os.mkfifo(tmp_path / "pipe.png")
    with pytest.raises(ImageReadError, match="not a regular file"):
        require_file(tmp_path / "pipe.png", "image")
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(DatasetNotFoundError, match="a part of the path is a file"):
        require_file(tmp_path / "f" / "x.png")
