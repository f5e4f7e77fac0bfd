"""Cheap checks of what a user typed, made before torch, transformers or zarr are imported.

Importing the numerical stack takes seconds; a mistyped path or device name should not. The
command line runs these first, so an argument error comes back at once, as one line.
Nothing here imports more than the standard library.
"""

from __future__ import annotations

import re
from pathlib import Path

from anomalyclip.errors import AnomalyError

DEVICE_PATTERN = re.compile(r"(cpu|cuda|mps)(:\d+)?")


def device_name(requested: str) -> str:
    """``requested`` if it spells a device (cpu, cuda, cuda:N, mps), else a one-line error."""
    if not DEVICE_PATTERN.fullmatch(requested):
        raise AnomalyError(f"--device {requested}: expected cpu, cuda, cuda:N or mps")
    return requested


def is_url(location: str | Path) -> bool:
    """A remote location (``s3://``, ``memory://`` ...), which only its library can check."""
    text = str(location)
    return "://" in text and not text.startswith("file://")
