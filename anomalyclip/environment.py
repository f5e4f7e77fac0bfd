"""What a result was made with: versions, source commit, command line, date, machine.

:func:`provenance` is written into every run (``config.json``) and evaluation
(``metrics.json``); :func:`report` adds what a bug report needs about the machine, and is
what ``anomaly env`` prints. Versions are read from the installed distributions' metadata,
so recording them imports nothing.
"""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

import anomalyclip

LIBRARIES = ("torch", "transformers", "zarr", "h5py", "av", "numpy")


def versions() -> dict[str, str | None]:
    """Installed version of each library the results depend on (None when absent)."""
    found: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_commit() -> dict[str, Any] | None:
    """``{"commit", "dirty"}`` of the package's source tree when it is a git checkout; None
    when it is not, or git is absent or fails."""
    root = Path(anomalyclip.__file__).resolve().parents[1]
    if not (root / ".git").exists():  # an installed package, not a checkout
        return None

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
        if done.returncode:
            raise OSError(done.stderr.strip())
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty}


def provenance() -> dict[str, Any]:
    """Package version, source commit, full command line, working directory, UTC date, and
    the versions of python and the libraries."""
    argv = list(sys.argv)
    script = Path(argv[0]) if argv else Path()
    if script.name in ("anomaly", "cli.py") or script.parts[-2:] == ("cli", "__main__.py"):
        argv[0] = "anomaly"  # the console script, or python -m anomalyclip.cli
    return {
        "anomalyclip": anomalyclip.__version__,
        "git": git_commit(),
        "command": shlex.join(argv),
        "executable": sys.executable,
        "cwd": os.getcwd(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "versions": versions(),
    }


@cache
def cpu_info() -> dict[str, str]:
    """The first processor's fields of Linux's ``/proc/cpuinfo`` (``model name``, ``flags``
    or, on Arm, ``Features``...); empty where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, colon, value = line.partition(":")
        if colon:
            fields.setdefault(name.strip(), value.strip())
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where ``/proc/cpuinfo`` has none)."""
    info = cpu_info()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def cpu_name() -> str:
    """The CPU's model name, else what :mod:`platform` knows of it."""
    return cpu_info().get("model name") or platform.processor() or platform.machine()


def _cpu_bf16() -> list[str]:
    """The CPU's bf16 matrix/vector features (its ``/proc/cpuinfo`` flags)."""
    flags = cpu_flags()
    return [f for f in ("avx512_bf16", "amx_bf16") if f in flags]


def report() -> dict[str, Any]:
    """:func:`provenance` and the machine: platform, CPUs, torch threads, CUDA devices and
    bf16 support. Imports torch."""
    import torch

    info = provenance()
    affinity = getattr(os, "sched_getaffinity", None)
    info.update(
        platform=platform.platform(),
        cpus=os.cpu_count(),
        cpus_usable=len(affinity(0)) if affinity else os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        torch_interop_threads=torch.get_num_interop_threads(),
        cpu_bf16=_cpu_bf16(),
        cuda_available=torch.cuda.is_available(),
        cuda_version=torch.version.cuda,
        cuda_devices=[],
    )
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["cuda_devices"].append(
                {"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1),
                 "capability": f"{p.major}.{p.minor}"}
            )  # fmt: skip
        info["cuda_bf16"] = torch.cuda.is_bf16_supported()
    return info
