"""The CPU's measured matrix-multiply rate: the yardstick other benchmark numbers are read by.

Absolute times on shared machines differ by ~2x between hosts of the same kind, so results are
reported as a fraction of this peak, measured in the same run with the same thread count.
"""

from __future__ import annotations

import statistics
import time

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
