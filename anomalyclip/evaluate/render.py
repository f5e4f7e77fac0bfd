"""A video people can watch: the frame with its decision, the class probabilities and the
moving p(A) curve.

Layout of every output frame (height :data:`HEIGHT`)::

    +------------------------------+--------------------------------+
    | the input frame, scaled;     | p(A) over time: threshold line,|
    | a red border and an ALARM    | events shaded, a cursor         |
    | banner while an event is     +--------------------------------+
    | open; the time and frame     | p(Normal), then bars of the     |
    | number in a corner           | likeliest anomaly classes       |
    +------------------------------+--------------------------------+

The curve panel is drawn once with matplotlib; per frame only the cursor, the bars and a few
strings are painted with numpy/PIL, so rendering costs little more than encoding. Every
decoded input frame becomes exactly one output frame, at the input's own frame rate (as an
exact fraction: 23.976 fps stays 24000/1001).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from anomalyclip.events import Event
from anomalyclip.extract.decode import VideoSource

log = logging.getLogger(__name__)

HEIGHT = 360  # output height; the frame is scaled to it, the panels are drawn at it
PANEL_WIDTH = 480
TOP_CLASSES = 5
BORDER = 8  # pixels of the alarm border
ALARM = (214, 39, 40)
EVENT_SHADE = "#ff9896"


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


def _even(n: float) -> int:
    return max(2, int(round(n / 2)) * 2)


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
    ax = fig.add_axes((0.12, 0.25, 0.84, 0.65))
    for e in events:
        ax.axvspan(e.start_time, e.end_time, color=EVENT_SHADE, alpha=0.5, lw=0)
    ax.plot(times, p, color="tab:red", lw=1.2)
    ax.fill_between(times, 0, p, color="tab:red", alpha=0.15)
    if threshold is not None:
        ax.axhline(threshold, color="gray", ls="--", lw=0.8)
    ax.set_ylim(0, 1)
    ax.set_xlim(float(times[0]), float(times[-1]) if times[-1] > times[0] else float(times[0]) + 1)
    ax.set_xlabel("time (s)", fontsize=8)
    ax.set_ylabel("p(abnormal)", fontsize=8)
    ax.tick_params(labelsize=7)
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


def _bars(scores: Scores, row: int) -> np.ndarray:
    """p(Normal) on its own line, then bars of the likeliest anomaly classes at one row."""
    probs = scores.probs[row]
    panel = Image.new("RGB", (PANEL_WIDTH, HEIGHT // 2), "white")
    draw = ImageDraw.Draw(panel)
    draw.text((10, 6), f"p(abnormal) {scores.p[row]:.2f}", fill="black")
    normal = scores.classes[scores.normal_id]
    draw.text((200, 6), f"{normal} {probs[scores.normal_id]:.2f}", fill=(110, 110, 110))
    anomaly = [c for c in range(len(scores.classes)) if c != scores.normal_id]
    order = [anomaly[i] for i in np.argsort(-probs[anomaly], kind="stable")[:TOP_CLASSES]]
    bar_h = (HEIGHT // 2 - 30) // TOP_CLASSES
    pixels = np.asarray(panel).copy()
    for i, c in enumerate(order):
        y = 26 + i * bar_h
        width = int((PANEL_WIDTH - 170) * float(probs[c]))
        pixels[y : y + bar_h - 6, 150 : 150 + width] = ALARM if i == 0 else (120, 120, 200)
    panel = Image.fromarray(pixels)
    draw = ImageDraw.Draw(panel)
    for i, c in enumerate(order):
        y = 26 + i * bar_h
        width = int((PANEL_WIDTH - 170) * float(probs[c]))
        draw.text((10, y + 2), str(scores.classes[c])[:18], fill="black")
        draw.text((155 + width, y + 2), f"{probs[c]:.2f}", fill="black")
    return np.asarray(panel)


def _annotate(image: np.ndarray, text: str, alarm: str | None) -> np.ndarray:
    """The time stamp in the lower-left corner; with an alarm, a red border and banner."""
    if alarm is not None:
        image[:BORDER], image[-BORDER:] = ALARM, ALARM
        image[:, :BORDER], image[:, -BORDER:] = ALARM, ALARM
        image[BORDER : BORDER + 22, BORDER:-BORDER] = ALARM
    h = image.shape[0]
    image[h - BORDER - 18 : h - BORDER, BORDER : BORDER + 7 * len(text) + 8] = 0
    canvas = Image.fromarray(image)
    draw = ImageDraw.Draw(canvas)
    draw.text((BORDER + 4, h - BORDER - 16), text, fill="white")
    if alarm is not None:
        draw.text((BORDER + 6, BORDER + 5), alarm, fill="white")
    return np.asarray(canvas)


def render_video(
    source: str | Path,
    out_path: str | Path,
    scores: Scores,
    threshold: float | None = None,
    events: Sequence[Event] = (),
) -> Path:
    """Write an MP4 with one output frame per decoded input frame.

    A sampled video has fewer scored rows than frames: every decoded frame shows the scores
    of the last row at or before it. An event is open on the frames from its start to its
    end (the same half-open interval as in ``events.json``).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    curve, column, (row_top, row_bottom) = _curve_panel(scores, threshold, events)
    spans = np.array([[e.start_frame, e.end_frame] for e in events]).reshape(-1, 2)
    src = VideoSource(source)
    container = av.open(str(out_path), mode="w")
    stream = None
    try:
        for frame in src:
            image = frame.image
            if stream is None:
                h, w = image.shape[:2]
                width = _even(w * HEIGHT / h)
                rate = frame_rate(src.fps)
                codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
                options = {"preset": "veryfast"} if codec == "libx264" else {}
                stream = container.add_stream(codec, rate=rate, options=options)
                stream.width, stream.height = width + PANEL_WIDTH, HEIGHT
                stream.pix_fmt = "yuv420p"
            left = np.asarray(Image.fromarray(image).resize((width, HEIGHT), Image.BILINEAR))
            row = int(np.clip(np.searchsorted(scores.frames, frame.index, side="right") - 1, 0,
                              len(scores.frames) - 1))  # fmt: skip
            open_ = np.flatnonzero((spans[:, 0] <= frame.index) & (frame.index < spans[:, 1]))
            alarm = None
            if open_.size:
                e = events[int(open_[0])]
                alarm = f"ALARM  {e.label}  peak p(A) {e.peak:.2f}"
            left = _annotate(left.copy(), f"{frame.time:8.2f} s  frame {frame.index}", alarm)
            top = curve.copy()
            x = int(np.clip(column(float(scores.times[row])), 0, top.shape[1] - 1))
            top[row_top:row_bottom, max(0, x - 1) : x + 1] = (0, 0, 0)
            panel = np.concatenate([top, _bars(scores, row)], 0)
            canvas = np.concatenate([left, panel[:HEIGHT]], 1)
            out = av.VideoFrame.from_ndarray(canvas, format="rgb24")
            for packet in stream.encode(out):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    finally:
        container.close()
    return out_path
