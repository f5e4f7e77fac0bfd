"""Frame metrics from their definitions, apart from the package, and the per-frame CSVs that
`anomaly eval` writes read with nothing but the csv module: what tests compare the reported
numbers against.
"""

from __future__ import annotations

import csv
from pathlib import Path
from urllib.parse import unquote

import numpy as np


def rank_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic: the chance that a random positive frame
    scores above a random negative one, a tie counting one half (ranks of ties averaged)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    values, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # 0-based rank of each distinct value's first frame
    ranks = (first + (counts - 1) / 2 + 1)[inverse]  # 1-based, ties averaged
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def eval_frames(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """Video id -> ``frame``, ``time``, ``p`` (p_abnormal), ``label`` (true class name), ``called``
    (the abnormal column) of every per-video file under ``folder/videos`` (a file's path
    there is its id, percent-encoded)."""
    found = {}
    for path in sorted((Path(folder) / "videos").rglob("*.csv")):
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        video_id = unquote(path.relative_to(Path(folder) / "videos").with_suffix("").as_posix())
        found[video_id] = {
            "frame": np.array([int(r["frame"]) for r in rows]),
            "time": np.array([float(r["time"]) for r in rows]),
            "p": np.array([float(r["p_abnormal"]) for r in rows]),
            "label": np.array([r["gt_label"] for r in rows]),
            "called": np.array([r["abnormal"] == "1" for r in rows]),
        }
    return found


def eval_auc(folder: Path, normal: str, truth: dict[str, int] | None = None) -> float:
    """The frame AUC of all test frames of an eval folder, from its CSVs alone; with
    ``truth`` (video id -> n), the first n frames of those videos are the abnormal ones
    instead of the CSVs' labels."""
    videos = eval_frames(folder)
    p = np.concatenate([v["p"] for v in videos.values()])
    if truth is None:
        abnormal = [v["label"] != normal for v in videos.values()]
    else:
        abnormal = [v["frame"] < truth.get(vid, 0) for vid, v in videos.items()]
    return rank_auc(p, np.concatenate(abnormal))
