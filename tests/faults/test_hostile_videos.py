"""Videos that end early or never end: truncated sources and decoders that stall.

The hostile files are real: a copy of ``vtest.avi`` cut at a packet boundary (what a copy
interrupted at a file-system block leaves: the header still says 795 frames), and MP4 files
written by PyAV with ``movflags=faststart`` (the index at the front, as web videos are) then
cut inside their data, so the index lists frames that are not there.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest
from cli_helper import anomaly
from paths import ROOT, SUPPORT

from anomalyclip.extract.decode import VideoSource
from anomalyclip.extract.mp4 import video_codec
from anomalyclip.store import open_store
from anomalyclip.synthetic import render_scene


def faststart_mp4(path: Path, frames: int = 32, seed: int = 0) -> Path:
    """A real H.264 (or the demo's fallback codec) MP4 with its index before its data."""
    pixels, _ = render_scene("Explosion", np.random.default_rng(seed), frames, (128, 96))
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


# -- truncated sources ----------------------------------------------------------------------
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


@pytest.mark.slow
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


# -- decoders that never end -----------------------------------------------------------------
def run_child(code: str, *args, timeout: float) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; a hang fails the test instead of the suite."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(SUPPORT)])}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=env,
    )  # fmt: skip


@pytest.mark.slow
def test_truncated_faststart_mp4_never_hangs_extraction(tiny_clip, tmp_path):
    """`anomaly features` over a faststart MP4 cut at every 50th byte: each copy must end,
    as a failed video (with its reason) or a stored one (flagged when truncated). Freeing
    FFmpeg's frame-threaded decoder after an error deadlocked on PyAV's log callback (the
    process hung holding the GIL, Ctrl-C ignored, in 2 runs of 3)."""
    whole = faststart_mp4(tmp_path / "clip.mp4").read_bytes()
    folder = tmp_path / "demo" / "train" / "Normal"
    folder.mkdir(parents=True)
    cuts = []
    for offset in range(1200, len(whole), 50):
        cuts.append(folder / f"cut{offset:05d}.mp4")
        cuts[-1].write_bytes(whole[:offset])
    store = tmp_path / "s.zarr"
    done = run_child(
        "from anomalyclip.cli import main; main()", "features", "--dataset", "demo",
        "--videos", tmp_path / "demo", "--out", store, "--model", tiny_clip, "--device", "cpu",
        "--workers", "2", "--batch-size", "32", timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]  # some copies fail: exit 1, not a hang
    assert f"{len(cuts)} videos: " in done.stdout
    with open_store(store) as st:
        failures = st.failures()
        assert set(st.video_ids()) | set(failures) == {f"train/Normal/{p.stem}" for p in cuts}
        assert all(f["error"].startswith(str(folder)) for f in failures.values())
        assert st.verify() == {}


STALLING = """
    import json, sys, time
    from pathlib import Path
    from anomalyclip.datasets.registry import VideoEntry
    from anomalyclip.extract import decode
    from anomalyclip.extract.pipeline import extract
    from anomalyclip.store.store import FeatureStore

    real = decode.VideoSource._iter_video
    def iter_video(self):  # a decoder stuck in C after its first frame (the GIL released)
        for n, frame in enumerate(real(self)):
            if "stall" in self.path.name and n == 1:
                time.sleep(3600)
            yield frame
    decode.VideoSource._iter_video = iter_video
    write = FeatureStore.write_video
    def write_video(self, record, *args):
        out = write(self, record, *args)
        print("written", record.video_id, flush=True)
        return out
    FeatureStore.write_video = write_video
    record = FeatureStore.record_failure
    def record_failure(self, video_id, *args):
        record(self, video_id, *args)
        print("failed", video_id, flush=True)
    FeatureStore.record_failure = record_failure
"""


@pytest.mark.slow
def test_a_stalled_decoder_fails_its_video_and_the_run_goes_on(tiny_clip, tmp_path):
    from anomalyclip.synthetic import encode_video

    paths = []
    for name in ("a.mp4", "stall.mp4", "b.mp4", "c.mp4"):
        pixels, _ = render_scene("Normal", np.random.default_rng(len(paths)), 12, (64, 48))
        paths.append(tmp_path / name)
        encode_video(paths[-1], pixels)
    code = (
        STALLING
        + """
    clip, store, *paths = sys.argv[1:]
    entries = [VideoEntry(Path(p).stem, Path(p), "Normal", "train") for p in paths]
    s = extract(entries, store, clip, dataset="demo", batch_size=8, workers=2, progress=False,
                stall_timeout=2)
    print(json.dumps({"extracted": s.extracted, "failed": s.failed}))
    """
    )
    # the stalled decoder sleeps an hour: ending at all (within the timeout, generous for a
    # busy machine) is the watchdog's doing
    done = run_child(code, tiny_clip, tmp_path / "s.zarr", *paths, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["extracted"] == 3 and list(summary["failed"]) == ["stall"]
    assert summary["failed"]["stall"] == (
        f"{paths[1]}: no frame decoded for 2 s (the decoder stalled; damaged or truncated file?)"
    )
    with open_store(tmp_path / "s.zarr") as st:
        assert sorted(st.video_ids()) == ["a", "b", "c"] and list(st.failures()) == ["stall"]


@pytest.mark.slow
def test_ctrl_c_ends_extraction_promptly(tiny_clip, tmp_path):
    """SIGINT while a decoder is stuck: the CLI stops within seconds (exit 130), what was
    complete stays, the stuck video is not complete and failures seen so far are recorded."""
    from anomalyclip.synthetic import encode_video

    root = tmp_path / "demo" / "train" / "Normal"
    root.mkdir(parents=True)
    for k, name in enumerate(("a.mp4", "stall.mp4", "b.mp4")):
        pixels, _ = render_scene("Normal", np.random.default_rng(k), 12, (64, 48))
        encode_video(root / name, pixels)
    (root / "empty.mp4").write_bytes(b"")
    code = STALLING + textwrap.indent(
        textwrap.dedent(
            """
            from anomalyclip.cli import main
            sys.argv = ["anomaly", *sys.argv[1:]]
            main()
            """
        ),
        "    ",
    )
    store = tmp_path / "s.zarr"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(SUPPORT)])}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), "features", "--dataset", "demo",
         "--videos", str(tmp_path / "demo"), "--out", str(store), "--model", str(tiny_clip),
         "--device", "cpu", "--workers", "2", "--batch-size", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    seen = set()
    try:
        deadline = time.monotonic() + 120
        while len(seen) < 3 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if line.startswith(("written", "failed")):
                seen.add(line.split()[1])
        assert seen == {"train/Normal/a", "train/Normal/b", "train/Normal/empty"}, seen
        time.sleep(0.5)  # the consumer now waits for the stuck decoder
        child.send_signal(signal.SIGINT)
        # the stuck decoder sleeps an hour: exiting at all means Ctrl-C did not wait for it
        _, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 130, err[-2000:]
    assert "Traceback" not in err
    with open_store(store) as st:
        assert sorted(st.video_ids()) == ["train/Normal/a", "train/Normal/b"]
        assert not st.is_complete("train/Normal/stall")
        assert list(st.failures()) == ["train/Normal/empty"]
        assert st.verify() == {}
