"""What the live page shows, collected from a watch as it runs: a :class:`Sink`.

The watch's threads only put small updates here, under one lock held for microseconds; the
page's server (:mod:`anomalyclip.live.ui`) reads them from its own thread. Everything is
bounded whatever the stream's length:

- per camera, its newest frame as a JPEG (:class:`Preview`: made on the camera's reader
  thread, at most about once a second, never on the scoring thread), the highest p(A) of
  each second of the last :data:`HISTORY` seconds, its reader's state and counters, and its
  open event;
- the last :data:`MAX_EVENTS` events, each with its clip's name once the ``clip`` line says
  the file is complete, and the decision made on the page;
- the clip files this watch wrote (the newest :data:`MAX_CLIPS`), by name: the only files
  the server ever opens besides its own page.

Updates carry sequence numbers; a reader keeps a :class:`Cursor` and asks for what changed
since (:meth:`UiState.updates`).
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
from PIL import Image

from anomalyclip.extract.decode import Converter
from anomalyclip.live.reviews import DECISIONS, REVIEWS
from anomalyclip.live.sinks import JsonLinesFile, Sink, encode, now_iso
from anomalyclip.live.stats import SourceStats

HISTORY = 300.0  # seconds of p(A) a tile draws
BIN = 1.0  # seconds per point of that curve (the highest p(A) within)
MAX_EVENTS = 50
MAX_CLIPS = 1000
_EVENT_FIELDS = ("source", "start_frame", "start_time", "end_time", "peak", "class",
                 "class_probability", "duration", "reported_at")  # fmt: skip


class Preview:
    """A source's newest frame as JPEG bytes, downscaled to ``side`` pixels on the longer
    side. :meth:`offer` is called by the reader thread with every decoded frame and encodes
    one about every ``every`` seconds of wall time (a few milliseconds on that thread)."""

    def __init__(self, every: float = 1.0, side: int = 480, quality: int = 75) -> None:
        self.every, self.side, self.quality = every, side, quality
        self.jpeg: bytes | None = None
        self.seq = 0  # frames encoded so far
        self.busy = 0.0  # seconds spent making them
        self._next = 0.0
        self._convert = Converter()

    def offer(self, frame: av.VideoFrame) -> None:
        wall = time.monotonic()
        if wall < self._next:
            return
        # keep a once-per-`every` cadence; after a pause, start it again half a period on
        self._next = max(self._next + self.every, wall + self.every / 2)
        t0 = time.perf_counter()
        scale = min(1.0, self.side / max(frame.width, frame.height))
        w, h = max(2, round(frame.width * scale)), max(2, round(frame.height * scale))
        buf = io.BytesIO()
        Image.fromarray(self._convert.rgb(frame, w, h)).save(buf, "JPEG", quality=self.quality)
        self.jpeg, self.seq = buf.getvalue(), self.seq + 1  # one reference swap: readers see
        # the old or the new picture, never half of one
        self.busy += time.perf_counter() - t0


@dataclass
class _Camera:
    id: int
    name: str
    stats: SourceStats
    preview: Preview
    points: deque = field(default_factory=lambda: deque(maxlen=int(HISTORY / BIN)))
    seq: int = 0  # points added so far (a point's number is its seq)
    bin: list | None = None  # [start time, highest p] of the second being filled
    p: float | None = None  # the last row's p(A)
    lag: float | None = None  # seconds from its arrival to its score
    rate: tuple[float, int, float] = (0.0, 0, 0.0)  # (monotonic, scored, rows/s) of last second
    open: str | None = None  # id of the open event


@dataclass
class Cursor:
    """What one reader of :class:`UiState` has seen."""

    points: dict[int, int] = field(default_factory=dict)  # camera id -> last point seq
    tiles: dict[int, tuple] = field(default_factory=dict)  # camera id -> last tile's values
    events: int = 0  # last event version


class UiState(Sink):
    """The live page's view of a watch (module docstring). Decisions go to
    ``folder/reviews.jsonl``; ``clips``: whether the watch saves clips."""

    name = "ui"

    def __init__(self, threshold: float, folder: Path, clips: bool = False) -> None:
        self.threshold, self.saves_clips = float(threshold), clips
        self.folder = Path(folder)
        self.cameras: list[_Camera] = []
        self._by_name: dict[str, _Camera] = {}
        self._events: OrderedDict[str, dict] = OrderedDict()  # id -> the event as shown
        self._clips: OrderedDict[str, Path] = OrderedDict()  # file name -> path written
        self._version = 0
        self._lock = threading.Lock()
        self.reviewed = self.unwritten = 0

    def camera(self, name: str, stats: SourceStats) -> Preview:
        """Add a camera (a tile, in this order); returns the preview its reader feeds."""
        cam = _Camera(len(self.cameras), name, stats, Preview())
        self.cameras.append(cam)
        self._by_name[name] = cam
        return cam.preview

    # -- from the watch (scoring thread) -----------------------------------------------------
    def scores(self, source: str, times: np.ndarray, p: np.ndarray, lag: np.ndarray) -> None:
        cam = self._by_name.get(source)
        if cam is None or not len(p):
            return
        now = time.monotonic()
        with self._lock:
            for t, v in zip(times.tolist(), p.tolist(), strict=True):
                start = math.floor(t / BIN) * BIN
                if cam.bin is not None and start > cam.bin[0]:
                    cam.seq += 1
                    cam.points.append((cam.seq, cam.bin[0], cam.bin[1]))
                    cam.bin = None
                cam.bin = [start, v] if cam.bin is None else [start, max(cam.bin[1], v)]
            cam.p, cam.lag = float(p[-1]), float(np.max(lag))
            then, scored, rate = cam.rate
            if now - then >= 1.0:
                rate = (cam.stats.scored - scored) / (now - then) if then else 0.0
                cam.rate = (now, cam.stats.scored, rate)

    def write(self, record: dict, line: str) -> None:
        kind = record.get("kind")
        cam = self._by_name.get(record.get("source"))
        if cam is None or kind not in ("opened", "updated", "closed", "clip"):
            return
        with self._lock:
            key = f"{cam.id}:{record['start_frame']}"
            event = self._events.get(key)
            if kind == "clip":
                if event is not None:
                    event.update(clip=None, clip_error=record.get("clip_error"))
                if record.get("clip"):
                    path = Path(record["clip"])
                    self._clips[path.name] = path
                    while len(self._clips) > MAX_CLIPS:
                        self._clips.popitem(last=False)
                    if event is not None:
                        event["clip"] = path.name
            else:
                if event is None or kind == "opened":
                    event = self._new_event(key, cam, record)
                event.update({k: record.get(k) for k in _EVENT_FIELDS}, open=kind != "closed")
                event["clip_error"] = event["clip_error"] or record.get("clip_error")
                cam.open = key if kind != "closed" else None
            if event is not None:
                self._touch(key)

    def _new_event(self, key: str, cam: _Camera, record: dict) -> dict:
        event = {"id": key, "camera": cam.id, "opened_at": record.get("reported_at"),
                 "clip": None, "clip_error": None, "decision": None}  # fmt: skip
        self._events[key] = event
        while len(self._events) > MAX_EVENTS:
            self._events.popitem(last=False)
        return event

    def _touch(self, key: str) -> None:
        self._version += 1
        self._events[key]["version"] = self._version

    # -- from the server ---------------------------------------------------------------------
    def hello(self) -> dict:
        cameras = [{"id": c.id, "name": c.name} for c in self.cameras]
        return {"threshold": self.threshold, "history": HISTORY, "bin": BIN,
                "clips": self.saves_clips, "cameras": cameras}  # fmt: skip

    def updates(self, cursor: Cursor) -> tuple[list[dict], list[dict]]:
        """(tiles, events) that changed since ``cursor``, which is moved past them."""
        tiles = []
        with self._lock:
            for cam in self.cameras:
                tile = self._tile(cam, cursor)
                if tile is not None:
                    tiles.append(tile)
            events = [dict(e) for e in self._events.values() if e["version"] > cursor.events]
            cursor.events = self._version
        return tiles, events

    def _tile(self, cam: _Camera, cursor: Cursor) -> dict | None:
        st = cam.stats
        seen = cursor.points.get(cam.id, 0)
        points = [(t, round(p, 4)) for s, t, p in cam.points if s > seen]
        values = (st.state, cam.preview.seq, cam.p, cam.lag, cam.rate[2], st.dropped,
                  st.corrupt, st.gaps, cam.open)  # fmt: skip
        if not points and cursor.tiles.get(cam.id) == values:
            return None
        cursor.points[cam.id] = cam.seq
        cursor.tiles[cam.id] = values
        return {"id": cam.id, "state": st.state, "frame": cam.preview.seq or None, "p": cam.p,
                "lag": cam.lag, "fps": round(cam.rate[2], 2), "dropped": st.dropped,
                "corrupt": st.corrupt, "gaps": st.gaps, "open": cam.open,
                "points": points}  # fmt: skip

    def frame(self, camera: int) -> bytes | None:
        """The newest JPEG of camera number ``camera`` (None: none yet, or no such camera)."""
        return self.cameras[camera].preview.jpeg if 0 <= camera < len(self.cameras) else None

    def clip(self, name: str) -> Path | None:
        """The file of the clip this watch wrote under the name ``name``, else None."""
        with self._lock:
            return self._clips.get(name)

    def review(self, event_id: str, decision: str, client: str) -> dict:
        """Append a decision on an event to ``reviews.jsonl``; the line written. KeyError: no
        such event (or no longer listed); ValueError: not a decision; OSError: not written."""
        if decision not in DECISIONS:
            raise ValueError(f"decision {decision!r}: expected one of {', '.join(DECISIONS)}")
        with self._lock:
            e = self._events[event_id]
            record = {"event": e["id"], "source": e["source"], "start_frame": e["start_frame"],
                      "opened_at": e["opened_at"], "decision": decision, "time": now_iso(),
                      "client": client, "start_time": e["start_time"],
                      "end_time": e["end_time"], "class": e["class"], "peak": e["peak"],
                      "clip": e["clip"]}  # fmt: skip
        # opened for each decision (a person's click): the file stays usable while the
        # watch shuts down, and it holds whole lines only (JsonLinesFile)
        log = JsonLinesFile(self.folder / REVIEWS)
        try:
            log.write(record, encode(record))
        finally:
            log.close()
        self.reviewed += log.written
        self.unwritten += log.unwritten
        if log.unwritten:
            raise OSError(f"{log.path}: the decision could not be written")
        with self._lock:
            if event_id in self._events:
                self._events[event_id]["decision"] = decision
                self._touch(event_id)
        return record

    def report(self) -> dict[str, int]:
        return {"reviews": self.reviewed, "unwritten": self.unwritten}
