"""The command line's process-wide CPU allocator setting."""

from __future__ import annotations

import ctypes.util
import platform

import pytest
import torch

from changekit import runtime


def test_switched_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHANGEKIT_CPU_ALLOCATOR", "system")
    assert runtime.tune_cpu_allocator() is False


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_applies_on_glibc_and_is_idempotent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHANGEKIT_CPU_ALLOCATOR", raising=False)
    monkeypatch.setattr(runtime, "_applied", False)
    assert ctypes.util.find_library("c")
    assert runtime.tune_cpu_allocator() is True
    assert runtime.tune_cpu_allocator() is True
    # large tensors still allocate, free and compute normally afterwards
    for _ in range(3):
        big = torch.ones(40 * 1024 * 1024 // 4)
        assert float(big.sum()) == big.numel()
        del big


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_context_restores_glibc_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHANGEKIT_CPU_ALLOCATOR", raising=False)
    runtime.reset_cpu_allocator()
    with runtime.tuned_cpu_allocator() as active:
        assert active and runtime._applied
        with runtime.tuned_cpu_allocator():  # nested: the outer block keeps it
            pass
        assert runtime._applied
    assert not runtime._applied


def test_bench_tunes_only_cpu_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    from changekit.bench import benchmark

    monkeypatch.delenv("CHANGEKIT_CPU_ALLOCATOR", raising=False)
    runtime.reset_cpu_allocator()
    res = benchmark("fc_siam_diff", size=32, batch=1, warmup=0, iters=1, train_step=False)
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert res["infer_cpu_allocator_tuned"] is glibc
    assert not runtime._applied  # training and everything after run with glibc's defaults
