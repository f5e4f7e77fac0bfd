"""Event metrics and temporal-detection mAP against direct computations written here with
plain loops, on small hand-made cases and on random ones."""

from __future__ import annotations

import math

import numpy as np
import pytest

from anomalyclip.evaluate.event_metrics import (
    Scored,
    average_precision,
    event_detection,
    event_map,
    match,
    temporal_iou,
)


def iou_loop(a, b):
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union else 0.0


def greedy_loop(pred, truth, thr):
    """Highest score first; each prediction takes the unmatched truth of its video it overlaps
    most, if that IoU reaches the threshold."""
    used, hits = set(), [False] * len(pred)
    for k in sorted(range(len(pred)), key=lambda k: -pred[k].score):
        best, best_iou = None, -1.0
        for m, t in enumerate(truth):
            if t.video != pred[k].video or m in used:
                continue
            v = iou_loop((pred[k].start, pred[k].end), (t.start, t.end))
            if v > best_iou:
                best, best_iou = m, v
        if best is not None and best_iou >= thr:
            used.add(best)
            hits[k] = True
    return hits


def ap_loop(hits, n_truth):
    """11-free all-point AP: sum over recall steps of the best precision at that recall or
    beyond."""
    precisions, recalls, tp = [], [], 0
    for i, h in enumerate(hits):
        tp += h
        precisions.append(tp / (i + 1))
        recalls.append(tp / n_truth)
    ap, prev_recall = 0.0, 0.0
    for i in range(len(hits)):
        if recalls[i] > prev_recall:
            ap += (recalls[i] - prev_recall) * max(precisions[i:])
            prev_recall = recalls[i]
    return ap


def test_temporal_iou_of_hand_made_intervals():
    got = temporal_iou([[0, 10], [5, 15], [20, 30]], [[0, 10], [10, 20]])
    assert got.tolist() == [[1.0, 0.0], [pytest.approx(5 / 15), pytest.approx(5 / 15)], [0, 0]]


def test_hand_made_detection_case():
    truth = [Scored(0, 10, 30), Scored(0, 50, 60), Scored(1, 0, 100)]
    pred = [
        Scored(0, 12, 30, score=0.9),  # IoU 18/20 = 0.9 with truth 0
        Scored(0, 15, 35, score=0.8),  # overlaps truth 0 too (IoU 15/25), but it is taken
        Scored(0, 55, 80, score=0.7),  # IoU 5/30 with truth 1
        Scored(1, 0, 20, score=0.6),  # IoU 0.2 with truth 2
        Scored(2, 0, 10, score=0.5),  # a video without truth: false
    ]
    got = event_detection(pred, truth, ious=(0.1, 0.3, 0.5))
    # IoU 0.1: hits 0, 2 (0.167), 3 (0.2) -> 3 of 5 predictions, 3 of 3 intervals
    assert got["0.1"]["true_positives"] == 3
    assert got["0.1"]["precision"] == pytest.approx(3 / 5)
    assert got["0.1"]["recall"] == pytest.approx(1.0)
    assert got["0.1"]["f1"] == pytest.approx(2 * 3 / (5 + 3))
    assert got["0.3"]["true_positives"] == 1 and got["0.5"]["true_positives"] == 1


def test_the_best_scored_prediction_takes_the_interval():
    truth = [Scored(0, 0, 10)]
    pred = [Scored(0, 0, 9, score=0.2), Scored(0, 0, 10, score=0.9)]
    assert match(pred, truth, 0.5).tolist() == [False, True]


def test_average_precision_of_a_hand_made_ranking():
    # ranking: hit, miss, hit, miss with 3 true intervals: precision 1, 1/2, 2/3, 2/4
    # AP = 1/3 * 1 + 1/3 * 2/3 (the third interval is never found)
    assert average_precision(np.array([1, 0, 1, 0]), 3) == pytest.approx(1 / 3 + 2 / 9)
    assert average_precision(np.array([]), 2) == 0.0
    assert math.isnan(average_precision(np.array([1]), 0))


@pytest.mark.parametrize("seed", range(8))
def test_random_cases_equal_the_loop_computation(seed):
    """Random intervals over a few videos and three classes: the vectorised matching, AP and
    mAP equal the loops above."""
    rng = np.random.default_rng(seed)
    classes = ["A", "B", "C"]

    def intervals(n, scored):
        out = []
        for _ in range(n):
            s = int(rng.integers(0, 100))
            out.append(
                Scored(
                    int(rng.integers(0, 2)),
                    s,
                    s + int(rng.integers(5, 80)),
                    classes[int(rng.integers(0, 3))],
                    float(rng.random()) if scored else 0.0,
                )
            )
        return out

    truth, pred = (
        intervals(int(rng.integers(1, 10)), False),
        intervals(int(rng.integers(6, 16)), True),
    )
    for thr in (0.1, 0.3, 0.5):
        assert match(pred, truth, thr).tolist() == greedy_loop(pred, truth, thr)
    got = event_map(pred, truth, classes, ious=(0.1, 0.3))
    expected = {}
    for c in classes:
        t = [e for e in truth if e.label == c]
        if not t:
            continue
        p = sorted([e for e in pred if e.label == c], key=lambda e: -e.score)
        expected[c] = {f"{thr:g}": ap_loop(greedy_loop(p, t, thr), len(t)) for thr in (0.1, 0.3)}
    assert got["per_class"].keys() == expected.keys()
    for c, aps in expected.items():
        assert got["per_class"][c] == pytest.approx(aps)
    assert any(ap > 0 for aps in expected.values() for ap in aps.values())  # not all misses
    for thr in ("0.1", "0.3"):
        assert got["map"][thr] == pytest.approx(np.mean([v[thr] for v in expected.values()]))
