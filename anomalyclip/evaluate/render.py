"""A video people can watch: the frame, the class probabilities and the moving p(A) curve.

The curve panel is drawn once with matplotlib; per frame only a cursor and a few bars are
painted with numpy/PIL on copies of it, so rendering costs about as much as encoding.
Every decoded input frame becomes exactly one output frame.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

from anomalyclip.extract.decode import VideoSource

log = logging.getLogger(__name__)

HEIGHT = 360  # output height; the frame is scaled to it, the panel is drawn at it
PANEL_WIDTH = 480
TOP_CLASSES = 5


def _even(n: float) -> int:
    return max(2, int(round(n / 2)) * 2)


def _curve_panel(times: np.ndarray, p_abnormal: np.ndarray, threshold: float | None):
    """The static p(A)-over-time plot and a function mapping a time to its pixel column."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    dpi = 100
    fig = Figure(figsize=(PANEL_WIDTH / dpi, HEIGHT / 2 / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.12, 0.25, 0.84, 0.65))
    ax.plot(times, p_abnormal, color="tab:red", lw=1.2)
    ax.fill_between(times, 0, p_abnormal, color="tab:red", alpha=0.15)
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


def _bars(probs: np.ndarray, class_names: Sequence[str], p_abnormal: float) -> np.ndarray:
    """Horizontal bars of the most likely classes at one frame."""
    panel = Image.new("RGB", (PANEL_WIDTH, HEIGHT // 2), "white")
    draw = ImageDraw.Draw(panel)
    order = np.argsort(-probs)[:TOP_CLASSES]
    draw.text((10, 6), f"p(abnormal) = {p_abnormal:.2f}", fill="black")
    bar_h = (HEIGHT // 2 - 30) // TOP_CLASSES
    for i, c in enumerate(order):
        y = 26 + i * bar_h
        width = int((PANEL_WIDTH - 170) * float(probs[c]))
        draw.text((10, y + 2), str(class_names[c])[:18], fill="black")
        draw.rectangle(
            (150, y, 150 + width, y + bar_h - 6), fill=(214, 39, 40) if i == 0 else (120, 120, 200)
        )
        draw.text((155 + width, y + 2), f"{probs[c]:.2f}", fill="black")
    return np.asarray(panel)


def render_video(
    source: str | Path,
    out_path: str | Path,
    frames: np.ndarray,
    times: np.ndarray,
    p_abnormal: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    threshold: float | None = None,
    folder_fps: float | None = None,
) -> Path:
    """Write an MP4 with one output frame per decoded input frame.

    ``frames``/``times`` are the scored rows' frame numbers and times (a sampled video has
    fewer rows than frames); every decoded frame shows the scores of the last row at or
    before it.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    curve, column, (row_top, row_bottom) = _curve_panel(times, p_abnormal, threshold)
    src = VideoSource(source, folder_fps=folder_fps)
    container = av.open(str(out_path), mode="w")
    stream = None
    try:
        for frame in src:
            image = frame.image
            if stream is None:
                h, w = image.shape[:2]
                width = _even(w * HEIGHT / h)
                fps = src.fps or 25.0
                codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
                stream = container.add_stream(codec, rate=round(fps))
                stream.width, stream.height = width + PANEL_WIDTH, HEIGHT
                stream.pix_fmt = "yuv420p"
            left = np.asarray(Image.fromarray(image).resize((width, HEIGHT), Image.BILINEAR))
            row = int(
                np.clip(np.searchsorted(frames, frame.index, side="right") - 1, 0, len(frames) - 1)
            )
            top = curve.copy()
            x = int(np.clip(column(float(times[row])), 0, top.shape[1] - 1))
            top[row_top:row_bottom, max(0, x - 1) : x + 1] = (0, 0, 0)
            panel = np.concatenate([top, _bars(probs[row], class_names, float(p_abnormal[row]))], 0)
            canvas = np.concatenate([left, panel[:HEIGHT]], 1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    finally:
        container.close()
    return out_path
