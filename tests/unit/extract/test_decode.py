"""Decoding: frame counts from decoding, repaired presentation times, sampling, errors."""

from __future__ import annotations

import av
import numpy as np
import pytest
from PIL import Image

from anomalyclip.errors import AnomalyError
from anomalyclip.extract.decode import Sampling, VideoSource, _TimeRepair
from anomalyclip.synthetic import encode_video

# Facts of the real files (their README: ffprobe -count_frames; the frame rates of the
# containers): decoded frames, (height, width), frame rate, the first frame's time and,
# for constant-rate files, the step between frames. tree.avi's header claims 444 frames.
REAL = {
    "vtest.avi": (795, (576, 768), 10.0, 0.0),
    "tree.avi": (68, (240, 320), 14.999925, 0.0),
    "Megamind.avi": (270, (528, 720), 23.976, 1 / 23.976),
    "Megamind_bugy.avi": (270, (528, 720), 30.0, 1 / 30),
}


def _raw_times(path) -> list[float]:
    """Container timestamps in decoder output order, unrepaired."""
    with av.open(str(path)) as c:
        return [float(f.pts * f.time_base) for f in c.decode(video=0)]


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_videos_decode_to_their_known_frames(shared_videos, name):
    """The package's decoder gives each file's true frame count (not the header's), its
    size as RGB, its rate, and strictly increasing times starting where the file starts."""
    decoded, (h, w), fps, start = REAL[name]
    source = VideoSource(shared_videos / name)
    frames = list(source)
    assert source.num_decoded == decoded == len(frames)
    assert source.fps == pytest.approx(fps, rel=1e-6)
    assert [f.index for f in frames] == list(range(decoded))
    assert {f.image.shape for f in frames} == {(h, w, 3)}
    assert {f.image.dtype for f in frames} == {np.dtype(np.uint8)}
    times = np.array([f.time for f in frames])
    assert times[0] == pytest.approx(start, abs=1e-6)
    assert np.all(np.diff(times) > 0)
    if name != "tree.avi":  # constant rate: frame k at start + k / fps, no frame lost
        np.testing.assert_allclose(times, start + np.arange(decoded) / fps, atol=1e-6)


@pytest.mark.slow
def test_real_pictures_are_the_scenes(shared_videos):
    """What the pixels hold: Megamind opens on a black frame; vtest is a daylight street
    scene (mean level ~112 of 255), its first and last frames nearly alike (fixed camera)."""
    first = next(iter(VideoSource(shared_videos / "Megamind.avi"))).image
    assert first.max() <= 16
    street = [f.image.astype(np.float64) for f in VideoSource(shared_videos / "vtest.avi")]
    assert 100 < street[0].mean() < 125 and 100 < street[-1].mean() < 125
    assert np.abs(street[0] - street[-1]).mean() < 15  # the same street, people moved
    assert np.abs(street[0] - street[1]).mean() < np.abs(street[0] - street[-1]).mean()


def test_megamind_times_are_repaired(shared_videos):
    """Packed B-frames in AVI: the container gives the decoder's output timestamps out of
    order (88 inversions in both files); the package's decoder hands them out in order,
    one frame period apart."""
    for name in ("Megamind.avi", "Megamind_bugy.avi"):
        raw = np.array(_raw_times(shared_videos / name))
        assert np.sum(np.diff(raw) <= 0) > 50
        times = np.array([f.time for f in VideoSource(shared_videos / name)])
        np.testing.assert_allclose(np.diff(times), 1 / REAL[name][2], atol=1e-6)
        np.testing.assert_allclose(times, np.sort(raw), atol=1e-6)  # invents none


def test_tree_times_keep_the_gaps(shared_videos):
    """tree.avi's 68 coded frames sit at irregular slots of a ~15 fps timeline."""
    times = np.array([f.time for f in VideoSource(shared_videos / "tree.avi")])
    assert times[1] == pytest.approx(11 / 14.999925, rel=1e-5)  # slot 11: 0.7333 s
    assert times[-1] == pytest.approx(29.533481, abs=1e-5)


def test_time_repair_sorts_within_window_and_fills_gaps():
    repair = _TimeRepair(period=0.5, window=4)
    out = []
    for t in [0.0, 2.0, 1.0, None, 3.0, 3.0]:
        repair.push(t)
    for _ in range(6):
        out.append(repair.pop())
    # sorted 0, 1, 2, 3; duplicate 3 -> 3.5; missing timestamp -> 4.0
    assert out == [0.0, 1.0, 2.0, 3.0, 3.5, 4.0]


def test_sampling_stride_and_fps(shared_videos):
    path = shared_videos / "vtest.avi"  # 795 frames at 10 fps
    stride = VideoSource(path, Sampling("stride", 5))
    kept = [f.index for f in stride]
    assert kept == list(range(0, 795, 5)) and stride.num_decoded == 795
    by_time = [(f.index, f.time) for f in VideoSource(path, Sampling("fps", 2))]
    assert [i for i, _ in by_time] == list(range(0, 795, 5))
    np.testing.assert_allclose([t for _, t in by_time], np.arange(159) * 0.5, atol=1e-9)
    # asking for more than the native rate keeps every frame
    assert len(list(VideoSource(path, Sampling("fps", 25)))) == 795


@pytest.mark.parametrize("bad", [("stride", 0), ("fps", -1.0), ("stride", 2.5), ("every", 1)])
def test_sampling_rejects_bad_values(bad):
    with pytest.raises(AnomalyError, match="sampling"):
        Sampling(*bad)


def _numbered_frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frame k is a flat grey of level 8 * k (survives lossy coding as its mean)."""
    return np.repeat((8 * np.arange(n, dtype=np.uint8))[:, None, None, None], h * w * 3).reshape(
        n, h, w, 3
    )


def test_encoded_video_decodes_in_order_with_exact_count(tmp_path):
    path = tmp_path / "numbered.mp4"
    encode_video(path, _numbered_frames(30), fps=15)
    source = VideoSource(path)
    frames = list(source)
    assert source.num_decoded == 30 and source.fps == 15
    levels = [f.image.mean() for f in frames]
    np.testing.assert_allclose(levels, 8 * np.arange(30), atol=3)
    np.testing.assert_allclose([f.time for f in frames], np.arange(30) / 15, atol=1e-9)


def test_folder_of_frames_natural_order(tmp_path):
    folder = tmp_path / "clip01"
    folder.mkdir()
    images = _numbered_frames(12)
    for k, image in enumerate(images):  # unpadded names: frame10 must come after frame9
        Image.fromarray(image).save(folder / f"frame{k}.png")
    (folder / "notes.txt").write_text("not a frame")
    source = VideoSource(folder, Sampling("stride", 2), folder_fps=25)
    frames = list(source)
    assert source.num_decoded == 12 and source.fps == 25
    assert [f.index for f in frames] == list(range(0, 12, 2))
    assert [int(f.image[0, 0, 0]) for f in frames] == [8 * k for k in range(0, 12, 2)]
    assert [f.time for f in frames] == [k / 25 for k in range(0, 12, 2)]
    assert VideoSource(folder).fps is None  # known once iterated; 30 by default
    assert [f.time for f in VideoSource(folder)][1] == pytest.approx(1 / 30)


def test_broken_inputs_raise_anomaly_error_naming_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("this is a text file, not a video\n" * 20)
    good = tmp_path / "good.mp4"
    encode_video(good, _numbered_frames(30))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # loses the moov atom
    empty_dir = tmp_path / "frames"
    empty_dir.mkdir()
    cases = {
        empty: "empty file",
        text: "not a readable video",
        cut: "not a readable video",
        tmp_path / "missing.mp4": "no such file",
        empty_dir: "no image frames",
    }
    for path, reason in cases.items():
        with pytest.raises(AnomalyError) as info:
            list(VideoSource(path))
        message = str(info.value)
        assert message.startswith(f"{path}: ") and reason in message
        assert "\n" not in message


def test_truncated_avi_is_an_error_not_a_short_video(shared_videos, tmp_path):
    data = (shared_videos / "vtest.avi").read_bytes()
    cut = tmp_path / "vtest_cut.avi"
    cut.write_bytes(data[:4_000_000])  # half of the file, mid-packet
    with pytest.raises(AnomalyError, match=r"vtest_cut\.avi: corrupt packet after 390 decoded"):
        list(VideoSource(cut))


def _camera_clip(path, frames: int = 40):
    """An H.264 file of the demo world at a surveillance camera's 768 x 576: a textured scene
    with moving people-sized blobs and sensor noise, so every pixel and every frame differ as
    in real footage (a flat test pattern would hide rounding and chroma differences)."""
    from anomalyclip.synthetic import render_scene

    images, _ = render_scene("Explosion", np.random.default_rng(3), frames, (768, 576))
    encode_video(path, images, fps=25)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("source", ["camera", "Megamind"])
def test_kept_conversion_context_gives_pyav_s_own_pixels(tmp_path, request, source):
    """``Converter`` keeps one swscale context per stream instead of PyAV's new one per call
    (a speed change only): its RGB at the stored size, its RGB scaled to 360 rows with the
    area filter, and its yuv420p for the encoders are bit-identical to PyAV's per-call
    conversions, and every array it handed out is still intact after later conversions.
    Megamind.avi is MPEG-4 Part 2 with B-frames, 720 x 528."""
    from anomalyclip.extract.decode import Converter

    if source == "camera":
        path = _camera_clip(tmp_path / "camera.mp4")
    else:
        path = request.getfixturevalue("shared_videos") / "Megamind.avi"
    full, scaled, to_yuv = Converter(), Converter(), Converter()
    ours, theirs = [], []
    with av.open(str(path)) as container:
        for _, frame in zip(range(40), container.decode(video=0), strict=False):
            width = max(2, round(frame.width * 360 / frame.height / 2) * 2)
            rgb = full.rgb(frame)
            small = scaled.rgb(frame, width, 360, "AREA")
            yuv = to_yuv.for_encoder(rgb).to_ndarray()
            ours.append((rgb, small, yuv))
            theirs.append((
                frame.to_ndarray(format="rgb24"),
                frame.to_ndarray(format="rgb24", width=width, height=360, interpolation="AREA"),
                av.VideoFrame.from_ndarray(rgb.copy(), format="rgb24")
                .reformat(format="yuv420p").to_ndarray(),
            ))  # fmt: skip
    assert len(ours) == 40, path
    assert ours[0][1].shape == (360, width, 3)
    for k, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for mine, pyav in zip(a, b, strict=True):
            assert mine.shape == pyav.shape and np.array_equal(mine, pyav), (path, k)
    # a changing scene: the frames really differ, so a reused buffer would have shown
    assert np.abs(ours[0][0].astype(int) - ours[-1][0]).mean() > 1.0


def test_a_converter_follows_a_change_of_size(tmp_path):
    """A stream may change resolution mid-way (cameras do): the kept context must follow the
    new input size rather than read the new frame with the old geometry."""
    from anomalyclip.extract.decode import Converter

    rng = np.random.default_rng(0)
    convert = Converter()
    for h, w in [(48, 64), (96, 128), (48, 64)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        expected = frame.to_ndarray(format="rgb24", width=32, height=24)
        got = convert.rgb(frame, 32, 24)
        assert np.array_equal(got, expected), (h, w)
        assert np.array_equal(convert.rgb(frame), frame.to_ndarray(format="rgb24")), (h, w)
