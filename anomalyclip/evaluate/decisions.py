"""From scores to decisions: the run's threshold, per-video events, and how good they are.

The threshold comes from the run (chosen at the end of training by its rule on held-out
normal videos, see :mod:`anomalyclip.thresholds`), or from a rule given now: ``far@X`` and
``fixed@T`` need nothing else, ``youden`` / ``best-f1`` need a store with frame ground truth
(``--calibrate-on``). Nothing here reads the test labels to choose a threshold.

At that threshold :func:`decision_metrics` reports what a deployment would see on the test
split: frame precision / recall / F1, top-1 / top-5 class accuracy and the confusion matrix,
the share of normal frames over the threshold, false alarms (events) per hour of normal
video, and the event-level metrics of
:mod:`anomalyclip.evaluate.event_metrics` against the true intervals.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.event_metrics import Scored, event_detection, event_map
from anomalyclip.evaluate.metrics import confusion_matrix, predict_classes, topk_accuracy
from anomalyclip.events import Event, EventConfig, find_events, video_seconds
from anomalyclip.runs.config import RunConfig
from anomalyclip.thresholds import Threshold, ThresholdRule, choose_threshold

log = logging.getLogger(__name__)

Labelled = tuple[np.ndarray, np.ndarray, str]  # scores, abnormal labels, where from


def run_threshold_record(
    config: RunConfig,
    rule: str | None = None,
    labelled: Callable[[], Labelled] | None = None,
) -> Threshold:
    """The :class:`Threshold` to decide with (its value, rule and where it was chosen):
    the run's own, or ``rule`` applied now (the watch's float is
    :func:`anomalyclip.live.run.run_threshold_value`).

    ``labelled`` is called only for a labelled rule (youden / best-f1) and returns the frames
    to choose on (the store named by ``--calibrate-on``).
    """
    if rule is None:
        if config.threshold is not None:
            return config.threshold
        rule = config.threshold_rule or "far@1"
        if ThresholdRule.parse(rule).kind != "far" or not config.calibration:
            raise AnomalyError(
                f"the run has no decision threshold (rule {rule}); give --threshold P, "
                "--threshold-rule fixed@T, or youden / best-f1 with --calibrate-on STORE"
            )
    parsed = ThresholdRule.parse(rule)
    data = labelled() if parsed.needs_labels and labelled is not None else None
    return choose_threshold(parsed, config.calibration, data)


def video_events(
    video_id: str,
    curve: dict[str, np.ndarray],
    labels: tuple[Sequence[str], int],
    cfg: EventConfig,
    fps: float | None = None,
) -> list[Event]:
    """The events of one scored video; ``fps`` (the rows' rate) sets a lone row's length."""
    period = 1.0 / fps if fps and fps > 0 and len(curve["times"]) < 2 else None
    if not np.isfinite(np.asarray(curve["times"], dtype=np.float64)).all():
        curve = {**curve, "times": np.asarray(curve["frames"], dtype=np.float64)}  # frames
    return find_events(video_id, curve, labels, cfg, period)


def class_decisions(
    results: Sequence[Any], threshold: float, labels: tuple[Sequence[str], int]
) -> dict[str, Any]:
    """Recognition at ``threshold``: top-1 / top-5 accuracy (a frame under it is Normal, as
    in :func:`~anomalyclip.evaluate.metrics.rank_classes`) and the confusion matrix."""
    class_names, normal_id = labels
    p = np.concatenate([r.p_abnormal for r in results])
    probs = np.concatenate([r.probs for r in results])
    truth = np.concatenate([r.labels for r in results])
    topk = topk_accuracy(p, probs, truth, normal_id, threshold, (1, 5), class_names)
    predicted = predict_classes(p, probs, normal_id, threshold)
    return {**topk, "confusion": confusion_matrix(truth, predicted, len(class_names))}


def decision_metrics(
    results: Sequence[Any],
    events: Sequence[Sequence[Event]],
    threshold: Threshold,
    labels: tuple[Sequence[str], int],
) -> dict[str, Any]:
    """Test metrics at ``threshold``. ``results`` are evaluation results (``p_abnormal``,
    ``labels`` per frame, ``intervals``, ``label`` of the video, ``times``), ``events`` the
    events found in each."""
    class_names, normal_id = labels
    p = np.concatenate([r.p_abnormal for r in results])
    truth = np.concatenate([r.labels for r in results]) != normal_id
    called = p >= threshold.value
    tp = int((called & truth).sum())
    normal_videos = [i for i, r in enumerate(results) if not r.intervals]
    normal_frames = np.concatenate([results[i].p_abnormal for i in normal_videos] or [[]])
    hours_normal = sum(video_seconds(results[i].times) for i in normal_videos) / 3600
    hours_all = sum(video_seconds(r.times) for r in results) / 3600
    alarms_normal = sum(len(events[i]) for i in normal_videos)

    pred = [
        Scored(i, e.start_frame, e.end_frame, e.label, e.class_probability)
        for i, video in enumerate(events)
        for e in video
    ]
    peaks = [Scored(s.video, s.start, s.end, s.label, e.peak) for s, e in
             zip(pred, [e for video in events for e in video], strict=True)]  # fmt: skip
    intervals = [
        Scored(i, int(s), int(e), r.label) for i, r in enumerate(results) for s, e in r.intervals
    ]
    detection = event_detection(peaks, intervals)
    unmatched = detection["0.1"]["events"] - detection["0.1"]["true_positives"]
    anomaly_names = [n for c, n in enumerate(class_names) if c != normal_id]
    return {
        "threshold": threshold.to_dict(),
        "classes": class_decisions(results, threshold.value, labels),
        "frames": {
            "precision": tp / called.sum() if called.any() else math.nan,
            "recall": tp / truth.sum() if truth.any() else math.nan,
            "f1": 2 * tp / (called.sum() + truth.sum()) if (called.any() or truth.any()) else 0,
            "alarm_rate_normal_frames": float(called[~truth].mean()) if (~truth).any() else None,
            "alarm_rate_normal_videos": float((normal_frames >= threshold.value).mean())
            if normal_frames.size
            else None,
        },
        "events": {
            "count": len(pred),
            "false_alarms_per_hour_of_normal_video": alarms_normal / hours_normal
            if hours_normal > 0
            else None,
            "false_events_per_hour": unmatched / hours_all if hours_all > 0 else None,
            "hours_of_normal_video": hours_normal,
            "detection": detection,
            "map": event_map(pred, intervals, anomaly_names),
        },
    }
