"""Pictures for a paper: a class keeps its colour from plot to plot (and in the render), the
predicted events are drawn where they are, legends never cover data, and every class figure
says at which threshold it was taken (the run's, or an oracle's on the test labels).

The scores are those of a weak detector on a realistic layout: abnormal frames in runs
(events), probabilities spread over every class, ties from rounding."""

from __future__ import annotations

import numpy as np
import pytest

from anomalyclip.evaluate import plots
from anomalyclip.evaluate.palette import class_colour, class_rgb
from anomalyclip.events import EventConfig, find_events

NAMES = ("Abuse", "Arrest", "Normal", "Arson", "Assault", "Burglary")
NORMAL = 2


def scored_video(seed: int, T: int = 400, fps: float = 25.0):
    """(times, p, probs) of one video: two anomalous runs whose class changes with the seed."""
    rng = np.random.default_rng(seed)
    p = np.clip(0.15 + 0.1 * rng.standard_normal(T), 0, 1)
    favourite = [0, 1, 3, 4, 5][seed % 5]
    share = rng.dirichlet(np.ones(5), size=T)
    for start in (T // 5, 3 * T // 5):
        p[start : start + T // 8] = np.clip(0.8 + 0.1 * rng.standard_normal(T // 8), 0, 1)
        share[start : start + T // 8, [0, 1, 3, 4, 5].index(favourite)] += 3
    share /= share.sum(1, keepdims=True)
    probs = np.insert(share * p[:, None], NORMAL, 1 - p, axis=1)
    return np.arange(T) / fps, p, probs


def video_plot(seed: int) -> tuple[plots.VideoPlot, list]:
    times, p, probs = scored_video(seed)
    curve = {"frames": np.arange(len(p)), "times": times, "p": p, "probs": probs}
    events = find_events(f"v{seed}", curve, (NAMES, NORMAL), EventConfig(0.5))
    video = plots.VideoPlot(times, p, probs, NAMES, NORMAL, f"video {seed}", [(3.0, 5.0)],
                            events, 0.5, "far@1 threshold")  # fmt: skip
    return video, events


def line_colours(fig) -> dict[str, str]:
    """Class name -> colour of its curve in a per-video figure's class panel."""
    from matplotlib.colors import to_hex

    ax_class = fig.axes[1]
    return {line.get_label(): to_hex(line.get_color()) for line in ax_class.get_lines()}


def test_a_class_keeps_its_colour_in_every_plot_and_the_render():
    from anomalyclip.evaluate.render import Scores, _bars

    first, second = (plots.video_figure(video_plot(seed)[0]) for seed in (0, 1))
    a, b = line_colours(first), line_colours(second)
    shared = set(a) & set(b)
    assert shared and list(a) != list(b)  # the classes come in another order, or others
    for name in shared:
        assert a[name] == b[name] == class_colour(NAMES.index(name), NORMAL)
    assert len(set(a.values())) == len(a)  # one colour per class within a plot
    # the render's bars: the likeliest class's bar is drawn in that class's colour
    times, p, probs = scored_video(0)
    row = int(np.argmax(p))
    panel = _bars(Scores(np.arange(len(p)), times, p, probs, NAMES, NORMAL), row)
    top = [c for c in np.argsort(-probs[row], kind="stable") if c != NORMAL][0]
    assert tuple(int(v) for v in panel[26 + 5, 152]) == class_rgb(int(top), NORMAL)


def test_predicted_events_are_drawn_with_their_spans_and_class_colours():
    from matplotlib.colors import to_hex

    video, events = video_plot(3)
    assert len(events) == 2
    fig = plots.video_figure(video)
    drawn = [a for a in fig.axes[0].patches if a.get_gid() == "predicted event"]
    assert len(drawn) == len(events)
    for patch, event in zip(drawn, events, strict=True):
        (x0, _), (x1, _) = patch.get_bbox().get_points()
        assert (x0, x1) == pytest.approx((event.start_time, event.end_time))
        colour = class_colour(NAMES.index(event.label), NORMAL)
        assert to_hex(patch.get_facecolor(), keep_alpha=False) == colour
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert f"event: {events[0].label}" in labels and "far@1 threshold 0.50" in labels


@pytest.mark.parametrize("kind", ["good", "chance", "inverted", "perfect"])
def test_legends_never_cover_the_data(kind):
    rng = np.random.default_rng(5)
    labels = rng.random(3000) < 0.3
    noise = rng.random(3000)
    scores = {
        "good": np.clip(0.4 * labels + 0.8 * noise, 0, 1),
        "chance": noise,
        "inverted": np.clip(0.9 - 0.5 * labels - 0.4 * noise, 0, 1),
        "perfect": labels * 0.5 + 0.4 * noise,
    }[kind].round(2)
    figures = [plots.roc_figure(scores, labels), plots.pr_figure(scores, labels)]
    figures.append(plots.video_figure(video_plot(2)[0]))
    for fig in figures:
        fig.draw_without_rendering()
        width, height = fig.bbox.width, fig.bbox.height
        for ax in fig.axes:
            legend = ax.get_legend()
            assert legend is not None
            assert len(plots.data_points(ax)) > 100  # the check sees the curves
            assert plots.covered(legend, ax) == 0
            box = legend.get_window_extent()
            assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= width and box.y1 <= height


@pytest.mark.slow
def test_class_figures_state_the_threshold_they_were_taken_at(tmp_path):
    """``anomaly eval``'s outputs: top-1 and the confusion matrix at the run's threshold
    beside the paper's oracle figures, each named as what it is."""
    from anomalyclip.evaluate.evaluation import VideoResult, decide, write_outputs
    from anomalyclip.evaluate.metrics import confusion_matrix, evaluate_arrays, predict_classes
    from anomalyclip.evaluate.report import format_table
    from anomalyclip.thresholds import Threshold

    results = []
    for seed in range(6):
        times, p, probs = scored_video(seed)
        truth = np.full(len(p), NORMAL)
        truth[80:130] = [0, 1, 3, 4, 5][seed % 5]
        results.append(VideoResult(f"v{seed}", np.arange(len(p)), times, p, probs, truth,
                                   [[80, 130]], label=NAMES[truth[100]], fps=25.0))  # fmt: skip
    cat = {k: np.concatenate([getattr(r, k) for r in results]) for k in ("p_abnormal", "probs")}
    labels = np.concatenate([r.labels for r in results])
    metrics = evaluate_arrays(cat["p_abnormal"], cat["probs"], labels, NAMES, NORMAL)
    run = Threshold(0.7, "far@1", "held-out normal training videos: 3 videos, 900 frames")
    decide(metrics, results, run, EventConfig(0.5))
    assert metrics["threshold"] != 0.7 and "oracle" in metrics["threshold_source"]
    at_run = metrics["decision"]["classes"]
    predicted = predict_classes(cat["p_abnormal"], cat["probs"], NORMAL, 0.7)
    assert at_run["confusion"].tolist() == confusion_matrix(labels, predicted, 6).tolist()
    assert at_run["top1"] != metrics["top1"]  # the oracle's threshold is another one
    table = format_table(metrics)
    assert "* the dataset's primary metric" in table
    assert f"oracle, at the youden threshold {metrics['threshold']:.4f} chosen on these test" in (
        table
    )
    assert "decisions at threshold 0.7000 (far@1" in table and "classes: top-1" in table
    out = write_outputs(tmp_path, metrics, results, NAMES, NORMAL)
    assert (out / "confusion.png").is_file() and (out / "confusion-oracle.png").is_file()
