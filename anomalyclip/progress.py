"""Progress bars that suit where stderr goes.

On a terminal a tqdm bar redraws itself in place with carriage returns. In a file, a CI log
or a batch job's output those carriage returns pile up into one endless line, so there the
same bar prints a plain line (count, total, rate, ETA) at most every :data:`LOG_EVERY_S`
seconds once work is under way, and its final state when it ends. Every long loop of the
package takes its bar from :func:`bar`.
"""

from __future__ import annotations

import math
import sys
import time
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


class _LogBar(tqdm):
    """A bar for logs: redraws (``set_postfix`` ones included) become a line only when work
    was done and :data:`LOG_EVERY_S` passed since the last; :meth:`close` adds the last."""

    _logged = -math.inf

    def refresh(self, nolock: bool = False, lock_args: Any = None) -> bool:
        now = time.monotonic()
        if self.n == 0 or now - self._logged < LOG_EVERY_S:
            return False
        self._logged = now
        return super().refresh(nolock, lock_args)


def bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on stderr: a live bar on a terminal, a line at most every
    :data:`LOG_EVERY_S` seconds and one at the end elsewhere, nothing when not ``enabled``."""
    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    stream = sys.stderr
    if stream.isatty():
        return tqdm(iterable, file=stream, dynamic_ncols=True, **kwargs)
    kwargs.setdefault("mininterval", LOG_EVERY_S)
    return _LogBar(iterable, file=_Lines(stream), ncols=100, **kwargs)
