"""The C allocator of a long-running process that holds large state (the worker): glibc only,
nothing elsewhere."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 128 * 1024  # glibc's initial value
_malloc_trim: Callable[[int], int] | None
_mallopt: Callable[[int, int], int] | None
try:
    _libc = ctypes.CDLL("libc.so.6")  # glibc only
    _malloc_trim, _mallopt = _libc.malloc_trim, _libc.mallopt
except (OSError, AttributeError):
    _malloc_trim = _mallopt = None


def release_memory() -> None:
    """Return the C allocator's free memory to the system (glibc ``malloc_trim``; else nothing)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


def fix_mmap_threshold() -> None:
    """Keep glibc's mmap threshold at 128 KB (unless ``MALLOC_MMAP_THRESHOLD_`` sets one); called
    once, at the start of ``dbopt worker``.

    By default glibc raises the threshold to the size of every large block freed, up to 32 MB;
    from then on the large, short-lived tables of a close or a batch come from the heap, and what
    they leave between the long-lived state stays resident. With a fixed threshold they are mapped
    and unmapped: at 100,000 live keys the whole worker no longer grows by 15-30 MB in the minute
    after a drain (bench/README.md, worker memory)."""
    if _mallopt is not None and "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        _mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
