"""``--save-clips``: each event as an MP4, cut from its source's ring of recent frames.

When an event opens, :meth:`ClipRecorder.open` claims the clip's file name, created
exclusively (``O_EXCL``): ``clips/<camera>-<first frame>.mp4``, or ``...-1.mp4``, ``-2``...
when that name is taken (a watch restarted into the same folder), so a clip never replaces
another. The frames from ``pre_roll`` seconds before the event are taken from the source's
:class:`FrameRing` (its newest decoded frames, downscaled, within a byte budget) and
encoded, with those that follow, into ``<name>.part`` by the recorder's own thread, until
``post_roll`` seconds after the event closes; the finished file then takes the claimed name.

Every clip ends as a :class:`ClipDone` in :attr:`ClipRecorder.done`: its path once the file
is complete, or the reason it could not be written (a read-only folder, a full disk); the
watch reports each as a ``clip`` line. A clip that fails leaves no file behind.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from anomalyclip.extract.decode import Converter
from anomalyclip.extract.mp4 import open_mp4

log = logging.getLogger(__name__)

_MAX_SAME_NAME = 10000


class FrameRing:
    """The newest decoded frames of a source, downscaled to at most ``side`` pixels on the
    longer side and bounded by ``max_bytes``: what event clips are cut from."""

    def __init__(self, seconds: float, side: int = 480, max_bytes: int = 128 << 20) -> None:
        self.seconds, self.side, self.max_bytes = seconds, side, max_bytes
        self._frames: deque[tuple[float, np.ndarray]] = deque()
        self._bytes = 0
        self.fps = 0.0
        self._lock = threading.Lock()

    def target_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height): within ``side``, even (H.264 in yuv420p needs it), aspect kept."""
        scale = min(1.0, self.side / max(width, height))
        return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)

    def add(self, t: float, image: np.ndarray) -> None:
        with self._lock:
            self._frames.append((t, image))
            self._bytes += image.nbytes
            while self._frames and (
                self._bytes > self.max_bytes or t - self._frames[0][0] > self.seconds
            ):
                self._bytes -= self._frames.popleft()[1].nbytes

    def since(self, t: float) -> list[tuple[float, np.ndarray]]:
        """Frames with time > ``t``, oldest first."""
        with self._lock:
            return [f for f in self._frames if f[0] > t]


@dataclass(frozen=True)
class ClipDone:
    """A clip that is over: ``path`` of the complete file, or ``error`` (then no file)."""

    source: str
    start_frame: int
    path: Path | None
    frames: int
    error: str | None = None


@dataclass
class _Clip:
    source: str
    start_frame: int
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
    error: str | None = None
    convert: Converter = field(default_factory=Converter)  # RGB -> the encoder's yuv420p

    @property
    def part(self) -> Path:
        return self.path.with_name(self.path.name + ".part")


class ClipRecorder(threading.Thread):
    """MP4 clips of events, cut from the sources' frame rings (module docstring)."""

    def __init__(self, folder: Path, pre_roll: float = 2.0, post_roll: float = 2.0) -> None:
        super().__init__(name="clips", daemon=True)
        self.folder, self.pre_roll, self.post_roll = Path(folder), pre_roll, post_roll
        self._clips: dict[tuple[str, int], _Clip] = {}
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._hurry = False
        self._said: set[str] = set()  # reasons already logged
        self.done: deque[ClipDone] = deque()  # for the watch to report, in order

    def open(self, source: str, ring: FrameRing, start_frame: int, start_time: float) -> str | None:
        """Start the clip of the event ``(source, start_frame)``, ``source`` a camera's name
        (file-name safe: :func:`anomalyclip.inputs.safe_source_name`); the reason it cannot
        be written, or None."""
        try:
            path = self._claim(f"{source}-{start_frame:09d}")
        except OSError as exc:
            why = exc.strerror or str(exc)
            self._failed(ClipDone(source, start_frame, None, 0, why), self.folder)
            return why
        with self._lock:
            self._clips[(source, start_frame)] = _Clip(
                source, start_frame, ring, path, start_time - self.pre_roll
            )
        return None

    def close_clip(self, source: str, start_frame: int, end_time: float) -> None:
        """The event ended at ``end_time``: write on until ``post_roll`` seconds after it."""
        with self._lock:
            clip = self._clips.get((source, start_frame))
            if clip is not None:
                clip.end = end_time + self.post_roll

    def finish(self, hurry: threading.Event | None = None, timeout: float = 10.0) -> int:
        """Write what the rings still hold, close every clip and stop; once ``hurry`` is set,
        write nothing more and close the clips as they are. Returns the number of clips
        still unfinished after ``timeout`` seconds (their ``.part`` files stay)."""
        with self._lock:
            for clip in self._clips.values():
                if clip.end is None:
                    clip.end = float("inf")
        self._done.set()
        deadline = time.monotonic() + timeout
        while self.is_alive() and time.monotonic() < deadline:
            self._hurry = self._hurry or (hurry is not None and hurry.is_set())
            self.join(0.05)
        with self._lock:
            return len(self._clips)

    def active(self) -> set[Path]:
        """The files of the clips being written (their claimed names): not to be touched."""
        with self._lock:
            return {clip.path for clip in self._clips.values()}

    def _claim(self, stem: str) -> Path:
        """A new, unused file name for a clip, created empty and exclusively."""
        self.folder.mkdir(parents=True, exist_ok=True)
        for n in range(_MAX_SAME_NAME):
            path = self.folder / (f"{stem}.mp4" if n == 0 else f"{stem}-{n}.mp4")
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666))
            except FileExistsError:
                continue
            return path
        raise OSError(errno.EEXIST, f"{_MAX_SAME_NAME} clips named {stem} exist already")

    def run(self) -> None:
        while True:
            stopping = self._done.is_set()
            with self._lock:
                clips = list(self._clips.items())
            for key, clip in clips:
                if not (stopping and self._hurry):
                    self._advance(clip)
                over = clip.error is not None or stopping
                if over or (clip.end is not None and clip.written >= clip.end):
                    self._close(clip)
                    with self._lock:
                        self._clips.pop(key, None)
            if stopping:
                return
            self._done.wait(0.1)

    def _advance(self, clip: _Clip) -> None:
        for t, image in clip.ring.since(max(clip.written, clip.start - 1e-9)):
            if (clip.end is not None and t > clip.end) or self._hurry:
                break
            try:
                self._write(clip, t, image)
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                clip.error = getattr(exc, "strerror", None) or str(exc)
                return
            clip.written = t

    def _write(self, clip: _Clip, t: float, image: np.ndarray) -> None:
        if clip.container is None:
            clip.fps = max(1, round(clip.ring.fps or 25))
            height, width = image.shape[:2]
            clip.container, clip.stream = open_mp4(clip.part, clip.fps, width, height)
            clip.t0 = t
        frame = clip.convert.for_encoder(image, clip.stream.width, clip.stream.height)
        pts = max(clip.pts + 1, round((t - clip.t0) * clip.fps))
        frame.pts, clip.pts = pts, pts
        clip.container.mux(clip.stream.encode(frame))
        clip.frames += 1

    def _close(self, clip: _Clip) -> None:
        if clip.error is None and clip.container is None:
            clip.error = "no frames of the event were kept to write"
        if clip.error is None:
            try:
                clip.container.mux(clip.stream.encode(None))
                clip.container.close()
                os.replace(clip.part, clip.path)  # over the name claimed for it
            except (av.error.FFmpegError, OSError) as exc:
                clip.error = getattr(exc, "strerror", None) or str(exc)
            else:
                log.info("clip %s: %d frames", clip.path, clip.frames)
                self.done.append(ClipDone(clip.source, clip.start_frame, clip.path, clip.frames))
                return
        if clip.container is not None:
            with contextlib.suppress(av.error.FFmpegError, OSError):
                clip.container.close()
        for path in (clip.part, clip.path):
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
        self._failed(ClipDone(clip.source, clip.start_frame, None, 0, clip.error), clip.path)

    def _failed(self, done: ClipDone, where: Path) -> None:
        if done.error not in self._said:  # each reason once: a full disk fails every clip
            self._said.add(done.error)
            log.warning("%s: clip not written (%s)", where, done.error)
        self.done.append(done)
