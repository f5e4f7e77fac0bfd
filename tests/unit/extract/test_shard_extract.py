"""Extraction split over processes: size-balanced shares, a real 2-process ``torchrun`` into one
store, a rank killed mid-way and resumed, ``--shard i/n`` job arrays merged afterwards.

Every multi-process run is compared video for video with one 1-process store of the same
videos. Features are stored in float16; the runs pack frames of different videos into
batches differently, and a CPU matmul rounds a row differently with the batch's shape, so a
float32 value may land on the other side of a float16 rounding boundary: features are compared
to one float16 step (rtol 2**-10, atol 2**-14), frames and times exactly.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from anomalyclip.backbone import build_clip
from anomalyclip.cli import app, main
from anomalyclip.datasets import discover
from anomalyclip.datasets.registry import DEMO, VideoEntry
from anomalyclip.demo import DemoScale, generate_demo_videos
from anomalyclip.errors import AnomalyError
from anomalyclip.extract import pipeline
from anomalyclip.extract.pipeline import extract, shard_entries
from anomalyclip.store import open_store, provenance

F16_RTOL, F16_ATOL = 2.0**-10, 2.0**-14  # one float16 step at 1 and near 0
BATCH, WORKERS = ["--batch-size", "16"], ["--workers", "1"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


# -- shares ------------------------------------------------------------------------------------
def _entries_of_sizes(root: Path, sizes: list[int]) -> list[VideoEntry]:
    entries = []
    for k, size in enumerate(sizes):
        path = root / f"v{k:02d}.mp4"
        with path.open("wb") as fh:
            fh.truncate(size)  # sparse: the size is all that shares look at
        entries.append(VideoEntry(f"v{k:02d}", path, "Normal", "train"))
    frames = root / "frames"  # a folder of frames counts the sum of its files
    frames.mkdir()
    for k in range(3):
        (frames / f"{k:05d}.jpg").write_bytes(b"x" * 4000)
    entries.append(VideoEntry("frames", frames, "Normal", "test"))
    return entries


def _size(entry: VideoEntry) -> int:
    if entry.path.is_dir():
        return sum(f.stat().st_size for f in entry.path.iterdir())
    return entry.path.stat().st_size


@pytest.mark.parametrize("world", [1, 2, 3, 5])
def test_shares_disjoint_complete_balanced_deterministic(tmp_path, world):
    rng = np.random.default_rng(world)
    sizes = [int(s) for s in rng.integers(1_000, 2_000_000, 23)] + [50_000, 50_000]  # a tie
    entries = _entries_of_sizes(tmp_path, sizes)
    shares = [shard_entries(entries, r, world) for r in range(world)]
    ids = [[e.video_id for e in share] for share in shares]
    flat = [vid for share in ids for vid in share]
    assert len(flat) == len(set(flat)) == len(entries)  # disjoint and complete
    assert set(flat) == {e.video_id for e in entries}
    assert all(share == sorted(share) for share in ids)
    loads = [sum(_size(e) for e in share) for share in shares]
    assert max(loads) - min(loads) <= max(_size(e) for e in entries)
    assert "frames" in flat and _size(entries[-1]) == 12_000
    # deterministic: the same shares from a shuffled list (another rank's listing order)
    shuffled = [entries[i] for i in rng.permutation(len(entries))]
    assert [[e.video_id for e in shard_entries(shuffled, r, world)] for r in range(world)] == ids
    if world == 2:  # by bytes, not by count: the largest video alone outweighs many small ones
        (tmp_path / "big").mkdir()
        big = _entries_of_sizes(tmp_path / "big", [10_000_000] + [1_000] * 8)
        a, b = (shard_entries(big, r, 2) for r in range(2))
        assert [e.video_id for e in a] == ["v00"] and len(b) == 9


@pytest.mark.parametrize("rank, world", [(2, 2), (-1, 2), (0, 0)])
def test_shares_refuse_bad_ranks(rank, world):
    with pytest.raises(AnomalyError, match=rf"shard {rank}/{world}"):
        shard_entries([], rank, world)


# -- waiting for rank 0 ------------------------------------------------------------------------
def _attrs() -> dict:
    return provenance(
        dataset="demo",
        classes=DEMO.classes,
        backbone={"model": "m", "dim": 512},
        preprocessing={"size": 224},
        sampling={"mode": "all"},
    )


def test_waiting_rank_retries_half_written_root_then_proceeds(tmp_path):
    store = tmp_path / "s.zarr"
    store.mkdir()
    (store / "zarr.json").write_text('{"zarr_format": 3, "node_ty')  # caught mid-write

    writing = threading.Event()

    def rank0() -> None:
        time.sleep(0.4)  # the waiting rank polls the half-written file meanwhile
        writing.set()
        with open_store(store, "w") as st:
            st.init(_attrs())

    writer = threading.Thread(target=rank0)
    writer.start()
    # returns once the root is readable; an error (not a retry) on the half-written file, or
    # no root within the generous timeout (a busy machine), fails the test
    pipeline._wait_for_root(store, timeout=120, poll=0.05)
    assert writing.is_set()  # it kept waiting until rank 0 wrote, whatever the load
    writer.join()
    with open_store(store) as st:
        assert st.attrs["schema"] == "anomalyclip.features"


def test_waiting_rank_times_out_naming_the_store(tiny_clip, tmp_path):
    store = tmp_path / "never.zarr"
    entries = [VideoEntry("a", tmp_path / "a.mp4", "Normal", "train")]
    with pytest.raises(AnomalyError, match=rf"{re.escape(str(store))}: rank 0 did not write"):
        extract(entries, store, tiny_clip, dataset="demo", shard=(1, 2), coordinated=True,
                root_timeout=0.3, progress=False)  # fmt: skip
    assert not store.exists()  # a waiting rank creates nothing


# -- real runs ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    """6 demo videos of 150-200 frames: long enough to kill a rank between two videos."""
    root = tmp_path_factory.mktemp("videos")
    generate_demo_videos(root, 3, DemoScale(n_train_normal=2, n_train_abnormal_per_class=1,
                         n_test_normal=1, n_test_abnormal_per_class=0, frames=(150, 200),
                         size=(96, 72)))  # fmt: skip
    return root


@pytest.fixture(scope="module")
def reference(videos, tiny_clip, tmp_path_factory) -> Path:
    """The 1-process store of all videos, as `anomaly features` would write it."""
    store = tmp_path_factory.mktemp("ref") / "one.zarr"
    summary = extract(discover("demo", videos), store, tiny_clip, device="cpu", batch_size=16,
                      workers=1, dataset="demo", root=videos, precision="auto",
                      progress=False)  # fmt: skip
    assert summary.ok and summary.extracted == 6
    return store


def _features_cmd(videos: Path, store: Path, clip: Path, *extra: str) -> list[str]:
    return ["features", "--dataset", "demo", "--videos", str(videos), "--out", str(store),
            "--model", str(clip), "--device", "cpu", *BATCH, *WORKERS, *extra]  # fmt: skip


def _torchrun(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            "2", "-m", "anomalyclip.cli", *args]  # fmt: skip


def assert_same_store(path: Path, ref: Path) -> None:
    """Equal video for video: ids, records, rows (to float16 rounding), frames, times, root."""
    with open_store(path) as a, open_store(ref) as b:
        assert a.video_ids() == b.video_ids() and len(a.video_ids()) > 0
        ra, rb = dict(a.attrs), dict(b.attrs)
        ra.pop("producer"), rb.pop("producer")
        assert ra == rb
        for vid in b.video_ids():
            fa, fb = a.features(vid), b.features(vid)
            assert fa.dtype == fb.dtype == np.float16 and fa.shape == fb.shape
            np.testing.assert_allclose(fa, fb, rtol=F16_RTOL, atol=F16_ATOL)
            np.testing.assert_array_equal(a.frames(vid), b.frames(vid))
            np.testing.assert_array_equal(a.times(vid), b.times(vid))
            reca, recb = asdict(a.record(vid)), asdict(b.record(vid))
            # the checksum covers the rows: equal exactly when the rows are bit-equal
            assert (reca.pop("sha256") == recb.pop("sha256")) == np.array_equal(fa, fb)
            assert reca == recb


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process(videos, reference, tiny_clip, tmp_path):
    store = tmp_path / "two.zarr"
    run = subprocess.run(_torchrun(_features_cmd(videos, store, tiny_clip)), env=ENV,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    log = run.stdout + run.stderr
    assert run.returncode == 0, log
    assert_same_store(store, reference)
    # root attributes written once, by rank 0; rank 1 only checked them
    lines = re.findall(r"rank (\d)/2: (wrote|checked) root attributes", log)
    assert sorted(lines) == [("0", "wrote"), ("1", "checked")], log
    with open_store(store) as st:
        assert st.attrs["producer"]["shard"] == "0/2"
    shares = {
        r: {e.video_id for e in shard_entries(discover("demo", videos), r, 2)} for r in (0, 1)
    }
    counts = [int(n) for n in re.findall(r"(\d+) videos: \d+ extracted", log)]
    assert sorted(counts) == sorted(len(s) for s in shares.values()) and sum(counts) == 6


def _pid_with_rank(parent: int, rank: int) -> int | None:
    """The descendant of ``parent`` whose environment says RANK=<rank> (a torchrun worker)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    todo = list(children.get(parent, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env:
            return pid
    return None


def _complete(store: Path) -> set[str]:
    try:
        with open_store(store) as st:
            return set(st.video_ids())
    except Exception:  # noqa: BLE001 - not created yet, or caught mid-write
        return set()


@pytest.mark.slow
def test_killed_rank_then_rerun_completes_and_verifies(videos, reference, tiny_clip, tmp_path):
    store = tmp_path / "killed.zarr"
    cmd = _torchrun(_features_cmd(videos, store, tiny_clip))
    launcher = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while not _complete(store) and time.monotonic() < deadline and launcher.poll() is None:
        time.sleep(0.02)
    victim = _pid_with_rank(launcher.pid, 1)
    assert victim is not None, "rank 1 had already finished: the videos are too short"
    os.kill(victim, signal.SIGKILL)
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode != 0, err  # torchrun reports the dead rank and stops the other
    left = _complete(store)
    assert 1 <= len(left) < 6  # something done, not everything

    rerun = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    log = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, log
    skipped = sum(int(n) for n in re.findall(r"(\d+) already done", log))
    assert skipped == len(left)  # the finished videos were kept, only the rest redone
    verify = CliRunner().invoke(app, ["store", "verify", str(store)])
    assert verify.exit_code == 0 and "all 6 videos intact" in verify.output, verify.output
    assert_same_store(store, reference)


def _anomaly(monkeypatch, capsys, *args) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["anomaly", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("bad", ["2/2", "3/2", "1", "a/b", "-1/2", "1/0"])
def test_shard_option_refuses_malformed(monkeypatch, capsys, tmp_path, bad):
    code, err = _anomaly(monkeypatch, capsys, "features", "-d", "demo", "--videos", tmp_path,
                         "--out", tmp_path / "s.zarr", f"--shard={bad}")  # fmt: skip
    assert code == 2 and f"error: --shard {bad}: expected I/N" in err


@pytest.mark.slow
def test_job_array_halves_merge_into_whole(monkeypatch, capsys, videos, reference, tiny_clip,
                                           tmp_path):  # fmt: skip
    halves = [tmp_path / "half0.zarr", tmp_path / "half1.zarr"]
    for i, half in enumerate(halves):  # sequential, separate stores: no rank waits for another
        result = CliRunner().invoke(
            app, _features_cmd(videos, half, tiny_clip, "--shard", f"{i}/2")
        )
        assert result.exit_code == 0, result.output
    entries = discover("demo", videos)
    for i, half in enumerate(halves):
        with open_store(half) as st:
            assert st.video_ids() == [e.video_id for e in shard_entries(entries, i, 2)]
            assert st.attrs["producer"]["shard"] == f"{i}/2"
    whole = tmp_path / "merged.zarr"
    code, err = _anomaly(monkeypatch, capsys, "store", "merge", whole, *halves)
    assert code == 0, err
    assert_same_store(whole, reference)

    other_clip = build_clip(tmp_path / "clip-seed1", "tiny", seed=1)
    other = tmp_path / "other.zarr"
    one = [e for e in entries if e.video_id == entries[0].video_id]
    assert extract(one, other, other_clip, dataset="demo", root=videos, progress=False).ok
    code, err = _anomaly(monkeypatch, capsys, "store", "merge", whole, other)
    assert code == 2 and "backbone" in err and err.startswith("error:"), err
