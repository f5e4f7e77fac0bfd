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
        self.sum = 0.0  # of every value added, in seconds

    def add(self, seconds: np.ndarray | float) -> None:
        values = np.asarray(seconds, np.float64)
        idx = np.searchsorted(self.edges, values, side="right")
        np.add.at(self.counts, idx, 1)
        self.total += int(np.size(values))
        self.sum += float(values.sum())

    def merge(self, other: LagHistogram) -> None:
        self.counts += other.counts
        self.total += other.total
        self.sum += other.sum

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
    reconnects: int = 0  # attempts to open the source again after it failed or broke off
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
            "reconnects": self.reconnects,
            "resolution_changes": self.resolution_changes,
            "state": self.state,
            "lag_p50_s": self.lag.percentile(50),
            "lag_p99_s": self.lag.percentile(99),
        }


def public_state(state: str) -> str:
    """A reader's state as the outside sees it: ``online`` (frames flow), ``reconnecting``
    (opening, or waiting to open again) or ``offline`` (ended, failed, stopped)."""
    if state in ("streaming", "reading"):
        return "online"
    if state.startswith(("connecting", "reconnecting", "starting")):
        return "reconnecting"
    return "offline"


def status_line(label: str, st: SourceStats, last: tuple[float, int, int], now: float) -> str:
    """The periodic status of one source (rates since ``last``: (time, sampled, scored))."""
    t, sampled, scored = last
    dt = max(now - t, 1e-9)
    lag = st.recent_lag
    return (
        f"status {label}: {st.state}, in {(st.sampled - sampled) / dt:.1f} fps, "
        f"scored {(st.scored - scored) / dt:.1f} fps, lag p50 {lag_text(lag, 50)} "
        f"p99 {lag_text(lag, 99)}, dropped {st.dropped}, gaps {st.gaps}, "
        f"corrupt {st.corrupt}"
    )


def summary_line(label: str, st: SourceStats) -> str:
    """The closing summary of one source."""
    return (
        f"summary {label}: decoded {st.decoded}, sampled {st.sampled}, scored {st.scored}, "
        f"dropped {st.dropped}, corrupt {st.corrupt}, gaps {st.gaps}, reconnects "
        f"{st.reconnects}, resolution changes {st.resolution_changes}, lag p50 "
        f"{lag_text(st.lag, 50)} p99 {lag_text(st.lag, 99)}"
    )


def lag_text(histogram: LagHistogram, q: float) -> str:
    """``0.42 s``, or ``-`` while no row has been scored (no lag to tell)."""
    value = histogram.percentile(q)
    return "-" if np.isnan(value) else f"{value:.2f} s"


def resident_bytes() -> int:
    """This process's resident memory (Linux ``/proc``; 0 where unavailable)."""
    try:
        with open("/proc/self/status") as fh:
            m = re.search(r"VmRSS:\s+(\d+)\s+kB", fh.read())
        return int(m.group(1)) * 1024 if m else 0
    except OSError:
        return 0
