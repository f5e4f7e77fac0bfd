"""A video people can watch: the frame with its decision, the class probabilities and the
moving p(A) curve.

Layout of every output frame (height :data:`HEIGHT`)::

    +------------------------------+---------------------------------+
    | the input frame, scaled;     | p(A) over time: threshold line, |
    | a red border and an ALARM    | events shaded in their class's  |
    | banner while an event is     | colour, a cursor                |
    | open; the time and frame     +---------------------------------+
    | number in a corner           | p(Normal), then bars of the     |
    |                              | likeliest anomaly classes, each |
    |                              | in its class's colour           |
    +------------------------------+---------------------------------+

The curve panel is drawn once with matplotlib; per frame only the cursor, the bars and a few
strings are painted with numpy/PIL, so rendering costs little more than encoding. Every
decoded input frame becomes exactly one output frame, shown at the input frame's own time
(its presentation time is kept: a variable-rate source such as a motion-triggered camera's
plays as long as the source, and the clock drawn on a frame is that frame's time); the
stream's nominal rate is the input's as an exact fraction (23.976 fps stays 24000/1001).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from anomalyclip.evaluate.palette import SCORE, class_colour, class_rgb
from anomalyclip.evaluate.text import STRIP, banner_strip, clock_stamp, panel_text, stamp_width
from anomalyclip.events import Event
from anomalyclip.extract.decode import Converter, VideoSource
from anomalyclip.extract.mp4 import Mp4Settings, open_mp4

log = logging.getLogger(__name__)

HEIGHT = 480  # output height; the frame is scaled to it, the panels are drawn at it
PANEL_WIDTH = 480
TOP_CLASSES = 5
BORDER = 8  # pixels of the alarm border
ALARM = (214, 39, 40)


@dataclass
class Scores:
    """A scored video: the rows' ``frames`` (T,) and ``times`` (T,), ``p`` (T,) p(A) and
    ``probs`` (T, C); ``classes`` and ``normal_id`` name the columns."""

    frames: np.ndarray
    times: np.ndarray
    p: np.ndarray
    probs: np.ndarray
    classes: Sequence[str]
    normal_id: int


def frame_rate(fps: float | None) -> Fraction:
    """The exact rate of a stream from its float rate: NTSC rates come back as x/1001."""
    if not fps or fps <= 0:
        return Fraction(25)
    return Fraction(fps).limit_denominator(1001)


def _curve_panel(scores: Scores, threshold: float | None, events: Sequence[Event]):
    """The static p(A)-over-time plot and a function mapping a time to its pixel column."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    times, p = scores.times, scores.p
    dpi = 100
    fig = Figure(figsize=(PANEL_WIDTH / dpi, HEIGHT / 2 / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.14, 0.26, 0.82, 0.66))
    ids = {name: c for c, name in enumerate(scores.classes)}
    for e in events:  # shaded in the event's class colour, as in the plots
        colour = class_colour(ids.get(e.label, scores.normal_id), scores.normal_id)
        ax.axvspan(e.start_time, e.end_time, color=colour, alpha=0.3, lw=0)
    ax.plot(times, p, color=SCORE, lw=1.2)
    ax.fill_between(times, 0, p, color=SCORE, alpha=0.08)
    if threshold is not None:
        ax.axhline(threshold, color=SCORE, ls="--", lw=0.8)
    ax.set_ylim(0, 1)
    ax.set_xlim(float(times[0]), float(times[-1]) if times[-1] > times[0] else float(times[0]) + 1)
    ax.set_xlabel("time (s)", fontsize=10, labelpad=1)
    ax.set_ylabel("p(A)", fontsize=10)
    ax.tick_params(labelsize=9)
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    height = image.shape[0]
    (x0, y0), (x1, y1) = ax.transData.transform([(ax.get_xlim()[0], 0), (ax.get_xlim()[1], 1)])
    span = (ax.get_xlim()[0], ax.get_xlim()[1])

    def column(t: float) -> int:
        frac = (t - span[0]) / (span[1] - span[0])
        return int(round(x0 + frac * (x1 - x0)))

    rows = (int(round(height - y1)), int(round(height - y0)))  # image rows of p=1 and p=0
    return image, column, rows


def _paste(panel: np.ndarray, y: int, x: int, patch: np.ndarray) -> None:
    h = min(patch.shape[0], panel.shape[0] - y)
    w = min(patch.shape[1], panel.shape[1] - x)
    if h > 0 and w > 0:
        panel[y : y + h, x : x + w] = patch[:h, :w]


def _bars(scores: Scores, row: int) -> np.ndarray:
    """The lower panel at one row: p(Normal) on its own line, then bars of the likeliest
    anomaly classes, (HEIGHT // 2, PANEL_WIDTH, 3)."""
    white, black = (255, 255, 255), (0, 0, 0)
    probs = scores.probs[row]
    panel = np.full((HEIGHT // 2, PANEL_WIDTH, 3), 255, np.uint8)
    _paste(panel, 4, 10, panel_text(f"p(abnormal) {scores.p[row]:.2f}", black, white))
    normal = scores.classes[scores.normal_id]
    _paste(panel, 4, 220, panel_text(f"{normal} {probs[scores.normal_id]:.2f}", (110,) * 3, white))
    anomaly = [c for c in range(len(scores.classes)) if c != scores.normal_id]
    order = [anomaly[i] for i in np.argsort(-probs[anomaly], kind="stable")[:TOP_CLASSES]]
    bar_h = (HEIGHT // 2 - 30) // TOP_CLASSES
    for i, c in enumerate(order):
        y = 26 + i * bar_h
        width = int((PANEL_WIDTH - 170) * float(probs[c]))
        panel[y : y + bar_h - 6, 150 : 150 + width] = class_rgb(c, scores.normal_id)
        _paste(panel, y + 3, 10, panel_text(str(scores.classes[c])[:17], black, white))
        _paste(panel, y + 3, 155 + width, panel_text(f"{probs[c]:.2f}", black, white))
    return panel


def _planes(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Views of the Y (H, W), U and V (H/2, W/2) planes of a (3H/2, W) yuv420p array."""
    h, w = image.shape[0] * 2 // 3, image.shape[1]
    flat = image.reshape(-1)  # a view: the arrays here are contiguous
    y, u, v = np.split(flat, [h * w, h * w + h * w // 4])
    return y.reshape(h, w), u.reshape(h // 2, w // 2), v.reshape(h // 2, w // 2)


class _Painter:
    """Paints RGB pictures onto the planes of a yuv420p canvas.

    A render is composed in the encoder's own pixel format: the scaled frame comes from the
    decoder in yuv420p, and only what is drawn (the panels, the strips, the border) is
    converted, each when it changes. Converting the whole RGB canvas for x264, and scaling
    the frame into RGB first, cost more than drawing it. Every position and size is even, so a
    picture covers whole 2 x 2 chroma blocks and looks as it would drawn in RGB.
    """

    def __init__(self) -> None:
        self._converters: dict[str, Converter] = {}  # one per kind: each keeps its own size

    def yuv(self, kind: str, image: np.ndarray) -> np.ndarray:
        """An (H, W, 3) RGB picture of even size as a (3H/2, W) yuv420p array."""
        return self._converters.setdefault(kind, Converter()).for_encoder(image).to_ndarray()

    @staticmethod
    def paste(canvas: np.ndarray, y: int, x: int, picture: np.ndarray) -> None:
        """In place: a (3h/2, w) yuv420p ``picture`` onto ``canvas`` at even (y, x)."""
        for plane, part, k in zip(_planes(canvas), _planes(picture), (1, 2, 2), strict=True):
            plane[y // k : y // k + part.shape[0], x // k : x // k + part.shape[1]] = part

    def colour(self, rgb: tuple[int, int, int]) -> tuple[int, int, int]:
        """The (Y, U, V) values of an RGB colour, as the conversion gives them."""
        y, u, v = _planes(self.yuv("colour", np.broadcast_to(np.uint8(rgb), (2, 2, 3)).copy()))
        return int(y[0, 0]), int(u[0, 0]), int(v[0, 0])

    @staticmethod
    def fill(canvas: np.ndarray, rows: slice, cols: slice, yuv: tuple[int, int, int]) -> None:
        """In place: the even-bounded rectangle ``rows`` x ``cols`` in one (Y, U, V) colour."""
        half = [slice(a.start // 2, a.stop // 2) for a in (rows, cols)]
        for plane, value, (r, c) in zip(
            _planes(canvas), yuv, ((rows, cols), half, half), strict=True
        ):
            plane[r, c] = value


def _even_up(n: int) -> int:
    return n + (n % 2)


def time_base(rate: Fraction) -> Fraction:
    """The output's clock: ticks of 1 / (p * M) s for a rate p / q, so every frame time of a
    constant-rate source (k q / p s) is a whole number of ticks, and about 1/65,000 s apart
    (the finest MPEG-4 Part 2 allows) for any other time."""
    return Fraction(1, rate.numerator * max(1, 65535 // rate.numerator))


class _Encoder:
    """(3H/2, W) yuv420p frames into an H.264 MP4 (MPEG-4 Part 2 where FFmpeg lacks x264),
    on a thread of its own, each at the presentation time it is given (default: one frame
    after the other at ``rate``).

    ``ultrafast``: a render is looked at, not archived, and the encoder is a large share of
    a render's time (x264's faster presets cost size, not the look of these frames).
    Encoding (x264, outside the GIL) runs while the caller decodes and draws the next frames;
    a short queue keeps their memory bounded. A frame handed to :meth:`write` must not be
    changed afterwards. An error of the encoding thread is raised by the next :meth:`write`
    or by :meth:`close`.
    """

    QUEUE = 8

    def __init__(self, path: Path, rate: Fraction, width: int, height: int) -> None:
        settings = Mp4Settings(x264={"preset": "ultrafast"}, container=None)
        self.container, self.stream = open_mp4(path, rate, width, height, settings)
        self.time_base = time_base(rate)
        self.stream.codec_context.time_base = self.stream.time_base = self.time_base
        self._tick = rate.denominator * (self.time_base.denominator // rate.numerator)  # a frame
        self._pts: int | None = None  # the last frame's
        self._queue: queue.Queue[tuple[np.ndarray, int] | None] = queue.Queue(self.QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._encode_all, name="render-encoder")
        self._thread.start()

    def _encode_all(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                frame = av.VideoFrame.from_ndarray(item[0], format="yuv420p")
                frame.pts, frame.time_base = item[1], self.time_base
                for packet in self.stream.encode(frame):
                    self.container.mux(packet)
        except BaseException as e:  # handed to the caller's thread
            self._error = e

    def _put(self, item: tuple[np.ndarray, int] | None) -> None:
        while self._thread.is_alive():
            try:
                self._queue.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        if self._error is not None:
            raise self._error

    def write(self, image: np.ndarray, time: float | None = None) -> None:
        """Queue a frame shown from ``time`` seconds (default: one frame after the last);
        times are kept to the tick, and never run backwards."""
        last = self._pts
        if time is None or not np.isfinite(time):
            pts = 0 if last is None else last + self._tick
        else:
            pts = round(Fraction(time) / self.time_base)
            pts = pts if last is None else max(pts, last + 1)
        self._pts = pts
        self._put((image, pts))

    def close(self) -> None:
        try:
            self._put(None)
            self._thread.join()
            if self._error is not None:
                raise self._error
            for packet in self.stream.encode():
                self.container.mux(packet)
        finally:
            self.container.close()


class _Overlay:
    """What a render draws over and beside each frame, in yuv420p: an open event's red border
    and banner, the time stamp, the curve panel with its cursor, the bars of the frame's row.
    The curve is converted once, a banner once per event, the bars when the row changes."""

    def __init__(self, scores: Scores, threshold: float | None, events: Sequence[Event]) -> None:
        curve, self.column, (row_top, row_bottom) = _curve_panel(scores, threshold, events)
        self.scores, self.events = scores, events
        self.spans = np.array([[e.start_frame, e.end_frame] for e in events]).reshape(-1, 2)
        self.paint = paint = _Painter()
        self.curve = paint.yuv("curve", curve[: HEIGHT // 2])
        self.black, self.alarm_colour = paint.colour((0, 0, 0)), paint.colour(ALARM)
        self.cursor_rows = slice(row_top // 2 * 2, _even_up(row_bottom))
        self.bands: dict[int, np.ndarray] = {}  # event -> its banner
        self.bars_row, self.bars = -1, None

    def draw(self, canvas: np.ndarray, index: int, time: float, width: int) -> None:
        """In place: the overlay of frame ``index`` (shown at ``time``) onto ``canvas``, whose
        first ``width`` columns hold the frame."""
        paint, scores = self.paint, self.scores
        row = int(np.clip(np.searchsorted(scores.frames, index, side="right") - 1, 0,
                          len(scores.frames) - 1))  # fmt: skip
        open_ = np.flatnonzero((self.spans[:, 0] <= index) & (index < self.spans[:, 1]))
        inner = width - 2 * BORDER  # what the border leaves of the frame's width
        if open_.size:  # a red border, and the event's banner on a red band
            self._alarm(canvas, int(open_[0]), width, inner)
        if inner >= 2:
            text = f"{time:8.2f} s  frame {index}"
            stamp = clock_stamp(text, min(stamp_width(text), inner))
            paint.paste(canvas, HEIGHT - BORDER - STRIP, BORDER, paint.yuv("stamp", stamp))
        paint.paste(canvas, 0, width, self.curve)
        x = int(np.clip(self.column(float(scores.times[row])), 0, PANEL_WIDTH - 1))
        x0 = min(max(0, x - 1) // 2 * 2, PANEL_WIDTH - 2)
        paint.fill(canvas, self.cursor_rows, slice(width + x0, width + x0 + 2), self.black)
        if row != self.bars_row:
            self.bars_row, self.bars = row, paint.yuv("bars", _bars(scores, row))
        paint.paste(canvas, HEIGHT // 2, width, self.bars)

    def _alarm(self, canvas: np.ndarray, k: int, width: int, inner: int) -> None:
        """Event ``k``'s red border around the frame, and its banner where it fits."""
        paint = self.paint
        if k not in self.bands and inner >= 4:
            e = self.events[k]
            band = np.empty((STRIP + 4, inner, 3), np.uint8)
            band[:] = ALARM
            text = f"ALARM  {e.label}  peak p(A) {e.peak:.2f}"
            band[2 : 2 + STRIP, 2:] = banner_strip(text, inner - 2, ALARM)
            self.bands[k] = paint.yuv("band", band)
        for rows, cols in (
            (slice(0, BORDER), slice(0, width)),
            (slice(HEIGHT - BORDER, HEIGHT), slice(0, width)),
            (slice(0, HEIGHT), slice(0, BORDER)),
            (slice(0, HEIGHT), slice(width - BORDER, width)),
        ):
            paint.fill(canvas, rows, cols, self.alarm_colour)
        if k in self.bands:
            paint.paste(canvas, BORDER, BORDER, self.bands[k])


def render_video(
    source: str | Path,
    out_path: str | Path,
    scores: Scores,
    threshold: float | None = None,
    events: Sequence[Event] = (),
) -> Path:
    """Write an MP4 with one output frame per decoded input frame, at that frame's time.

    A sampled video has fewer scored rows than frames: every decoded frame shows the scores
    of the last row at or before it. An event is open on the frames from its start to its
    end (the same half-open interval as in ``events.json``).

    Per frame only what changes is drawn, in the encoder's yuv420p (:class:`_Painter`): the
    frame comes scaled from the decoder, the curve panel is copied with a cursor, the bars
    panel is redrawn when the row changes from strings drawn once each, the time stamp is one
    small strip of glyphs drawn once each (:class:`_Overlay`).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    overlay = _Overlay(scores, threshold, events)
    src = VideoSource(source, height=HEIGHT, pixels="yuv420p")
    rescale = Converter()  # for a frame whose size differs from the first one's
    encoder = None
    try:
        for frame in src:
            left = frame.image  # (3 HEIGHT / 2, width) yuv420p, scaled by the decoder
            if encoder is None:
                width = left.shape[1]
                encoder = _Encoder(out_path, frame_rate(src.fps), width + PANEL_WIDTH, HEIGHT)
            if left.shape[1] != width:  # the stream changed its size
                planar = av.VideoFrame.from_ndarray(left, format="yuv420p")
                left = rescale.pixels(planar, "yuv420p", width, HEIGHT, "AREA")
            canvas = np.empty((HEIGHT * 3 // 2, width + PANEL_WIDTH), np.uint8)  # encoder's
            overlay.paint.paste(canvas, 0, 0, left)
            overlay.draw(canvas, frame.index, frame.time, width)
            encoder.write(canvas, frame.time)
    finally:
        if encoder is not None:
            encoder.close()
    return out_path
