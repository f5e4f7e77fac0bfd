"""Pictures people read: ROC, PR, confusion matrix, and one video's p(A) curve over time.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot), so nothing
touches global state and no display is needed: saving a PNG goes through the Agg canvas.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.metrics import frame_metrics, pr_curve, roc_curve

_DPI = 120
_TRUE_COLOR = "#d62728"
_SCORE_COLOR = "#1f77b4"
# plot_video's fixed margins: where matplotlib's constrained layout puts its two axes (the
# labels are the same for every video), with room on the right for half of a last tick label
# of up to six digits; constrained layout costs ~0.07 s a video, a quarter of drawing it, and
# eval draws one per test video
_VIDEO_GRID = {
    "height_ratios": (3, 2),
    "left": 0.058, "right": 0.965, "bottom": 0.086, "top": 0.954, "hspace": 0.065,
}  # fmt: skip


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, format="png")
    return path


def plot_roc(
    scores: np.ndarray, labels: np.ndarray, path: str | Path, title: str = "Frame-level ROC"
) -> Path:
    """ROC curve of p(A) against the abnormal-frame labels, with its AUC and the chance line."""
    fpr, tpr, _ = roc_curve(scores, labels)
    auc = frame_metrics(scores, labels)["auc"]
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color=_SCORE_COLOR, lw=2, label=f"AUC = {100 * auc:.2f}")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_pr(
    scores: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    title: str = "Frame-level precision-recall",
) -> Path:
    """Precision-recall curve (as a step, the way AP integrates it) with the AP and the
    precision of a random ranking (the share of abnormal frames)."""
    precision, recall, _ = pr_curve(scores, labels)
    ap = frame_metrics(scores, labels)["ap"]
    base = float(np.mean(np.asarray(labels, dtype=bool)))
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.step(
        np.r_[0.0, recall],
        np.r_[precision[0], precision],
        where="pre",
        color=_TRUE_COLOR,
        lw=2,
        label=f"AP = {100 * ap:.2f}",
    )
    ax.axhline(base, color="grey", ls="--", lw=1, label=f"random ({100 * base:.1f}% abnormal)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="Recall", ylabel="Precision")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return _save(fig, path)


def plot_confusion(
    matrix: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    title: str = "Confusion matrix (rows: true class, % of its frames)",
) -> Path:
    """Row-normalised confusion matrix: cell (i, j) is the share of class i's frames predicted
    as j. Rows of classes absent from the test set are left blank rather than shown as zeros."""
    counts = np.asarray(matrix, dtype=np.float64)
    C = len(class_names)
    if counts.shape != (C, C):
        raise AnomalyError(f"{path}: confusion matrix {counts.shape} for {C} class names")
    totals = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, totals, out=np.full_like(counts, np.nan), where=totals > 0)
    size = max(5.0, 0.55 * C + 2.5)
    fig = Figure(figsize=(size + 1.2, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(share), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class's frames")
    ticks = np.arange(C)
    ax.set_xticks(ticks, labels=class_names, rotation=45, ha="right", rotation_mode="anchor")
    row_names = [f"{n} ({int(t)})" for n, t in zip(class_names, totals[:, 0], strict=True)]
    ax.set_yticks(ticks, labels=row_names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class (frames)")
    ax.set_title(title)
    if C <= 20:
        for i, j in zip(*np.nonzero(np.isfinite(share)), strict=True):
            value = share[i, j]
            if value >= 0.01:
                ax.text(
                    j,
                    i,
                    f"{100 * value:.0f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if value > 0.6 else "black",
                )
    return _save(fig, path)


def plot_video(
    times: np.ndarray,
    p_abnormal: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    normal_id: int,
    true_intervals_seconds: Sequence[tuple[float, float]],
    title: str,
    path: str | Path,
    threshold: float | None = None,
    top: int = 3,
    xlabel: str = "time (s)",
) -> Path:
    """One video at a glance: p(A) over time with the true anomalous intervals shaded (top),
    and the probabilities of the ``top`` anomaly classes the model favours most (bottom).

    ``times`` may be frame numbers instead (features imported without a frame rate); say so
    with ``xlabel``.

    Classes are ranked by their summed probability over the video, which is dominated by the
    frames the model calls abnormal, so the legend names what it thinks happens, in order.
    """
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    p_abnormal = np.asarray(p_abnormal, dtype=np.float64).reshape(-1)
    probs = np.asarray(probs, dtype=np.float64)
    anomaly_ids = [c for c in range(len(class_names)) if c != normal_id]
    totals = probs[:, anomaly_ids].sum(axis=0)
    chosen = [anomaly_ids[i] for i in np.argsort(-totals, kind="stable")[:top]]

    fig = Figure(figsize=(10, 5.5))
    ax_score, ax_class = fig.subplots(2, 1, sharex=True, gridspec_kw=_VIDEO_GRID)
    for k, (start, end) in enumerate(true_intervals_seconds):
        for ax in (ax_score, ax_class):
            ax.axvspan(
                start,
                end,
                color=_TRUE_COLOR,
                alpha=0.15,
                lw=0,
                label="true anomaly" if k == 0 and ax is ax_score else None,
            )
    # A single frame draws no line, so mark every point when there are few.
    marker = "o" if len(times) < 50 else None
    ax_score.plot(times, p_abnormal, color=_SCORE_COLOR, lw=1.5, marker=marker, label="p(A)")
    if threshold is not None:
        ax_score.axhline(threshold, color="black", ls=":", lw=1, label=f"threshold {threshold:.2f}")
    ax_score.set(ylim=(-0.02, 1.02), ylabel="anomaly score p(A)")
    ax_score.set_title(title)
    ax_score.grid(alpha=0.3)
    ax_score.legend(loc="upper right", fontsize=9)

    for c in chosen:
        ax_class.plot(times, probs[:, c], lw=1.3, marker=marker, label=class_names[c])
    ax_class.set(ylim=(-0.02, 1.02), xlabel=xlabel, ylabel="class probability")
    ax_class.grid(alpha=0.3)
    if chosen:
        ax_class.legend(loc="upper right", fontsize=9, title=f"top {len(chosen)} classes")
    if len(times) > 1:
        ax_class.set_xlim(times[0], times[-1])
    return _save(fig, path)
