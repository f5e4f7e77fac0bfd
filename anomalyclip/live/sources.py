"""Reading sources as they arrive: one thread per source decodes, samples, crops and queues.

A :class:`Reader` opens its source with PyAV, decodes every packet, keeps the frames the
run's :class:`~anomalyclip.extract.decode.Sampling` keeps, turns each (cut to its camera's
zone, :mod:`anomalyclip.extract.zone`, when it has one) into the 224x224 uint8 CLIP crop the
extractor makes (:func:`~anomalyclip.extract.preprocess.crop_frame`, so live
features are the stored features of the same frames) and puts it on its source's
:class:`FrameQueue`, where the scoring loop takes it. Every decoded frame also goes to the
clips' frame ring (downscaled) and to the live page's preview (which makes a JPEG of about one
a second), where the watch has them.

- **Kinds of source.** Anything :func:`anomalyclip.inputs.is_live` calls live (URLs,
  ``/dev/videoN``) is opened with low-latency options (RTSP over TCP or UDP, UDP with a
  non-fatal receive buffer, V4L2 by its device format) and read forever. A file is read
  once, as fast as the model takes it, or paced at its own frame rate (``realtime``).
- **Time.** A row's time is its presentation time in seconds (repaired to increase strictly,
  as the extractor repairs it, so a file read live carries the very frame numbers and times
  offline extraction gives it). A live stream that breaks off and comes back continues after
  the wall-clock length of the gap; frame numbers count every decoded frame of the watch.
- **Faults.** A packet the demuxer flags as corrupt, or one the decoder refuses, is counted
  and skipped; frames of a new size (a resolution change) are cropped like any other. A live
  source that delivers nothing for ``stall`` seconds, ends, or fails is reopened after a
  back-off (``backoff`` seconds, doubling up to ``max_backoff``), and the queue gets a
  ``lost`` notice when it breaks and a ``gap`` notice (where and for how long) when frames
  flow again.
- **Falling behind.** The queue holds ``queue`` frames. When it is full, ``drop="oldest"``
  (the default for live sources) drops the oldest waiting frame and counts it, so the lag
  and the memory stay bounded; ``drop="none"`` (the default for files) makes the reader wait.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from typing import TYPE_CHECKING

import av
import torch

from anomalyclip.extract.decode import (
    REORDER_WINDOW,
    Converter,
    Sampling,
    _Sampler,
    _short,
    _TimeRepair,
)
from anomalyclip.extract.preprocess import crop_frame, frame_pixels
from anomalyclip.extract.zone import Zone
from anomalyclip.inputs import Source, display_name, is_live, redact
from anomalyclip.live.clips import FrameRing
from anomalyclip.live.config import ReadConfig
from anomalyclip.live.stats import SourceStats

if TYPE_CHECKING:
    from anomalyclip.live.ui_state import Preview

log = logging.getLogger(__name__)


@dataclass
class FrameItem:
    """A sampled frame, cropped for CLIP."""

    index: int  # decoded frame number within the watch
    time: float  # seconds
    pixels: torch.Tensor  # (3, 224, 224) uint8
    arrival: float  # time.monotonic() when it was due (Reader._arrival): lag counts from here


@dataclass
class Notice:
    """A change in a source's state, queued in order with its frames.

    ``connected`` (detail: fps, the nominal frame rate), ``lost`` (the stream broke off:
    reason, last time), ``gap`` (frames flow again: start, end, seconds, reason) and
    ``ended`` (a file is done, or failed: reason or None).
    """

    kind: str
    detail: dict = field(default_factory=dict)


class FrameQueue:
    """One source's items waiting for the scoring loop: frames and notices, in order.

    Bounded by ``capacity`` frames. When full, ``drop_oldest`` removes the oldest waiting
    frame (counted in ``stats.dropped``); otherwise :meth:`put` waits for room. Notices are
    never dropped and never wait. ``wake`` is set on every put, for the loop to sleep on.
    """

    def __init__(
        self, capacity: int, drop_oldest: bool, wake: threading.Event, stats: SourceStats
    ) -> None:
        self.capacity, self.drop_oldest, self.wake, self.stats = capacity, drop_oldest, wake, stats
        self._items: deque = deque()
        self._frames = 0
        self._cond = threading.Condition()

    def put(self, item: FrameItem | Notice, stop: threading.Event) -> bool:
        """Queue ``item``; False when ``stop`` was set while waiting for room."""
        with self._cond:
            if isinstance(item, FrameItem):
                while self._frames >= self.capacity:
                    if self.drop_oldest:
                        k = next(i for i, x in enumerate(self._items) if isinstance(x, FrameItem))
                        del self._items[k]
                        self._frames -= 1
                        self.stats.dropped += 1
                    elif stop.is_set():
                        return False
                    else:
                        self._cond.wait(0.05)
                self._frames += 1
            self._items.append(item)
        self.wake.set()
        return True

    def take(self, n: int) -> list[FrameItem | Notice]:
        """Up to ``n`` frames in order, stopping after the first notice (which is included),
        so a notice is handled after the frames before it and before those after it."""
        out: list[FrameItem | Notice] = []
        with self._cond:
            while self._items and len(out) < n:
                item = self._items.popleft()
                out.append(item)
                if not isinstance(item, FrameItem):
                    break
                self._frames -= 1
            self._cond.notify_all()
        return out

    def __len__(self) -> int:
        return len(self._items)


class StreamClock:
    """Times of one source across connections: each connection's repaired presentation times,
    shifted so the watch's times increase strictly, and a connection that follows a break
    starts after the wall-clock length of the break."""

    def __init__(self) -> None:
        self.last: float | None = None  # time of the last frame
        self.last_wall: float | None = None  # monotonic seconds when it arrived
        self._offset = 0.0
        self._period = 1 / 30

    def connect(self, period: float, resume: str) -> None:
        """A new connection: ``resume`` is ``"wall"`` (after a break: continue after the wall
        time that passed) or ``"next"`` (a file looping: continue one period later)."""
        self._period = period
        self._resume = resume if self.last is not None else "start"
        self._first = True

    def time(self, relative: float, wall: float) -> float:
        """The watch time of a frame at ``relative`` seconds into its connection."""
        if self._first:
            self._first = False
            if self._resume == "wall":
                self._offset = self.last + max(wall - self.last_wall, self._period) - relative
            elif self._resume == "next":
                self._offset = self.last + self._period - relative
        t = self._offset + relative
        if self.last is not None and t <= self.last:
            t = self.last + self._period
        self.last, self.last_wall = t, wall
        return t


class Reader(threading.Thread):
    """The thread that reads one source into its :class:`FrameQueue` (module docstring)."""

    def __init__(
        self,
        source: Source,
        sampling: Sampling,
        cfg: ReadConfig,
        queue: FrameQueue,
        stop: threading.Event,
        ring: FrameRing | None = None,
        preview: Preview | None = None,
        zone: Zone | None = None,
    ) -> None:
        super().__init__(name=f"read-{display_name(source)}", daemon=True)
        self.source, self.sampling, self.cfg = source, sampling, cfg
        self.label = display_name(source)  # for messages: no password
        self.queue, self.stop, self.ring = queue, stop, ring
        self.preview, self.zone = preview, zone
        self.stats = queue.stats
        self.live = is_live(source)
        self.clock = StreamClock()
        self._sampler = _Sampler(sampling)
        self._anchor: tuple[float, float] | None = None  # (time, wall) of the timeline
        self._to_ring, self._to_model = Converter(), Converter()  # one size each

    # -- the connection loop -----------------------------------------------------------------
    def run(self) -> None:
        attempt = 0
        lost: dict | None = None  # the break being bridged: reason, last time, wall time
        connected_once = False
        while not self.stop.is_set():
            self.stats.state = "connecting" if attempt == 0 else f"reconnecting ({attempt})"
            try:
                container = self._open()
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                reason = f"cannot open: {_why(exc)}"
                if isinstance(exc, av.error.ProtocolNotFoundError):
                    reason = f"this FFmpeg build cannot read {str(self.source).split(':')[0]}://"
                if not self.live or isinstance(exc, av.error.ProtocolNotFoundError):
                    self.stats.state = "failed"
                    self._put(Notice("ended", {"reason": f"{self.label}: {reason}"}))
                    return
                lost = lost or {"reason": reason, "start": self.clock.last, "wall": None}
                attempt += 1
                self._wait(attempt, reason)
                continue
            reason = "end of stream"
            frames_before = self.stats.decoded
            try:
                with container:
                    reason = self._read(container, lost, connected_once) or reason
            except (av.error.FFmpegError, OSError, ValueError, EOFError) as exc:
                reason = _why(exc)
                if isinstance(exc, av.error.ExitError):
                    reason = f"no data for {self.cfg.stall:g} s"
            except Exception as exc:  # a decoder bug must not end the watch silently
                trace = "".join(traceback.format_exception(exc))
                log.error("%s: unexpected error while reading\n%s", self.label, redact(trace))
                reason = f"unexpected {type(exc).__name__}: {_why(exc)}"
            got_frames = self.stats.decoded > frames_before
            if got_frames:
                lost, attempt, connected_once = None, 0, True
            if self.stop.is_set():
                break
            if not self.live:
                if self.cfg.loop and got_frames and reason == "end of stream":
                    continue
                ended = None if reason == "end of stream" else f"{self.label}: {reason}"
                self.stats.state = "ended" if ended is None else "failed"
                self._put(Notice("ended", {"reason": ended}))
                return
            if got_frames:  # a live stream broke off
                lost = {"reason": reason, "start": self.clock.last, "wall": self.clock.last_wall}
                self._put(Notice("lost", {"reason": reason, "time": self.clock.last}))
                log.warning("%s: stream lost (%s); reconnecting", self.label, reason)
            attempt += 1
            self._wait(attempt, reason)
        self.stats.state = "stopped"

    def _wait(self, attempt: int, reason: str) -> None:
        delay = min(self.cfg.max_backoff, self.cfg.backoff * 2 ** (attempt - 1))
        self.stats.reconnects += 1
        self.stats.state = f"reconnecting in {delay:g} s ({reason})"
        self.stop.wait(delay)

    def _put(self, item: FrameItem | Notice) -> bool:
        return self.queue.put(item, self.stop)

    def _open(self) -> av.container.InputContainer:
        src = str(self.source)
        if not self.live:
            return av.open(src)
        options = {"analyzeduration": "1000000", "probesize": "1000000"}
        fmt = None
        if src.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = self.cfg.rtsp_transport
        elif src.startswith("udp://"):
            options.update(overrun_nonfatal="1", fifo_size="100000")
        elif src.startswith("/dev/video"):
            fmt = "video4linux2"
        return av.open(
            src, format=fmt, options=options, timeout=(self.cfg.open_timeout, self.cfg.stall)
        )

    # -- one connection ----------------------------------------------------------------------
    def _read(
        self, container: av.container.InputContainer, lost: dict | None, connected_once: bool
    ) -> str | None:
        """Decode until the connection ends; returns why it ended ("stopped" or None at the
        end of the stream)."""
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO" if not self.live else "SLICE"  # frame threads add delay
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        fps = float(rate)
        period = 1.0 / fps
        tb, start = stream.time_base, stream.start_time
        repair = _TimeRepair(period, REORDER_WINDOW if not self.live else 0)
        pending: deque[av.VideoFrame] = deque()
        self.clock.connect(period, "next" if not self.live else "wall")
        if not connected_once:
            self._put(Notice("connected", {"fps": fps}))
        if self.ring is not None:
            self.ring.fps = fps
        self.stats.state = "streaming" if self.live else "reading"
        first = [True]
        t0 = [None, None]  # (time, wall) of the first frame, for pacing

        def emit(frame: av.VideoFrame) -> bool:
            relative = repair.pop()
            if self.cfg.realtime and not self.live:
                self._pace(relative, t0)
            wall = time.monotonic()
            t = self.clock.time(relative, wall)
            if first[0]:
                first[0] = False
                self._gap(lost, t, wall)
            return self._emit(frame, t, self._arrival(t, wall))

        for packet in container.demux(stream):
            if self.stop.is_set():
                return "stopped"
            if packet.is_corrupt:
                self.stats.corrupt += 1
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                self.stats.corrupt += 1
                continue
            for frame in frames:
                nominal = None if frame.pts is None else float((frame.pts - (start or 0)) * tb)
                repair.push(nominal)
                pending.append(frame)
                if len(pending) > repair.window and not emit(pending.popleft()):
                    return "stopped"
        while pending:
            if not emit(pending.popleft()):
                return "stopped"
        return None

    def _gap(self, lost: dict | None, t: float, wall: float) -> None:
        """Frames flow again after ``lost`` (a break): a ``gap`` notice, where and how long."""
        if lost is None or lost.get("start") is None:
            return
        seconds = wall - lost["wall"] if lost.get("wall") else None
        self.stats.gaps += 1
        gap = {"start": lost["start"], "end": t, "seconds": seconds, "reason": lost["reason"]}
        self._put(Notice("gap", gap))

    def _pace(self, relative: float, t0: list) -> None:
        now = time.monotonic()
        if t0[0] is None:
            t0[0], t0[1] = relative, now
            return
        delay = t0[1] + (relative - t0[0]) / self.cfg.speed - now
        if delay > 0:
            self.stop.wait(delay)

    def _arrival(self, t: float, wall: float) -> float:
        """When the frame at ``t`` was due: on the stream's own timeline (anchored at the
        earliest-arriving frame so far) for live and paced sources, so time spent waiting in
        network or decoder buffers counts as lag; when it was decoded for files read as fast
        as possible, which have no timeline to be late on."""
        if not (self.live or self.cfg.realtime):
            return wall
        speed = 1.0 if self.live else self.cfg.speed
        due = None if self._anchor is None else self._anchor[1] + (t - self._anchor[0]) / speed
        if due is None or due > wall:  # on time or early: the timeline starts again here
            self._anchor = (t, wall)
            return wall
        return due

    def _emit(self, frame: av.VideoFrame, t: float, wall: float) -> bool:
        index = self.stats.decoded
        self.stats.decoded += 1
        size = (frame.width, frame.height)
        if self.stats.size is not None and size != self.stats.size:
            self.stats.resolution_changes += 1
            log.info("%s: resolution %dx%d -> %dx%d", self.label, *self.stats.size, *size)
        self.stats.size = size
        if self.ring is not None:
            w, h = self.ring.target_size(*size)
            self.ring.add(t, self._to_ring.rgb(frame, w, h))
        if self.preview is not None:
            self.preview.offer(frame)
        if not self._sampler.keep(index, t):
            return True
        self.stats.sampled += 1
        mode = self.cfg.preprocess
        image = self._to_model.pixels(frame, frame_pixels(mode))  # (H, W, 3)
        if self.zone is not None:  # (h, w, 3): the zone's box, outside masked
            image = self.zone.apply(image, frame_pixels(mode))
        pixels = crop_frame(image, mode, frame_pixels(mode))[0]  # (3, 224, 224) uint8
        return self._put(FrameItem(index, t, pixels, wall))


def _why(exc: BaseException) -> str:
    """An exception's first line, its URLs' credentials masked (before anything is cut: a
    password may hold the quote that ends a quoted URL)."""
    text = redact(str(exc).strip())
    return _short(RuntimeError(text)) if text else type(exc).__name__
