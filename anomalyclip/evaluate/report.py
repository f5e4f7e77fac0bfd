"""What evaluation leaves behind: per-video CSVs, ``metrics.json``, and a table for the terminal."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.metrics import json_ready
from anomalyclip.permissions import make_shareable

_PREFIX = "p_"  # class columns are "p_<class name>", so no class can shadow a fixed column


def write_video_csv(
    path: str | Path,
    frames: np.ndarray,
    times: np.ndarray,
    p_abnormal: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    labels: np.ndarray | None = None,
) -> Path:
    """One row per frame: ``frame, time, p_abnormal, p_<class>... , label``.

    ``frames`` are the frame numbers in the decoded video, ``times`` their presentation times
    in seconds, ``probs`` (T, C) the C-way probabilities, ``labels`` (T,) the true class id of
    each frame or None when there is no ground truth (the column is then left empty). The label
    is written as the class name, so the file reads on its own.
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
    label_text = [""] * T if labels is None else [class_names[int(c)] for c in np.ravel(labels)]

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["frame", "time", "p_abnormal", *(_PREFIX + n for n in class_names), "label"]
        )
        for t in range(T):
            writer.writerow(
                [
                    int(frames[t]),
                    f"{times[t]:.4f}",
                    f"{p_abnormal[t]:.6f}",
                    *(f"{v:.6f}" for v in probs[t]),
                    label_text[t],
                ]
            )
    return path


def read_video_csv(path: str | Path) -> dict[str, Any]:
    """Read back a :func:`write_video_csv` file: ``frame`` (T,) int, ``time`` (T,),
    ``p_abnormal`` (T,), ``probs`` (T, C), ``class_names``, and ``labels`` (T,) class ids with
    -1 where the label is empty (None when no row has one)."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise AnomalyError(f"{path}: empty file, expected a header row")
    header = rows[0]
    names = [h[len(_PREFIX) :] for h in header[3:-1]]
    if header[:3] != ["frame", "time", "p_abnormal"] or header[-1] != "label" or not names:
        raise AnomalyError(f"{path}: not a per-frame score file (header {header[:4]}...)")
    body = rows[1:]
    values = np.array([r[:-1] for r in body], dtype=np.float64).reshape(len(body), len(header) - 1)
    ids = {n: i for i, n in enumerate(names)}
    try:
        labels = np.array([ids[r[-1]] if r[-1] else -1 for r in body], dtype=np.int64)
    except KeyError as e:
        raise AnomalyError(f"{path}: label {e.args[0]!r} is not one of the class columns") from e
    return {
        "frame": values[:, 0].astype(np.int64),
        "time": values[:, 1],
        "p_abnormal": values[:, 2],
        "probs": values[:, 3:],
        "class_names": names,
        "labels": labels if (labels >= 0).any() else None,
    }


def write_metrics_json(path: str | Path, metrics: dict[str, Any]) -> Path:
    """Write strict JSON (undefined values as null), atomically: a reader never sees half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_ready(metrics), indent=2, allow_nan=False)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text + "\n")
        make_shareable(tmp)  # mkstemp's file is private (0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{100 * value:.2f}"


def format_table(metrics: dict[str, Any]) -> str:
    """A short terminal summary of :func:`~anomalyclip.evaluate.metrics.evaluate_arrays`'s
    output: the headline numbers (in %, the primary one starred) and one line per class."""
    primary = metrics.get("primary", "auc")
    head = [("AUC", "auc"), ("AP", "ap"), ("mAUC", "mauc"), ("mAP", "map")]
    head += [("top-1", "top1"), ("top-5", "top5")]
    cells = [
        f"{label}{'*' if key == primary else ''} {_pct(metrics.get(key))}" for label, key in head
    ]
    lines = [
        f"frames {metrics['frames']} ({metrics['abnormal_frames']} abnormal), "
        f"threshold {metrics['threshold']:.4f} ({metrics['threshold_rule']})",
        "   ".join(cells),
    ]
    per_class = metrics.get("per_class", {})
    if per_class:
        width = max(12, *(len(n) for n in per_class))
        lines.append(
            f"{'class':<{width}} {'frames':>8} {'AUC':>7} {'AP':>7} {'top-1':>7} {'top-5':>7}"
        )
        for name, m in per_class.items():
            lines.append(
                f"{name:<{width}} {m['frames']:>8} {_pct(m['auc']):>7} {_pct(m['ap']):>7} "
                f"{_pct(m['top1']):>7} {_pct(m['top5']):>7}"
            )
    return "\n".join(lines)
