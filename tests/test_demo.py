"""The demo dataset: real encoded videos, planted events at exactly the stated frames."""

from __future__ import annotations

import numpy as np
import pytest

from anomalyclip.datasets import discover
from anomalyclip.demo import (
    ANOMALIES,
    generate_demo_videos,
    run_demo,
    step_extract,
)
from anomalyclip.extract.decode import VideoSource
from anomalyclip.store import open_store
from anomalyclip.synthetic import render_scene

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
        abnormal, intervals = render_scene(label, np.random.default_rng(seed), 60, (64, 48))
        normal, none = render_scene("Normal", np.random.default_rng(seed), 60, (64, 48))
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

    # the events survive encoding: decoded frames follow the abnormal rendering inside the
    # interval, and are as close to the Normal twin as to it outside
    for k, v in enumerate(videos):
        if v.label == "Normal":
            continue
        rng = np.random.default_rng([1, k])
        num_frames = int(rng.integers(40, 57))
        abnormal, intervals = render_scene(v.label, rng, num_frames, (96, 72))
        rng = np.random.default_rng([1, k])
        rng.integers(40, 57)
        twin, _ = render_scene("Normal", rng, num_frames, (96, 72))
        assert intervals == v.intervals
        decoded = np.stack([f.image for f in VideoSource(v.path)]).astype(float)
        to_abnormal = np.abs(decoded - abnormal).mean(axis=(1, 2, 3))  # (T,)
        to_twin = np.abs(decoded - twin).mean(axis=(1, 2, 3))
        ((s, e),) = v.intervals
        inside = np.zeros(num_frames, bool)
        inside[s:e] = True
        np.testing.assert_array_equal(to_twin[~inside], to_abnormal[~inside])
        assert to_abnormal[~inside].max() < 4  # mild coding loss (mostly the sensor noise)
        assert (to_twin[inside] > to_abnormal[inside] + 1.5).all(), v.video_id


def test_generation_is_deterministic(tmp_path):
    """Same seed, same truth, same pixels rendered and the same encoded bytes, whichever of
    the two generating threads encodes which video and whatever was encoded before."""
    a = generate_demo_videos(tmp_path / "a", seed=4, **{**SMALL, "n_train_normal": 1})
    b = generate_demo_videos(tmp_path / "b", seed=4, **{**SMALL, "n_train_normal": 1})
    for va, vb in zip(a, b, strict=True):
        assert (va.video_id, va.num_frames, va.intervals) == (
            vb.video_id,
            vb.num_frames,
            vb.intervals,
        )
        assert va.path.read_bytes() == vb.path.read_bytes(), va.video_id
    frames_a, _ = render_scene("Tampering", np.random.default_rng([4, 0]), 30, (64, 48))
    frames_b, _ = render_scene("Tampering", np.random.default_rng([4, 0]), 30, (64, 48))
    np.testing.assert_array_equal(frames_a, frames_b)


@pytest.mark.slow
def test_run_demo_small(tmp_path):
    run = run_demo(tmp_path / "demo", seed=0, progress=False, **SMALL)
    assert list(run.timings) == ["generate", "clip", "pretrain", "extract", "train", "evaluate"]
    summary = run.results["extract"]
    assert summary.ok and summary.extracted == len(run.videos)
    with open_store(run.store) as st:
        assert st.dataset == "demo" and st.verify() == {}
        for v in run.videos:
            rec = st.record(v.video_id)
            assert (rec.label, rec.split, rec.num_frames) == (v.label, v.split, v.num_frames)
            assert [tuple(iv) for iv in rec.intervals] == (v.intervals if v.split == "test" else [])
            assert st.features(v.video_id).shape == (v.num_frames, 512)
    assert step_extract(run).skipped == len(run.videos)  # extraction again: nothing to redo


@pytest.mark.slow
def test_full_demo_finds_the_planted_events(demo_run):
    """The main job on its default: the pipeline must localise events it was never shown."""
    import json

    run = demo_run
    metrics = run.results["evaluate"]
    assert metrics["auc"] >= 0.9, metrics["auc"]
    assert metrics["videos"] == 17 and metrics["abnormal_frames"] > 0
    written = json.loads((run.eval_dir / "metrics.json").read_text())
    assert written["auc"] == pytest.approx(metrics["auc"])
    assert (run.eval_dir / "roc.png").stat().st_size > 10_000
    assert len(list((run.eval_dir / "videos").rglob("*.csv"))) == 17
    # decisions at the run's own far@1 threshold, chosen on 3 held-out normal training videos
    # (measured with seed 0, two runs on two hosts: AUC 0.966 / 0.963; 9/9 planted events found
    # at IoU >= 0.1; 8/9 / 7/9 at 0.3 (misses: an Intruder video whose p(A) hovers near the
    # threshold all along, one long event); 0.0 % of the normal test videos' frames alarm,
    # 5.7 % / 4.6 % of all normal frames, the extra ones next to events in abnormal videos)
    decision = metrics["decision"]
    assert decision["threshold"]["rule"] == "far@1"
    assert "held-out normal training videos" in decision["threshold"]["source"]
    found = decision["events"]["detection"]
    assert found["0.1"]["intervals"] == 9
    assert found["0.1"]["true_positives"] >= 8, found
    assert found["0.3"]["true_positives"] >= 6, found
    assert decision["frames"]["alarm_rate_normal_videos"] <= 0.03, decision["frames"]
    assert decision["events"]["false_events_per_hour"] is not None
