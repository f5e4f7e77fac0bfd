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
                                                   Sink (stdout, events.jsonl, webhook, MQTT,
                                                   metrics, page); ClipRecorder (a ``clip``
                                                   line per clip)

Every source is a :class:`~anomalyclip.live.cameras.Camera` (its name, threshold, zone and
hop), sampled as the run's features were (a run trained on ``--fps 5`` features
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from anomalyclip.events import Event, EventConfig, EventTracker
from anomalyclip.extract.decode import Sampling
from anomalyclip.extract.encoder import ImageEncoder
from anomalyclip.inputs import Source, display_name
from anomalyclip.live import report
from anomalyclip.live.cameras import Camera, unique_name
from anomalyclip.live.clips import ClipRecorder, FrameRing
from anomalyclip.live.config import WatchConfig
from anomalyclip.live.run import load_for_watch, run_sampling, run_threshold_value
from anomalyclip.live.schedule import RoundRobin
from anomalyclip.live.sinks import Sink, encode, now_iso, standard_sinks
from anomalyclip.live.sources import FrameItem, FrameQueue, Notice, Reader
from anomalyclip.live.stats import (
    LagHistogram,
    SourceStats,
    public_state,
)
from anomalyclip.live.ui_state import UiState
from anomalyclip.live.window import (
    CausalWindow,
    Window,
    live_score_fn,
    rows_per_second,
    score_windows,
)

__all__ = ["Watcher", "load_for_watch", "run_sampling", "run_threshold_value", "rows_per_second"]

log = logging.getLogger(__name__)


@dataclass
class _Stream:
    """The scoring loop's state of one source."""

    camera: Camera
    events: EventConfig  # the camera's threshold
    stats: SourceStats
    queue: FrameQueue
    reader: Reader
    ring: FrameRing | None
    state: str = ""  # as last announced to the sinks (online, reconnecting, offline)
    window: CausalWindow | None = None
    tracker: EventTracker | None = None
    lost: dict | None = None  # the break being waited out (reason, time)
    ended: bool = False
    failed: str | None = None
    # open events' first frame -> why their clip failed (None: being written)
    clips: dict[int, str | None] = field(default_factory=dict)
    last: tuple[float, int, int] = (0.0, 0, 0)  # (monotonic, sampled, scored) at last status

    @property
    def source(self) -> str:
        """The source, its credentials masked: the ``source`` of its lines."""
        return display_name(self.camera.source)

    @property
    def label(self) -> str:
        """How status and summary lines name it (:class:`~anomalyclip.live.cameras.Camera`)."""
        return self.camera.label


class Watcher:
    """Scores ``sources`` (cameras, or plain sources named after their address) with
    ``model`` (eval mode; or an exported scorer) on ``encoder``'s CLIP features, taken at
    ``sampling``; writes events under ``cfg.out`` (module docstring)."""

    def __init__(
        self,
        sources: list[Source | Camera],
        model: torch.nn.Module,
        encoder: ImageEncoder,
        sampling: Sampling,
        cfg: WatchConfig,
        stdout: TextIO | None = None,
    ) -> None:
        self.model, self.encoder, self.sampling, self.cfg = model, encoder, sampling, cfg
        self.out = Path(cfg.out)
        exported = not isinstance(model, torch.nn.Module)  # runs on the CPU, takes CPU arrays
        self.device = None if exported else next(model.parameters()).device
        self.score_fn = live_score_fn(model)
        self.labels = (list(model.cfg.classes), model.cfg.normal_id)
        self.capacity = model.cfg.num_segments * model.cfg.seg_length
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.hurry = threading.Event()  # a second stop: give up what the shutdown waits for
        self.out.mkdir(parents=True, exist_ok=True)
        self.clips = (
            ClipRecorder(self.out / "clips", cfg.pre_roll, cfg.post_roll)
            if cfg.save_clips
            else None
        )
        self.clip_counts = {"written": 0, "failed": 0, "unfinished": 0}
        self.timings = {"clip": LagHistogram(), "temporal": LagHistogram()}  # seconds a batch
        self.schedule = RoundRobin()
        self.lines = 0  # lines reported (each sink counts what it delivered)
        self._failing_sinks: set[str] = set()
        self.streams: list[_Stream] = []
        self.ui = UiState(cfg.events.threshold, self.out, cfg.save_clips) if cfg.ui else None
        names: set[str] = set()
        for item in sources:
            camera = item if isinstance(item, Camera) else Camera.of(item)
            camera = replace(camera, name=unique_name(camera.name, names))
            stats = SourceStats()
            queue = FrameQueue(cfg.read.queue, cfg.read.drops_oldest(camera.source), self._wake,
                               stats)  # fmt: skip
            seconds = cfg.pre_roll + cfg.events.min_duration + (camera.hop or cfg.hop) + 10.0
            ring = FrameRing(seconds) if cfg.save_clips else None
            preview = self.ui.camera(display_name(camera.source), stats) if self.ui else None
            reader = Reader(camera.source, sampling, cfg.read, queue, self._stop, ring, preview,
                            camera.zone)  # fmt: skip
            events = cfg.events if camera.threshold is None else \
                replace(cfg.events, threshold=camera.threshold)  # fmt: skip
            self.streams.append(_Stream(camera, events, stats, queue, reader, ring))
        self._by_camera = {s.camera.name: s for s in self.streams}
        # every line goes to each sink (stdout, events.jsonl, webhook, MQTT, metrics, page)
        self.sinks: list[Sink] = standard_sinks(cfg, stdout, self)
        self.sinks += [self.ui] if self.ui is not None else []
        self.started = self.finished = 0.0
        # called with (label, frames, times, p, probs) for every scored hop (tests, benchmarks)
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
        for sink in self.sinks:
            sink.start()
        for s in self.streams:
            s.last = (self.started, 0, 0)
            s.reader.start()
        if self.clips is not None:
            self.clips.start()
        try:
            self._loop()
        finally:
            self._finish()
        return self.summary()

    def summary(self) -> dict:
        """What the watch did: counts, lag, outputs, per source (:func:`report.summary`)."""
        return report.summary(self)

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
            self._announce_states()
            if time.monotonic() >= next_status:
                report.status_lines(self)
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
            t0 = time.perf_counter()
            emb = self.encoder(pixels).numpy()  # (n, D)
            self.timings["clip"].add(time.perf_counter() - t0)
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
        t0 = time.perf_counter()
        results = score_windows(
            [w for _, w in windows],
            self.score_fn,
            self.model.cfg.num_segments,
            self.model.cfg.seg_length,
            device=self.device,
        )
        self.timings["temporal"].add(time.perf_counter() - t0)
        now = time.monotonic()
        for (s, w), (p, probs) in zip(windows, results, strict=True):
            lag = now - w.arrivals
            s.stats.lag.add(lag)
            s.stats.recent_lag.add(lag)
            s.stats.scored += len(p)
            if self.on_rows is not None:
                self.on_rows(s.label, w.frames, w.times, p, probs)
            self._each_sink("scores", s.source, w.times, p, lag)
            updates = s.tracker.push(w.frames, w.times, p, probs)
            if any(e.duration >= self.cfg.max_event for k, e in updates if k != "closed"):
                updates += s.tracker.close()  # a camera abnormal for hours: bounded pieces
            for kind, event in updates:
                self._report(s, kind, event)

    def _notice(self, s: _Stream, notice: Notice) -> None:
        d = notice.detail
        if notice.kind == "connected":
            rate = rows_per_second(self.sampling, d["fps"])
            hop = int(min(self.capacity, max(1, round((s.camera.hop or self.cfg.hop) * rate))))
            s.window = CausalWindow(self.encoder.dim, self.capacity, hop)
            s.tracker = EventTracker(
                s.source, self.labels, s.events, 1.0 / rate, self.cfg.update_every
            )
            log.info("%s: %.3g fps, %.3g rows/s, hop %d rows, threshold %.4f", s.label,
                     d["fps"], rate, hop, s.events.threshold)  # fmt: skip
        elif notice.kind == "lost":
            self._break_off(s)
            s.lost = d
        elif notice.kind == "gap":
            s.lost = None
            self.log_line({"kind": "gap", "source": s.source, "camera": s.camera.name, **d})
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
        record = {"kind": kind, "camera": s.camera.name, **event.to_dict()}
        if self.clips is not None and s.ring is not None:
            key = event.start_frame
            if key not in s.clips:
                s.clips[key] = self.clips.open(s.camera.name, s.ring, key, event.start_time)
            if s.clips[key] is not None:
                record["clip_error"] = s.clips[key]
            if kind == "closed":
                self.clips.close_clip(s.camera.name, key, event.end_time)
                del s.clips[key]
        self.log_line(record)

    def _report_clips(self) -> None:
        """A ``clip`` line for each clip that is over: its file once complete, or why not."""
        while self.clips is not None and self.clips.done:
            done = self.clips.done.popleft()
            s = self._by_camera[done.source]
            record = {"kind": "clip", "source": s.source, "camera": s.camera.name,
                      "start_frame": done.start_frame,
                      "clip": None if done.path is None else str(done.path),
                      "frames": done.frames}  # fmt: skip
            self.clip_counts["written" if done.error is None else "failed"] += 1
            if done.error is not None:
                record["clip_error"] = done.error
                if done.start_frame in s.clips:  # the event is still open
                    s.clips[done.start_frame] = done.error
            self.log_line(record)

    def log_line(self, record: dict) -> None:
        """Hand one line to every sink; a sink that fails never stops the others."""
        record = {"kind": record["kind"], "source": record["source"], **record}
        record["reported_at"] = now_iso()
        line = encode(record)
        self.lines += 1
        self._each_sink("write", record, line)

    def _each_sink(self, method: str, *args) -> None:
        for sink in self.sinks:
            try:
                getattr(sink, method)(*args)
            except Exception:  # noqa: BLE001 - a bug in one output must not end the others
                if sink.name not in self._failing_sinks:
                    self._failing_sinks.add(sink.name)
                    log.exception("output %s failed; the other outputs go on", sink.name)

    def _announce_states(self, final: bool = False) -> None:
        """Tell the sinks of each camera whose state (online, reconnecting, offline) changed;
        at the end (``final``) every camera is offline."""
        for s in self.streams:
            state = "offline" if final else public_state(s.stats.state)
            if state != s.state:
                s.state = state
                self._each_sink("state", s.camera.name, state)

    def _finish(self) -> None:
        self._stop.set()
        for s in self.streams:
            if not s.ended:
                self._break_off(s)
            if s.lost is not None:  # still waiting for the source to come back
                lost = {"start": s.lost.get("time"), "end": None, "seconds": None}
                self.log_line({"kind": "gap", "source": s.source, "camera": s.camera.name,
                               **lost, "reason": s.lost.get("reason")})  # fmt: skip
        deadline = time.monotonic() + 2.0  # readers stuck in FFmpeg end with the process
        for s in self.streams:
            if not self.hurry.is_set():
                s.reader.join(max(0.0, deadline - time.monotonic()))
        if self.clips is not None:
            self.clip_counts["unfinished"] = self.clips.finish(self.hurry)
            self._report_clips()
        self._announce_states(final=True)
        for sink in self.sinks:
            sink.close(self.hurry)
        self.finished = time.monotonic()
        report.summary_lines(self)
