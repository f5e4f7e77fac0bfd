"""MP4 files written by the package: the one choice of codec, and an opened writer.

Renders (:mod:`anomalyclip.evaluate.render`), the demo's and the benchmarks' synthetic videos
(:mod:`anomalyclip.synthetic`) and live event clips (:mod:`anomalyclip.live.clips`) all open
their file here: H.264 (x264) in yuv420p where PyAV's FFmpeg has libx264, MPEG-4 Part 2
otherwise. Each writer keeps its own encoder settings (:class:`Mp4Settings`) and its own
frame timing; frames reach the encoder through :class:`~anomalyclip.extract.decode.Converter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av


def video_codec() -> str:
    """H.264 when PyAV's FFmpeg has libx264, MPEG-4 Part 2 otherwise."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


@dataclass(frozen=True)
class Mp4Settings:
    """How a writer encodes: ``x264`` options (``preset``, ``crf``...) when the codec is
    libx264, ``mpeg4_bit_rate`` (bits per second, FFmpeg's default when None) when it is
    MPEG-4 Part 2; ``container`` None takes the format from the file name's suffix."""

    x264: dict[str, str] = field(default_factory=dict)
    mpeg4_bit_rate: int | None = None
    container: str | None = "mp4"


def open_mp4(
    path: str | Path, rate: int | Fraction, width: int, height: int,
    settings: Mp4Settings = Mp4Settings(),
) -> tuple[av.container.OutputContainer, av.VideoStream]:  # fmt: skip
    """An output file and its one video stream (yuv420p, ``width`` x ``height`` even, at
    ``rate`` frames per second), ready for frames; the caller closes the container."""
    container = av.open(str(path), mode="w", format=settings.container)
    try:
        codec = video_codec()
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264" and settings.x264:
            stream.options = dict(settings.x264)
        elif codec != "libx264" and settings.mpeg4_bit_rate:
            stream.bit_rate = settings.mpeg4_bit_rate
    except BaseException:
        container.close()
        raise
    return container, stream
