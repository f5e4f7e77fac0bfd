"""Decision thresholds: when is a frame abnormal enough to act on?

A threshold is chosen by a rule, and the run records the rule and the data that produced it:

- ``far@X`` (the default, ``far@1``): the p(A) that X % of normal frames reach. Under weak
  supervision the only frames known to be normal without extra labels are those of normal
  videos, so training holds out a share of its normal training videos (never trained on) and
  keeps the quantiles of their p(A): :func:`normal_quantiles`. On new normal video the
  threshold then raises an alarm on about X % of frames.
- ``fixed@T``: T itself.
- ``youden`` / ``best-f1``: the point of the ROC curve maximising TPR - FPR, or of the
  precision-recall curve maximising F1, on frames with ground truth. These need labelled
  frames, so they are only chosen on data the user names (a validation store), never on the
  test split unless asked for.

Everything here is numpy on plain arrays; the metrics module reuses :func:`binary_counts`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from anomalyclip.errors import AnomalyError

# Quantile levels kept for normal frames: every 1 % up to 90 %, every 0.1 % up to 99 %, then
# every 0.01 %, so far@X is read without interpolation for X down to 0.01 % in those steps.
QUANTILE_LEVELS = np.unique(
    np.round(
        np.r_[np.linspace(0, 0.9, 91), np.linspace(0.9, 0.99, 91), np.linspace(0.99, 1, 101)], 6
    )
)


def binary_counts(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """False and true positive counts when predicting positive for score >= t, for every
    distinct score t from the highest to the lowest: (fps, tps, thresholds)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(bool)
    if scores.shape != labels.shape:
        raise AnomalyError(f"{scores.size} scores but {labels.size} labels")
    if scores.size == 0:
        raise AnomalyError("no frames to evaluate")
    if not np.isfinite(scores).all():
        raise AnomalyError("scores contain NaN or infinite values")
    order = np.argsort(-scores, kind="stable")
    scores, labels = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # end of each tie group
    tps = np.cumsum(labels, dtype=np.float64)[last]
    fps = (last + 1) - tps
    return fps, tps, scores[last]


def youden(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score t maximising TPR - FPR when frames with score >= t are called abnormal.

    Candidates are the distinct scores; exact ties go to the highest t (the first ROC point
    reaching the maximum). The comparison is done in exact integer counts. NaN when the
    labels are all one kind (the ROC curve is then undefined).
    """
    fps, tps, thr = binary_counts(scores, labels)
    if tps[-1] == 0 or fps[-1] == 0:
        return math.nan
    # TPR - FPR scaled by P*N: integer counts, so exact ties stay ties (no rounding noise).
    return float(thr[np.argmax(tps * fps[-1] - fps * tps[-1])])


def best_f1(scores: np.ndarray, labels: np.ndarray) -> float:
    """The score t maximising the F1 of frames with score >= t (NaN without positives);
    ties go to the highest t."""
    fps, tps, thr = binary_counts(scores, labels)
    if tps[-1] == 0:
        return math.nan
    f1 = 2 * tps / (tps + fps + tps[-1])  # 2TP / (2TP + FP + FN), FN = P - TP
    return float(thr[np.argmax(f1)])


def normal_quantiles(scores: Sequence[np.ndarray], seconds: float, videos: Sequence[str]) -> dict:
    """What a run keeps of p(A) on frames known to be normal: their count, the seconds of
    video they cover, the video ids, and the quantiles at :data:`QUANTILE_LEVELS`."""
    p = np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for s in scores])
    if p.size == 0:
        raise AnomalyError("no normal frames to calibrate the threshold on")
    return {
        "videos": list(videos),
        "frames": int(p.size),
        "seconds": float(seconds),
        "levels": QUANTILE_LEVELS.tolist(),
        "values": np.quantile(p, QUANTILE_LEVELS).tolist(),
    }


def far_threshold(quantiles: dict, rate: float) -> float:
    """The p(A) reached by ``rate`` (a fraction) of the normal frames ``quantiles`` describes:
    the (1 - rate) quantile, interpolated between the stored levels."""
    levels, values = np.asarray(quantiles["levels"]), np.asarray(quantiles["values"])
    return float(np.interp(1.0 - rate, levels, values))


@dataclass(frozen=True)
class ThresholdRule:
    """``far@X`` (X % of normal frames), ``fixed@T``, ``youden`` or ``best-f1``."""

    kind: str
    value: float | None = None

    @classmethod
    def parse(cls, text: str) -> ThresholdRule:
        m = re.fullmatch(r"\s*(far|fixed)@([0-9.eE+-]+)\s*|\s*(youden|best-f1)\s*", text or "")
        if not m:
            raise AnomalyError(
                f"threshold rule {text!r}: expected far@X (X % of normal frames, e.g. far@1), "
                "fixed@T (e.g. fixed@0.6), youden or best-f1"
            )
        if m.group(3):
            return cls(m.group(3))
        kind = m.group(1)
        try:
            value = float(m.group(2))
        except ValueError:
            raise AnomalyError(f"threshold rule {text!r}: {m.group(2)!r} is not a number") from None
        if kind == "far" and not 0 < value < 100:
            raise AnomalyError(f"threshold rule {text!r}: the false-alarm rate is a % in (0, 100)")
        if kind == "fixed" and not 0 <= value <= 1:
            raise AnomalyError(f"threshold rule {text!r}: p(A) thresholds lie in [0, 1]")
        return cls(kind, value)

    @property
    def needs_labels(self) -> bool:
        return self.kind in ("youden", "best-f1")

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}@{self.value:g}"


@dataclass
class Threshold:
    """A chosen threshold, with the rule and the data that produced it."""

    value: float
    rule: str
    source: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Threshold:
        return cls(float(d["value"]), str(d["rule"]), str(d["source"]))


def choose_threshold(
    rule: ThresholdRule | str,
    normal: dict | None = None,
    labelled: tuple[np.ndarray, np.ndarray, str] | None = None,
) -> Threshold:
    """Apply ``rule``. ``normal`` is a :func:`normal_quantiles` record (with a ``source``
    entry saying where its frames came from) for ``far@X``; ``labelled`` is (scores, abnormal
    labels, where they came from) for ``youden`` / ``best-f1``."""
    rule = ThresholdRule.parse(rule) if isinstance(rule, str) else rule
    if rule.kind == "fixed":
        return Threshold(float(rule.value), str(rule), "fixed by the user")
    if rule.kind == "far":
        if not normal:
            raise AnomalyError(
                f"threshold rule {rule}: no normal-frame calibration in this run (an imported "
                "checkpoint without --features?); use --threshold P, or youden / best-f1 with "
                "--calibrate-on STORE"
            )
        value = far_threshold(normal, rule.value / 100)
        source = (
            f"{normal.get('source', 'normal frames')}: {len(normal['videos'])} videos, "
            f"{normal['frames']} frames"
        )
        return Threshold(value, str(rule), source)
    if labelled is None:
        raise AnomalyError(
            f"threshold rule {rule} needs frames with ground truth: name a validation store "
            "with --calibrate-on"
        )
    scores, labels, where = labelled
    value = youden(scores, labels) if rule.kind == "youden" else best_f1(scores, labels)
    if math.isnan(value):
        raise AnomalyError(f"{where}: {rule} needs both normal and abnormal frames")
    return Threshold(value, str(rule), where)
