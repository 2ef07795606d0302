"""Change simulation by semantic-map editing: transition table, area targets, records, determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from changekit.data.io import read_palette_indices
from changekit.data.synthetic import CLASS_NAMES, synthesize
from changekit.errors import ConfigError
from changekit.generation.edits import OPS, EditConfig, simulate_change, transition_matrix

TABLE = {"vegetation": {"building": 2.0, "bare soil": 1.0}, "building": {"bare soil": 1.0},
         "bare soil": {"building": 1.0, "vegetation": 1.0}}


@pytest.fixture(scope="module")
def maps(tmp_path_factory: pytest.TempPathFactory) -> list[np.ndarray]:
    root = synthesize(tmp_path_factory.mktemp("edits") / "sem", n=8, size=64, seed=3, semantic=True)
    return [read_palette_indices(p) for p in sorted((Path(root) / "label1").iterdir())]


def test_transition_table_is_honoured(maps: list[np.ndarray]) -> None:
    allowed = transition_matrix(TABLE, CLASS_NAMES) > 0
    n_edits = 0
    for i, m1 in enumerate(maps):
        m2, edits, _ = simulate_change(m1, np.random.default_rng(i), CLASS_NAMES, EditConfig(transitions=TABLE),
                                       donors=maps)
        diff = m1 != m2
        assert allowed[m1[diff], m2[diff]].all()
        n_edits += len(edits)
        for e in edits:
            assert e["op"] in OPS
            if "from" in e:
                assert allowed[e["from"]["index"], e["to"]["index"]]
    assert n_edits > 0


@pytest.mark.parametrize("area", [(0.05, 0.1), (0.2, 0.25), (0.3, 0.4)])
def test_area_targets(maps: list[np.ndarray], area: tuple[float, float]) -> None:
    for i, m1 in enumerate(maps):
        m2, edits, info = simulate_change(m1, np.random.default_rng(100 + i), CLASS_NAMES,
                                          EditConfig(area_fraction=area), donors=maps)
        frac = float((m1 != m2).mean())
        assert info["reached"], info
        assert area[0] <= frac <= area[1] + 1e-9
        assert frac == pytest.approx(info["changed_fraction"], abs=1e-6)
        assert info["target_fraction"] <= frac
        assert sum(e["pixels"] for e in edits) == int((m1 != m2).sum())  # every change is accounted for


def test_edits_are_reproducible_and_seed_dependent(maps: list[np.ndarray]) -> None:
    run = [simulate_change(maps[0], np.random.default_rng(s), CLASS_NAMES, donors=maps[1:]) for s in (7, 7, 8)]
    assert np.array_equal(run[0][0], run[1][0]) and run[0][1] == run[1][1]
    assert not np.array_equal(run[0][0], run[2][0])


def test_removal_fills_from_surrounding_class() -> None:
    m1 = np.full((32, 32), 3, np.uint8)  # vegetation
    m1[10:18, 12:20] = 1  # one building
    cfg = EditConfig(area_fraction=(0.01, 0.0625), ops={"remove": 1.0},
                     transitions={"building": {"vegetation": 1.0}})
    m2, edits, info = simulate_change(m1, np.random.default_rng(0), CLASS_NAMES, cfg)
    assert (m2 == 3).all() and info["reached"]
    assert edits[0]["op"] == "remove" and edits[0]["from"]["name"] == "building"
    assert edits[0]["to"]["name"] == "vegetation" and edits[0]["bbox"] == [10, 12, 18, 20]


def test_insertion_pastes_donor_objects() -> None:
    m1 = np.zeros((32, 32), np.uint8)
    donor = np.zeros((32, 32), np.uint8)
    donor[2:8, 2:8] = 4  # a pond
    cfg = EditConfig(area_fraction=(0.03, 0.04), ops={"insert": 1.0})
    m2, edits, _ = simulate_change(m1, np.random.default_rng(1), CLASS_NAMES, cfg, donors=[donor])
    assert set(np.unique(m2)) == {0, 4}
    assert all(e["op"] == "insert" and e["to"]["name"] == "water" and e["donor"] == 0 for e in edits)


def test_conversion_follows_weights_and_ignore_is_kept() -> None:
    m1 = np.zeros((64, 64), np.uint8)
    m1[:, 32:] = 255  # unlabelled half
    for k, (y, x) in enumerate((y, x) for y in range(0, 64, 8) for x in range(0, 32, 8)):
        m1[y:y + 6, x:x + 6] = 3
    cfg = EditConfig(area_fraction=(0.2, 0.3), ops={"convert": 1.0}, transitions={"vegetation": {"water": 1.0}})
    m2, edits, _ = simulate_change(m1, np.random.default_rng(2), CLASS_NAMES, cfg)
    assert (m2[:, 32:] == 255).all()
    assert set(np.unique(m2[m1 != m2])) == {4}
    assert all(e["op"] == "convert" for e in edits)


def test_bad_settings_raise() -> None:
    with pytest.raises(ConfigError, match="unknown class 'forest'"):
        transition_matrix({"forest": {"water": 1}}, CLASS_NAMES)
    with pytest.raises(ConfigError, match="area_fraction"):
        EditConfig(area_fraction=(0.5, 0.2))
    with pytest.raises(ConfigError, match="ops"):
        EditConfig(ops={"teleport": 1.0})
