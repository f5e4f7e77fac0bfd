"""The yardsticks benchmark numbers are read by: the CPU's measured matrix-multiply rate, and
the peak resident memory of what a benchmark runs.

Absolute times on shared machines differ by ~2x between hosts of the same kind, so results are
reported as a fraction of this peak, measured in the same run with the same thread count.

The peak is the best rate of two implementations of the same product, each the best of its
repeats (noise on a shared host only ever slows a run down). ``torch.mm`` runs fp32 through
MKL's sgemm in torch's CPU builds, while the model's convolutions run on oneDNN's kernels;
the same product as a 1x1 convolution over a channels-last image is oneDNN's GEMM. A peak
read from ``torch.mm`` alone, as the median of five repeats taken before and after the
steps, can come out below what the model's own kernels reach in between, and a share above
1 follows: the README once said a direct fp32 training step ran at "1.68 of the fp32 matmul
peak". Its FLOPs are the executed ones: oneDNN runs those 3x3 convolutions directly
(``ONEDNN_VERBOSE=1`` prints ``alg:convolution_direct`` for the forward, and direct kernels
for both backward passes, on the AVX2 host this was checked on), and torch's count of a
convolution equals 2 x 9 x C_in x C_out FLOPs per output pixel forward and twice that
backward. 307 GFLOP/s is more than two cores with 256-bit FMA units can do at all (2 x 32
FLOP a cycle at <= 3.7 GHz: 237), so that host's oneDNN kernels used wider vectors than its
measured ``torch.mm`` did: the peak was the number that was wrong.

:func:`of_peak` and :func:`share_text` refuse to report a share above 1 anyway: such a share
is not physically possible, and they say so instead of printing it.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import torch

from anomalyclip.extract.encoder import cpu_has_bf16

SLOW_BF16_N = 512  # bf16 products on CPUs without bf16 units are emulated (~1 GFLOP/s)


def _best_seconds(run, repeats: int) -> float:  # noqa: ANN001 - a callable
    run()  # warm-up
    seconds = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - t0)
    return min(seconds)


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of an (n x n) @ (n x n) ``torch.mm`` in ``dtype``, best of ``repeats``."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    return 2 * n**3 / _best_seconds(lambda: torch.mm(a, b, out=out), repeats) / 1e9


def conv_gemm_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of the same (n x n) @ (n x n) product as a 1x1 convolution (oneDNN's GEMM:
    n channels in and out, an n-pixel channels-last image), best of ``repeats``."""
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(n, n, 1, bias=False).to(dtype).eval()
    side = max(1, n // 64)
    x = torch.randn(1, side, n // side, n, generator=gen).to(dtype).permute(0, 3, 1, 2)
    with torch.no_grad():
        seconds = _best_seconds(lambda: conv(x), repeats)
    return 2 * side * (n // side) * n * n / seconds / 1e9


def peaks(n: int = 4096, repeats: int = 5) -> dict[str, float]:
    """fp32 and bf16 matrix-multiply GFLOP/s: the better of ``torch.mm`` and oneDNN's GEMM
    (module docstring); and ``fp32_mm``, ``torch.mm``'s alone (the yardstick the published
    code's measured efficiency refers to). bf16 is measured at ``SLOW_BF16_N`` where the CPU
    emulates it."""
    n_bf16 = n if cpu_has_bf16() else min(n, SLOW_BF16_N)
    mm = matmul_gflops(torch.float32, n, repeats)
    return {
        "fp32": max(mm, conv_gemm_gflops(torch.float32, min(n, 2048), repeats)),
        "fp32_mm": mm,
        "bf16": max(matmul_gflops(torch.bfloat16, n_bf16, repeats),
                    conv_gemm_gflops(torch.bfloat16, min(n_bf16, 2048), repeats)),
    }  # fmt: skip


def of_peak(gflops: float, peak: float) -> float | None:
    """``gflops / peak``, or None where that exceeds 1 (not physically possible: the peak was
    measured low, or the FLOPs counted are not the ones executed)."""
    if not peak > 0:
        return None
    share = gflops / peak
    return share if share <= 1.0 else None


def share_text(gflops: float, peak: float, what: str = "peak") -> str:
    """``307 GFLOP/s = 0.82 of the <what>``, or the raw numbers and why no share is given."""
    share = of_peak(gflops, peak)
    if share is None:
        return (
            f"{gflops:.0f} GFLOP/s, above the {what} measured in this run ({peak:.0f} GFLOP/s): "
            "no share (the peak was measured low)"
        )
    return f"{gflops:.0f} GFLOP/s = {share:.2f} of the {what}"


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
