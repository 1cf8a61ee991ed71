"""C-library malloc settings for CPU work: keep freed activation memory in the process.

PyTorch's CPU tensors come from the C library's malloc. With glibc's defaults, blocks of a few
MiB (the activations of a CPU forward pass) are mmapped and unmapped, or trimmed off the top of
the heap, between calls, so each forward pass page-faults its activations back in: about 165,000
minor faults (660 MB of page zeroing) for three small annotation passes, none with the settings
below (tests/test_allocator.py), and half the time of the batched classifier annotation on a
2-core machine (benchmarks/perf/annotate.py). Raising the two thresholds keeps freed blocks for
reuse; the process's resident memory then stays near its peak instead of shrinking between
passes.
"""
from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (glibc's malloc.h)
TRIM_THRESHOLD = 1 << 30   # free memory kept at the top of the heap before any is returned
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value: smaller blocks come from the reusable heap
# A user who tuned or replaced the allocator keeps their choice.
USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "GLIBC_TUNABLES", "LD_PRELOAD")


def retain_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds for this process; False where that does not apply.

    Nothing is changed on other C libraries (macOS, musl) or when any of ``USER_SETTINGS`` is
    set in the environment.
    """
    if any(os.environ.get(name) for name in USER_SETTINGS) or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) and bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
