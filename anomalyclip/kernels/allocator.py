"""Keep freed memory inside the process (glibc), so a training step stops page-faulting.

A CPU training step at the paper's shape allocates and frees gigabytes of 30-130 MB tensors
(activations, Winograd tiles, gradients). glibc serves every request above its mmap
threshold (at most 32 MiB) with a fresh ``mmap`` and returns it with ``munmap`` on free, so
each step faults in and zeroes those pages again: ~1 million page faults and ~25% of the
step time, measured at the paper's shape on the 2-core benchmark host. With mmap
disabled for the main heap and trimming off, freed blocks are kept and reused; the
process's resident size then stays at its high-water mark instead of going up and down with
every step, and fragmentation leaves it 0.3-0.5 GB above the working set at the paper's shape
(``anomaly bench all`` measures both settings).

This is a process-wide setting, so the library never applies it: the entry points that own
the process do: ``anomaly train``, ``eval``, ``predict`` and ``demo`` on the CPU (scoring
a batch of 64 sequences at the paper's shape faults in ~220,000 pages without it, ~16,000
with it), and the benchmarks of those commands (the training one also times glibc's
defaults). It changes no result: only where the allocator gets memory from. Set
``ANOMALY_KEEP_MEMORY=0`` to leave glibc's defaults alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_applied = False


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed memory instead of unmapping it; True if it was applied.

    A no-op (False) off Linux, with another C library, or with ``ANOMALY_KEEP_MEMORY=0``.
    Heaps of threads other than the main one still fall back to mmap for blocks larger
    than a heap, so no allocation can fail because of it.
    """
    global _applied
    if _applied:
        return True
    if os.environ.get("ANOMALY_KEEP_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    log.debug("glibc keeps freed memory: %s", applied)
    _applied = applied
    return applied


def keeps_freed_memory() -> bool:
    """Whether :func:`keep_freed_memory` took effect in this process (it cannot be undone)."""
    return _applied
