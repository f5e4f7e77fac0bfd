"""``anomaly watch``: cameras and streams scored as they arrive, anomaly events as JSON lines.

Shape of a watch::

    source ─► [reader thread] ─► FrameQueue ─┐
    source ─► [reader thread] ─► FrameQueue ─┼─► scoring loop (this thread):
                                             │     one CLIP forward for the frames of all sources
                                             │     rows into each source's CausalWindow
                                             │     every hop, the windows of all sources through
                                             │       one temporal-model forward
                                             └─►   EventTracker per source ─► EventLog (stdout,
                                                   events.jsonl), Webhook, ClipRecorder

Every source is sampled as the run's features were (a run trained on ``--fps 5`` features
watches at 5 rows per second); its rows are scored causally (:mod:`anomalyclip.live.window`)
and turned into the same :class:`~anomalyclip.events.Event` objects offline ``predict``
finds, reported when they open, while they grow and when they close. An event still open
after ``max_event`` seconds is closed there and the next piece opens with the next abnormal
row, so what an open event holds stays bounded on a stream that never ends. A source that breaks
off has its open events closed at its last frame and its context reset; when it comes back
a ``gap`` line says where and for how long. :meth:`Watcher.stop` (the command's SIGINT /
SIGTERM handler) ends the loop: open events are closed and written, clips finished, files
flushed.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
import torch

from anomalyclip import checks
from anomalyclip.errors import AnomalyError
from anomalyclip.events import Event, EventTracker
from anomalyclip.extract.decode import Sampling
from anomalyclip.extract.encoder import ImageEncoder
from anomalyclip.inputs import Source, display_name
from anomalyclip.live.config import WatchConfig
from anomalyclip.live.outputs import (
    ClipRecorder,
    EventLog,
    Webhook,
    WebhookConfig,
    now_iso,
)
from anomalyclip.live.sources import FrameItem, FrameQueue, FrameRing, Notice, Reader
from anomalyclip.live.stats import LagHistogram, SourceStats
from anomalyclip.live.window import CausalWindow, Window, frozen_text_score_fn, score_windows

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
    clips: dict[int, str] = field(default_factory=dict)  # open event's first frame -> clip
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
        self.log = EventLog(self.out / "events.jsonl", stdout)
        self.webhook = Webhook(WebhookConfig(cfg.webhook)) if cfg.webhook else None
        self.clips = ClipRecorder(self.out / "clips", cfg.pre_roll, cfg.post_roll)
        self.streams: list[_Stream] = []
        ring_seconds = cfg.pre_roll + cfg.events.min_duration + cfg.hop + 10.0
        for source in sources:
            stats = SourceStats()
            queue = FrameQueue(cfg.read.queue, cfg.read.drops_oldest(source), self._wake, stats)
            ring = FrameRing(ring_seconds) if cfg.save_clips else None
            reader = Reader(source, sampling, cfg.read, queue, self._stop, ring)
            self.streams.append(_Stream(source, stats, queue, reader, ring))
        self.started = self.finished = 0.0
        # called with (source, frames, times, p, probs) for every scored hop (tests, benchmarks)
        self.on_rows: Callable[..., None] | None = None

    # -- control -----------------------------------------------------------------------------
    def stop(self) -> None:
        """End the watch (safe from a signal handler or another thread)."""
        self._stop.set()
        self._wake.set()

    def run(self) -> dict:
        """Watch until every source has ended (files) or :meth:`stop`; returns the summary."""
        self.started = time.monotonic()
        for s in self.streams:
            s.last = (self.started, 0, 0)
            s.reader.start()
        if self.webhook:
            self.webhook.start()
        if self.cfg.save_clips:
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
            "events": self.log.lines,
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
            if time.monotonic() >= next_status:
                self._status()
                next_status = time.monotonic() + self.cfg.status_every

    def _gather(self) -> list[tuple[_Stream, list[FrameItem | Notice]]]:
        """Up to ``batch_size`` frames, shared fairly among the sources that have some."""
        active = [s for s in self.streams if not s.ended]
        if not active:
            return []
        budget = self.cfg.batch_size
        share = max(1, budget // len(active))
        taken: list[tuple[_Stream, list]] = []
        busy = active
        for _ in range(2):  # a second pass gives the rest of the budget to busy sources
            more = []
            for s in busy:
                if budget <= 0:
                    break
                items = s.queue.take(min(share, budget))
                if items:
                    taken.append((s, items))
                    frames = sum(isinstance(i, FrameItem) for i in items)
                    budget -= frames
                    # a notice must be handled before the frames after it: none this round
                    if frames == len(items) and frames == min(share, budget + frames):
                        more.append(s)
            busy, share = more, budget
        return taken

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
        if self.cfg.save_clips and s.ring is not None:
            key = event.start_frame
            if key not in s.clips:
                s.clips[key] = str(self.clips.open(s.name, s.ring, key, event.start_time))
            record["clip"] = s.clips[key]
            if kind == "closed":
                self.clips.close_clip(s.name, key, event.end_time)
                del s.clips[key]
        self.log_line(record)

    def log_line(self, record: dict) -> None:
        record = {"kind": record["kind"], "source": record["source"], **record}
        record["reported_at"] = now_iso()
        self.log.write(record)
        if self.webhook:
            self.webhook.send(record)

    def _status(self) -> None:
        now = time.monotonic()
        for s in self.streams:
            t, sampled, scored = s.last
            dt = max(now - t, 1e-9)
            st = s.stats
            lag = st.recent_lag
            sys.stderr.write(
                f"status {s.name}: {st.state}, in {(st.sampled - sampled) / dt:.1f} fps, "
                f"scored {(st.scored - scored) / dt:.1f} fps, lag p50 {_lag(lag, 50)} "
                f"p99 {_lag(lag, 99)}, dropped {st.dropped}, gaps {st.gaps}, "
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
                self.log_line(
                    {
                        "kind": "gap",
                        "source": s.name,
                        "start": s.lost.get("time"),
                        "end": None,
                        "seconds": None,
                        "reason": s.lost.get("reason"),
                    }
                )
        for s in self.streams:
            s.reader.join(timeout=2.0)
        if self.cfg.save_clips:
            self.clips.finish()
        if self.webhook:
            self.webhook.close()
        self.finished = time.monotonic()
        for s in self.streams:
            st = s.stats
            sys.stderr.write(
                f"summary {s.name}: decoded {st.decoded}, sampled {st.sampled}, scored "
                f"{st.scored}, dropped {st.dropped}, corrupt {st.corrupt}, gaps {st.gaps}, "
                f"resolution changes {st.resolution_changes}, lag p50 {_lag(st.lag, 50)} "
                f"p99 {_lag(st.lag, 99)}\n"
            )
        sys.stderr.flush()
        self.log.close()


def _lag(histogram, q: float) -> str:
    """``0.42 s``, or ``-`` while no row has been scored (no lag to tell)."""
    value = histogram.percentile(q)
    return "-" if math.isnan(value) else f"{value:.2f} s"


def run_threshold(config: dict, checkpoint: str | Path, given: float | None) -> float:
    """``given`` (``--threshold``), else the run's calibrated decision threshold."""
    if given is not None:
        if not 0.0 <= given <= 1.0:
            raise AnomalyError(f"--threshold {given}: a probability in [0, 1]")
        return float(given)
    chosen = config.get("threshold") or {}
    if chosen.get("value") is None:
        raise AnomalyError(
            f"{checkpoint}: the run has no decision threshold (trained without held-out "
            "normal videos?); pass --threshold P"
        )
    return float(chosen["value"])


def run_sampling(config: dict, checkpoint: str | Path) -> Sampling:
    """The sampling of the features the run was trained on: its config's store record, else
    the store's own attributes, else every frame (with a warning)."""
    store = config.get("store") or {}
    described = store.get("sampling")
    if described is None and store.get("location"):
        from anomalyclip.store import open_store

        try:
            with open_store(store["location"]) as st:
                described = st.meta.sampling
        except Exception as exc:  # noqa: BLE001 - any failure means "not known here"
            log.debug("%s: cannot read the store's sampling (%s)", store["location"], exc)
    if not described:
        log.warning("%s: the run does not record its features' sampling; every frame", checkpoint)
        return Sampling()
    return Sampling(described.get("mode", "all"), described.get("value"))


def load_for_watch(
    checkpoint: str | Path, clip: str | None, device: str | None, precision: str = "auto"
) -> tuple[torch.nn.Module, ImageEncoder, dict]:
    """The run's model (eval mode, on ``device``), the image tower that makes its features
    (``clip``, default the run's; it also gives the text tower), and the run's config."""
    from anomalyclip.runs import default_device, load_model, run_clip

    dev = default_device(device)
    model, config = load_model(checkpoint, clip)
    model.to(dev)
    checks.precision(precision)
    clip = clip or run_clip(checkpoint, config)
    encoder = ImageEncoder(clip, str(dev), precision)
    if encoder.dim != model.cfg.feature_dim:
        raise AnomalyError(
            f"{clip}: image embeddings have {encoder.dim} dims but the run {checkpoint} takes "
            f"{model.cfg.feature_dim}"
        )
    return model, encoder, config
