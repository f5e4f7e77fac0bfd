"""Pictures people read: ROC, PR, confusion matrix, and one video's p(A) curve over time.

Figures are built with :class:`matplotlib.figure.Figure` directly (no pyplot), so nothing
touches global state and no display is needed: saving a PNG goes through the Agg canvas.
Each ``*_figure`` function builds a figure and its ``plot_*`` twin saves it.

Rules every figure keeps, for pages of a paper: a class has one colour everywhere
(:mod:`~anomalyclip.evaluate.palette`); a legend never covers data (ROC and PR put it in the
corner their curves leave free, per-video plots beside the axes); a decision threshold is
always named with where it came from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.metrics import frame_metrics, pr_curve, roc_curve
from anomalyclip.evaluate.palette import SCORE, TRUTH, class_colour
from anomalyclip.events import Event

_DPI = 120
_CURVE = "#1f77b4"  # ROC and PR curves: one curve each, no class meaning
# plot_video's fixed margins: where matplotlib's constrained layout puts its two axes (the
# labels are the same for every video), with room on the right for the legends beside them;
# constrained layout costs ~0.07 s a video, a quarter of drawing it, and eval draws one per
# test video
_VIDEO_GRID = {
    "height_ratios": (3, 2),
    "left": 0.058, "right": 0.765, "bottom": 0.086, "top": 0.954, "hspace": 0.065,
}  # fmt: skip
_CORNERS = ("lower right", "upper left", "lower left", "upper right", "center right")


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI, format="png")
    return path


def data_points(ax) -> np.ndarray:
    """(K, 2) display coordinates of the data drawn in ``ax``: every line's vertices and 20
    points on each of its segments, so a legend over a straight stretch counts too."""
    points = []
    for line in ax.get_lines():
        xy = np.column_stack(line.get_data()).astype(np.float64)
        xy = xy[np.isfinite(xy).all(axis=1)]
        if len(xy) > 1:
            t = np.linspace(0, 1, 20)[None, :, None]
            xy = (xy[:-1, None] + t * (xy[1:, None] - xy[:-1, None])).reshape(-1, 2)
        points.append(ax.transData.transform(xy) if len(xy) else np.zeros((0, 2)))
    return np.concatenate(points) if points else np.zeros((0, 2))


def covered(legend, ax) -> int:
    """How many of ``ax``'s :func:`data_points` ``legend`` covers (the figure is drawn)."""
    box = legend.get_window_extent()
    xy = data_points(ax)
    inside = (xy[:, 0] >= box.x0) & (xy[:, 0] <= box.x1) & (xy[:, 1] >= box.y0)
    return int((inside & (xy[:, 1] <= box.y1)).sum())


def _legend_in_free_corner(ax, **options) -> None:
    """The legend in the first corner where it covers no data, chosen on the drawn figure;
    below the axes when every corner holds data."""
    for loc in _CORNERS:
        legend = ax.legend(loc=loc, **options)
        ax.figure.draw_without_rendering()  # the layout settled, as it will be saved
        if covered(legend, ax) == 0:
            return
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=2, **options)


def plot_roc(
    scores: np.ndarray, labels: np.ndarray, path: str | Path, title: str = "Frame-level ROC"
) -> Path:
    """:func:`roc_figure` saved as a PNG."""
    return _save(roc_figure(scores, labels, title), path)


def roc_figure(scores: np.ndarray, labels: np.ndarray, title: str = "Frame-level ROC") -> Figure:
    """ROC curve of p(A) against the abnormal-frame labels, with its AUC and the chance line."""
    fpr, tpr, _ = roc_curve(scores, labels)
    auc = frame_metrics(scores, labels)["auc"]
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color=_CURVE, lw=2, label=f"AUC = {100 * auc:.2f}")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="chance")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate", ylabel="True positive rate")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    _legend_in_free_corner(ax)
    return fig


def plot_pr(
    scores: np.ndarray,
    labels: np.ndarray,
    path: str | Path,
    title: str = "Frame-level precision-recall",
) -> Path:
    """:func:`pr_figure` saved as a PNG."""
    return _save(pr_figure(scores, labels, title), path)


def pr_figure(
    scores: np.ndarray, labels: np.ndarray, title: str = "Frame-level precision-recall"
) -> Figure:
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
        color=_CURVE,
        lw=2,
        label=f"AP = {100 * ap:.2f}",
    )
    ax.axhline(base, color="grey", ls="--", lw=1, label=f"random ({100 * base:.1f}% abnormal)")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="Recall", ylabel="Precision")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    _legend_in_free_corner(ax)
    return fig


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


@dataclass
class VideoPlot:
    """What :func:`plot_video` draws of one video.

    ``times`` (T,) seconds (or frame numbers, said with ``xlabel``), ``p_abnormal`` (T,),
    ``probs`` (T, C) with ``class_names`` and ``normal_id``; ``truth``: the true anomalous
    intervals in the units of ``times``; ``events``: the predicted events, drawn in their
    class's colour; ``threshold`` and ``threshold_label`` (which threshold it is, e.g. "the
    run's far@1"); ``top``: how many anomaly classes the lower panel shows.
    """

    times: np.ndarray
    p_abnormal: np.ndarray
    probs: np.ndarray
    class_names: Sequence[str]
    normal_id: int
    title: str = ""
    truth: Sequence[tuple[float, float]] = ()
    events: Sequence[Event] = ()
    threshold: float | None = None
    threshold_label: str = "threshold"
    xlabel: str = "time (s)"
    top: int = 3


def plot_video(video: VideoPlot, path: str | Path) -> Path:
    """:func:`video_figure` saved as a PNG."""
    return _save(video_figure(video), path)


def _spans(ax_score, ax_class, video: VideoPlot) -> None:
    """The true intervals (hatched grey) and the predicted events (in their class's colour,
    one legend entry per class) on the score panel; the true intervals on the class panel."""
    for k, (start, end) in enumerate(video.truth):
        for ax in (ax_score, ax_class):
            label = "true anomaly" if k == 0 and ax is ax_score else None
            ax.axvspan(start, end, facecolor="none", edgecolor=TRUTH, hatch="//", lw=0,
                       alpha=0.45, label=label)  # fmt: skip
    named: set[str] = set()
    ids = {name: c for c, name in enumerate(video.class_names)}
    for e in video.events:
        colour = class_colour(ids.get(e.label, video.normal_id), video.normal_id)
        label = None if e.label in named else f"event: {e.label}"
        named.add(e.label)
        ax_score.axvspan(e.start_time, e.end_time, ymin=0, ymax=1, color=colour, alpha=0.3,
                         lw=0, label=label, gid="predicted event")  # fmt: skip


def video_figure(video: VideoPlot) -> Figure:
    """One video at a glance: p(A) over time with the threshold, the true anomalous intervals
    and the predicted events (top), and the probabilities of the ``top`` anomaly classes the
    model favours most, each in its own colour (bottom); legends beside the panels.

    Classes are ranked by their summed probability over the video, which is dominated by the
    frames the model calls abnormal, so the legend names what it thinks happens, in order.
    """
    times = np.asarray(video.times, dtype=np.float64).reshape(-1)
    p_abnormal = np.asarray(video.p_abnormal, dtype=np.float64).reshape(-1)
    probs = np.asarray(video.probs, dtype=np.float64)
    anomaly_ids = [c for c in range(len(video.class_names)) if c != video.normal_id]
    totals = probs[:, anomaly_ids].sum(axis=0)
    chosen = [anomaly_ids[i] for i in np.argsort(-totals, kind="stable")[: video.top]]

    fig = Figure(figsize=(10, 5.5))
    ax_score, ax_class = fig.subplots(2, 1, sharex=True, gridspec_kw=_VIDEO_GRID)
    _spans(ax_score, ax_class, video)
    # A single frame draws no line, so mark every point when there are few.
    marker = "o" if len(times) < 50 else None
    ax_score.plot(times, p_abnormal, color=SCORE, lw=1.3, marker=marker, label="p(A)")
    if video.threshold is not None:
        ax_score.axhline(video.threshold, color=SCORE, ls="--", lw=1,
                         label=f"{video.threshold_label} {video.threshold:.2f}")  # fmt: skip
    ax_score.set(ylim=(-0.02, 1.02), ylabel="anomaly score p(A)")
    ax_score.set_title(video.title)
    ax_score.grid(alpha=0.3)
    beside = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 9}
    ax_score.legend(**beside)

    for c in chosen:
        colour = class_colour(c, video.normal_id)
        ax_class.plot(times, probs[:, c], color=colour, lw=1.3, marker=marker,
                      label=video.class_names[c])  # fmt: skip
    ax_class.set(ylim=(-0.02, 1.02), xlabel=video.xlabel, ylabel="class probability")
    ax_class.grid(alpha=0.3)
    if chosen:
        ax_class.legend(title=f"top {len(chosen)} classes", **beside)
    if len(times) > 1:
        ax_class.set_xlim(times[0], times[-1])
    return fig
