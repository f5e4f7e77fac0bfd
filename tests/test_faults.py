"""Kill a writer at every write it makes; the next run must equal an uninterrupted one.

The killed processes are real (SIGKILL, see ``tests/faults.py``); the re-runs and checks
happen here. Between the kill and the re-run, nothing may read as complete that is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from faults import store_job

from anomalyclip.errors import AnomalyError
from anomalyclip.store import open_store

HERE = Path(__file__).resolve().parent


def run_driver(*args) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)])}
    done = subprocess.run(
        [sys.executable, str(HERE / "faults.py"), *map(str, args)],
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
