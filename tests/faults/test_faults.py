"""Kill a writer at every write it makes; the next run must equal an uninterrupted one.

The killed processes are real (SIGKILL, see ``tests/support/faults.py``); the re-runs and checks
happen here. Between the kill and the re-run, nothing may read as complete that is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from faults import checkpoint_job, store_job
from paths import ROOT, SUPPORT

from anomalyclip.errors import AnomalyError
from anomalyclip.store import open_store


def run_driver(*args) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(SUPPORT)])}
    done = subprocess.run(
        [sys.executable, str(SUPPORT / "faults.py"), *map(str, args)],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def snapshot(path: Path) -> dict:
    with open_store(path) as st:
        return {
            "attrs": st.attrs,
            "failures": st.failures(),
            "listing": [(v, s) for v, _, s in st.listing()],
            "videos": {
                v: (
                    st.record(v),
                    st.features(v).tobytes(),
                    st.frames(v).tobytes(),
                    st.times(v).tobytes(),
                )
                for v in st.video_ids()
            },  # fmt: skip
            "verify": st.verify(),
        }


def assert_nothing_wrong_reads_as_done(path: Path) -> None:
    """What a killed writer left: not a store yet, or one whose complete videos are whole."""
    try:
        st = open_store(path)
    except AnomalyError:
        return  # killed before the root attributes: no store (the re-run creates it)
    with st:
        for vid in st.video_ids():
            assert st.check_video(video_key_of(vid)) is None, vid


def video_key_of(vid: str) -> str:
    from anomalyclip.store import video_key

    return video_key(vid)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_kill_at_every_store_write_then_rerun_equals_uninterrupted(tmp_path, suffix):
    points = run_driver("store", suffix, tmp_path)["points"]
    assert points >= (20 if suffix == ".zarr" else 10), points
    reference = tmp_path / f"reference{suffix}"
    store_job(reference)
    want = snapshot(reference)
    assert want["verify"] == {} and len(want["videos"]) == 2
    for k in range(1, points + 1):
        path = tmp_path / f"k{k:03d}{suffix}"
        assert_nothing_wrong_reads_as_done(path)
        store_job(path)  # the re-run
        got = snapshot(path)
        assert got == want, f"killed before write {k} of {points}"
    print(f"{suffix}: {points} injection points")


def run_state(run: Path, with_optimizer: bool) -> tuple[int, dict]:
    """(epoch, every number) of the checkpoint that loading a run finds."""
    from anomalyclip.runs.checkpoint import load_run

    state = load_run(run, with_optimizer=with_optimizer)
    numbers = {f"w.{k}": v for k, v in state.weights.items()}
    if with_optimizer:
        for idx, st in state.optimizer["state"].items():
            numbers.update({f"o.{idx}.{k}": v for k, v in st.items()})
        numbers["rng"] = state.rng
    return state.config.epoch, numbers


def differences(a: dict, b: dict) -> list[str]:
    """Names whose numbers differ between two loaded checkpoints (empty: identical)."""
    import torch

    keys = sorted(set(a) | set(b))
    return [
        k for k in keys
        if k not in a or k not in b or not torch.equal(torch.as_tensor(a[k]), torch.as_tensor(b[k]))
    ]  # fmt: skip


@pytest.mark.slow
def test_kill_at_every_checkpoint_write_leaves_a_loadable_checkpoint(tmp_path):
    """Killed anywhere while publishing epoch 1 over epoch 0, a run loads as exactly epoch
    0 or exactly epoch 1, for eval (weights) and for --resume (weights, optimizer, RNG); the
    next save gives the uninterrupted epoch-1 checkpoint."""
    import torch

    points = run_driver("checkpoint", "-", tmp_path)["points"]
    assert points >= 5, points
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the driver: CPU kernels round differently per thread count
    try:
        check_checkpoints(tmp_path, points)
    finally:
        torch.set_num_threads(threads)
    print(f"checkpoint: {points} injection points")


def check_checkpoints(tmp_path: Path, points: int) -> None:
    reference = {}
    for epoch in (0, 1):
        checkpoint_job(tmp_path / f"ref{epoch}", epoch)
        reference[epoch] = run_state(tmp_path / f"ref{epoch}", with_optimizer=True)[1]
    found = []
    for k in range(1, points + 1):
        run = tmp_path / f"k{k:03d}"
        epoch, numbers = run_state(run, with_optimizer=True)  # --resume
        assert differences(numbers, reference[epoch]) == [], f"point {k}: a mix of epochs"
        eval_epoch, weights = run_state(run, with_optimizer=False)  # eval
        assert eval_epoch == epoch
        found.append(epoch)
        checkpoint_job(run, 1)  # the next save
        assert differences(run_state(run, with_optimizer=True)[1], reference[1]) == [], k
    assert found[0] == 0 and found[-1] == 1 and found == sorted(found)


def test_disk_full_at_any_checkpoint_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """ENOSPC at each file a save writes: one-line error naming the run, the previous
    checkpoint still loads whole, nothing is left taking space, and the next save works."""
    import errno

    from anomalyclip.runs import checkpoint

    run = tmp_path / "run"
    checkpoint_job(run, 0)
    _, before = run_state(run, with_optimizer=True)
    real = checkpoint._write_file
    calls = {"n": 0, "fail_at": 0}

    def write_file(path, data):
        calls["n"] += 1
        if calls["n"] == calls["fail_at"]:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(checkpoint, "_write_file", write_file)
    points = 0
    for k in range(1, 20):
        calls.update(n=0, fail_at=k)
        try:
            checkpoint_job(run, 1)
        except AnomalyError as exc:
            points += 1
            assert str(exc) == (
                f"{run}: cannot save the epoch 1 checkpoint (no space left on device); the run "
                "keeps its previous checkpoint"
            )
            epoch, numbers = run_state(run, with_optimizer=True)
            assert epoch == 0 and differences(numbers, before) == []
            assert not (run / ".staging").exists()
            continue
        break
    assert points == 6  # five files and the manifest
    assert run_state(run, with_optimizer=True)[0] == 1


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (a real full disk: ENOSPC from the kernel), grown by ``grow()``; the
    tests using it skip where mounting is not allowed (no root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()[:80]})")

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=16m", str(mount)], check=True)

    try:
        yield mount, grow
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_full_disk_while_extracting_is_one_line_and_the_rerun_completes(small_disk, suffix):
    """The two videos' rows (~80 KiB in float16) and the failure do not fit once the disk is
    filled up to 40 KiB from full: the write fails with one line naming the store, the store
    stays readable (nothing incomplete reads as done), and after freeing space the re-run
    equals an uninterrupted run."""
    mount, grow = small_disk
    reference = mount.parent / f"reference{suffix}"
    store_job(reference)
    (mount / "filler").write_bytes(b"\0" * (216 * 1024))
    path = mount / f"s{suffix}"
    with pytest.raises(AnomalyError) as exc:
        store_job(path)
    assert str(exc.value).startswith(f"{path}: ") and "no space left on device" in str(exc.value)
    assert "\n" not in str(exc.value)
    assert_nothing_wrong_reads_as_done(path)
    grow()
    store_job(path)
    assert snapshot(path) == snapshot(reference)


def test_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(small_disk):
    mount, grow = small_disk
    run = mount / "run"
    checkpoint_job(run, 0)
    _, before = run_state(run, with_optimizer=True)
    free = os.statvfs(mount)
    (mount / "filler").write_bytes(b"\0" * (free.f_bavail * free.f_frsize - 4096))
    with pytest.raises(AnomalyError, match=r"cannot save the epoch 1 checkpoint \(no space left"):
        checkpoint_job(run, 1)
    epoch, numbers = run_state(run, with_optimizer=True)
    assert epoch == 0 and differences(numbers, before) == []
    grow()
    checkpoint_job(run, 1)
    assert run_state(run, with_optimizer=True)[0] == 1


@pytest.mark.slow
def test_disk_full_at_every_zarr_write_is_one_line_and_the_rerun_completes(tmp_path, monkeypatch):
    """ENOSPC injected at each file write of a Zarr store (where no root may mount a small
    disk): the same guarantees as a kill, plus a one-line error naming the store."""
    import errno

    from zarr.storage import LocalStore

    reference = tmp_path / "reference.zarr"
    store_job(reference)
    want = snapshot(reference)
    real = LocalStore._set
    calls = {"n": 0, "fail_at": 0}

    async def full_disk(self, key, value, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == calls["fail_at"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return await real(self, key, value, *args, **kwargs)

    points = 0
    for k in range(1, 200):
        path = tmp_path / f"k{k:03d}.zarr"
        monkeypatch.setattr(LocalStore, "_set", full_disk)
        calls.update(n=0, fail_at=k)
        try:
            store_job(path)
        except AnomalyError as exc:
            points += 1
            assert str(exc).startswith(f"{path}: cannot ") and "no space left on device" in str(exc)
        else:
            break
        finally:
            monkeypatch.setattr(LocalStore, "_set", real)
        assert_nothing_wrong_reads_as_done(path)
        store_job(path)
        assert snapshot(path) == want, k
    assert points >= 15, points
    print(f"zarr ENOSPC: {points} injection points")
