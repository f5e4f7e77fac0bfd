"""Videos that end early or never end: truncated sources and decoders that stall.

The hostile files are real: a copy of ``vtest.avi`` cut at a packet boundary (what a copy
interrupted at a file-system block leaves: the header still says 795 frames), and MP4 files
written by PyAV with ``movflags=faststart`` (the index at the front, as web videos are) then
cut inside their data, so the index lists frames that are not there.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from anomalyclip.cli import main
from anomalyclip.demo import render_video, video_codec
from anomalyclip.extract.decode import VideoSource
from anomalyclip.store import open_store

HERE = Path(__file__).resolve().parent


def faststart_mp4(path: Path, frames: int = 32, seed: int = 0) -> Path:
    """A real H.264 (or the demo's fallback codec) MP4 with its index before its data."""
    pixels, _ = render_video("Explosion", np.random.default_rng(seed), frames, (128, 96))
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "faststart"}) as c:
        stream = c.add_stream(video_codec(), rate=15)
        stream.width, stream.height, stream.pix_fmt = 128, 96, "yuv420p"
        for t, image in enumerate(pixels):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = t
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    return path


def cut_at_packet(src: Path, dst: Path, keep: int) -> Path:
    """Copy ``src`` up to the start of its ``keep``-th video packet in file order."""
    with av.open(str(src)) as c:
        starts = sorted(p.pos for p in c.demux(c.streams.video[0]) if p.size)
    dst.write_bytes(src.read_bytes()[: starts[keep]])
    return dst


def anomaly(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["anomaly", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


# -- truncated sources (issue 18, item 6) ---------------------------------------------------
def test_sources_ending_far_short_of_their_header_are_flagged(shared_videos, tmp_path):
    vtest_cut = cut_at_packet(shared_videos / "vtest.avi", tmp_path / "vtest_cut.avi", 101)
    mp4 = faststart_mp4(tmp_path / "clip.mp4")
    mp4_cut = cut_at_packet(mp4, tmp_path / "clip_cut.mp4", 17)
    expected = {vtest_cut: (101, 795), mp4_cut: (17, 32)}
    for path, (kept, declared) in expected.items():
        source = VideoSource(path)
        assert sum(1 for _ in source) == kept == source.num_decoded
        assert source.truncated.startswith(f"decoded {kept} of the {declared} frames")
    # whole files, and tree.avi whose header says 444 frames for 68 coded ones spread over
    # the whole 29.6 s (dropped frames are time gaps, not truncation)
    for path in (shared_videos / "vtest.avi", shared_videos / "tree.avi", mp4):
        source = VideoSource(path)
        assert sum(1 for _ in source) > 0 and source.truncated == "", path


def test_truncated_videos_are_stored_flagged_reported_and_refused_by_strict(
    monkeypatch, capsys, shared_videos, tiny_clip, tmp_path
):
    root = tmp_path / "demo"
    folder = root / "train" / "Normal"
    folder.mkdir(parents=True)
    cut_at_packet(shared_videos / "vtest.avi", folder / "vtest_cut.avi", 101)
    mp4 = faststart_mp4(folder / "clip.mp4")
    cut_at_packet(mp4, folder / "clip_cut.mp4", 17)
    store = tmp_path / "s.zarr"
    args = ["features", "--dataset", "demo", "--videos", root, "--model", tiny_clip,
            "--device", "cpu", "--workers", "1", "--batch-size", "32"]  # fmt: skip
    code, out, _ = anomaly(monkeypatch, capsys, *args, "--out", store)
    assert code == 0
    assert "3 extracted, 0 already done, 0 failed, 2 truncated" in out
    assert "  truncated train/Normal/vtest_cut: decoded 101 of the 795 frames" in out
    with open_store(store) as st:
        assert st.record("train/Normal/vtest_cut").num_frames == 101
        assert st.record("train/Normal/clip_cut").truncated.startswith("decoded 17 of the 32")
        assert st.record("train/Normal/clip").truncated == ""
    code, out, _ = anomaly(monkeypatch, capsys, "store", "info", store, "--json")
    assert code == 0 and json.loads(out)["truncated"] == 2
    code, out, _ = anomaly(monkeypatch, capsys, "store", "ls", store)
    states = dict(line.split("\t")[0::4] for line in out.splitlines())
    assert states["train/Normal/clip"] == "ok"
    assert states["train/Normal/clip_cut"].startswith("ok (truncated source: decoded 17 of")
    code, out, _ = anomaly(monkeypatch, capsys, "store", "verify", store)
    assert code == 0 and out.splitlines()[-1] == f"{store}: all 3 videos intact (2 truncated)"
    assert "train/Normal/vtest_cut: truncated source, stored as decoded: decoded 101" in out

    strict = tmp_path / "strict.zarr"
    code, out, _ = anomaly(monkeypatch, capsys, *args, "--out", strict, "--strict")
    assert code == 1
    assert "1 extracted, 0 already done, 2 failed" in out
    with open_store(strict) as st:
        assert st.video_ids() == ["train/Normal/clip"]
        failures = st.failures()
        assert sorted(failures) == ["train/Normal/clip_cut", "train/Normal/vtest_cut"]
        assert (
            "truncated (--strict): decoded 101 of the 795"
            in failures["train/Normal/vtest_cut"]["error"]
        )
