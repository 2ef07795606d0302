"""Process-wide CPU settings that the ``changekit`` command line applies before it starts work.

PyTorch's CPU tensors come from plain ``malloc``. glibc serves blocks above 32 MB with a fresh ``mmap`` and
unmaps them on ``free``, so every large temporary (a 134 MB hidden layer of MISGNet's PVT backbone at batch 8,
say) faults its pages in again on first touch and has them zeroed by the kernel. On the 2-core reference machine
that cost MISGNet's batch-8 inference about a third of its time (see ``docs/benchmarks.md``). PyTorch's CPU tuning
guide recommends a caching ``malloc`` (jemalloc, tcmalloc) for the same reason; this module gets the same effect
from glibc without a new dependency, by keeping freed memory in the heap for reuse.

The price: the process keeps its peak memory while the setting is on, and a heap that never returns memory
fragments under the varied allocations of training (ClearSCD's 512-px training peak rose from 3.8 to 6.4 GB).
So only inference uses it: ``changekit predict`` and ``changekit test``, and the inference phase of
``changekit bench`` (:func:`tuned_cpu_allocator` restores glibc's defaults and trims the heap afterwards);
``train`` leaves glibc alone. The Python API never calls this on import; wrap inference in
:func:`tuned_cpu_allocator` yourself if you want it. ``CHANGEKIT_CPU_ALLOCATOR=system`` switches it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
from collections.abc import Iterator

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameters (malloc.h, mallopt(3))
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
# Any mallopt call switches off glibc's dynamic mmap threshold for good, so "back to the defaults" means the values
# that dynamic scheme settles at for large blocks (32 MB threshold, trim at twice that), not the 128 KB start:
# a 128 KB threshold would mmap every tensor and slowed a MISGNet training step from 4.3 to 6.3 s.
_RESET_MMAP_THRESHOLD = 32 * 1024 * 1024
_RESET_TRIM_THRESHOLD = 64 * 1024 * 1024
_DEFAULT_MMAP_MAX = 65536
_applied = False


def _glibc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (raises AttributeError when the C library is not glibc)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def tune_cpu_allocator() -> bool:
    """Make glibc keep freed memory for reuse: no ``mmap`` per large block, no trimming of the heap.

    Returns whether the setting is active: ``False`` on a C library other than glibc (macOS, musl, Windows)
    or when ``CHANGEKIT_CPU_ALLOCATOR=system``. Calling it again is harmless.
    """
    global _applied
    if os.environ.get("CHANGEKIT_CPU_ALLOCATOR", "").strip().lower() == "system":
        return False
    if _applied:
        return True
    libc = _glibc()
    if libc is None:
        return False
    # -1 disables trimming (mallopt(3)); 0 mmaps means large blocks come from the heap and are reused
    _applied = bool(libc.mallopt(_M_TRIM_THRESHOLD, -1)) and bool(libc.mallopt(_M_MMAP_MAX, 0))
    log.debug("glibc malloc tuned for tensor reuse: %s", _applied)
    return _applied


def reset_cpu_allocator() -> None:
    """Back to glibc's usual large-block behaviour, and hand the memory the heap kept back to the system."""
    global _applied
    if not _applied:
        return
    libc = _glibc()
    if libc is not None:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_MMAP_THRESHOLD, _RESET_MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, _RESET_TRIM_THRESHOLD)
        libc.malloc_trim(0)
    _applied = False


@contextlib.contextmanager
def tuned_cpu_allocator() -> Iterator[bool]:
    """:func:`tune_cpu_allocator` for the duration of the block (yields whether it is active); restores the
    previous state after."""
    was = _applied
    active = tune_cpu_allocator()
    try:
        yield active
    finally:
        if active and not was:
            reset_cpu_allocator()
