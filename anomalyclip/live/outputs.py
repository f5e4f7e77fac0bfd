"""Where a watch's events go: JSON lines, a webhook, and MP4 clips.

- :class:`EventLog`: one JSON object per line on stdout and appended to ``events.jsonl``,
  flushed at once, so a watch killed at any moment leaves every reported line on disk.
- :class:`Webhook`: each line POSTed as JSON from a background thread, with retries and
  doubling back-off; a bounded queue (the oldest line is dropped and counted when full)
  means a slow or dead receiver can never hold up scoring or grow memory.
- :class:`ClipRecorder`: when an event opens, its frames from ``pre_roll`` seconds before
  it are taken from the source's :class:`~anomalyclip.live.sources.FrameRing` and written,
  with the frames that follow, to ``clips/<source>-<first frame>.mp4`` until ``post_roll``
  seconds after it closes. Encoding runs in its own thread.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import av
import numpy as np

from anomalyclip.extract.decode import Converter
from anomalyclip.live.sources import FrameRing
from anomalyclip.synthetic import video_codec

log = logging.getLogger(__name__)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def safe_source_name(source: str) -> str:
    """A file-name-safe form of a source: a file's name without its suffix, a URL's host,
    port and path (``rtsp://10.0.0.5:554/cam1`` -> ``10.0.0.5_554_cam1``)."""
    text = str(source)
    if re.match(r"^[a-z][a-z0-9+.-]*://", text, flags=re.I):
        name = re.sub(r"^[a-z0-9+.-]+://([^@/]*@)?", "", text, flags=re.I)  # no credentials
    else:
        name = Path(text).stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")
    return name[-80:] or "source"


class EventLog:
    """JSON lines to ``stream`` (stdout) and appended to ``path``, each flushed at once."""

    def __init__(self, path: Path, stream: TextIO | None = None) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.stream = stream if stream is not None else sys.stdout
        self._fh = path.open("a", encoding="utf-8")
        self.lines = 0

    def write(self, record: dict) -> None:
        line = json.dumps(record, allow_nan=False, default=_plain)
        self._fh.write(line + "\n")
        self._fh.flush()
        try:
            self.stream.write(line + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):  # stdout closed by a consumer: keep the file
            pass
        self.lines += 1

    def close(self) -> None:
        self._fh.close()


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    queue: int = 1000  # lines waiting; the oldest is dropped when full
    retries: int = 5  # attempts after the first
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    max_backoff: float = 30.0
    timeout: float = 5.0  # seconds per request


class Webhook(threading.Thread):
    """POST each record as JSON to ``cfg.url`` (module docstring). ``sent``, ``failed`` (given
    up after every retry) and ``dropped`` (queue full) are counted."""

    def __init__(self, cfg: WebhookConfig) -> None:
        super().__init__(name="webhook", daemon=True)
        self.cfg = cfg
        self._queue: deque[dict] = deque()
        self._cond = threading.Condition()
        self._closing = False  # deliver what is queued, then stop
        self._abort = threading.Event()  # the time to deliver it is over
        self.sent = self.failed = self.dropped = 0

    def send(self, record: dict) -> None:
        """Queue ``record``; never blocks."""
        with self._cond:
            if len(self._queue) >= self.cfg.queue:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append(record)
            self._cond.notify()

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is queued for up to ``timeout`` seconds, then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self.join(timeout)
        self._abort.set()

    def run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                record = self._queue.popleft()
            self._deliver(record)

    def _deliver(self, record: dict) -> None:
        body = json.dumps(record, default=_plain).encode()
        delay = self.cfg.backoff
        for attempt in range(self.cfg.retries + 1):
            request = urllib.request.Request(
                self.cfg.url, body, {"Content-Type": "application/json"}, method="POST"
            )
            try:
                with urllib.request.urlopen(request, timeout=self.cfg.timeout) as response:
                    response.read()
                self.sent += 1
                return
            except (urllib.error.URLError, OSError, ValueError) as exc:
                why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
                log.debug("webhook attempt %d failed: %s", attempt + 1, why)
            if attempt < self.cfg.retries:
                if self._abort.wait(delay):  # the watch has ended and its time to drain too
                    break
                delay = min(self.cfg.max_backoff, 2 * delay)
        self.failed += 1
        log.warning("webhook %s: gave up on a %s line", self.cfg.url, record.get("kind"))


@dataclass
class _Clip:
    source: str
    ring: FrameRing
    path: Path
    start: float  # first time to write (event start - pre-roll)
    end: float | None = None  # last time to write (event end + post-roll), once known
    written: float = float("-inf")  # time of the last frame written
    container: av.container.OutputContainer | None = None
    stream: av.VideoStream | None = None
    frames: int = 0
    fps: int = 25  # the clip's frame rate (the source's, rounded)
    t0: float = 0.0  # time of the first frame written
    pts: int = -1  # of the last frame written, in 1 / frame rate units
    convert: Converter = field(default_factory=Converter)  # RGB -> the encoder's yuv420p


class ClipRecorder(threading.Thread):
    """MP4 clips of events, cut from the sources' frame rings (module docstring)."""

    def __init__(self, folder: Path, pre_roll: float = 2.0, post_roll: float = 2.0) -> None:
        super().__init__(name="clips", daemon=True)
        self.folder, self.pre_roll, self.post_roll = folder, pre_roll, post_roll
        self._clips: dict[tuple[str, int], _Clip] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self.written: list[Path] = []

    def path_for(self, source: str, start_frame: int) -> Path:
        return self.folder / f"{safe_source_name(source)}-{start_frame:09d}.mp4"

    def open(self, source: str, ring: FrameRing, start_frame: int, start_time: float) -> Path:
        path = self.path_for(source, start_frame)
        with self._lock:
            self._clips[(source, start_frame)] = _Clip(
                source, ring, path, start_time - self.pre_roll
            )
        return path

    def close_clip(self, source: str, start_frame: int, end_time: float) -> None:
        """The event ended at ``end_time``: write on until ``post_roll`` seconds after it."""
        with self._lock:
            clip = self._clips.get((source, start_frame))
            if clip is not None:
                clip.end = end_time + self.post_roll

    def finish(self, timeout: float = 10.0) -> None:
        """Write what the rings still hold, close every clip and stop."""
        with self._lock:
            for clip in self._clips.values():
                if clip.end is None:
                    clip.end = float("inf")
        self._done.set()
        self.join(timeout)

    def run(self) -> None:
        while True:
            stopping = self._done.is_set()
            with self._lock:
                clips = list(self._clips.items())
            for key, clip in clips:
                self._advance(clip)
                done = clip.end is not None and (clip.written >= clip.end or stopping)
                if done:
                    self._close(clip)
                    with self._lock:
                        self._clips.pop(key, None)
            if stopping:
                return
            self._done.wait(0.1)

    def _advance(self, clip: _Clip) -> None:
        for t, image in clip.ring.since(max(clip.written, clip.start - 1e-9)):
            if clip.end is not None and t > clip.end:
                break
            try:
                self._write(clip, t, image)
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                log.warning("%s: clip frame not written (%s)", clip.path, exc)
            clip.written = t

    def _write(self, clip: _Clip, t: float, image: np.ndarray) -> None:
        if clip.container is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = clip.path.with_name(clip.path.name + ".part")
            clip.container = av.open(str(tmp), mode="w", format="mp4")
            clip.fps = max(1, round(clip.ring.fps or 25))
            clip.stream = clip.container.add_stream(video_codec(), rate=clip.fps)
            clip.stream.height, clip.stream.width = image.shape[:2]
            clip.stream.pix_fmt = "yuv420p"
            clip.t0 = t
        frame = clip.convert.for_encoder(image, clip.stream.width, clip.stream.height)
        pts = max(clip.pts + 1, round((t - clip.t0) * clip.fps))
        frame.pts, clip.pts = pts, pts
        clip.container.mux(clip.stream.encode(frame))
        clip.frames += 1

    def _close(self, clip: _Clip) -> None:
        if clip.container is None:
            return
        try:
            clip.container.mux(clip.stream.encode(None))
            clip.container.close()
            clip.path.with_name(clip.path.name + ".part").replace(clip.path)
            self.written.append(clip.path)
            log.info("clip %s: %d frames", clip.path, clip.frames)
        except (av.error.FFmpegError, OSError) as exc:
            log.warning("%s: clip could not be finished (%s)", clip.path, exc)
