"""`keep_freed_memory()`: stop glibc's malloc from handing freed tensors back to the operating system.

A CPU training step allocates and frees the same large buffers every step (activations, gradients, the
logits). By default glibc returns large freed blocks to the kernel (`munmap`, heap trimming), so the next
step faults every page back in and the kernel zeroes it: on the reference configuration that was about 68,000
minor page faults and 0.1 s of system time per step, 13 % of the step (docs/performance.md, "Host
memory"). Keeping freed memory in the process removes both; the price is that the process holds on to its
peak heap, which a training process needs again a step later anyway.

Linux with glibc only (elsewhere a no-op); process-wide and applied once. `K1_KEEP_FREED_MEMORY=0` turns it
off, e.g. to measure the difference.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest: blocks up to this size come from the heap, not mmap
TRIM_THRESHOLD = 2 ** 31 - 1  # free space at the heap's top kept before trimming (mallopt takes an int)
TOP_PAD = 256 * 1024 * 1024  # extra heap requested with each growth, so the heap grows rarely

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Apply the malloc settings once per process; True if they are in effect."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("K1_KEEP_FREED_MEMORY", "1") == "0":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = all(mallopt(p, v) == 1 for p, v in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                                                     (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
    return _applied
