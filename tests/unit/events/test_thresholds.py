"""Threshold rules: parsing, false-alarm-rate thresholds from normal-frame quantiles, and the
labelled rules against brute force."""

from __future__ import annotations

import numpy as np
import pytest

from anomalyclip.errors import AnomalyError
from anomalyclip.thresholds import (
    ThresholdRule,
    best_f1,
    choose_threshold,
    far_threshold,
    normal_quantiles,
    youden,
)


def test_rules_parse_and_print_back():
    assert ThresholdRule.parse("far@1") == ThresholdRule("far", 1.0)
    assert ThresholdRule.parse("fixed@0.6") == ThresholdRule("fixed", 0.6)
    assert str(ThresholdRule.parse("far@0.5")) == "far@0.5"
    assert ThresholdRule.parse("best-f1").needs_labels
    assert not ThresholdRule.parse("far@2").needs_labels


@pytest.mark.parametrize(
    "text, message",
    [
        ("far", "expected far@X"),
        ("fixed@2", r"lie in \[0, 1\]"),
        ("far@0", r"in \(0, 100\)"),
        ("far@abc", "expected far@X"),
        ("median", "expected far@X"),
    ],
)
def test_bad_rules_are_refused_with_the_rule_named(text, message):
    with pytest.raises(AnomalyError, match=message) as info:
        ThresholdRule.parse(text)
    assert repr(text) in str(info.value)


def test_far_threshold_is_reached_by_that_share_of_normal_frames():
    """Normal-frame scores of a real model are skewed towards 0 with a long tail; a beta
    distribution has that shape."""
    rng = np.random.default_rng(0)
    videos = [rng.beta(1.2, 8.0, size=int(rng.integers(200, 900))) for _ in range(12)]
    q = normal_quantiles(videos, seconds=123.0, videos=[f"v{i}" for i in range(12)])
    p = np.concatenate(videos)
    assert q["frames"] == p.size and q["seconds"] == 123.0
    for rate in (0.001, 0.01, 0.05, 0.2):  # levels the run stores: numpy's own quantile
        t = far_threshold(q, rate)
        assert t == pytest.approx(np.quantile(p, 1 - rate), abs=1e-12)
        # within one frame of that share reach it (0.1 %: 8 of 7,269 frames, not none)
        assert abs((p >= t).sum() - rate * p.size) <= 1, (rate, (p >= t).sum())
    rule = choose_threshold("far@1", {**q, "source": "held-out normal videos"})
    assert rule.value == pytest.approx(np.quantile(p, 0.99))
    assert rule.rule == "far@1" and "held-out normal videos: 12 videos" in rule.source


def test_labelled_rules_equal_brute_force():
    rng = np.random.default_rng(1)
    labels = rng.random(500) < 0.3
    scores = np.round(np.clip(0.3 * labels + rng.normal(0.4, 0.2, 500), 0, 1), 2)  # with ties

    def f1_at(t):
        pred = scores >= t
        tp = (pred & labels).sum()
        return 2 * tp / (pred.sum() + labels.sum())

    def j_at(t):
        pred = scores >= t
        return (pred & labels).sum() / labels.sum() - (pred & ~labels).sum() / (~labels).sum()

    cands = np.unique(scores)[::-1]  # highest first: ties go to the highest t
    assert best_f1(scores, labels) == cands[np.argmax([f1_at(t) for t in cands])]
    assert youden(scores, labels) == cands[np.argmax([j_at(t) for t in cands])]
    got = choose_threshold("best-f1", labelled=(scores, labels, "val.zarr"))
    assert got.value == best_f1(scores, labels) and got.source == "val.zarr"


def test_rules_without_their_data_say_what_is_missing():
    with pytest.raises(AnomalyError, match="--calibrate-on"):
        choose_threshold("youden")
    with pytest.raises(AnomalyError, match="no normal-frame calibration"):
        choose_threshold("far@1", normal=None)
    assert choose_threshold("fixed@0.25").value == 0.25
