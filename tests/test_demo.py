"""The demo dataset: real encoded videos, planted events at exactly the stated frames."""

from __future__ import annotations

import numpy as np
import pytest

from anomalyclip.datasets import discover
from anomalyclip.demo import ANOMALIES, generate_demo_videos, render_video, run_demo
from anomalyclip.extract.decode import VideoSource
from anomalyclip.store import open_store

SMALL = dict(
    n_train_normal=2,
    n_train_abnormal_per_class=1,
    n_test_normal=1,
    n_test_abnormal_per_class=1,
    frames=(40, 56),
    size=(96, 72),
)


@pytest.mark.parametrize("label", ANOMALIES)
def test_event_changes_exactly_its_interval(label):
    """Outside its interval an abnormal video is pixel for pixel its Normal twin."""
    for seed in range(3):
        abnormal, intervals = render_video(label, np.random.default_rng(seed), 60, (64, 48))
        normal, none = render_video("Normal", np.random.default_rng(seed), 60, (64, 48))
        assert none == [] and len(intervals) == 1
        start, end = intervals[0]
        assert 0 < start < end < 60  # normal frames before and after: weak labels
        diff = np.abs(abnormal.astype(int) - normal).mean(axis=(1, 2, 3))  # (T,)
        assert diff[:start].max() == 0 and diff[end:].max() == 0
        assert diff[start:end].min() > 2.0  # every event frame visibly changed


def test_generated_dataset_decodes_with_stated_counts_and_truth(tmp_path):
    videos = generate_demo_videos(tmp_path, seed=1, **SMALL)
    assert len(videos) == 2 + 3 + 1 + 3
    for v in videos:
        source = VideoSource(v.path)
        frames = list(source)
        assert source.num_decoded == v.num_frames == len(frames), v.video_id
        assert 40 <= v.num_frames <= 56 and source.fps == 15
        assert frames[0].image.shape == (72, 96, 3)
        np.testing.assert_allclose([f.time for f in frames], np.arange(v.num_frames) / 15)
        assert (v.label == "Normal") == (v.intervals == [])

    lines = (tmp_path / "annotations.txt").read_text().splitlines()
    tests = [v for v in videos if v.split == "test"]
    assert len(lines) == len(tests)
    for line, v in zip(lines, tests, strict=True):
        assert line.split() == [v.video_id, *(str(x) for iv in v.intervals for x in iv)]

    # the registry reads the same truth back (training videos keep no intervals)
    entries = {e.video_id: e for e in discover("demo", tmp_path)}
    assert set(entries) == {v.video_id for v in videos}
    for v in videos:
        e = entries[v.video_id]
        assert (e.label, e.split) == (v.label, v.split)
        assert [tuple(iv) for iv in e.intervals] == (v.intervals if v.split == "test" else [])

    # the event survives encoding: in decoded frames it stands out from the scene
    explosion = next(v for v in videos if v.label == "Explosion" and v.split == "test")
    (s, e), = explosion.intervals
    frames = np.stack([f.image for f in VideoSource(explosion.path)]).astype(float)
    brightness = frames.mean(axis=(1, 2, 3))  # (T,)
    full_size = brightness[(s + e) // 2 : e]  # the fireball has grown to its full size
    assert full_size.min() > brightness[np.r_[0:s, e : len(frames)]].max() + 10


def test_generation_is_deterministic(tmp_path):
    a = generate_demo_videos(tmp_path / "a", seed=4, **{**SMALL, "n_train_normal": 1})
    b = generate_demo_videos(tmp_path / "b", seed=4, **{**SMALL, "n_train_normal": 1})
    for va, vb in zip(a, b, strict=True):
        assert va.path.read_bytes() == vb.path.read_bytes()
        assert (va.video_id, va.intervals) == (vb.video_id, vb.intervals)


@pytest.mark.slow
def test_run_demo_small(tmp_path):
    run = run_demo(tmp_path / "demo", seed=0, progress=False, **SMALL)
    assert list(run.timings)[:3] == ["generate", "clip", "extract"]
    summary = run.results["extract"]
    assert summary.ok and summary.extracted == len(run.videos)
    with open_store(run.store) as st:
        assert st.dataset == "demo" and st.verify() == {}
        for v in run.videos:
            rec = st.record(v.video_id)
            assert (rec.label, rec.split, rec.num_frames) == (v.label, v.split, v.num_frames)
            assert [tuple(iv) for iv in rec.intervals] == (v.intervals if v.split == "test" else [])
            assert st.features(v.video_id).shape == (v.num_frames, 512)
    again = run_demo(tmp_path / "demo", seed=0, progress=False, **SMALL)  # idempotent
    assert again.results["extract"].skipped == len(run.videos)
