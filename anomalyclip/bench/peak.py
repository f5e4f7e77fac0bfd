"""The yardsticks benchmark numbers are read by: the CPU's measured matrix-multiply rate, and
the peak resident memory of what a benchmark runs.

Absolute times on shared machines differ by ~2x between hosts of the same kind, so results are
reported as a fraction of this peak, measured in the same run with the same thread count.
"""

from __future__ import annotations

import resource
import statistics
import time
from pathlib import Path

import torch


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 4096, repeats: int = 5) -> float:
    """Median GFLOP/s of an (n x n) @ (n x n) matrix multiply in ``dtype`` (one warm-up)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    torch.mm(a, b, out=out)
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        seconds.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(seconds) / 1e9


def peaks(n: int = 4096, repeats: int = 5) -> dict[str, float]:
    """fp32 and bf16 matrix-multiply GFLOP/s."""
    return {
        "fp32": matmul_gflops(torch.float32, n, repeats),
        "bf16": matmul_gflops(torch.bfloat16, n, repeats),
    }


def reset_peak_rss() -> bool:
    """Restart the kernel's count of this process's peak resident size (Linux), so the peak
    read afterwards is that of what ran since (a training step's, the demo's), not of what
    the process did before."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb(reset: bool) -> float:
    """Peak resident size since :func:`reset_peak_rss` (``VmHWM``); the process's lifetime
    peak (``ru_maxrss``) where that could not be reset."""
    if reset:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
