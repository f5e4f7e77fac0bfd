"""``[retention]``: clips within ``max_gb`` and ``max_days`` (oldest first, never one being
written), ``events.jsonl`` rotated past ``max_log_mb``; every deletion logged and counted.

Real files on disk throughout: clip files aged with ``os.utime``, a clip claimed by a real
``ClipRecorder``, and a watch that writes real clips (x264) of a demo-style video twice into
one folder.
"""

from __future__ import annotations

import io
import json
import logging
import os
import time
from pathlib import Path

import pytest
from synthetic_stores import quick_run
from watch_helpers import event_video, read_events

from anomalyclip.events import EventConfig
from anomalyclip.live.clips import ClipRecorder, FrameRing
from anomalyclip.live.config import RetentionConfig, WatchConfig
from anomalyclip.live.retention import ClipRetention
from anomalyclip.live.sinks import JsonLinesFile
from anomalyclip.live.watch import Watcher, load_for_watch, run_sampling

DAY = 86400


def clip(folder: Path, name: str, size: int, days: float, now: float) -> Path:
    path = folder / name
    path.write_bytes(os.urandom(size))
    os.utime(path, (now - days * DAY, now - days * DAY))
    return path


def test_clips_go_oldest_first_and_never_while_written(tmp_path, caplog):
    folder = tmp_path / "clips"
    folder.mkdir()
    now = time.time()
    recorder = ClipRecorder(folder)
    assert recorder.open("cam", FrameRing(5.0), 7, 0.0) is None  # claims cam-000000007.mp4
    claimed = folder / "cam-000000007.mp4"
    os.utime(claimed, (now - 30 * DAY, now - 30 * DAY))
    part = clip(folder, claimed.name + ".part", 300_000, 30, now)  # as the recorder writes it
    old = clip(folder, "a.mp4", 300_000, 20, now)
    older = clip(folder, "b.mp4", 300_000, 10, now)
    mid = clip(folder, "c.mp4", 300_000, 3, now)
    new = clip(folder, "d.mp4", 300_000, 1, now)
    clip(folder, "e.mp4", 0, 50, now)  # a name claimed by a watch that was killed
    (folder / "notes.txt").write_text("not a clip")
    os.utime(folder / "notes.txt", (now - 90 * DAY, now - 90 * DAY))
    # 7 days: a and b are too old; then 0.8 MB: of the 0.9 MB left (c, d and the clip being
    # written), c goes, the oldest that may go
    keeper = ClipRetention(folder, RetentionConfig(max_gb=0.8e6 / 2**30, max_days=7), recorder)
    with caplog.at_level(logging.INFO, logger="anomalyclip.live.retention"):
        deleted = keeper.prune(now)
    assert deleted == [old, older, mid]
    assert sorted(os.listdir(folder)) == sorted([claimed.name, part.name, new.name, "e.mp4",
                                                 "notes.txt"])  # fmt: skip
    lines = [r.getMessage() for r in caplog.records if "retention: deleted" in r.getMessage()]
    assert len(lines) == 3 and "a.mp4 (0.3 MB, 20.0 days old; too old)" in lines[0]
    assert "c.mp4" in lines[2] and "over the size limit" in lines[2]
    assert keeper.report() == {"deleted": 3, "freed MB": 1}
    assert keeper.prune(now) == []  # within its limits now


def test_events_jsonl_rotates_by_size_and_keeps_n(tmp_path, caplog):
    path = tmp_path / "events.jsonl"
    sink = JsonLinesFile(path, max_bytes=1000, keep=2)
    lines = [json.dumps({"kind": "updated", "n": k, "pad": "x" * 80}) for k in range(60)]
    with caplog.at_level(logging.INFO, logger="anomalyclip.live.sinks"):
        for line in lines:
            sink.write({}, line)
    sink.close()
    files = [path, path.with_name("events.jsonl.1"), path.with_name("events.jsonl.2")]
    assert sorted(os.listdir(tmp_path)) == sorted(f.name for f in files)
    kept = [x for f in reversed(files) for x in f.read_text().splitlines()]
    assert kept == lines[-len(kept) :]  # the newest lines, whole, in order
    assert all(f.stat().st_size <= 1000 for f in files)
    report = sink.report()
    assert report["written"] == 60 and report["unwritten"] == 0
    per_file = 1000 // (len(lines[0]) + 1)
    assert report["rotated"] == (60 - 1) // per_file and report["deleted"] == report["rotated"] - 2
    deletions = [r for r in caplog.records if "retention: deleted" in r.getMessage()]
    assert len(deletions) == report["deleted"]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, tiny_clip):
    run_dir = quick_run(tmp_path_factory.mktemp("run"), tiny_clip, epochs=1, n_each=4)[1]
    model, encoder, config = load_for_watch(run_dir, None, "cpu")
    return model, encoder, run_sampling(config, run_dir)


@pytest.mark.slow
def test_a_watch_keeps_its_clips_and_log_within_the_limits(loaded, tmp_path, caplog):
    """Threshold 0: each watch of the 6 s video is one event and one clip. The second watch
    into the same folder may keep 1.5 clips' worth: the first clip goes, the second stays;
    ``events.jsonl`` (at most 2 KB, one rotated file kept) is rotated on the way."""
    video = event_video(tmp_path)
    out = tmp_path / "out"

    def run(retention: RetentionConfig | None) -> dict:
        cfg = WatchConfig(EventConfig(0.0), out=out, status_every=0, save_clips=True,
                          retention=retention)  # fmt: skip
        return Watcher([video], *loaded[:2], loaded[2], cfg, io.StringIO()).run()

    run(None)
    (first,) = (out / "clips").iterdir()
    time.sleep(1.1)  # the second clip is newer, also to a file system's 1 s mtime
    limit = 1.5 * first.stat().st_size / 2**30
    with caplog.at_level(logging.INFO):
        summary = run(RetentionConfig(max_gb=limit, max_log_mb=2000 / 2**20, keep_logs=1))
    (second,) = (out / "clips").iterdir()
    assert second != first and second.name.endswith("-1.mp4")
    assert summary["outputs"]["retention"] == {"deleted": 1, "freed MB": 0}
    assert any(f"retention: deleted {first}" in r.getMessage() for r in caplog.records)
    assert summary["outputs"]["events.jsonl"]["rotated"] >= 1
    assert sorted(os.listdir(out)) == ["clips", "events.jsonl", "events.jsonl.1"]
    assert all(len(read_events(out / f)) for f in ("events.jsonl", "events.jsonl.1"))
