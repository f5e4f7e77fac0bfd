"""Progress bars that suit where stderr goes.

On a terminal a tqdm bar redraws itself in place with carriage returns. In a file, a CI log
or a batch job's output those carriage returns pile up into one endless line, so there the
same bar prints a plain line (count, total, rate, ETA) every :data:`LOG_EVERY_S` seconds and
once at the end. Every long loop of the package takes its bar from :func:`bar`.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

LOG_EVERY_S = 30.0  # seconds between two progress lines when stderr is not a terminal


class _Lines:
    """A stream for tqdm that writes each redraw as a line of its own (no ``\\r``)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


def bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on stderr: a live bar on a terminal, a line every
    :data:`LOG_EVERY_S` seconds elsewhere, nothing when not ``enabled``."""
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    stream = sys.stderr
    if stream.isatty():
        return tqdm(iterable, file=stream, dynamic_ncols=True, **kwargs)
    kwargs.setdefault("mininterval", LOG_EVERY_S)
    return tqdm(iterable, file=_Lines(stream), ncols=100, **kwargs)
