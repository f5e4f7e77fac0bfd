"""What a watch tells about itself: status lines while it runs, a summary when it ends.

``w`` is a :class:`~anomalyclip.live.watch.Watcher`; lines go to stderr.
"""

from __future__ import annotations

import sys
import time

from anomalyclip.live.stats import LagHistogram, status_line, summary_line


def summary(w) -> dict:
    """The summary of watch ``w``: counts, lag percentiles, each output's counts, each source's."""
    wall = (w.finished or time.monotonic()) - w.started
    total = LagHistogram()
    for s in w.streams:
        total.merge(s.stats.lag)
    scored = sum(s.stats.scored for s in w.streams)
    return {
        "seconds": wall,
        "scored": scored,
        "scored_per_s": scored / wall if wall > 0 else 0.0,
        "dropped": sum(s.stats.dropped for s in w.streams),
        "lag_p50_s": total.percentile(50),
        "lag_p99_s": total.percentile(99),
        "events": w.lines,
        "outputs": {sink.name: sink.report() for sink in w.sinks}
        | ({"clips": dict(w.clip_counts)} if w.clips is not None else {}),
        "sources": {s.label: {**s.stats.snapshot(), "failed": s.failed,
                              "camera": s.camera.name} for s in w.streams}}  # fmt: skip


def status_lines(w) -> None:
    """A status line per source of watch ``w`` on stderr (rates since the last ones)."""
    now = time.monotonic()
    for s in w.streams:
        sys.stderr.write(status_line(s.label, s.stats, s.last, now) + "\n")
        s.stats.recent_lag = LagHistogram()
        s.last = (now, s.stats.sampled, s.stats.scored)
    sys.stderr.flush()


def summary_lines(w) -> None:
    """The closing summary of watch ``w`` on stderr: a line per source and per output."""
    for s in w.streams:
        sys.stderr.write(summary_line(s.label, s.stats) + "\n")
    for sink in w.sinks:
        counts = ", ".join(f"{k} {v}" for k, v in sink.report().items())
        if counts:
            sys.stderr.write(f"summary output {sink.name}: {counts}\n")
    if w.clips is not None:
        counts = ", ".join(f"{k} {v}" for k, v in w.clip_counts.items())
        sys.stderr.write(f"summary output clips: {counts}\n")
    sys.stderr.flush()
