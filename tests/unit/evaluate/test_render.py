"""The rendered MP4: one output frame per input frame at the input's exact rate, and the alarm
drawn on exactly the frames of the events."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from anomalyclip.evaluate.render import BORDER, HEIGHT, Scores, frame_rate, render_video
from anomalyclip.events import EventConfig, find_events

NAMES = ("Explosion", "Intruder", "Normal", "Tampering")


def write_ntsc_video(path, frames: int, rate=Fraction(24000, 1001), size=(96, 64)):
    """A real H.264 file at 23.976 fps (the rate of film transfers and many cameras): a
    grey gradient that brightens over time, so frames differ as in real footage."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        ramp = np.linspace(40, 160, size[0], dtype=np.float64)[None, :, None]
        for i in range(frames):
            img = np.broadcast_to(ramp + i, (size[1], size[0], 3)).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def test_frame_rates_come_back_exact():
    assert frame_rate(24000 / 1001) == Fraction(24000, 1001)
    assert frame_rate(30000 / 1001) == Fraction(30000, 1001)
    assert frame_rate(25.0) == 25 and frame_rate(12.5) == Fraction(25, 2)


def test_alarm_is_drawn_on_exactly_the_event_frames_at_the_input_rate(tmp_path):
    T = 60
    src = write_ntsc_video(tmp_path / "in.mp4", T)
    p = np.full(T, 0.05)
    p[20:35] = 0.9  # one event: frames 20..34
    probs = np.zeros((T, 4))
    probs[:, 2] = 1 - p
    probs[:, 1] = 0.7 * p
    probs[:, 3] = 0.3 * p
    rate = 24000 / 1001
    frames, times = np.arange(T), np.arange(T) / rate
    scores = Scores(frames, times, p, probs, NAMES, 2)
    curve = {"frames": frames, "times": times, "p": p, "probs": probs}
    events = find_events("in.mp4", curve, (NAMES, 2), EventConfig(0.5, min_duration=0.2))
    assert [(e.start_frame, e.end_frame, e.label) for e in events] == [(20, 35, "Intruder")]

    out = render_video(src, tmp_path / "out.mp4", scores, 0.5, events)
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == Fraction(24000, 1001)
        images = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(images) == T
    for i, img in enumerate(images):
        corner = img[1 : BORDER - 1, 1 : BORDER - 1].reshape(-1, 3).mean(0)  # top-left border
        red = corner[0] > 150 and corner[1] < 90 and corner[2] < 90
        assert red == (20 <= i < 35), i


@pytest.mark.parametrize("rows", [1, 2])
def test_tiny_videos_render(tmp_path, rows):
    src = write_ntsc_video(tmp_path / "in.mp4", rows)
    probs = np.tile([[0.1, 0.1, 0.7, 0.1]], (rows, 1))
    scores = Scores(np.arange(rows), np.arange(rows) / 24.0, np.full(rows, 0.3), probs, NAMES, 2)
    out = render_video(src, tmp_path / "out.mp4", scores, 0.5, [])
    with av.open(str(out)) as container:
        assert sum(1 for _ in container.decode(video=0)) == rows


def test_decoder_scales_frames_like_a_resize_of_the_full_frame(shared_videos):
    """Renders take frames scaled by FFmpeg while decoding (``VideoSource(height=...)``): on a
    real surveillance video the scaled frames must be the full frames resized (same content,
    same place), not a crop or a stretched copy, at an even width that keeps the aspect."""
    from PIL import Image

    from anomalyclip.extract.decode import VideoSource

    path = shared_videos / "vtest.avi"  # 768 x 576
    full = [f.image for _, f in zip(range(40), VideoSource(path), strict=False)]
    scaled = [f for _, f in zip(range(40), VideoSource(path, height=360), strict=False)]
    assert [f.index for f in scaled] == list(range(40))
    assert all(f.image.shape == (360, 480, 3) for f in scaled)
    diffs = []
    for big, small in zip(full, scaled, strict=True):
        resized = np.asarray(Image.fromarray(big).resize((480, 360), Image.BOX), np.float64)
        diffs.append(np.abs(resized - small.image).mean())
    # measured ~2 grey levels (swscale's area filter vs PIL's box filter, YUV rounding);
    # the same frame shifted by 8 pixels gives ~17
    assert max(diffs) < 4.0, diffs
    shifted = np.asarray(Image.fromarray(full[0]).resize((480, 360), Image.BOX), np.float64)
    assert np.abs(np.roll(shifted, 8, axis=1) - scaled[0].image).mean() > 3 * max(diffs)


def test_encoder_thread_writes_every_frame_in_order_and_reports_its_errors(tmp_path):
    """Frames are encoded on a thread of their own: all of them arrive, in order, and an error
    there (here a frame of the wrong size) comes back to the caller instead of being lost."""
    from anomalyclip.evaluate.render import _Encoder

    path = tmp_path / "ordered.mp4"
    enc = _Encoder(path, Fraction(25), 64, 48)
    for k in range(40):  # more frames than the queue holds
        planes = np.full((72, 64), 128, np.uint8)  # yuv420p: 48 rows of Y, then U and V grey
        planes[:48] = 20 + 5 * k
        enc.write(planes)
    enc.close()
    with av.open(str(path)) as c:
        levels = [float(f.to_ndarray(format="gray").mean()) for f in c.decode(video=0)]
    assert len(levels) == 40
    assert np.all(np.diff(levels) > 0)  # brightness rises frame by frame: the order is kept

    enc = _Encoder(tmp_path / "broken.mp4", Fraction(25), 64, 48)
    with pytest.raises(ValueError, match="ndim"):  # raised on the encoder's thread
        enc.write(np.zeros((48, 64, 3), np.uint8))  # RGB, not the planes it takes
        for _ in range(3 * _Encoder.QUEUE):
            enc.write(np.zeros((72, 64), np.uint8))
        enc.close()


@pytest.mark.slow
def test_time_stamps_from_cached_glyphs_are_what_freetype_draws():
    """The time stamp is a new string on every frame, so it is pasted together from glyphs
    drawn once: it must be the very image FreeType draws for the whole string, at every
    width the corner can give it (cut short on narrow videos), for times and frame numbers
    from the first frame to ~4 days of 29.97 fps video."""
    from anomalyclip.evaluate.text import banner_strip, clock_stamp

    for index in [*range(0, 120), *range(120, 10_000_000, 9_973)]:
        text = f"{index / 29.97:8.2f} s  frame {index}"
        for width in (7 * len(text) + 8, 64, 9):
            expected = banner_strip(text, width, (0, 0, 0))
            assert np.array_equal(clock_stamp(text, width), expected), (text, width)
    # the strip is not blank: the test compares drawn text, not two black rectangles
    assert (clock_stamp("   12.34 s  frame 308", 155) > 128).sum() > 100


@pytest.mark.parametrize("size", [(101, 75), (8, 360)])
def test_a_folder_of_odd_sized_frames_renders_at_the_render_height(tmp_path, size):
    """A folder of JPEG/PNG frames (what some datasets ship) of an odd size, and a frame too
    narrow for the time stamp and banner: every frame is scaled to the render's height at an
    even width (what yuv420p needs), and each becomes one output frame."""
    from PIL import Image

    folder = tmp_path / "frames"
    folder.mkdir()
    w, h = size
    for i in range(6):
        level = 40 + 30 * i  # brightens frame by frame
        Image.fromarray(np.full((h, w, 3), level, np.uint8)).save(folder / f"f{i}.png")
    rows = 6
    probs = np.tile([[0.1, 0.1, 0.7, 0.1]], (rows, 1))
    scores = Scores(np.arange(rows), np.arange(rows) / 30.0, np.full(rows, 0.9), probs, NAMES, 2)
    curve = {"frames": scores.frames, "times": scores.times, "p": scores.p, "probs": probs}
    events = find_events("frames", curve, (NAMES, 2), EventConfig(0.5, min_duration=0.0))
    assert len(events) == 1  # an alarm on every frame: border and banner drawn
    out = render_video(folder, tmp_path / "out.mp4", scores, 0.5, events)
    expected_width = max(2, round(w * HEIGHT / h / 2) * 2)
    with av.open(str(out)) as container:
        images = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(images) == rows
    assert images[0].shape == (HEIGHT, expected_width + 480, 3)
    centre = [img[HEIGHT // 2, expected_width // 2].astype(int) for img in images]
    if expected_width > 2 * BORDER:
        assert all(np.diff([c.mean() for c in centre]) > 10)  # the frames, in order
    else:  # nothing left inside the alarm's border: the border, and no failure
        assert all(c[0] > 150 and c[1] < 90 and c[2] < 90 for c in centre)


def test_a_variable_rate_video_plays_as_long_as_its_source(tmp_path, shared_videos):
    """tree.avi holds 68 frames at irregular times over 29.6 s (its header says 444 frames at
    15 fps; a camera that records on motion writes such files). Each output frame keeps the
    time of its input frame, so the render lasts as long as the source, and the clock drawn
    on a frame (its decoded time) is the time the player shows it at."""
    from anomalyclip.extract.decode import VideoSource

    path = shared_videos / "tree.avi"
    with av.open(str(path)) as container:
        source_seconds = container.duration / av.time_base
        interval = 1 / float(container.streams.video[0].average_rate)
    times = np.array([f.time for f in VideoSource(path)])
    T = len(times)
    assert T == 68 and times[-1] > 29  # not 68 / 15 = 4.5 s
    p = np.linspace(0.05, 0.95, T)
    probs = np.stack([0.5 * p, 0.3 * p, 1 - p, 0.2 * p], axis=1)
    scores = Scores(np.arange(T), times, p, probs, NAMES, 2)
    out = render_video(path, tmp_path / "tree.mp4", scores, 0.5, [])
    with av.open(str(out)) as container:
        shown = np.array([float(f.time) for f in container.decode(video=0)])
        seconds = container.duration / av.time_base
    assert len(shown) == T
    np.testing.assert_allclose(shown, times, atol=1e-4)
    assert abs(seconds - source_seconds) <= interval, (seconds, source_seconds)


def text_rows(image: np.ndarray) -> int:
    """Rows from the top of the highest to the bottom of the lowest white pixel."""
    white = np.flatnonzero((image.min(axis=-1) > 170).any(axis=1))
    return int(white[-1] - white[0] + 1) if white.size else 0


def test_the_alarm_banner_and_the_clock_are_readable(tmp_path):
    """At the render's height, the capitals of the ALARM banner and the clock's digits are at
    least 14 pixels tall, measured on the decoded MP4 (they were 8: PIL's default size)."""
    from anomalyclip.evaluate.text import STRIP, stamp_width

    T = 30
    src = write_ntsc_video(tmp_path / "in.mp4", T)
    p = np.full(T, 0.9)
    probs = np.tile([[0.7, 0.1, 0.1, 0.1]], (T, 1)) * p[:, None]
    probs[:, 2] = 1 - p
    frames, times = np.arange(T), np.arange(T) / (24000 / 1001)
    curve = {"frames": frames, "times": times, "p": p, "probs": probs}
    events = find_events("in.mp4", curve, (NAMES, 2), EventConfig(0.5, min_duration=0.2))
    out = render_video(src, tmp_path / "out.mp4", Scores(frames, times, p, probs, NAMES, 2),
                       0.5, events)  # fmt: skip
    with av.open(str(out)) as container:
        image = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert image.shape[0] == HEIGHT
    banner = image[BORDER : BORDER + STRIP + 4, BORDER + 4 : BORDER + 60]  # "ALARM"
    assert text_rows(banner) >= 14
    clock = image[
        HEIGHT - BORDER - STRIP : HEIGHT - BORDER, BORDER : BORDER + stamp_width("   0.00")
    ]
    assert text_rows(clock) >= 14


@pytest.mark.slow
def test_a_render_of_a_real_video_has_room_for_the_scene_and_the_curve(tmp_path, shared_videos):
    """vtest.avi (768x576, 795 frames of people walking): the render is 480 rows, the frame
    640x480 beside the 480-pixel panels, and the curve's axes (found in the decoded MP4 as
    their two dark horizontal lines, p = 1 and p = 0) span at least 150 rows, so a curve of
    p(A) between 0.15 and 0.5 is drawn over 50 rows or more (at 360 rows the frame was
    480x360 and the axes spanned 119 rows)."""
    from anomalyclip.extract.decode import VideoSource

    path = shared_videos / "vtest.avi"
    times = np.array([f.time for f in VideoSource(path, height=64)])
    T = len(times)
    p = 0.3 + 0.15 * np.sin(np.arange(T) / 40)
    probs = np.stack([0.5 * p, 0.3 * p, 1 - p, 0.2 * p], axis=1)
    out = render_video(path, tmp_path / "vtest.mp4", Scores(np.arange(T), times, p, probs,
                       NAMES, 2), 0.4, [])  # fmt: skip
    with av.open(str(out)) as container:
        image = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert (T, image.shape) == (795, (480, 640 + 480, 3))
    curve = image[: HEIGHT // 2, 640:].min(axis=-1)  # the curve panel, darkest channel
    spines = np.flatnonzero((curve < 80).sum(axis=1) > 0.6 * curve.shape[1])
    assert spines.size >= 2 and spines[-1] - spines[0] >= 150, spines
