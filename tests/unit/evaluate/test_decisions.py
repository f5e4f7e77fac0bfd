"""What `anomaly eval` reports at the decision threshold (``evaluate/decisions.py``), on
cases small enough to count by hand: frame precision, recall and F1, alarm rates on normal
frames and videos, false alarms per hour, event detection and event mAP.

Two test videos, threshold 0.5:

- A, Explosion, 10 rows at 1 fps (10 s), true interval [2, 6):
  p = .1 .2 .9 .9 .9 .1 .1 .8 .1 .1 -> called: rows 2, 3, 4 (true) and 7 (a normal frame);
  events: [2, 5) (class probability .5, peak .9) and [7, 8) (.3, peak .8);
- B, normal, 20 rows at 2 fps (10 s): p = .1 except .95 at rows 10 and 11 -> one event
  [10, 12) (.6, peak .95), a false alarm.

Frames: 6 called, 4 true, 3 both: precision 3/6, recall 3/4, F1 2*3/(6+4) = 0.6; 26
normal frames of which 3 called; B's 20 frames, 2 called. Events: 3, one matching A's
interval (IoU 3/4); B's alarm in 10 s of normal video is 360 per hour; 2 unmatched events in
20 s are 360 per hour. Event mAP (Explosion; scores .6 miss, .5 hit, .3 miss): precision 1/2
when the one interval is found, so AP 0.5 at every IoU up to 0.5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from metrics_reference import rank_auc

from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.decisions import decision_metrics, run_threshold_record, video_events
from anomalyclip.evaluate.evaluation import VideoResult, true_classes
from anomalyclip.events import Event, EventConfig
from anomalyclip.model import ModelConfig
from anomalyclip.runs import RunConfig
from anomalyclip.thresholds import Threshold

CLASSES, NORMAL = ("Explosion", "Normal"), 1


def result(p: list[float], fps: float, intervals: list[list[int]], label: str) -> VideoResult:
    frames = np.arange(len(p))
    labels = true_classes(intervals, frames, CLASSES.index(label), NORMAL)
    probs = np.stack([np.asarray(p), 1 - np.asarray(p)], axis=1)
    return VideoResult(f"v/{label}", frames, frames / fps, np.asarray(p), probs, labels,
                       intervals, label=label, fps=fps)  # fmt: skip


def event(start: int, end: int, fps: float, probability: float, peak: float) -> Event:
    return Event("v", start, end, start / fps, end / fps, peak, start / fps, peak, "Explosion",
                 probability, [("Explosion", probability)])  # fmt: skip


A = result([0.1, 0.2, 0.9, 0.9, 0.9, 0.1, 0.1, 0.8, 0.1, 0.1], 1.0, [[2, 6]], "Explosion")
B = result([0.1] * 10 + [0.95, 0.95] + [0.1] * 8, 2.0, [], "Normal")
EVENTS = [[event(2, 5, 1.0, 0.5, 0.9), event(7, 8, 1.0, 0.3, 0.8)], [event(10, 12, 2.0, 0.6, 0.95)]]
HALF = Threshold(0.5, "fixed@0.5", "fixed by the user")


def test_frame_decisions_and_alarm_rates_counted_by_hand():
    found = decision_metrics([A, B], EVENTS, HALF, (CLASSES, NORMAL))
    assert found["threshold"] == {"value": 0.5, "rule": "fixed@0.5", "source": "fixed by the user"}
    assert found["frames"] == pytest.approx({
        "precision": 3 / 6, "recall": 3 / 4, "f1": 0.6,
        "alarm_rate_normal_frames": 3 / 26, "alarm_rate_normal_videos": 2 / 20,
    })  # fmt: skip


def test_events_per_hour_detection_and_map_counted_by_hand():
    events = decision_metrics([A, B], EVENTS, HALF, (CLASSES, NORMAL))["events"]
    assert events["count"] == 3
    assert events["hours_of_normal_video"] == pytest.approx(10 / 3600)
    assert events["false_alarms_per_hour_of_normal_video"] == pytest.approx(360.0)
    assert events["false_events_per_hour"] == pytest.approx(360.0)
    for iou in ("0.1", "0.3", "0.5"):
        assert events["detection"][iou] == pytest.approx({
            "precision": 1 / 3, "recall": 1.0, "f1": 0.5, "true_positives": 1, "events": 3,
            "intervals": 1,
        })  # fmt: skip
    assert events["map"]["map"] == pytest.approx(
        dict.fromkeys(("0.1", "0.2", "0.3", "0.4", "0.5"), 0.5)
    )
    assert events["map"]["average"] == pytest.approx(0.5)


def test_a_threshold_above_every_frame_calls_nothing():
    """Nothing called: precision is undefined (NaN), recall 0, no alarms, no events."""
    found = decision_metrics([A, B], [[], []], Threshold(0.99, "fixed@0.99", "user"),
                             (CLASSES, NORMAL))  # fmt: skip
    frames = found["frames"]
    assert math.isnan(frames["precision"]) and frames["recall"] == 0.0 and frames["f1"] == 0.0
    assert frames["alarm_rate_normal_frames"] == 0.0 and frames["alarm_rate_normal_videos"] == 0.0
    assert found["events"]["false_alarms_per_hour_of_normal_video"] == 0.0
    assert found["events"]["detection"]["0.1"]["recall"] == 0.0


def test_without_normal_videos_there_is_no_rate_per_hour_of_normal_video():
    found = decision_metrics([A], EVENTS[:1], HALF, (CLASSES, NORMAL))
    assert found["frames"]["alarm_rate_normal_videos"] is None
    assert found["events"]["false_alarms_per_hour_of_normal_video"] is None
    assert found["events"]["false_events_per_hour"] == pytest.approx(1 / (10 / 3600))


def test_video_events_fall_back_to_frame_numbers_without_times():
    """Rows without presentation times (NaN) are timed by their frame numbers."""
    p = np.array([0, 0, 0.9, 0.9, 0.9, 0, 0, 0])
    curve = {"frames": np.arange(8), "times": np.full(8, np.nan), "p": p,
             "probs": np.stack([p, 1 - p], axis=1)}  # fmt: skip
    [found] = video_events("v", curve, (CLASSES, NORMAL), EventConfig(0.5, min_duration=0))
    assert (found.start_frame, found.end_frame, found.start_time, found.end_time) == (2, 5, 2, 5)


def test_run_threshold_is_the_runs_own_unless_a_rule_is_given():
    own = Threshold(0.42, "far@1", "held-out normal videos")
    config = RunConfig("demo", ModelConfig(), threshold=own)
    assert run_threshold_record(config) == own
    assert run_threshold_record(config, "fixed@0.3").value == 0.3
    with pytest.raises(AnomalyError, match="the run has no decision threshold"):
        run_threshold_record(RunConfig("demo", ModelConfig(), threshold_rule="youden"))


def test_the_tests_reference_auc_counts_pairs():
    """tests/metrics_reference.rank_auc, which other tests hold `eval`'s AUC to: 3 of the 4
    (abnormal, normal) pairs ordered right is 0.75; a tie counts one half."""
    assert rank_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert rank_auc([0.5, 0.5, 0.9], [False, True, True]) == 0.75
