"""Held-out normal videos set the decision threshold: never trained on, recorded in the run,
and no test label is read to choose the threshold."""

from __future__ import annotations

import json

import numpy as np
import pytest
from synthetic_stores import planted_store

from anomalyclip.evaluate.evaluation import metrics_on_test_split
from anomalyclip.store import VideoRecord, open_store
from anomalyclip.train import resolve_config, train
from anomalyclip.train.calibration import split_held_out
from anomalyclip.train.data import TrainingSet, epoch_plan


def records(n):
    return [VideoRecord(f"train/Normal/v{i:03d}", label="Normal", split="train") for i in range(n)]


def test_held_out_share_is_seeded_and_independent_of_listing_order():
    normal = records(32)
    kept, held = split_held_out(normal, 0.1, seed=7)
    assert len(held) == 3 and len(kept) == 29
    assert not {r.video_id for r in kept} & {r.video_id for r in held}
    again = split_held_out(list(reversed(normal)), 0.1, seed=7)[1]
    assert [r.video_id for r in again] == [r.video_id for r in held]
    assert [r.video_id for r in split_held_out(normal, 0.1, seed=8)[1]] != [
        r.video_id for r in held
    ]
    # always one held out when asked for, always one left to train on
    assert len(split_held_out(records(2), 0.1, 0)[1]) == 1
    assert len(split_held_out(records(1), 0.5, 0)[0]) == 1
    assert split_held_out(records(5), 0.0, 0)[1] == []


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_clip):
    tmp = tmp_path_factory.mktemp("calib")
    cfg = resolve_config("demo", epochs=2, warmup_epochs=1, workers=1, eval_every=0)
    store = planted_store(tmp / "s.zarr", tiny_clip, cfg, n_abnormal=6, n_normal=10)
    result = train(store, tmp / "run", cfg, progress=False)
    return tmp, store, cfg, result


def test_held_out_videos_are_never_trained_on_and_set_the_threshold(run):
    tmp, store, cfg, result = run
    config = json.loads((tmp / "run" / "config.json").read_text())
    calib, threshold = config["calibration"], config["threshold"]
    held = set(calib["videos"])
    assert len(held) == 1  # 10 % of 10 normal training videos
    assert calib["source"] == "held-out normal training videos"
    with open_store(store) as st:
        data = TrainingSet.from_store(st)
        normal = {r.video_id for r in data.normal}
        assert held <= normal
        frames = sum(st.record(v).num_frames for v in held)
    assert calib["frames"] == frames
    # what training iterates over: the kept normal videos only
    kept, _ = split_held_out(data.normal, cfg.calibration_share, cfg.seed)
    data.normal = kept
    for epoch in range(cfg.epochs):
        seen = {r.video_id for batch in epoch_plan(data, cfg.batch_size, cfg.seed, epoch)
                for r in batch}  # fmt: skip
        assert not seen & held
    # far@1: the 99th percentile of the held-out p(A)
    levels, values = np.array(calib["levels"]), np.array(calib["values"])
    assert threshold["rule"] == "far@1"
    assert threshold["value"] == pytest.approx(values[np.argmin(abs(levels - 0.99))])
    assert "held-out normal training videos" in threshold["source"]
    assert result["threshold"] == threshold


@pytest.mark.slow
def test_test_labels_never_choose_the_threshold(run, tmp_path, tiny_clip):
    """Shuffling the test split's labels and intervals leaves the threshold unchanged, even
    with the test split evaluated after every epoch (so its labels are read for metrics)."""
    tmp, store, cfg, _ = run
    shuffled = tmp_path / "shuffled.zarr"
    rng = np.random.default_rng(0)
    with open_store(store) as src, open_store(shuffled, "w") as dst:
        dst.init(src.attrs)
        tests = src.records(split="test")
        perm = rng.permutation(len(tests))
        for rec in src.records():
            if rec.split == "test":
                other = tests[perm[tests.index(rec)]]
                rec = VideoRecord(rec.video_id, label=other.label, split="test", fps=rec.fps,
                                  intervals=[[0, 5]] if other.intervals else [])  # fmt: skip
            else:
                rec = VideoRecord(rec.video_id, label=rec.label, split=rec.split, fps=rec.fps)
            dst.write_video(rec, src.features(rec.video_id))
    again = train(
        shuffled, tmp_path / "run", cfg.updated(eval_every=1), progress=False,
        evaluate=metrics_on_test_split,
    )  # fmt: skip
    assert again["metrics"] is not None  # the shuffled test labels were read
    original = json.loads((tmp / "run" / "config.json").read_text())
    assert again["threshold"] == original["threshold"]
    assert again["calibration"]["values"] == original["calibration"]["values"]
