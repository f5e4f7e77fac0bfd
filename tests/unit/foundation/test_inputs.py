"""Inputs of ``features``, ``predict`` and ``watch``: camera exports decoded whatever their
suffix, folders, globs and list files expanded the same way for every command."""

from __future__ import annotations

import shutil
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from anomalyclip.datasets import discover
from anomalyclip.datasets.files import FileIndex
from anomalyclip.errors import AnomalyError
from anomalyclip.extract.decode import VideoSource
from anomalyclip.inputs import display_name, expand_inputs, is_live, redact, safe_source_name
from anomalyclip.synthetic import render_scene

FRAMES = 12


def frames(seed: int = 0) -> np.ndarray:
    pixels, _ = render_scene("Normal", np.random.default_rng(seed), FRAMES, (96, 64))
    return pixels


def encode(path, fmt: str, codec: str, pix_fmt: str = "yuv420p") -> None:
    """What a camera or recorder export holds: ``codec`` in container ``fmt`` (raw streams
    for h264/hevc), written by FFmpeg's own muxers."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=15)
        stream.width, stream.height, stream.pix_fmt = 96, 64, pix_fmt
        stream.codec_context.time_base = Fraction(1, 15)
        if codec in ("libx264", "libx265"):
            stream.options = {"preset": "ultrafast", "bf": "0"}
            if codec == "libx265":
                stream.options = {"preset": "ultrafast", "x265-params": "log-level=none"}
        for t, image in enumerate(frames()):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = t
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


# (file name, container format, codec): the suffixes cameras, DVRs and phones export
EXPORTS = [
    ("cam.h264", "h264", "libx264"),  # raw Annex-B H.264: no container, no timestamps
    ("cam.264", "h264", "libx264"),
    ("cam.h265", "hevc", "libx265"),
    ("cam.mts", "mpegts", "libx264"),  # AVCHD / recorder transport streams
    ("cam.m2ts", "mpegts", "libx264"),
    ("cam.3gp", "3gp", "libx264"),
    ("cam.asf", "asf", "msmpeg4"),
    ("cam.vob", "vob", "mpeg2video"),
    ("cam.dav", "h264", "libx264"),  # DVR exports of raw H.264 under the vendor's suffix
    ("export.bin_", "mpegts", "libx264"),  # a suffix nothing knows: the content decides
    ("noext", "mpegts", "libx264"),
]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exports")
    for name, fmt, codec in EXPORTS:
        encode(folder / name, fmt, codec)
    return folder


@pytest.mark.parametrize("name", [e[0] for e in EXPORTS])
def test_camera_exports_decode_whatever_their_suffix(exports, name):
    source = VideoSource(exports / name)
    decoded = list(source)
    assert len(decoded) == source.num_decoded == FRAMES
    assert decoded[0].image.shape == (64, 96, 3)
    times = np.array([f.time for f in decoded])
    assert (np.diff(times) > 0).all()  # raw streams carry no timestamps: repaired, increasing
    # the pixels are the rendered scene (lossy coding: close, not equal)
    assert np.abs(decoded[3].image.astype(int) - frames()[3]).mean() < 12
    # named on a command line, it is taken as it is: never refused for its suffix
    assert expand_inputs([str(exports / name)]) == [exports / name]


def test_a_folder_keeps_its_videos_and_skips_what_is_not_video(exports, tmp_path):
    folder = tmp_path / "cams"
    shutil.copytree(exports, folder)
    (folder / "notes.txt").write_text("not a video\n")
    (folder / "meta.json").write_text("{}")
    (folder / "garbage.xyz").write_bytes(np.random.default_rng(0).bytes(4000))
    (folder / "empty.dat").write_bytes(b"")
    frames_dir = folder / "sub" / "frames"
    frames_dir.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(frames()[i]).save(frames_dir / f"{i:03d}.png")
    found = expand_inputs([str(folder)])
    names = [p.name for p in found]
    # every video, known suffix or not (probed), in natural order; the frame folder as one
    # video; the text, JSON, random bytes and empty file skipped
    assert sorted(names) == sorted([e[0] for e in EXPORTS] + ["frames"])
    assert "garbage.xyz" not in names and "notes.txt" not in names
    # a folder of frames given directly is one video
    assert expand_inputs([str(frames_dir)]) == [frames_dir]


def test_globs_and_list_files(exports, tmp_path, monkeypatch):
    listed = tmp_path / "lists"
    listed.mkdir()
    (listed / "cams.txt").write_text(
        "# cameras of the north gate\n"
        f"{exports / 'cam.h264'}\n"
        "\n"
        "../exports_link/cam.mts\n"  # relative to the list's folder
        f"{exports}/cam.*4\n"  # a glob: cam.264 (cam.h264 is already in)
        f"{exports / 'cam.h264'}\n"  # named twice: taken once
    )
    (tmp_path / "exports_link").symlink_to(exports)
    found = expand_inputs([str(listed / "cams.txt")])
    assert [p.name for p in found] == ["cam.h264", "cam.mts", "cam.264"]
    # a list without a .txt suffix is recognised by its text content
    shutil.copy(listed / "cams.txt", listed / "cams")
    assert expand_inputs([str(listed / "cams")]) == found
    # globs on the command line; relative paths stay as the user wrote them
    monkeypatch.chdir(exports)
    assert expand_inputs(["cam.m*ts"]) == [Path("cam.m2ts"), Path("cam.mts")]


def test_live_sources_and_errors(tmp_path):
    urls = ["rtsp://127.0.0.1:8554/cam", "udp://127.0.0.1:5000", "http://127.0.0.1/a.m3u8"]
    assert all(is_live(u) for u in urls) and is_live("/dev/video0")
    assert expand_inputs(urls, live=True) == urls
    # outputs (JSON lines, webhook, logs, clip names) never carry a camera's password
    assert (
        display_name("rtsp://admin:s3cret@10.0.0.5:554/cam1")
        == "rtsp://admin:***@10.0.0.5:554/cam1"
    )
    assert safe_source_name("rtsp://admin:s3cret@10.0.0.5:554/cam1") == "10.0.0.5_554_cam1"
    assert safe_source_name("/data/exports/gate 3.dav") == "gate_3"
    with pytest.raises(AnomalyError, match=r"rtsp://127.0.0.1:8554/cam: a live stream"):
        expand_inputs(urls)
    listing = tmp_path / "l.txt"
    listing.write_text("nope.mp4\n")
    with pytest.raises(AnomalyError, match=rf"^{listing}:1: nope.mp4: no such video file"):
        expand_inputs([str(listing)])
    with pytest.raises(AnomalyError, match="no such video file or frame folder"):
        expand_inputs([str(tmp_path / "missing.mp4")])
    with pytest.raises(AnomalyError, match="the pattern matches no video"):
        expand_inputs([str(tmp_path / "*.mp4")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnomalyError, match="no videos found"):
        expand_inputs([str(tmp_path / "empty")])
    (tmp_path / "blank.txt").write_text("# nothing\n\n")
    with pytest.raises(AnomalyError, match="names no video"):
        expand_inputs([str(tmp_path / "blank.txt")])


def test_features_find_camera_exports_in_a_dataset(exports, tmp_path):
    """Dataset discovery takes the camera suffixes, and any file a list names exactly."""
    root = tmp_path / "demo"
    for split, label, name, copy in [
        ("train", "Normal", "cam1.mts", "cam.mts"),
        ("train", "Normal", "cam2.h264", "cam.h264"),
        ("test", "Normal", "cam3.dav", "cam.dav"),
    ]:
        (root / split / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(exports / copy, root / split / label / name)
    entries = discover("demo", root)
    assert sorted(e.path.name for e in entries) == ["cam1.mts", "cam2.h264", "cam3.dav"]
    assert sorted(e.video_id for e in entries) == [
        "test/Normal/cam3",
        "train/Normal/cam1",
        "train/Normal/cam2",
    ]
    # a list naming a file with a suffix no table knows still finds it
    shutil.copy(exports / "export.bin_", root / "train" / "Normal" / "export.bin_")
    assert FileIndex(root).locate("train/Normal/export.bin_") == root / "train/Normal/export.bin_"


def expand_in_child(items: list[str], cwd: Path, timeout: float = 120) -> list[str]:
    """``expand_inputs(items)`` in a child process, so an expansion that never ends fails the
    test (after ``timeout`` seconds) instead of hanging it."""
    import json
    import subprocess
    import sys

    code = (
        "import json, sys\n"
        "from anomalyclip.inputs import expand_inputs\n"
        "print(json.dumps([str(p) for p in expand_inputs(sys.argv[1:])]))\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code, *items], cwd=cwd, timeout=timeout,
                              capture_output=True, text=True)  # fmt: skip
    except subprocess.TimeoutExpired:
        raise AssertionError(f"expanding {items} did not finish in {timeout:g} s") from None
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_symlink_loops_are_skipped_by_globs_and_folders(exports, tmp_path):
    """``cams/a -> .`` and ``cams/b -> .``: a ``**`` glob that followed them would meet
    2^depth paths; each folder is visited once, so every video comes once and the
    expansion ends. A link to a folder outside is still followed."""
    cams = tmp_path / "cams"
    (cams / "gate").mkdir(parents=True)
    shutil.copy(exports / "cam.mts", cams / "north.mts")
    shutil.copy(exports / "cam.mts", cams / "gate" / "south.mts")
    (tmp_path / "nas").mkdir()
    shutil.copy(exports / "cam.mts", tmp_path / "nas" / "east.mts")
    (cams / "a").symlink_to(".")
    (cams / "b").symlink_to(".")
    (cams / "gate" / "up").symlink_to("..")
    (cams / "nas").symlink_to(tmp_path / "nas")
    (cams / "self.mts").symlink_to("self.mts")  # a link to itself: not a video, skipped
    expected = ["cams/gate/south.mts", "cams/nas/east.mts", "cams/north.mts"]
    assert sorted(expand_in_child(["cams/**/*.mts"], tmp_path)) == expected
    assert sorted(expand_in_child(["cams"], tmp_path)) == expected
    # one level down: through the loop links too, but the same file is taken once
    assert expand_in_child(["cams/*/*.mts"], tmp_path) == [
        "cams/a/north.mts", "cams/gate/south.mts", "cams/nas/east.mts"
    ]  # fmt: skip


MASKED = [
    ("rtsp://admin:s3cret@10.0.0.5:554/cam1", "rtsp://admin:***@10.0.0.5:554/cam1"),
    ("rtsp://admin:p@ss'w0rd@10.0.0.5/cam", "rtsp://admin:***@10.0.0.5/cam"),  # '@' and "'"
    ("rtsp://admin:a/b@10.0.0.5/cam", "rtsp://admin:***@10.0.0.5/cam"),  # '/' unencoded
    ("rtsp://t0kenXYZ@10.0.0.5/cam", "rtsp://***@10.0.0.5/cam"),  # a token as the user
    ("http://10.0.0.5/live.ts?user=bob&password=hunter2&pwd=1&passwd=2&channel=1",
     "http://10.0.0.5/live.ts?user=bob&password=***&pwd=***&passwd=***&channel=1"),
    ("https://h/x?token=a&access_token=b&auth=c&key=d&apikey=e&api_key=f&secret=g&sig=h",
     "https://h/x?token=***&access_token=***&auth=***&key=***&apikey=***&api_key=***"
     "&secret=***&sig=***"),
    ("https://b.s3.amazonaws.com/a.ts?X-Amz-Credential=AK%2F1&X-Amz-Date=2024&"
     "X-Amz-Signature=ff&X-Amz-Security-Token=zz",
     "https://b.s3.amazonaws.com/a.ts?X-Amz-Credential=***&X-Amz-Date=2024&"
     "X-Amz-Signature=***&X-Amz-Security-Token=***"),
    ("http://h/p#access_token=abc&state=1", "http://h/p#access_token=***&state=1"),
    # in a message: every URL, even quoted with a quote in its password
    ("cannot open: 'rtsp://u:it'sX@h/c' (refused); http://h/y?signature=s",
     "cannot open: 'rtsp://u:***@h/c' (refused); http://h/y?signature=***"),
    ("/data/exports/gate 3.dav", "/data/exports/gate 3.dav"),  # not a URL: as it is
    ("udp://127.0.0.1:5000", "udp://127.0.0.1:5000"),
]  # fmt: skip


@pytest.mark.parametrize("url, shown", MASKED)
def test_every_credential_of_a_url_is_masked(url, shown):
    assert redact(url) == shown and display_name(url) == shown
    name = safe_source_name(url)  # a clip's file name: no credentials, no query
    for secret in ("s3cret", "w0rd", "t0ken", "hunter2", "AK", "a/b"):
        assert secret not in name
