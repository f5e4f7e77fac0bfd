"""The paper's metrics, over the frames of all test videos concatenated.

Detection: frame-level ROC AUC and average precision of p(A) against "frame is abnormal".
Recognition: one-vs-rest ROC AUC and AP of each class's C-way probability, averaged over the
anomaly classes present in the test set (mAUC, mAP); top-1 / top-5 accuracy per class where a
frame is predicted Normal when p(A) is under the Youden threshold (the one maximising TPR - FPR)
chosen on the test labels themselves, as the paper's evaluation does (an oracle: reported as
such, beside the same figures at the run's own threshold); and the confusion matrix of the
top-1 prediction.

The curves are computed here in numpy rather than through scikit-learn so the same cumulative
counts serve the AUC, the AP, the Youden threshold and the plots in one sort per score column;
the tests check every number against scikit-learn. Undefined values (an AUC with one label
only, an AP without positives) are NaN in the numeric API and ``None`` in the dict that
:func:`evaluate_arrays` returns, so that dict is valid JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from anomalyclip.errors import AnomalyError
from anomalyclip.thresholds import binary_counts
from anomalyclip.thresholds import youden as youden_threshold

ORACLE = "oracle: chosen on these test labels (the paper's top-k and confusion)"


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """(fpr, tpr, thresholds), starting at (0, 0) with threshold +inf. Needs both labels."""
    fps, tps, thr = binary_counts(scores, labels)
    if tps[-1] == 0 or fps[-1] == 0:
        raise AnomalyError("a ROC curve needs both normal and abnormal frames")
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return fpr, tpr, np.r_[np.inf, thr]


def pr_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, ...]:
    """(precision, recall, thresholds) from the highest threshold down. Needs a positive."""
    fps, tps, thr = binary_counts(scores, labels)
    if tps[-1] == 0:
        raise AnomalyError("a precision-recall curve needs abnormal frames")
    return tps / (tps + fps), tps / tps[-1], thr


def _auc_ap(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    fps, tps, _ = binary_counts(scores, labels)
    P, N = tps[-1], fps[-1]
    auc = math.nan
    if P > 0 and N > 0:
        tpr, fpr = np.r_[0.0, tps / P], np.r_[0.0, fps / N]
        auc = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2)  # trapezoids
    ap = math.nan
    if P > 0:
        # Step-wise area: sum over thresholds of (recall gain) x (precision at that threshold).
        recall = np.r_[0.0, tps / P]
        ap = float(np.sum(np.diff(recall) * (tps / (tps + fps))))
    return auc, ap


def frame_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Frame-level detection: ROC AUC (NaN unless both labels occur) and AP (NaN without
    abnormal frames) of ``scores`` (F,) against binary ``labels`` (F,), 1 = abnormal."""
    auc, ap = _auc_ap(scores, labels)
    return {"auc": auc, "ap": ap}


def _check_probs(probs: np.ndarray, frame_class: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    frame_class = np.asarray(frame_class).reshape(-1)
    if probs.ndim != 2 or probs.shape[0] != frame_class.size:
        raise AnomalyError(
            f"probs must be (frames, classes) with one row per label, got {probs.shape} "
            f"for {frame_class.size} labels"
        )
    if frame_class.size and (frame_class.min() < 0 or frame_class.max() >= probs.shape[1]):
        raise AnomalyError(f"frame classes must lie in 0..{probs.shape[1] - 1}")
    return probs, frame_class.astype(np.int64)


def _names(class_names: Sequence[str] | None, C: int) -> list[str]:
    if class_names is None:
        return [str(c) for c in range(C)]
    if len(class_names) != C:
        raise AnomalyError(f"{len(class_names)} class names for {C} classes")
    return list(class_names)


def class_metrics(
    probs: np.ndarray,
    frame_class: np.ndarray,
    normal_id: int,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Recognition: one-vs-rest AUC and AP of each class's column of the C-way ``probs`` (F, C)
    against ``frame_class`` (F,) == c.

    ``per_class`` has every class that occurs in ``frame_class`` (Normal included, for
    reference); ``mauc`` / ``map`` average over the anomaly classes only, leaving out classes
    absent from the test set (their AUC and AP are undefined) and any undefined value.
    """
    probs, frame_class = _check_probs(probs, frame_class)
    names = _names(class_names, probs.shape[1])
    per_class: dict[str, dict[str, float]] = {}
    aucs, aps = [], []
    for c in np.unique(frame_class):
        auc, ap = _auc_ap(probs[:, c], frame_class == c)
        per_class[names[c]] = {"auc": auc, "ap": ap}
        if c != normal_id:
            aucs.append(auc)
            aps.append(ap)
    return {"mauc": _nanmean(aucs), "map": _nanmean(aps), "per_class": per_class}


def _nanmean(values: Sequence[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def rank_classes(
    p_abnormal: np.ndarray, probs: np.ndarray, normal_id: int, threshold: float
) -> np.ndarray:
    """Class ids of every frame from most to least likely: (F, A) with A = C - 1.

    A frame with p(A) < ``threshold`` is predicted Normal: Normal is ranked first, then the
    anomaly classes by decreasing probability (the least likely one drops out). Any other frame
    is predicted abnormal: only the anomaly classes are ranked, by decreasing probability, and
    Normal does not appear at all, so a frame called abnormal never counts as Normal at any k.
    This is the rule of the authors' evaluation. Ties keep the lower class id first.
    """
    p_abnormal = np.asarray(p_abnormal, dtype=np.float64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    C = probs.shape[1]
    anomaly_ids = np.delete(np.arange(C), normal_id)  # (A,)
    ranked = anomaly_ids[np.argsort(-probs[:, anomaly_ids], axis=1, kind="stable")]  # (F, A)
    as_normal = np.concatenate([np.full((len(ranked), 1), normal_id), ranked[:, :-1]], axis=1)
    return np.where((p_abnormal < threshold)[:, None], as_normal, ranked)


def predict_classes(
    p_abnormal: np.ndarray, probs: np.ndarray, normal_id: int, threshold: float
) -> np.ndarray:
    """Top-1 class of every frame (F,): Normal under the threshold, else the likeliest anomaly."""
    return rank_classes(p_abnormal, probs, normal_id, threshold)[:, 0]


def topk_accuracy(
    p_abnormal: np.ndarray,
    probs: np.ndarray,
    frame_class: np.ndarray,
    normal_id: int,
    threshold: float,
    ks: Sequence[int] = (1, 5),
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Per-class top-k accuracy: the share of a class's frames whose true class is among the
    first k of :func:`rank_classes` (k is capped at C - 1, the length of that ranking).

    Returns ``{"top1": mean, "top5": mean, "per_class": {name: {"frames", "top1", "top5"}}}``;
    ``per_class`` has every class present, the means are over the anomaly classes present
    (Normal, reported per class, is left out of the mean as in mAUC).
    """
    probs, frame_class = _check_probs(probs, frame_class)
    names = _names(class_names, probs.shape[1])
    ranked = rank_classes(p_abnormal, probs, normal_id, threshold)  # (F, A)
    hits = {k: (ranked[:, :k] == frame_class[:, None]).any(axis=1) for k in ks}  # k -> (F,)
    per_class: dict[str, dict[str, float]] = {}
    for c in np.unique(frame_class):
        mask = frame_class == c
        per_class[names[c]] = {"frames": int(mask.sum())}
        per_class[names[c]].update({f"top{k}": float(hits[k][mask].mean()) for k in ks})
    anomaly = [names[c] for c in np.unique(frame_class) if c != normal_id]
    out: dict[str, Any] = {
        f"top{k}": _nanmean([per_class[n][f"top{k}"] for n in anomaly]) for k in ks
    }
    out["per_class"] = per_class
    return out


def confusion_matrix(true: np.ndarray, pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Frame counts (C, C): row = true class, column = predicted class."""
    true = np.asarray(true, dtype=np.int64).reshape(-1)
    pred = np.asarray(pred, dtype=np.int64).reshape(-1)
    if true.shape != pred.shape:
        raise AnomalyError(f"{true.size} true labels but {pred.size} predictions")
    counts = np.bincount(true * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def json_ready(value: Any) -> Any:
    """Python scalars and lists, with NaN as None, so the result is strict JSON."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in value]
    if isinstance(value, (np.integer, bool, np.bool_)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return None if math.isnan(value) or math.isinf(value) else value
    return value


def evaluate_arrays(
    p_abnormal: np.ndarray,
    probs: np.ndarray,
    frame_class: np.ndarray,
    class_names: Sequence[str],
    normal_id: int,
    primary: str = "auc",
) -> dict[str, Any]:
    """Every metric of the paper over concatenated test frames, as a JSON-ready dict.

    ``p_abnormal`` (F,), ``probs`` (F, C) the C-way probabilities, ``frame_class`` (F,) the
    true class of every frame (Normal outside the annotated intervals). ``primary`` names the
    dataset's headline metric ("auc" for UCF-Crime and ShanghaiTech, "ap" for XD-Violence).
    Top-k and confusion are the paper's, at the Youden threshold of these labels (an oracle:
    ``threshold_source``), or at 0.5 where it is undefined (``threshold_rule`` says so)."""
    if primary not in ("auc", "ap"):
        raise AnomalyError(f"primary metric must be 'auc' or 'ap', got {primary!r}")
    probs, frame_class = _check_probs(probs, frame_class)
    p_abnormal = np.asarray(p_abnormal, dtype=np.float64).reshape(-1)
    if p_abnormal.size != frame_class.size:
        raise AnomalyError(f"{p_abnormal.size} scores but {frame_class.size} labels")
    C = probs.shape[1]
    names = _names(class_names, C)
    if not 0 <= normal_id < C:
        raise AnomalyError(f"normal id {normal_id} is not a class id (0..{C - 1})")

    abnormal = frame_class != normal_id
    detection = frame_metrics(p_abnormal, abnormal)
    threshold, rule = youden_threshold(p_abnormal, abnormal), "youden"
    if math.isnan(threshold):
        threshold, rule = 0.5, "default 0.5 (Youden undefined: frames of one kind only)"
    recognition = class_metrics(probs, frame_class, normal_id, names)
    topk = topk_accuracy(p_abnormal, probs, frame_class, normal_id, threshold, (1, 5), names)
    pred = predict_classes(p_abnormal, probs, normal_id, threshold)

    per_class = {
        name: {**recognition["per_class"][name], **topk["per_class"][name]}
        for name in topk["per_class"]
    }
    return json_ready(
        {
            "primary": primary,
            "primary_value": detection[primary],
            "frames": int(frame_class.size),
            "abnormal_frames": int(abnormal.sum()),
            "auc": detection["auc"],
            "ap": detection["ap"],
            "threshold": threshold,
            "threshold_rule": rule,
            "threshold_source": ORACLE if rule == "youden" else "fixed",
            "mauc": recognition["mauc"],
            "map": recognition["map"],
            "top1": topk["top1"],
            "top5": topk["top5"],
            "class_names": names,
            "normal_id": normal_id,
            "per_class": per_class,
            "confusion": confusion_matrix(frame_class, pred, C),
        }
    )
