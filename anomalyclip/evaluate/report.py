"""What evaluation leaves behind: per-video CSVs, ``metrics.json``, and a table for the terminal."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.metrics import json_ready
from anomalyclip.events import Event
from anomalyclip.permissions import make_shareable

_PREFIX = "p_"  # class columns are "p_<class name>", so no class can shadow a fixed column
_TAIL = ["abnormal", "predicted_class", "gt_label"]


@dataclass(frozen=True)
class FrameDecision:
    """A per-frame decision: abnormal where p(A) >= ``threshold``, and then the likeliest class
    other than ``normal_id`` (the Normal class, whose probability is 1 - p(A))."""

    threshold: float
    normal_id: int

    def apply(
        self, p_abnormal: np.ndarray, probs: np.ndarray, class_names: Sequence[str]
    ) -> tuple[list[str], list[str]]:
        """The ``abnormal`` (0/1) and ``predicted_class`` columns of (T,) p(A), (T, C) probs."""
        called = p_abnormal >= self.threshold
        ranked = np.where(np.arange(probs.shape[1]) == self.normal_id, -np.inf, probs).argmax(1)
        abnormal = [str(int(c)) for c in called]
        predicted = [class_names[c] if a else class_names[self.normal_id] for a, c in
                     zip(called, ranked, strict=True)]  # fmt: skip
        return abnormal, predicted


def write_video_csv(
    path: str | Path,
    frames: np.ndarray,
    times: np.ndarray,
    p_abnormal: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    labels: np.ndarray | None = None,
    *,
    decision: FrameDecision | None = None,
) -> Path:
    """One row per frame: ``frame, time, p_abnormal, p_<class>..., abnormal,
    predicted_class, gt_label`` (plain LF line endings).

    ``frames`` are the frame numbers in the decoded video, ``times`` their presentation times
    in seconds, ``probs`` (T, C) the C-way probabilities. With a ``decision``, ``abnormal`` is
    1 where p(A) >= its threshold and ``predicted_class`` is the likeliest anomaly class there
    and the Normal class elsewhere (:class:`FrameDecision`); without one both are left empty.
    ``labels`` (T,) are the true class ids (``gt_label``, written as class names so the file
    reads on its own; empty without ground truth).
    """
    frames = np.asarray(frames).reshape(-1)
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    p_abnormal = np.asarray(p_abnormal, dtype=np.float64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    T = frames.size
    if times.size != T or p_abnormal.size != T or probs.shape != (T, len(class_names)):
        raise AnomalyError(
            f"{path}: need one row per frame: {T} frames, {times.size} times, "
            f"{p_abnormal.size} scores, probs {probs.shape} for {len(class_names)} classes"
        )
    if labels is not None and np.asarray(labels).size != T:
        raise AnomalyError(f"{path}: {np.asarray(labels).size} labels for {T} frames")
    truth = [""] * T if labels is None else [class_names[int(c)] for c in np.ravel(labels)]
    abnormal, predicted = [""] * T, [""] * T
    if decision is not None and T:
        abnormal, predicted = decision.apply(p_abnormal, probs, class_names)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(
            ["frame", "time", "p_abnormal", *(_PREFIX + n for n in class_names), *_TAIL]
        )
        for t in range(T):
            writer.writerow(
                [
                    int(frames[t]),
                    f"{times[t]:.4f}",
                    f"{p_abnormal[t]:.6f}",
                    *(f"{v:.6f}" for v in probs[t]),
                    abnormal[t],
                    predicted[t],
                    truth[t],
                ]
            )
    return path


def read_video_csv(path: str | Path) -> dict[str, Any]:
    """Read back a :func:`write_video_csv` file: ``frame`` (T,) int, ``time`` (T,),
    ``p_abnormal`` (T,), ``probs`` (T, C), ``class_names``, ``abnormal`` (T,) 0/1 (None
    without a threshold), ``predicted`` (T,) class names (None without a threshold) and
    ``labels`` (T,) true class ids with -1 where the label is empty (None when no row has
    one)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise AnomalyError(f"{path}: empty file, expected a header row")
    header = rows[0]
    names = [h[len(_PREFIX) :] for h in header[3 : -len(_TAIL)]]
    if header[:3] != ["frame", "time", "p_abnormal"] or header[-3:] != _TAIL or not names:
        raise AnomalyError(f"{path}: not a per-frame score file (header {header[:4]}...)")
    body = rows[1:]
    width = len(header) - len(_TAIL)
    values = np.array([r[:width] for r in body], dtype=np.float64).reshape(len(body), width)
    ids = {n: i for i, n in enumerate(names)}
    try:
        labels = np.array([ids[r[-1]] if r[-1] else -1 for r in body], dtype=np.int64)
    except KeyError as e:
        raise AnomalyError(f"{path}: label {e.args[0]!r} is not one of the class columns") from e
    decided = bool(body) and all(r[-3] != "" for r in body)
    return {
        "frame": values[:, 0].astype(np.int64),
        "time": values[:, 1],
        "p_abnormal": values[:, 2],
        "probs": values[:, 3:],
        "class_names": names,
        "abnormal": np.array([int(r[-3]) for r in body]) if decided else None,
        "predicted": [r[-2] for r in body] if decided else None,
        "labels": labels if (labels >= 0).any() else None,
    }


def read_scores(path: str | Path) -> dict[str, Any]:
    """The columns of a :func:`write_video_csv` file that describe the video rather than
    each class, several times faster than :func:`read_video_csv`: ``frame`` (T,) int,
    ``time`` (T,), ``p_abnormal`` (T,), ``class_names`` and ``labels`` as there."""
    with open(path, newline="") as f:
        header = next(csv.reader(f), None)
    if not header or header[:3] != ["frame", "time", "p_abnormal"] or header[-3:] != _TAIL:
        raise AnomalyError(f"{path}: not a per-frame score file (header {header})")
    names = [h[len(_PREFIX) :] for h in header[3 : -len(_TAIL)]]
    ids = {n: i for i, n in enumerate(names)}
    read = {"delimiter": ",", "skiprows": 1, "quotechar": '"', "ndmin": 1}
    try:
        values = np.loadtxt(path, usecols=(0, 1, 2), **{**read, "ndmin": 2})
        truth = np.loadtxt(path, usecols=(len(header) - 1,), dtype=str, **read)
        labels = np.array([ids[n] if n else -1 for n in truth.tolist()], dtype=np.int64)
    except (ValueError, KeyError) as e:
        raise AnomalyError(f"{path}: unreadable row ({e})") from e
    return {
        "frame": values[:, 0].astype(np.int64),
        "time": values[:, 1],
        "p_abnormal": values[:, 2],
        "class_names": names,
        "labels": labels if (labels >= 0).any() else None,
    }


EVENT_COLUMNS = [
    "source", "start_frame", "end_frame", "start_time", "end_time", "duration", "peak",
    "peak_time", "mean", "class", "class_probability", "top3",
]  # fmt: skip


def write_events(stem: str | Path, events: Sequence[Event]) -> tuple[Path, Path]:
    """``<stem>.json`` (a list of :meth:`Event.to_dict`) and ``<stem>.csv`` (one row per event,
    ``top3`` as ``class:probability`` pairs separated by ``;``)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    rows = [e.to_dict() for e in events]
    json_path = write_metrics_json(stem.with_name(stem.name + ".json"), rows)
    csv_path = stem.with_name(stem.name + ".csv")
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(EVENT_COLUMNS)
        for d in rows:
            d = {**d, "top3": ";".join(f"{n}:{p:.4f}" for n, p in d["top3"])}
            writer.writerow(
                [f"{d[k]:.4f}" if isinstance(d[k], float) else d[k] for k in EVENT_COLUMNS]
            )
    return json_path, csv_path


def write_metrics_json(path: str | Path, metrics: dict[str, Any]) -> Path:
    """Write strict JSON (undefined values as null), atomically: a reader never sees half."""
    return write_text(path, json.dumps(json_ready(metrics), indent=2, allow_nan=False) + "\n")


def write_text(path: str | Path, text: str) -> Path:
    """Write a UTF-8 text file atomically (a reader sees the old file or the whole new one)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        make_shareable(tmp)  # mkstemp's file is private (0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.2f}"


def _decision_lines(decision: dict[str, Any] | None) -> list[str]:
    """What the run's own threshold decides on the test split."""
    if not decision:
        return []
    thr, frames, events = decision["threshold"], decision["frames"], decision["events"]
    det = events["detection"]
    per_hour = events.get("false_alarms_per_hour_of_normal_video")
    classes = decision.get("classes") or {}
    return [
        f"decisions at threshold {thr['value']:.4f} ({thr['rule']}; {thr['source']}):",
        f"  frames: precision {_pct(frames['precision'])}  recall {_pct(frames['recall'])}  "
        f"F1 {_pct(frames['f1'])}  alarms on normal frames "
        f"{_pct(frames['alarm_rate_normal_frames'])}%",
        f"  classes: top-1 {_pct(classes.get('top1'))}  top-5 {_pct(classes.get('top5'))}",
        f"  events: {events['count']}, false alarms per hour of normal video "
        f"{'-' if per_hour is None else f'{per_hour:.1f}'}; "
        + "  ".join(f"F1@{iou} {_pct(m['f1'])}" for iou, m in det.items())
        + f"  mAP@0.1:0.5 {_pct(events['map']['average'])}",
    ]


def format_table(metrics: dict[str, Any]) -> str:
    """A short terminal summary of :func:`~anomalyclip.evaluate.metrics.evaluate_arrays`'s
    output: the headline numbers (in %, the dataset's primary one starred, as the first line
    says), the decisions at the run's threshold, and one line per class. Top-k numbers at
    the threshold chosen on the test labels are called oracle wherever they appear."""
    primary = metrics.get("primary", "auc")
    head = [("AUC", "auc"), ("AP", "ap"), ("mAUC", "mauc"), ("mAP", "map")]
    head += [("top-1", "top1"), ("top-5", "top5")]
    cells = [
        f"{label}{'*' if key == primary else ''} {_pct(metrics.get(key))}" for label, key in head
    ]
    lines = [
        f"frames {metrics['frames']} ({metrics['abnormal_frames']} abnormal); "
        "* the dataset's primary metric",
        "   ".join(cells),
        f"  top-1 / top-5 here and per class: oracle, at the {metrics['threshold_rule']} "
        f"threshold {metrics['threshold']:.4f} chosen on these test labels (the paper's "
        "evaluation)",
    ]
    lines += _decision_lines(metrics.get("decision"))
    per_class = metrics.get("per_class", {})
    if per_class:
        width = max(12, *(len(n) for n in per_class))
        lines.append(
            f"{'class':<{width}} {'frames':>8} {'AUC':>7} {'AP':>7} {'top-1':>7} {'top-5':>7}"
            "  (top-k: oracle)"
        )
        for name, m in per_class.items():
            lines.append(
                f"{name:<{width}} {m['frames']:>8} {_pct(m['auc']):>7} {_pct(m['ap']):>7} "
                f"{_pct(m['top1']):>7} {_pct(m['top5']):>7}"
            )
    return "\n".join(lines)
