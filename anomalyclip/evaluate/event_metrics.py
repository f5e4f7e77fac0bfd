"""Event-level metrics: predicted anomaly events against ground-truth intervals.

Intervals are half-open ``[start, end)`` frame ranges. A predicted event matches a true
interval of the same video when their temporal IoU (overlap / union, in frames) reaches a
threshold; predictions are matched greedily from the highest score down, each true interval
at most once, to the unmatched one it overlaps most (the ActivityNet / THUMOS rule).

- Detection (:func:`event_detection`): class-agnostic precision, recall and F1 of the events
  at each IoU, events ranked by their peak p(A).
- Recognition (:func:`event_map`): the temporal-detection mAP that CLIP-based recognition
  papers report: for each anomaly class, the average precision of the events predicted as
  that class (ranked by their class probability) against the true intervals of that class,
  averaged over the classes with at least one true interval, at each IoU and over all IoUs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DETECTION_IOUS = (0.1, 0.3, 0.5)
MAP_IOUS = (0.1, 0.2, 0.3, 0.4, 0.5)


@dataclass
class Scored:
    """One interval of one video: ``video`` index, [start, end) frames, class and score."""

    video: int
    start: int
    end: int
    label: str = ""
    score: float = 0.0


def temporal_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(K, 2) and (M, 2) [start, end) intervals -> (K, M) overlap / union."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 2)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 2)
    inter = np.clip(
        np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match(pred: Sequence[Scored], truth: Sequence[Scored], iou: float) -> np.ndarray:
    """(K,) bool: is prediction k a true positive at ``iou``? (greedy, see module docstring)"""
    order = sorted(range(len(pred)), key=lambda k: -pred[k].score)  # stable: ties keep order
    used = np.zeros(len(truth), dtype=bool)
    hit = np.zeros(len(pred), dtype=bool)
    by_video: dict[int, list[int]] = {}
    for m, t in enumerate(truth):
        by_video.setdefault(t.video, []).append(m)
    for k in order:
        cands = by_video.get(pred[k].video, [])
        if not cands:
            continue
        ious = temporal_iou(
            [[pred[k].start, pred[k].end]], [[truth[m].start, truth[m].end] for m in cands]
        )[0]
        ious[used[cands]] = -1.0
        best = int(np.argmax(ious))
        if ious[best] >= iou:
            used[cands[best]] = True
            hit[k] = True
    return hit


def average_precision(hits_by_score: np.ndarray, num_truth: int) -> float:
    """AP from the true-positive flags of predictions sorted by decreasing score: the area
    under the precision-recall curve with precision made non-increasing (all-point
    interpolation). NaN without true intervals; 0 without predictions."""
    if num_truth == 0:
        return float("nan")
    hits = np.asarray(hits_by_score, dtype=np.float64)
    if hits.size == 0:
        return 0.0
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, hits.size + 1)
    recall = tp / num_truth
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at recall >= r
    gained = np.diff(np.r_[0.0, recall])  # recall added by each prediction (0 for misses)
    return float(np.sum(gained * envelope))


def event_detection(
    pred: Sequence[Scored], truth: Sequence[Scored], ious: Sequence[float] = DETECTION_IOUS
) -> dict[str, dict[str, float]]:
    """Class-agnostic precision / recall / F1 of events at each IoU (scores: peak p(A))."""
    out = {}
    for iou in ious:
        tp = int(match(pred, truth, iou).sum())
        precision = tp / len(pred) if pred else float("nan")
        recall = tp / len(truth) if truth else float("nan")
        f1 = 2 * tp / (len(pred) + len(truth)) if (pred or truth) else float("nan")
        out[f"{iou:g}"] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "true_positives": tp,
            "events": len(pred),
            "intervals": len(truth),
        }
    return out


def event_map(
    pred: Sequence[Scored],
    truth: Sequence[Scored],
    classes: Sequence[str],
    ious: Sequence[float] = MAP_IOUS,
) -> dict[str, object]:
    """Temporal-detection mAP of class-labelled events (scores: class probability).

    Returns ``{"map": {iou: mAP}, "average": mean over ious, "per_class": {class: {iou: AP}}}``;
    classes without true intervals are left out of the means.
    """
    per_class: dict[str, dict[str, float]] = {}
    for name in classes:
        p = [e for e in pred if e.label == name]
        t = [e for e in truth if e.label == name]
        if not t:
            continue
        order = sorted(range(len(p)), key=lambda k: -p[k].score)
        per_class[name] = {}
        for iou in ious:
            hits = match(p, t, iou)[order]
            per_class[name][f"{iou:g}"] = average_precision(hits, len(t))
    maps = {
        f"{iou:g}": float(np.mean([v[f"{iou:g}"] for v in per_class.values()]))
        if per_class
        else float("nan")
        for iou in ious
    }
    return {
        "map": maps,
        "average": float(np.mean(list(maps.values()))) if per_class else float("nan"),
        "per_class": per_class,
    }
