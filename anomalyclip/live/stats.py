"""What a watch counts per source, in bounded memory whatever the stream's length."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import numpy as np


class LagHistogram:
    """Seconds from a frame's arrival to its score, as counts in log-spaced bins (1 ms to
    ~3 hours, 2.5 % wide): percentiles to within a bin, in a few KiB for any stream."""

    LOW, HIGH, BINS = 1e-3, 1e4, 650

    def __init__(self) -> None:
        self.edges = np.geomspace(self.LOW, self.HIGH, self.BINS + 1)
        self.counts = np.zeros(self.BINS + 2, np.int64)  # [under, bins..., over]
        self.total = 0

    def add(self, seconds: np.ndarray) -> None:
        idx = np.searchsorted(self.edges, np.asarray(seconds, np.float64), side="right")
        np.add.at(self.counts, idx, 1)
        self.total += int(np.size(seconds))

    def merge(self, other: LagHistogram) -> None:
        self.counts += other.counts
        self.total += other.total

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100), the geometric middle of its bin; NaN when empty."""
        if not self.total:
            return float("nan")
        k = int(np.searchsorted(np.cumsum(self.counts), q / 100 * self.total, side="left"))
        k = min(k, len(self.counts) - 1)
        if k == 0:
            return self.LOW
        if k == len(self.counts) - 1:
            return self.HIGH
        return float(np.sqrt(self.edges[k - 1] * self.edges[k]))


@dataclass
class SourceStats:
    """Counters of one source. The reader thread writes the decoding side, the scoring loop
    the rest; each counter has one writer, and readers only need approximate values."""

    decoded: int = 0  # frames out of the decoder
    sampled: int = 0  # of those, kept by the run's sampling
    dropped: int = 0  # kept, but dropped by the queue's policy before the model saw them
    embedded: int = 0  # through CLIP (scored once their hop is complete)
    scored: int = 0  # rows with a score
    corrupt: int = 0  # packets the demuxer flagged, or the decoder refused
    gaps: int = 0
    resolution_changes: int = 0
    state: str = "starting"
    size: tuple[int, int] | None = None  # (width, height) of the last frame
    lag: LagHistogram = field(default_factory=LagHistogram)
    recent_lag: LagHistogram = field(default_factory=LagHistogram)  # since the last status
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def snapshot(self) -> dict:
        return {
            "decoded": self.decoded,
            "sampled": self.sampled,
            "dropped": self.dropped,
            "embedded": self.embedded,
            "scored": self.scored,
            "corrupt": self.corrupt,
            "gaps": self.gaps,
            "resolution_changes": self.resolution_changes,
            "state": self.state,
            "lag_p50_s": self.lag.percentile(50),
            "lag_p99_s": self.lag.percentile(99),
        }


def resident_bytes() -> int:
    """This process's resident memory (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/status") as fh:
            m = re.search(r"VmRSS:\s+(\d+)\s+kB", fh.read())
        return int(m.group(1)) * 1024 if m else 0
    except OSError:
        return 0
