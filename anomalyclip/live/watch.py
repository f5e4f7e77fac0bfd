"""``anomaly watch``: cameras and streams scored as they arrive, anomaly events as JSON lines.

Shape of a watch::

    source ─► [reader thread] ─► FrameQueue ─┐
    source ─► [reader thread] ─► FrameQueue ─┼─► scoring loop (this thread):
                                             │     one CLIP forward for the frames of all
                                             │       sources, dealt round-robin (RoundRobin)
                                             │     rows into each source's CausalWindow
                                             │     every hop, the windows of all sources through
                                             │       one temporal-model forward
                                             └─►   EventTracker per source ─► every line to each
                                                   Sink (stdout, events.jsonl, webhook, page);
                                                   ClipRecorder (a ``clip`` line per clip)

Every source is sampled as the run's features were (a run trained on ``--fps 5`` features
watches at 5 rows per second); its rows are scored causally (:mod:`anomalyclip.live.window`)
and turned into the same :class:`~anomalyclip.events.Event` objects offline ``predict``
finds, reported when they open, while they grow and when they close. An event still open
after ``max_event`` seconds is closed there and the next piece opens with the next abnormal
row, so what an open event holds stays bounded on a stream that never ends. A source that breaks
off has its open events closed at its last frame and its context reset; when it comes back
a ``gap`` line says where and for how long. :meth:`Watcher.stop` (the command's SIGINT /
SIGTERM handler) ends the loop: open events are closed and written, clips finished, outputs
closed (the webhook's queue delivered for a few seconds); a second :meth:`~Watcher.stop`
during that shutdown hurries it. An output that cannot deliver (a full disk, a dead
receiver) counts what it lost and the watch goes on; the summary says what was not
delivered.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from anomalyclip.events import Event, EventTracker
from anomalyclip.extract.decode import Sampling
from anomalyclip.extract.encoder import ImageEncoder
from anomalyclip.inputs import Source, display_name
from anomalyclip.live.clips import ClipRecorder, FrameRing
from anomalyclip.live.config import WatchConfig
from anomalyclip.live.run import load_for_watch, run_sampling, run_threshold
from anomalyclip.live.schedule import RoundRobin
from anomalyclip.live.sinks import JsonLinesFile, Sink, TextStream, encode, now_iso
from anomalyclip.live.sources import FrameItem, FrameQueue, Notice, Reader
from anomalyclip.live.stats import LagHistogram, SourceStats
from anomalyclip.live.ui_state import UiState
from anomalyclip.live.webhook import Webhook, WebhookConfig
from anomalyclip.live.window import CausalWindow, Window, frozen_text_score_fn, score_windows

__all__ = ["Watcher", "load_for_watch", "run_sampling", "run_threshold", "rows_per_second"]

log = logging.getLogger(__name__)


@dataclass
class _Stream:
    """The scoring loop's state of one source."""

    source: Source
    stats: SourceStats
    queue: FrameQueue
    reader: Reader
    ring: FrameRing | None
    window: CausalWindow | None = None
    tracker: EventTracker | None = None
    lost: dict | None = None  # the break being waited out (reason, time)
    ended: bool = False
    failed: str | None = None
    # open events' first frame -> why their clip failed (None: being written)
    clips: dict[int, str | None] = field(default_factory=dict)
    last: tuple[float, int, int] = (0.0, 0, 0)  # (monotonic, sampled, scored) at last status

    @property
    def name(self) -> str:
        return display_name(self.source)


def rows_per_second(sampling: Sampling, fps: float) -> float:
    """Rows a ``fps`` stream gives under ``sampling``."""
    if sampling.mode == "fps":
        return min(float(sampling.value), fps)
    if sampling.mode == "stride":
        return fps / float(sampling.value)
    return fps


class Watcher:
    """Scores ``sources`` with ``model`` (eval mode) on ``encoder``'s CLIP features, taken at
    ``sampling``; writes events under ``cfg.out`` (module docstring)."""

    def __init__(
        self,
        sources: list[Source],
        model: torch.nn.Module,
        encoder: ImageEncoder,
        sampling: Sampling,
        cfg: WatchConfig,
        stdout: TextIO | None = None,
    ) -> None:
        self.model, self.encoder, self.sampling, self.cfg = model, encoder, sampling, cfg
        self.out = Path(cfg.out)
        self.device = next(model.parameters()).device
        self.score_fn = frozen_text_score_fn(model)
        self.labels = (list(model.cfg.classes), model.cfg.normal_id)
        self.capacity = model.cfg.num_segments * model.cfg.seg_length
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.hurry = threading.Event()  # a second stop: give up what the shutdown waits for
        self.out.mkdir(parents=True, exist_ok=True)
        # every line goes to each sink (stdout, events.jsonl, webhook; add more here)
        self.sinks: list[Sink] = [TextStream(stdout), JsonLinesFile(self.out / "events.jsonl")]
        if cfg.webhook:
            self.sinks.append(Webhook(WebhookConfig(cfg.webhook)))
        self.ui = UiState(cfg.events.threshold, self.out, cfg.save_clips) if cfg.ui else None
        self.sinks += [self.ui] if self.ui is not None else []
        self.clips = (
            ClipRecorder(self.out / "clips", cfg.pre_roll, cfg.post_roll)
            if cfg.save_clips
            else None
        )
        self.clip_counts = {"written": 0, "failed": 0, "unfinished": 0}
        self.schedule = RoundRobin()
        self.lines = 0  # lines reported (each sink counts what it delivered)
        self._failing_sinks: set[str] = set()
        self.streams: list[_Stream] = []
        ring_seconds = cfg.pre_roll + cfg.events.min_duration + cfg.hop + 10.0
        for source in sources:
            stats = SourceStats()
            queue = FrameQueue(cfg.read.queue, cfg.read.drops_oldest(source), self._wake, stats)
            ring = FrameRing(ring_seconds) if cfg.save_clips else None
            preview = self.ui.camera(display_name(source), stats) if self.ui else None
            reader = Reader(source, sampling, cfg.read, queue, self._stop, ring, preview)
            self.streams.append(_Stream(source, stats, queue, reader, ring))
        self._by_name = {s.name: s for s in self.streams}
        self.started = self.finished = 0.0
        # called with (source, frames, times, p, probs) for every scored hop (tests, benchmarks)
        self.on_rows: Callable[..., None] | None = None

    # -- control -----------------------------------------------------------------------------
    def stop(self) -> None:
        """End the watch (safe from a signal handler or another thread). A second call while
        the first shutdown runs hurries it: the webhook queue is not drained further and clips
        are closed with the frames written so far; event lines are still all written."""
        if self._stop.is_set():
            self.hurry.set()
        self._stop.set()
        self._wake.set()

    def run(self) -> dict:
        """Watch until every source has ended (files) or :meth:`stop`; returns the summary."""
        self.started = time.monotonic()
        for s in self.streams:
            s.last = (self.started, 0, 0)
            s.reader.start()
        for sink in self.sinks:
            sink.start()
        if self.clips is not None:
            self.clips.start()
        try:
            self._loop()
        finally:
            self._finish()
        return self.summary()

    def summary(self) -> dict:
        wall = (self.finished or time.monotonic()) - self.started
        total = LagHistogram()
        for s in self.streams:
            total.merge(s.stats.lag)
        scored = sum(s.stats.scored for s in self.streams)
        return {
            "seconds": wall,
            "scored": scored,
            "scored_per_s": scored / wall if wall > 0 else 0.0,
            "dropped": sum(s.stats.dropped for s in self.streams),
            "lag_p50_s": total.percentile(50),
            "lag_p99_s": total.percentile(99),
            "events": self.lines,
            "outputs": {sink.name: sink.report() for sink in self.sinks}
            | ({"clips": dict(self.clip_counts)} if self.clips is not None else {}),
            "sources": {s.name: {**s.stats.snapshot(), "failed": s.failed} for s in self.streams},
        }

    # -- the scoring loop --------------------------------------------------------------------
    def _loop(self) -> None:
        next_status = self.started + (self.cfg.status_every or float("inf"))
        while not self._stop.is_set():
            self._wake.clear()
            taken = self._gather()
            if taken:
                self._process(taken)
            elif all(s.ended for s in self.streams):
                break
            else:
                self._wake.wait(0.05)
            self._report_clips()
            if time.monotonic() >= next_status:
                self._status()
                next_status = time.monotonic() + self.cfg.status_every

    def _gather(self) -> list[tuple[_Stream, list[FrameItem | Notice]]]:
        """Up to ``batch_size`` frames, dealt round-robin to the sources that have some."""
        queues = [None if s.ended else s.queue for s in self.streams]
        taken = self.schedule.take(queues, self.cfg.batch_size)
        return [(self.streams[k], items) for k, items in taken]

    def _process(self, taken: list[tuple[_Stream, list[FrameItem | Notice]]]) -> None:
        frames = [(s, i) for s, items in taken for i in items if isinstance(i, FrameItem)]
        if frames:
            pixels = torch.stack([i.pixels for _, i in frames])  # (n, 3, 224, 224) uint8
            emb = self.encoder(pixels).numpy()  # (n, D)
            windows: list[tuple[_Stream, Window]] = []
            for s in {id(s): s for s, _ in frames}.values():
                rows = [k for k, (o, _) in enumerate(frames) if o is s]
                items = [frames[k][1] for k in rows]
                new = s.window.push(
                    emb[rows],
                    np.array([i.index for i in items]),
                    np.array([i.time for i in items]),
                    np.array([i.arrival for i in items]),
                )
                s.stats.embedded += len(items)
                windows += [(s, w) for w in new]
            self._score(windows)
        for s, items in taken:
            for item in items:
                if isinstance(item, Notice):
                    self._notice(s, item)

    def _score(self, windows: list[tuple[_Stream, Window]]) -> None:
        if not windows:
            return
        results = score_windows(
            [w for _, w in windows],
            self.score_fn,
            self.model.cfg.num_segments,
            self.model.cfg.seg_length,
            device=self.device,
        )
        now = time.monotonic()
        for (s, w), (p, probs) in zip(windows, results, strict=True):
            lag = now - w.arrivals
            s.stats.lag.add(lag)
            s.stats.recent_lag.add(lag)
            s.stats.scored += len(p)
            if self.on_rows is not None:
                self.on_rows(s.name, w.frames, w.times, p, probs)
            self._each_sink("scores", s.name, w.times, p, lag)
            updates = s.tracker.push(w.frames, w.times, p, probs)
            if any(e.duration >= self.cfg.max_event for k, e in updates if k != "closed"):
                updates += s.tracker.close()  # a camera abnormal for hours: bounded pieces
            for kind, event in updates:
                self._report(s, kind, event)

    def _notice(self, s: _Stream, notice: Notice) -> None:
        d = notice.detail
        if notice.kind == "connected":
            rate = rows_per_second(self.sampling, d["fps"])
            hop = int(min(self.capacity, max(1, round(self.cfg.hop * rate))))
            s.window = CausalWindow(self.encoder.dim, self.capacity, hop)
            s.tracker = EventTracker(
                s.name, self.labels, self.cfg.events, 1.0 / rate, self.cfg.update_every
            )
            log.info("%s: %.3g fps, %.3g rows/s, hop %d rows", s.name, d["fps"], rate, hop)
        elif notice.kind == "lost":
            self._break_off(s)
            s.lost = d
        elif notice.kind == "gap":
            s.lost = None
            self.log_line({"kind": "gap", "source": s.name, **d})
        elif notice.kind == "ended":
            self._break_off(s)
            s.ended = True
            s.failed = d.get("reason")
            if s.failed:
                log.error("%s", s.failed)

    def _break_off(self, s: _Stream) -> None:
        """The source's rows stop here: score what is pending, close its events, reset."""
        if s.window is None:
            return
        last = s.window.flush()
        if last is not None:
            self._score([(s, last)])
        for kind, event in s.tracker.close():
            self._report(s, kind, event)
        s.window.reset()

    def _report(self, s: _Stream, kind: str, event: Event) -> None:
        record = {"kind": kind, **event.to_dict()}
        if self.clips is not None and s.ring is not None:
            key = event.start_frame
            if key not in s.clips:
                s.clips[key] = self.clips.open(s.name, s.ring, key, event.start_time)
            if s.clips[key] is not None:
                record["clip_error"] = s.clips[key]
            if kind == "closed":
                self.clips.close_clip(s.name, key, event.end_time)
                del s.clips[key]
        self.log_line(record)

    def _report_clips(self) -> None:
        """A ``clip`` line for each clip that is over: its file once complete, or why not."""
        while self.clips is not None and self.clips.done:
            done = self.clips.done.popleft()
            record = {"kind": "clip", "source": done.source, "start_frame": done.start_frame,
                      "clip": None if done.path is None else str(done.path),
                      "frames": done.frames}  # fmt: skip
            self.clip_counts["written" if done.error is None else "failed"] += 1
            if done.error is not None:
                record["clip_error"] = done.error
                s = self._by_name.get(done.source)
                if s is not None and done.start_frame in s.clips:  # the event is still open
                    s.clips[done.start_frame] = done.error
            self.log_line(record)

    def log_line(self, record: dict) -> None:
        """Hand one line to every sink; a sink that fails never stops the others."""
        record = {"kind": record["kind"], "source": record["source"], **record}
        record["reported_at"] = now_iso()
        self.lines += 1
        self._each_sink("write", record, encode(record))

    def _each_sink(self, method: str, *args) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, method)(*args)
            except Exception:  # noqa: BLE001 - a bug in one output must not end the others
                if sink.name not in self._failing_sinks:
                    self._failing_sinks.add(sink.name)
                    log.exception("output %s failed; the other outputs go on", sink.name)

    def _status(self) -> None:
        now = time.monotonic()
        for s in self.streams:
            t, sampled, scored = s.last
            dt = max(now - t, 1e-9)
            st = s.stats
            lag = st.recent_lag
            sys.stderr.write(
                f"status {s.name}: {st.state}, in {(st.sampled - sampled) / dt:.1f} fps, "
                f"scored {(st.scored - scored) / dt:.1f} fps, lag p50 {lag.percentile(50):.2f} "
                f"s p99 {lag.percentile(99):.2f} s, dropped {st.dropped}, gaps {st.gaps}, "
                f"corrupt {st.corrupt}\n"
            )
            st.recent_lag = LagHistogram()
            s.last = (now, st.sampled, st.scored)
        sys.stderr.flush()

    def _finish(self) -> None:
        self._stop.set()
        for s in self.streams:
            if not s.ended:
                self._break_off(s)
            if s.lost is not None:  # still waiting for the source to come back
                self.log_line({"kind": "gap", "source": s.name, "start": s.lost.get("time"),
                               "end": None, "seconds": None,
                               "reason": s.lost.get("reason")})  # fmt: skip
        deadline = time.monotonic() + 2.0  # readers stuck in FFmpeg end with the process
        for s in self.streams:
            if not self.hurry.is_set():
                s.reader.join(max(0.0, deadline - time.monotonic()))
        if self.clips is not None:
            self.clip_counts["unfinished"] = self.clips.finish(self.hurry)
            self._report_clips()
        for sink in self.sinks:
            sink.close(self.hurry)
        self.finished = time.monotonic()
        self._summary_lines()

    def _summary_lines(self) -> None:
        for s in self.streams:
            st = s.stats
            sys.stderr.write(
                f"summary {s.name}: decoded {st.decoded}, sampled {st.sampled}, scored "
                f"{st.scored}, dropped {st.dropped}, corrupt {st.corrupt}, gaps {st.gaps}, "
                f"resolution changes {st.resolution_changes}, lag p50 {st.lag.percentile(50):.2f}"
                f" s p99 {st.lag.percentile(99):.2f} s\n"
            )
        for sink in self.sinks:
            counts = ", ".join(f"{k} {v}" for k, v in sink.report().items())
            sys.stderr.write(f"summary output {sink.name}: {counts}\n")
        if self.clips is not None:
            counts = ", ".join(f"{k} {v}" for k, v in self.clip_counts.items())
            sys.stderr.write(f"summary output clips: {counts}\n")
        sys.stderr.flush()
