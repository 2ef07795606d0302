"""Model tests run on tiny tensors: one intra-op thread avoids OpenMP spin-waiting on a shared, busy CPU
(measured 10x faster here with 2 contended cores) and changes no result."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
