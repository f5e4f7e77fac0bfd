"""Decoding videos (PyAV) and folders of image frames into numbered, timed RGB frames.

Frame numbers are positions in the decoder's output (display) order, counted over every
decoded frame whatever the sampling, so they index the same frames as the datasets'
annotations. The number of frames is what decoding yields, never the container header:
``tree.avi`` promises 444 frames and holds 68 coded ones.

Presentation times come from the container and are repaired, in a streaming way, so the
stored times are always strictly increasing:

1. Reordering. Some containers hand the decoder timestamps in *decode* order (AVI with packed
   MPEG-4 B-frames, e.g. ``Megamind.avi``: the display-order frames come out carrying
   ``1 2 3 5 4 ...``). The set of timestamps is right but their assignment is shuffled within
   the reorder depth, so each frame gets the smallest timestamp still pending in a window of
   :data:`REORDER_WINDOW` frames (a streaming sort; the identity on well-formed streams).
2. Gaps and duplicates. A frame without a timestamp, or one not after its predecessor, gets
   the previous time plus one nominal frame period (1 / the stream's average rate).

A container with a wrong nominal rate (``Megamind_bugy.avi`` says 30 fps for a 23.976 fps
clip) cannot be detected from the file alone; its own timeline is kept as it is.

Truncation. A file cut short (a copy interrupted at a block boundary) can decode cleanly to
its last whole packet. Where the stream's header declares a frame count or a duration and
decoding ends before :data:`TRUNCATED_BELOW` of the declared time (and more than two frames
short), ``truncated`` says so: the rows are kept, the record flags them. Time, not the frame
count, is compared: ``tree.avi`` declares 444 frames and codes 68, but they span all of its
29.6 s (the others are dropped frames: gaps in time).

FFmpeg's log messages are left to its silent default callback: PyAV's Python log callback
takes the GIL from FFmpeg's frame-decoding threads, and freeing a decoder after an error
while one of them logs deadlocks the process (a truncated MP4 hung extraction that way).
"""

from __future__ import annotations

import heapq
import logging
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import av
import numpy as np
from av.video.reformatter import VideoReformatter
from PIL import Image

from anomalyclip.errors import AnomalyError
from anomalyclip.inputs import natural_key

log = logging.getLogger(__name__)

REORDER_WINDOW = 16  # frames; far above any real B-frame reorder depth
TRUNCATED_BELOW = 0.9  # decoded time under this fraction of the declared time: truncated
FOLDER_FPS = 30.0  # frame rate assumed for a folder of frames when none is given
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}

av.logging.set_level(None)  # silent, and no GIL taken from decoder threads (see above)


@dataclass(frozen=True)
class Sampling:
    """Which decoded frames are kept: all, ``value`` per second (by time), or every ``value``-th."""

    mode: Literal["all", "fps", "stride"] = "all"
    value: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("all", "fps", "stride"):
            raise AnomalyError(f"sampling: unknown mode {self.mode!r} (all, fps or stride)")
        if self.mode != "all" and not (self.value and self.value > 0):
            raise AnomalyError(f"sampling: {self.mode} needs a positive value, got {self.value}")
        if self.mode == "stride" and int(self.value) != self.value:
            raise AnomalyError(f"sampling: stride must be an integer, got {self.value}")

    def describe(self) -> dict:
        """The store's ``sampling`` attribute."""
        if self.mode == "all":
            return {"mode": "all", "value": None}
        value = int(self.value) if self.mode == "stride" else float(self.value)
        return {"mode": self.mode, "value": value}


class Converter:
    """Pixel-format conversion and scaling of one stream's frames through one swscale context.

    PyAV's ``VideoFrame.to_ndarray(format=...)`` and ``VideoFrame.reformat`` set up a new
    swscale context, with its pool of slice threads, on every call. On a 768x576 frame the
    set-up costs more than the work: RGB at the stored size took 0.89 ms a frame that way and
    0.17 ms through one kept context; RGB scaled to 360 rows 2.7 ms and 1.1 ms. One context
    serves a whole stream (FFmpeg rebuilds it only when a size or format changes) and converts
    on the caller's thread, since decoding and encoding already run on threads of their own.
    Not thread-safe: one per stream and thread.
    """

    def __init__(self) -> None:
        self._sws = VideoReformatter()

    def rgb(
        self, frame: av.VideoFrame, width: int | None = None, height: int | None = None,
        interpolation: str | None = None,
    ) -> np.ndarray:  # fmt: skip
        """``frame`` as (H, W, 3) uint8 RGB, scaled to ``width`` x ``height`` where given."""
        return self.pixels(frame, "rgb24", width, height, interpolation)

    def pixels(
        self, frame: av.VideoFrame, format: str, width: int | None = None,
        height: int | None = None, interpolation: str | None = None,
    ) -> np.ndarray:  # fmt: skip
        """``frame`` in ``format`` as PyAV lays it out: (H, W, 3) for ``rgb24``; (3H/2, W) for
        ``yuv420p``, the Y plane's H rows, then U and V (H/2 x W/2 each, two rows per row)."""
        out = self._sws.reformat(
            frame, width, height, format, interpolation=interpolation, threads=1
        )
        return out.to_ndarray()

    def for_encoder(
        self, image: np.ndarray, width: int | None = None, height: int | None = None
    ) -> av.VideoFrame:
        """An (H, W, 3) uint8 RGB image as the yuv420p frame encoders take, scaled to
        ``width`` x ``height`` where given (the encoded size must be even)."""
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        return self._sws.reformat(frame, width, height, "yuv420p", threads=1)


@dataclass(frozen=True)
class Frame:
    index: int  # decoded frame number (display order, 0-based)
    time: float  # presentation time in seconds, strictly increasing within a video
    image: np.ndarray  # (H, W, 3) uint8 RGB (BGR for pixels="bgr24"); (3H/2, W) for "yuv420p"


class _Sampler:
    """Stateful keep/drop decision over the stream of (index, time)."""

    def __init__(self, sampling: Sampling) -> None:
        self.sampling = sampling
        self._last_bucket: int | None = None

    def keep(self, index: int, time: float) -> bool:
        s = self.sampling
        if s.mode == "all":
            return True
        if s.mode == "stride":
            return index % int(s.value) == 0
        # fps: keep the first frame of every 1/value-second bucket
        bucket = int(np.floor(time * s.value + 1e-6))
        if bucket == self._last_bucket:
            return False
        self._last_bucket = bucket
        return True


class _TimeRepair:
    """Streaming repair of presentation times (module docstring, steps 1 and 2)."""

    def __init__(self, period: float, window: int = REORDER_WINDOW) -> None:
        self.period = period
        self.window = window
        self._heap: list[float] = []
        self._prev: float | None = None

    def push(self, t: float | None) -> None:
        if t is not None:
            heapq.heappush(self._heap, t)

    def pop(self) -> float:
        t = heapq.heappop(self._heap) if self._heap else None
        if t is None or (self._prev is not None and t <= self._prev):
            t = (self._prev + self.period) if self._prev is not None else (t or 0.0)
        self._prev = t
        return t


class VideoSource:
    """A video file or a folder of image frames, iterated as sampled :class:`Frame` objects.

    ``num_decoded`` (every decoded frame, before sampling), ``fps`` (the nominal rate) and
    ``truncated`` (why the file looks cut short, or "") are valid after a complete iteration.
    ``height``: frames come scaled to this height (aspect kept, even width), converted and
    scaled in one FFmpeg pass; None keeps the stored size. ``pixels``: ``rgb24`` (H, W, 3)
    images, ``bgr24`` (the same, in OpenCV's channel order and with OpenCV's conversion: the
    authors' frame path), or ``yuv420p`` (3H/2, W) planes as :meth:`Converter.pixels` lays
    them out, what a decoder gives and an encoder takes (only with ``height``, which makes
    the size even).
    Every failure is an :class:`AnomalyError` naming the file.
    """

    def __init__(
        self,
        path: str | Path,
        sampling: Sampling = Sampling(),
        folder_fps: float | None = None,
        height: int | None = None,
        pixels: Literal["rgb24", "bgr24", "yuv420p"] = "rgb24",
    ) -> None:
        if pixels not in ("rgb24", "bgr24", "yuv420p") or (pixels == "yuv420p" and not height):
            raise ValueError(f"pixels={pixels!r}: rgb24, bgr24, or yuv420p with a height")
        self.path = Path(path)
        self.sampling = sampling
        self.folder_fps = folder_fps
        self.height = height
        self.pixels = pixels
        self.fps: float | None = None
        self.num_decoded = 0
        self.truncated = ""

    def __iter__(self) -> Iterator[Frame]:
        if self.path.is_dir():
            return self._iter_folder()
        return self._iter_video()

    def _fail(self, reason: str) -> AnomalyError:
        return AnomalyError(f"{self.path}: {reason}")

    # -- folders of frames ----------------------------------------------------------------
    def _iter_folder(self) -> Iterator[Frame]:
        files = sorted(
            (f for f in self.path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES),
            key=lambda f: natural_key(f.name),
        )
        if not files:
            raise self._fail("folder holds no image frames")
        self.fps = float(self.folder_fps or FOLDER_FPS)
        sampler = _Sampler(self.sampling)
        self.num_decoded = 0
        convert = Converter()
        for index, f in enumerate(files):
            time = index / self.fps
            self.num_decoded = index + 1
            if not sampler.keep(index, time):
                continue
            try:
                with Image.open(f) as im:
                    image = np.array(im.convert("RGB"))  # writable, as decoded frames are
            except (OSError, ValueError) as exc:
                raise AnomalyError(f"{f}: cannot read image frame ({exc})") from exc
            if self.height is not None or self.pixels != "rgb24":
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                image = convert.pixels(frame, self.pixels, **self._size(frame))
            yield Frame(index, time, image)

    def _size(self, frame: av.VideoFrame) -> dict:
        """The scaling arguments for ``frame`` (none without ``height``)."""
        if self.height is None:
            return {}
        width = max(2, round(frame.width * self.height / frame.height / 2) * 2)
        # area averaging: a clean downscale, at bilinear's cost in swscale
        return {"width": width, "height": self.height, "interpolation": "AREA"}

    # -- video files ------------------------------------------------------------------------
    def _open(self) -> av.container.InputContainer:
        """The file opened by PyAV; a one-line error for a missing, empty or unreadable one."""
        if not self.path.exists():
            raise self._fail("no such file")
        if self.path.stat().st_size == 0:
            raise self._fail("empty file (0 bytes)")
        try:
            return av.open(str(self.path))
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            raise self._fail(f"not a readable video ({_short(exc)})") from exc

    def _iter_video(self) -> Iterator[Frame]:
        with self._open() as container:
            if not container.streams.video:
                raise self._fail("no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = stream.average_rate or stream.guessed_rate or Fraction(30)
            self.fps = float(rate)
            tb = stream.time_base
            start = stream.start_time or 0
            repair = _TimeRepair(period=1.0 / self.fps)
            sampler = _Sampler(self.sampling)
            pending: deque[av.VideoFrame] = deque()  # decoded, waiting for their repaired time
            self.num_decoded = 0
            last = [0.0]  # repaired time of the last decoded frame
            convert = Converter()

            def emit(frame: av.VideoFrame) -> Iterator[Frame]:
                index = self.num_decoded
                self.num_decoded += 1
                time = last[0] = repair.pop()
                if sampler.keep(index, time):
                    yield Frame(
                        index, time, convert.pixels(frame, self.pixels, **self._size(frame))
                    )

            try:
                for packet in container.demux(stream):
                    if packet.is_corrupt:
                        raise self._fail(
                            f"corrupt packet after {self.num_decoded + len(pending)} decoded "
                            "frames (truncated or damaged file)"
                        )
                    for frame in packet.decode():
                        repair.push(None if frame.pts is None else float((frame.pts - start) * tb))
                        pending.append(frame)
                        if len(pending) > repair.window:
                            yield from emit(pending.popleft())
                while pending:
                    yield from emit(pending.popleft())
            except av.error.FFmpegError as exc:
                raise self._fail(
                    f"decoding failed after {self.num_decoded} frames ({_short(exc)})"
                ) from exc
            declared_s = max(
                (stream.frames or 0) / self.fps,
                float(stream.duration * tb) if stream.duration else 0.0,
            )
        if self.num_decoded == 0:
            raise self._fail("no frames could be decoded")
        self.truncated = _truncation(
            self.num_decoded, stream.frames or 0, last[0] + 1.0 / self.fps, declared_s, self.fps
        )


def _truncation(
    decoded: int, declared: int, covered_s: float, declared_s: float, fps: float
) -> str:
    """Why a decoded stream looks cut short of what its header declares ("" when it does not)."""
    if not declared_s or covered_s >= TRUNCATED_BELOW * declared_s:
        return ""
    if (declared_s - covered_s) * fps <= 2:
        return ""
    span = f"{covered_s:.1f} s of {declared_s:.1f} s"
    if declared:
        return f"decoded {decoded} of the {declared} frames the container declares ({span})"
    return f"decoded {decoded} frames, {span} the container declares"


def _short(exc: BaseException) -> str:
    """The first line of an exception's message, without PyAV's errno prefix."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    return re.sub(r":\s*'[^']*'", "", text)  # the path, which the message names already
