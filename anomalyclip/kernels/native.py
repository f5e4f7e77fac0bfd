"""The fused Winograd tile transforms of ``winograd_kernels.c``, compiled on first use.

The eager transforms (pad, gather copy, a small dense GEMM) are memory-bound and cost ~40%
of a Winograd feed-forward at the paper's shape; the C kernels read and write each tile
once. They are compiled with the system C compiler into a per-user cache the first time
they are needed (well under a second, no torch headers), loaded with ``ctypes``, and run on
``torch.get_num_threads()`` threads (``ctypes`` releases the GIL). Without a compiler, on a
platform where the build fails, or with ``ANOMALY_NATIVE=0``, :func:`kernels` returns None
and the eager path is used: same results up to float rounding.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("winograd_kernels.c")
_lock = threading.Lock()
_state: dict[str, object] = {}

_I64, _INT, _DBL, _PTR = ctypes.c_int64, ctypes.c_int, ctypes.c_double, ctypes.c_void_p
_SIGNATURES = {
    "input_transform": [_PTR, _PTR] + [_I64] * 8,
    "output_transform": [_PTR, _PTR, _PTR] + [_I64] * 10 + [_INT, _DBL],
    "grad_output": [_PTR, _PTR] + [_I64] * 10,
    "grad_input": [_PTR, _PTR] + [_I64] * 8,
}
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "anomalyclip" / "kernels"


def _vector_flags() -> list[str]:
    """AVX2 code where torch itself runs AVX2 or AVX-512 kernels (x86-64), else the default.

    Part of the cache key, so a cache shared by different machines keeps one build each.
    """
    capability = torch.backends.cpu.get_cpu_capability()
    return ["-mavx2", "-mfma"] if capability in ("AVX2", "AVX512") else []


def _build() -> ctypes.CDLL | None:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.info("no C compiler found: Winograd transforms run in eager torch")
        return None
    # no FMA contraction (the eager rounding), no FP traps (lets the LeakyReLU select vectorise)
    flags = ["-O3", "-fPIC", "-shared", "-ffp-contract=off", "-fno-trapping-math"]
    flags += _vector_flags()
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join([compiler, sys.platform, *flags]).encode())
    key = key.hexdigest()[:16]
    lib = _cache_dir() / f"winograd_{key}{sysconfig.get_config_var('SHLIB_SUFFIX') or '.so'}"
    if not lib.exists():
        lib.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
            tmp_lib = Path(tmp) / lib.name
            cmd = [compiler, *flags, "-o", str(tmp_lib), str(SOURCE)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                log.warning(
                    "compiling %s failed, using eager transforms: %s",
                    SOURCE.name,
                    proc.stderr.strip().splitlines()[-1:],
                )
                return None
            os.replace(tmp_lib, lib)  # atomic: concurrent processes never load a partial file
    dll = ctypes.CDLL(str(lib))
    for name, args in _SIGNATURES.items():
        for suffix in _SUFFIX.values():
            fn = getattr(dll, f"{name}_{suffix}")
            fn.argtypes, fn.restype = args, None
    return dll


def kernels() -> ctypes.CDLL | None:
    """The compiled kernels, or None where they are off or cannot be built (cached)."""
    if os.environ.get("ANOMALY_NATIVE", "1") == "0":
        return None
    with _lock:
        if "dll" not in _state:
            try:
                _state["dll"] = _build()
            except OSError as exc:  # unwritable cache, unloadable library
                log.warning("Winograd kernels unavailable (%s): using eager transforms", exc)
                _state["dll"] = None
        return _state["dll"]  # type: ignore[return-value]


def supports(t: torch.Tensor) -> bool:
    """Whether the kernels can take this tensor (CPU, float32/float64) and are built."""
    return t.device.type == "cpu" and t.dtype in _SUFFIX and kernels() is not None


def _pool() -> ThreadPoolExecutor:
    n = max(1, torch.get_num_threads())
    with _lock:
        if _state.get("threads") != n:
            _state["pool"] = ThreadPoolExecutor(n, thread_name_prefix="winograd")
            _state["threads"] = n
        return _state["pool"]  # type: ignore[return-value]


def _run(name: str, dtype: torch.dtype, head: list, tail: list, total: int) -> None:
    """Call kernel ``name`` over [0, total) split into one contiguous range per thread."""
    fn = getattr(kernels(), f"{name}_{_SUFFIX[dtype]}")
    n = min(total, max(1, torch.get_num_threads()))
    bounds = [total * k // n for k in range(n + 1)]
    ranges = [(bounds[k], bounds[k + 1]) for k in range(n)]
    if n == 1:
        fn(*head, *ranges[0], *tail)
    else:
        list(_pool().map(lambda r: fn(*head, *r, *tail), ranges))


def input_transform(
    xp: torch.Tensor, th: int, tw: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Padded (b, 4th+2, 4tw+2, C) contiguous block -> V (36, b*th*tw, C), written into
    ``out`` (contiguous, that shape) when given."""
    b, hp, wp, c = xp.shape
    total = b * th * tw
    v = xp.new_empty(36, total, c) if out is None else out
    if v.shape != (36, total, c) or not v.is_contiguous() or v.dtype != xp.dtype:
        raise ValueError(f"input_transform needs a contiguous (36, {total}, {c}) output")
    _run(
        "input_transform",
        xp.dtype,
        [xp.data_ptr(), v.data_ptr(), hp, wp, c, th, tw, total],
        [],
        total,
    )
    return v


def output_transform(
    mm: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    th: int,
    tw: int,
    slope: float | None = None,
) -> None:
    """out (b, H, W, F) = A^T M A (+ bias) (then LeakyReLU(slope)); out may be a strided view
    whose channels are contiguous (the inside of a padded buffer)."""
    b, H, W, f = out.shape
    if out.stride(3) != 1 or out.stride(2) != f:
        raise ValueError(f"output_transform writes (.., W, F) rows, got strides {out.stride()}")
    total = mm.shape[1]
    bias = bias.contiguous() if bias is not None else None  # alive for the whole call
    bias_ptr = bias.data_ptr() if bias is not None else None
    head = [
        mm.data_ptr(),
        bias_ptr,
        out.data_ptr(),
        out.stride(0),
        out.stride(1),
        H,
        W,
        f,
        th,
        tw,
        total,
    ]
    _run("output_transform", mm.dtype, head, [int(slope is not None), slope or 0.0], total)


def grad_output(g: torch.Tensor, th: int, tw: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Output gradient (b, H, W, F), channels contiguous -> gradient of M, (36, b*th*tw, F),
    written into ``out`` (contiguous, that shape) when given."""
    b, H, W, f = g.shape
    if g.stride(3) != 1 or g.stride(2) != f:
        g = g.contiguous()
    total = b * th * tw
    gm = g.new_empty(36, total, f) if out is None else out
    if gm.shape != (36, total, f) or not gm.is_contiguous() or gm.dtype != g.dtype:
        raise ValueError(f"grad_output needs a contiguous (36, {total}, {f}) output")
    head = [g.data_ptr(), gm.data_ptr(), g.stride(0), g.stride(1), H, W, f, th, tw, total]
    _run("grad_output", g.dtype, head, [], total)
    return gm


def grad_input(gv: torch.Tensor, out: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """Gradient of V (36, b*th*tw, C) -> gradient of the unpadded input, into contiguous out."""
    b, H, W, c = out.shape
    if not out.is_contiguous():
        return out.copy_(grad_input(gv, torch.empty(out.shape, dtype=out.dtype), th, tw))
    _run(
        "grad_input", gv.dtype, [gv.data_ptr(), out.data_ptr(), H, W, c, th, tw, gv.shape[1]], [], b
    )
    return out
