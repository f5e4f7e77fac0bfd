"""Anomaly events from per-frame p(A): hand-built curves with exact expected intervals, and the
streaming tracker against the whole-curve computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anomalyclip.errors import AnomalyError
from anomalyclip.events import (
    EventConfig,
    EventTracker,
    event_rows,
    find_events,
    hysteresis,
    video_seconds,
)

NAMES = ("Explosion", "Intruder", "Normal", "Tampering")
NORMAL = 2


def curve(p, fps=10.0, probs=None):
    """Rows at ``fps``; class probabilities: all the anomaly mass on Intruder unless given."""
    p = np.asarray(p, dtype=np.float64)
    if probs is None:
        probs = np.zeros((p.size, 4))
        probs[:, 1] = p
        probs[:, NORMAL] = 1 - p
    return {"frames": np.arange(p.size), "times": np.arange(p.size) / fps, "p": p, "probs": probs}


def rows(p, **cfg):
    c = curve(p)
    return event_rows(c["times"], c["p"], EventConfig(**cfg)).tolist()


def test_hysteresis_enters_at_the_threshold_and_leaves_below_the_exit_threshold():
    p = [0.1, 0.6, 0.45, 0.45, 0.39, 0.45, 0.5, 0.2]
    # enter at >= 0.5, leave when < 0.4: row 2-3 stay on (between), row 4 leaves, row 5 stays off
    assert hysteresis(np.array(p), 0.5, 0.4).tolist() == [0, 1, 1, 1, 0, 0, 1, 0]
    # without hysteresis (exit ratio 1) the dip at rows 2-3 ends the event
    assert hysteresis(np.array(p), 0.5, 0.5).tolist() == [0, 1, 0, 0, 0, 0, 1, 0]


def test_events_merge_across_short_gaps_and_short_events_are_dropped():
    p = np.zeros(60)
    p[5:15] = 0.9  # 1.0 s
    p[20:22] = 0.9  # gap 0.5 s after the first: merged into [5, 22)
    p[40:43] = 0.9  # 0.3 s alone, gap 1.8 s: too short, dropped
    assert rows(p, threshold=0.5, merge_gap=1.0, min_duration=0.5) == [[5, 22]]
    # no merging: the 0.2 s burst at 20 is dropped as well
    assert rows(p, threshold=0.5, merge_gap=0.0, min_duration=0.5) == [[5, 15]]
    # no minimum: every burst is an event
    assert rows(p, threshold=0.5, merge_gap=0.0, min_duration=0.0) == [[5, 15], [20, 22], [40, 43]]


def test_a_gap_of_exactly_merge_gap_merges():
    p = np.zeros(40)
    p[0:5] = p[15:20] = 0.9  # first ends at 0.5 s, second starts at 1.5 s: gap 1.0 s
    assert rows(p, threshold=0.5, merge_gap=1.0, min_duration=0.0) == [[0, 20]]
    assert rows(p, threshold=0.5, merge_gap=0.99, min_duration=0.0) == [[0, 5], [15, 20]]


def test_event_running_to_the_last_frame_and_its_times():
    p = np.r_[np.zeros(10), np.full(10, 0.8)]
    c = curve(p, fps=10.0)
    (event,) = find_events("v", c, (NAMES, NORMAL), EventConfig(threshold=0.5))
    assert (event.start_frame, event.end_frame) == (10, 20)
    assert event.start_time == pytest.approx(1.0) and event.end_time == pytest.approx(2.0)
    assert event.duration == pytest.approx(1.0)
    assert event.peak == pytest.approx(0.8) and event.mean == pytest.approx(0.8)
    assert event.label == "Intruder" and event.class_probability == pytest.approx(0.8)
    assert [name for name, _ in event.top3] == ["Intruder", "Explosion", "Tampering"]


def test_one_frame_video():
    c = curve([0.9], fps=25.0)
    # one row stands for one period: 0.04 s, shorter than the default minimum of 0.5 s
    assert find_events("v", c, (NAMES, NORMAL), EventConfig(threshold=0.5), 0.04) == []
    cfg = EventConfig(threshold=0.5, min_duration=0)
    (event,) = find_events("v", c, (NAMES, NORMAL), cfg, 0.04)
    assert (event.start_frame, event.end_frame, event.peak) == (0, 1, 0.9)
    assert event.end_time == pytest.approx(0.04)
    assert find_events("v", curve([0.1]), (NAMES, NORMAL), EventConfig(threshold=0.5)) == []


def test_event_class_and_peak_come_from_the_rows_inside():
    p = np.array([0.0, 0.6, 0.9, 0.7, 0.0, 0.0])
    probs = np.zeros((6, 4))
    probs[:, NORMAL] = 1 - p
    probs[1:4, 0] = [0.1, 0.6, 0.5]  # Explosion dominates inside
    probs[1:4, 3] = [0.5, 0.3, 0.2]
    c = curve(p, fps=2.0, probs=probs)
    (event,) = find_events("v", c, (NAMES, NORMAL), EventConfig(threshold=0.5, min_duration=0))
    assert (event.start_frame, event.end_frame) == (1, 4)
    assert event.peak == 0.9 and event.peak_time == pytest.approx(1.0)
    assert event.mean == pytest.approx((0.6 + 0.9 + 0.7) / 3)
    assert event.label == "Explosion"
    assert event.class_probability == pytest.approx(1.2 / 3)
    assert event.top3[1] == ("Tampering", pytest.approx(1.0 / 3))
    d = event.to_dict()
    assert d["class"] == "Explosion" and d["end_time"] == pytest.approx(2.0)


def test_subsampled_rows_keep_decoded_frame_numbers():
    c = curve([0.0, 0.9, 0.9, 0.0], fps=5.0)
    c["frames"] = np.array([0, 6, 12, 18])  # every 6th frame of a 30 fps video
    (event,) = find_events("v", c, (NAMES, NORMAL), EventConfig(threshold=0.5, min_duration=0))
    assert (event.start_frame, event.end_frame) == (6, 18)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"threshold": 2.0}, "--threshold 2.0: expected a probability in [0, 1]"),
        ({"threshold": math.nan}, "--threshold nan: expected a probability in [0, 1]"),
        ({"exit_ratio": 0.0}, "--exit-ratio 0.0: expected a ratio in (0, 1]"),
        ({"exit_ratio": math.nan}, "--exit-ratio nan: expected a ratio in (0, 1]"),
        ({"merge_gap": math.nan}, "--merge-gap nan: expected seconds >= 0"),
        ({"merge_gap": -1.0}, "--merge-gap -1.0: expected seconds >= 0"),
        ({"min_duration": math.nan}, "--min-duration nan: expected seconds >= 0"),
        ({"min_duration": math.inf}, "--min-duration inf: expected seconds >= 0"),
        ({"min_duration": "1"}, "--min-duration 1: expected seconds >= 0"),
    ],
)
def test_bad_configuration_is_refused_naming_the_option(setting, message):
    """A NaN gap or minimum duration compared false everywhere and dropped every event."""
    with pytest.raises(AnomalyError) as found:
        EventConfig(**{"threshold": 0.5, **setting})
    assert str(found.value) == message


@pytest.mark.parametrize("seed", range(12))
def test_streaming_tracker_equals_the_whole_curve(seed):
    """Random curves (smoothed noise with bursts, like real p(A) curves: mostly low, with
    plateaus that cross and re-cross the thresholds) pushed in random pieces give exactly the
    events of the whole curve, each opened once before it is closed."""
    rng = np.random.default_rng(seed)
    T = int(rng.integers(50, 400))
    noise = np.convolve(rng.standard_normal(T + 8), np.ones(9) / 9, mode="valid")
    p = 1 / (1 + np.exp(-(3 * noise - 1.5 + 2.5 * (rng.random(T) < 0.02).cumsum() % 2)))
    probs = rng.dirichlet(np.ones(4), size=T)
    probs[:, NORMAL] = 0
    probs = probs / probs.sum(1, keepdims=True) * p[:, None]
    probs[:, NORMAL] = 1 - p
    c = curve(p, fps=10.0, probs=probs)
    cfg = EventConfig(
        threshold=float(rng.uniform(0.4, 0.8)),
        exit_ratio=float(rng.uniform(0.6, 1.0)),
        merge_gap=float(rng.choice([0.0, 0.3, 1.0])),
        min_duration=float(rng.choice([0.0, 0.2, 0.5])),
    )
    expected = [e.to_dict() for e in find_events("cam", c, (NAMES, NORMAL), cfg)]

    tracker = EventTracker("cam", (NAMES, NORMAL), cfg, period=0.1, update_every=0.5)
    updates, i = [], 0
    while i < T:
        n = int(rng.integers(1, 30))
        updates += tracker.push(c["frames"][i : i + n], c["times"][i : i + n], p[i : i + n],
                                probs[i : i + n])  # fmt: skip
        i += n
    updates += tracker.close()
    closed = [e.to_dict() for kind, e in updates if kind == "closed"]
    assert len(closed) == len(expected)
    for got, want in zip(closed, expected, strict=True):
        assert got.pop("top3") == want.pop("top3")
        assert got == pytest.approx(want)
    kinds = [kind for kind, _ in updates]
    assert kinds.count("opened") == kinds.count("closed")
    for k, kind in enumerate(kinds):  # every event is opened before it is updated or closed
        if kind != "opened":
            assert "opened" in kinds[:k]


def test_video_seconds_is_the_span_of_the_rows_plus_one_period():
    """Hours of video (false alarms per hour, the run's calibration) are counted with it."""
    assert video_seconds(np.array([0.0, 0.5, 1.0, 1.5])) == 2.0  # 4 rows of 0.5 s
    assert video_seconds(np.array([3.0])) == 1.0  # a lone row stands for 1 s
    assert math.isnan(video_seconds(np.array([])))
    assert math.isnan(video_seconds(np.array([0.0, math.nan, 1.0])))  # times unknown
