"""Anomaly events: per-frame p(A) turned into intervals a person can act on.

An event opens when p(A) reaches the decision threshold and closes when it falls below a lower
exit threshold (hysteresis, so a score hovering at the threshold does not flicker). Events
closer than ``merge_gap`` seconds are merged, then events shorter than ``min_duration``
seconds are dropped. Rows are the scored frames of one video, in order: ``frames`` (T,) their
decoded frame numbers and ``times`` (T,) their presentation times in seconds.

Row ``i`` stands for the time from ``times[i]`` to the next row's time (the last row for one
row period, the median spacing of the rows). An event over rows ``[a, b)`` therefore spans
frames ``[frames[a], end_frame)`` and seconds ``[times[a], end_time)``, where the end is the
first row after the event (or one period past the last row). Frame intervals are half-open,
as everywhere in the package.

Its class is read from the model's C-way probabilities P(c) = softmax(s)_c * p(A) averaged
over the event's rows; ``class_probability`` is that mean for the predicted anomaly class
(at most the mean p(A)), and ``top3`` lists the three likeliest anomaly classes.

:func:`find_events` computes the events of a whole curve at once; :class:`EventTracker` finds
the same events on a curve that arrives in pieces (live streams), reporting each event when
it opens, while it grows and when it closes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from anomalyclip.checks import check_event_settings
from anomalyclip.errors import AnomalyError


@dataclass(frozen=True)
class EventConfig:
    """How frames become events.

    ``threshold``: p(A) at which an event opens. ``exit_ratio``: it closes when p(A) drops
    below ``threshold * exit_ratio``. ``merge_gap``: events separated by at most this many
    seconds become one. ``min_duration``: shorter events (after merging) are dropped.
    """

    threshold: float
    exit_ratio: float = 0.8
    merge_gap: float = 1.0
    min_duration: float = 0.5

    def __post_init__(self) -> None:
        check_event_settings(self.threshold, self.exit_ratio, self.merge_gap, self.min_duration)

    @property
    def exit_threshold(self) -> float:
        return self.threshold * self.exit_ratio


@dataclass
class Event:
    """One anomaly event of one video (or stream)."""

    source: str
    start_frame: int
    end_frame: int  # exclusive
    start_time: float  # seconds
    end_time: float  # seconds, exclusive
    peak: float  # highest p(A) inside
    peak_time: float
    mean: float  # mean p(A) over the event's rows
    label: str  # predicted anomaly class
    class_probability: float  # mean P(label) over the event's rows
    top3: list[tuple[str, float]]

    @property
    def duration(self) -> float:
        return self.end_time - self.start_time

    def to_dict(self) -> dict:
        d = asdict(self)
        d["class"] = d.pop("label")
        d["top3"] = [[name, p] for name, p in self.top3]
        d["duration"] = self.duration
        return d


def row_period(times: np.ndarray) -> float:
    """Seconds one row stands for: the median spacing of the rows (1 for a single row)."""
    times = np.asarray(times, dtype=np.float64)
    if times.size < 2:
        return 1.0
    step = float(np.median(np.diff(times)))
    return step if step > 0 else 1.0


def video_seconds(times: np.ndarray) -> float:
    """Seconds a video's rows cover: first to last time, plus the last row's period (NaN
    when a time is unknown or there are no rows)."""
    times = np.asarray(times, dtype=np.float64)
    if times.size == 0 or not np.isfinite(times).all():
        return math.nan
    return float(times[-1] - times[0] + row_period(times))


def hysteresis(p: np.ndarray, enter: float, leave: float) -> np.ndarray:
    """(T,) bool: inside an event at each row. On from a row with p >= enter until the first
    row with p < leave (that row is off); rows in between keep the state they had."""
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    on, off = p >= enter, p < leave  # with leave <= enter a row is never both
    decisive = np.where(on | off, np.arange(p.size), -1)
    last = np.maximum.accumulate(decisive) if p.size else decisive  # last decisive row
    return (last >= 0) & on[np.maximum(last, 0)]


def _runs(mask: np.ndarray) -> np.ndarray:
    """(K, 2) [start, end) row ranges of the True runs of ``mask``."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return np.stack([np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)], axis=1)


def event_rows(
    times: np.ndarray, p: np.ndarray, cfg: EventConfig, period: float | None = None
) -> np.ndarray:
    """(K, 2) [start, end) row ranges of the events of one curve (see the module docstring);
    ``period`` as in :func:`find_events`."""
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if times.shape != p.shape:
        raise AnomalyError(f"{times.size} times but {p.size} scores")
    runs = _runs(hysteresis(p, cfg.threshold, cfg.exit_threshold))
    if not len(runs):
        return runs
    # (T+1,) start time of each row, then the end of the last one
    bounds = np.r_[times, times[-1] + (period or row_period(times))]
    gaps = bounds[runs[1:, 0]] - bounds[runs[:-1, 1]]  # seconds between consecutive runs
    keep_apart = np.r_[True, gaps > cfg.merge_gap]  # does run k start a new event?
    group = np.cumsum(keep_apart) - 1
    starts = runs[keep_apart, 0]
    ends = np.zeros(len(starts), dtype=np.int64)
    np.maximum.at(ends, group, runs[:, 1])
    merged = np.stack([starts, ends], axis=1)
    long_enough = bounds[merged[:, 1]] - bounds[merged[:, 0]] >= cfg.min_duration - 1e-9
    return merged[long_enough]


def describe_event(
    source: str,
    rows: tuple[int, int],
    curve: dict[str, np.ndarray],
    labels: tuple[Sequence[str], int],
    period: float,
) -> Event:
    """The :class:`Event` over ``rows`` [a, b) of a curve: ``curve`` holds ``frames`` (T,),
    ``times`` (T,), ``p`` (T,) p(A) and ``probs`` (T, C); ``labels`` is (class names, normal
    id). The event ends at row b, or ``period`` seconds after the last row when b == T."""
    a, b = rows
    frames, times, p, probs = curve["frames"], curve["times"], curve["p"], curve["probs"]
    class_names, normal_id = labels
    T = len(times)
    end_time = float(times[b]) if b < T else float(times[-1]) + period
    end_frame = int(frames[b]) if b < T else int(frames[-1]) + 1
    inside = p[a:b]
    k = int(np.argmax(inside))
    anomaly = [c for c in range(len(class_names)) if c != normal_id]
    mean_probs = probs[a:b][:, anomaly].mean(axis=0)  # (A,)
    order = np.argsort(-mean_probs, kind="stable")
    top3 = [(class_names[anomaly[i]], float(mean_probs[i])) for i in order[:3]]
    return Event(
        source=source,
        start_frame=int(frames[a]),
        end_frame=end_frame,
        start_time=float(times[a]),
        end_time=end_time,
        peak=float(inside[k]),
        peak_time=float(times[a + k]),
        mean=float(inside.mean()),
        label=top3[0][0],
        class_probability=top3[0][1],
        top3=top3,
    )


def find_events(
    source: str,
    curve: dict[str, np.ndarray],
    labels: tuple[Sequence[str], int],
    cfg: EventConfig,
    period: float | None = None,
) -> list[Event]:
    """Every event of one scored video: ``curve`` as in :func:`describe_event`, ``labels``
    (class names, normal id), ``period`` the row spacing in seconds (default: the median
    spacing of the rows; give 1 / rate for a single-row curve)."""
    curve = _as_curve(curve)
    period = period or row_period(curve["times"])
    return [
        describe_event(source, (int(a), int(b)), curve, labels, period)
        for a, b in event_rows(curve["times"], curve["p"], cfg, period)
    ]


def _as_curve(curve: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out = {
        "frames": np.asarray(curve["frames"]).reshape(-1).astype(np.int64),
        "times": np.asarray(curve["times"], dtype=np.float64).reshape(-1),
        "p": np.asarray(curve["p"], dtype=np.float64).reshape(-1),
        "probs": np.asarray(curve["probs"], dtype=np.float64),
    }
    T = out["frames"].size
    if out["times"].size != T or out["p"].size != T or out["probs"].shape[0] != T:
        raise AnomalyError(
            f"need one row per frame: {T} frames, {out['times'].size} times, "
            f"{out['p'].size} scores, {out['probs'].shape[0]} probability rows"
        )
    return out


class EventTracker:
    """Events of a curve that arrives in pieces, equal to :func:`find_events` on the whole.

    :meth:`push` takes the next rows (in time order) and returns updates as
    ``(kind, event)``: ``"opened"`` once an event has lasted ``min_duration``, ``"updated"``
    when it has grown by at least ``update_every`` seconds since the last report, and
    ``"closed"`` once it can no longer grow (more than ``merge_gap`` seconds have passed
    below the exit threshold). :meth:`close` ends the stream and closes what is open.
    Only the rows of the event being built are kept (plus at most ``merge_gap`` seconds
    after it), so memory stays bounded by the longest event, not by the stream.
    ``period`` is the row spacing in seconds (1 / the stream's sampling rate).
    """

    def __init__(
        self,
        source: str,
        labels: tuple[Sequence[str], int],
        cfg: EventConfig,
        period: float,
        update_every: float = 1.0,
    ) -> None:
        self.source, self.labels, self.cfg = source, (list(labels[0]), labels[1]), cfg
        self.period, self.update_every = period, update_every
        self._on = False  # hysteresis state after the last row
        self._rows: list[tuple[int, float, float, np.ndarray]] = []  # the event being built
        self._end: int | None = None  # rows [0, _end) are the event; None: no event
        self._reported: float | None = None  # duration at the last report (None: not yet)

    def push(
        self, frames: np.ndarray, times: np.ndarray, p: np.ndarray, probs: np.ndarray
    ) -> list[tuple[str, Event]]:
        """Rows (T,), (T,), (T,), (T, C) in time order -> the updates they cause."""
        updates: list[tuple[str, Event]] = []
        for row in zip(frames, times, p, probs, strict=True):
            updates += self._push_row(int(row[0]), float(row[1]), float(row[2]), row[3])
        if self._on:
            updates += self._report()
        return updates

    def close(self) -> list[tuple[str, Event]]:
        """End of the stream: the event being built (if any) is closed."""
        return self._finish() if self._end is not None else []

    def _push_row(self, frame: int, t: float, s: float, probs) -> list[tuple[str, Event]]:
        was_on = self._on
        if s >= self.cfg.threshold:
            self._on = True
        elif s < self.cfg.exit_threshold:
            self._on = False
        updates: list[tuple[str, Event]] = []
        waiting = self._end is not None and not was_on  # an ended run waits for a merge
        if waiting and t - self._rows[self._end][1] > self.cfg.merge_gap:
            updates += self._finish()
        if self._on and self._end is None:  # a new event starts at this row
            self._rows, self._end, self._reported = [], 0, None
        if self._end is not None:
            self._rows.append((frame, t, s, np.asarray(probs, dtype=np.float64)))
            if self._on:
                self._end = len(self._rows)
        return updates

    def _event(self) -> Event:
        frames, times, p, probs = zip(*self._rows, strict=True)
        curve = {
            "frames": np.asarray(frames, dtype=np.int64),
            "times": np.asarray(times, dtype=np.float64),
            "p": np.asarray(p, dtype=np.float64),
            "probs": np.stack(probs),
        }
        return describe_event(self.source, (0, self._end), curve, self.labels, self.period)

    def _report(self) -> list[tuple[str, Event]]:
        event = self._event()
        if event.duration < self.cfg.min_duration - 1e-9:
            return []
        if self._reported is None or event.duration - self._reported >= self.update_every:
            kind = "opened" if self._reported is None else "updated"
            self._reported = event.duration
            return [(kind, event)]
        return []

    def _finish(self) -> list[tuple[str, Event]]:
        event = self._event()
        opened = self._reported is not None
        self._rows, self._end, self._reported = [], None, None
        if event.duration < self.cfg.min_duration - 1e-9:
            return []
        return ([] if opened else [("opened", event)]) + [("closed", event)]
