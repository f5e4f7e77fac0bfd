"""Evaluating a model on the test split of a feature store, and writing what people read."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from anomalyclip.datasets import frame_labels, get_adapter, get_dataset
from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.decisions import decision_metrics, run_threshold_record, video_events
from anomalyclip.evaluate.html import write_report
from anomalyclip.evaluate.metrics import evaluate_arrays
from anomalyclip.evaluate.report import (
    FrameDecision,
    write_events,
    write_metrics_json,
    write_video_csv,
)
from anomalyclip.events import Event, EventConfig
from anomalyclip.model.inference import score_fn, score_videos
from anomalyclip.names import safe_name
from anomalyclip.runs.config import RunConfig
from anomalyclip.store import FeatureStore
from anomalyclip.store.records import intervals_problem
from anomalyclip.thresholds import Threshold

log = logging.getLogger(__name__)


@dataclass
class VideoResult:
    video_id: str
    frames: np.ndarray  # (T,) decoded frame numbers
    times: np.ndarray  # (T,) seconds
    p_abnormal: np.ndarray  # (T,)
    probs: np.ndarray  # (T, C)
    labels: np.ndarray | None  # (T,) true class id per frame, None without ground truth
    intervals: list[list[int]]  # true anomalous [start, end) frame intervals
    label: str = ""  # the video's class
    fps: float = 0.0  # rate of the stored rows' source video
    events: list[Event] = field(default_factory=list)  # found at the decision threshold

    def curve(self) -> dict[str, np.ndarray]:
        return {"frames": self.frames, "times": self.times, "p": self.p_abnormal,
                "probs": self.probs}  # fmt: skip


def true_classes(intervals, frames: np.ndarray, class_id: int, normal_id: int) -> np.ndarray:
    """Per-row class ids: the video's class inside its anomalous intervals, Normal elsewhere."""
    inside = frame_labels([tuple(i) for i in intervals], frames)
    return np.where(inside, class_id, normal_id).astype(np.int64)


def read_annotations(dataset: str, path: str | Path) -> dict[str, list[list[int]]]:
    """A dataset's test ground-truth file as video name -> anomalous [start, end) intervals.

    The dataset's adapter reads it (UCF-Crime's temporal annotation file, XD-Violence's or the
    demo's ``annotations.txt``, ShanghaiTech's ``test_frame_mask`` folder, a custom dataset's
    CSV). Keys are as the file names the videos.
    """
    path = Path(path)
    if not path.exists():
        raise AnomalyError(f"{path}: no such annotation file")
    found = get_adapter(dataset).read_annotations(path)
    return {k: [[int(s), int(e)] for s, e in v] for k, v in found.items()}


def apply_annotations(
    records: list,
    annotations: dict[str, list[list[int]]],
    source: str | Path,
    frames: dict[str, np.ndarray] | None = None,
) -> None:
    """Replace the test records' intervals by those of an annotation file.

    A video is matched by its id or by its base name; test videos the file does not name
    are normal (the official files list only anomalous videos). Given each video's
    ``frames``, its intervals must lie inside them.
    """
    by_name = {PurePosixPath(k).name: v for k, v in annotations.items()}
    matched = 0
    for rec in records:
        key = rec.video_id if rec.video_id in annotations else PurePosixPath(rec.video_id).name
        intervals = annotations.get(key, by_name.get(key))
        matched += intervals is not None
        rec.intervals = intervals or []
    if annotations and not matched:
        raise AnomalyError(f"{source}: names none of the store's test videos")
    for rec in records if frames is not None else []:
        problem = intervals_problem(rec.intervals, frames[rec.video_id])
        if problem:
            raise AnomalyError(f"{source}: video {rec.video_id!r}: {problem}")


def metrics_on_test_split(
    model: torch.nn.Module, store: FeatureStore, device: torch.device | str | None = None
) -> dict[str, Any] | None:
    """The test-split metrics of ``model`` on ``store`` (None without test videos): what
    training measures each epoch (the callback :data:`anomalyclip.train.Evaluator`)."""
    found = evaluate_store(model, store, device=device)
    return found[0] if found else None


def _score(model: torch.nn.Module, feats: list[torch.Tensor], batch_size: int, device, progress):
    """(p_abnormal, probs) of each video's (T, D) features, in eval mode (restored after)."""
    mcfg = model.cfg
    was_training = model.training
    model.eval()
    try:
        return score_videos(
            feats, score_fn(model), mcfg.num_segments, mcfg.seg_length, batch_size, device,
            progress=progress,
        )  # fmt: skip
    finally:
        model.train(was_training)


def evaluate_store(
    model: torch.nn.Module,
    store: FeatureStore,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: bool = False,
    annotations: dict[str, list[list[int]]] | None = None,
    annotations_file: str = "the annotations",
) -> tuple[dict[str, Any], list[VideoResult]] | None:
    """Metrics over all frames of the store's test videos (None when it has none).

    ``annotations`` (from :func:`read_annotations` of ``annotations_file``) replaces the
    ground truth in the store; its intervals must lie inside the videos' frames.
    """
    spec = get_dataset(store.dataset)
    records = store.records(split="test")
    if not records:
        return None
    frames = {r.video_id: store.frames(r.video_id) for r in records}  # checked on first read
    if annotations is not None:
        apply_annotations(records, annotations, annotations_file, frames)
    feats = [torch.from_numpy(store.features(r.video_id).astype(np.float32)) for r in records]
    p_list, probs_list = _score(model, feats, batch_size, device, progress)
    results = []
    for rec, p, probs in zip(records, p_list, probs_list, strict=True):
        found = frames[rec.video_id]
        labels = true_classes(rec.intervals, found, spec.class_id(rec.label), spec.normal_id)
        results.append(
            VideoResult(
                rec.video_id,
                found,
                store.times(rec.video_id),
                p.float().numpy(),
                probs.float().numpy(),
                labels,
                rec.intervals,
                label=rec.label,
                fps=rec.fps,
            )
        )
    metrics = evaluate_arrays(
        np.concatenate([r.p_abnormal for r in results]),
        np.concatenate([r.probs for r in results]),
        np.concatenate([r.labels for r in results]),
        spec.classes,
        spec.normal_id,
        primary=spec.primary_metric,
    )
    metrics["dataset"] = spec.name
    metrics["videos"] = len(results)
    return metrics, results


def decide(
    metrics: dict[str, Any],
    results: list[VideoResult],
    threshold: Threshold,
    events: EventConfig,
) -> None:
    """Find every test video's events at ``threshold`` (``events`` holds the other event
    settings; its threshold is replaced) and add the metrics at that threshold to
    ``metrics["decision"]``."""
    events = dataclasses.replace(events, threshold=threshold.value)
    labels = (tuple(metrics["class_names"]), int(metrics["normal_id"]))
    for r in results:
        r.events = video_events(r.video_id, r.curve(), labels, events, r.fps)
    metrics["decision"] = decision_metrics(results, [r.events for r in results], threshold, labels)
    metrics["decision"]["event_settings"] = dataclasses.asdict(events)


def intervals_in_seconds(
    intervals, frames: np.ndarray, times: np.ndarray
) -> list[tuple[float, float]]:
    """Map [start, end) frame intervals onto the time axis of the stored rows."""
    out = []
    for start, end in intervals:
        inside = (frames >= start) & (frames < end)
        if inside.any():
            t = times[inside]
            step = float(np.median(np.diff(times))) if times.size > 1 else 0.0
            out.append((float(t.min()), float(t.max()) + step))
    return out


def write_outputs(
    out_dir: str | Path,
    metrics: dict[str, Any],
    results: list[VideoResult],
    class_names: tuple[str, ...],
    normal_id: int,
    max_video_plots: int = 50,
) -> Path:
    """``metrics.json``, one CSV per video, plots, and ``report.html`` built from those files."""
    from anomalyclip.evaluate import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_metrics_json(out / "metrics.json", metrics)
    p_all = np.concatenate([r.p_abnormal for r in results])
    labels_all = np.concatenate([r.labels for r in results])
    abnormal = labels_all != normal_id
    if abnormal.any() and not abnormal.all():
        plots.plot_roc(p_all, abnormal, out / "roc.png")
        plots.plot_pr(p_all, abnormal, out / "pr.png")
    _confusion_plots(out, metrics, list(class_names))
    decision = (metrics.get("decision") or {}).get("threshold")
    threshold = decision["value"] if decision else None
    if decision:
        write_events(out / "events", [e for r in results for e in r.events])
    for i, r in enumerate(results):
        name = safe_name(r.video_id)
        write_video_csv(
            out / "videos" / f"{name}.csv",
            r.frames,
            r.times,
            r.p_abnormal,
            r.probs,
            class_names,
            r.labels,
            decision=None if threshold is None else FrameDecision(threshold, normal_id),
        )
        if i < max_video_plots:
            timed = bool(np.isfinite(r.times).all())  # imported features may lack a frame rate
            video = plots.VideoPlot(
                r.times if timed else r.frames.astype(np.float64), r.p_abnormal, r.probs,
                class_names, normal_id, r.video_id,
                intervals_in_seconds(r.intervals, r.frames, r.times) if timed
                else [(float(s), float(e)) for s, e in r.intervals],
                r.events if timed else [], threshold, threshold_label(decision),
                "time (s)" if timed else "frame",
            )  # fmt: skip
            plots.plot_video(video, out / "videos" / f"{name}.png")
    write_report(out, class_names[normal_id])
    log.debug("evaluation outputs in %s", out)
    return out


def threshold_label(threshold: dict[str, Any] | None) -> str:
    """How a plot names a decision threshold: by its rule (``far@1 threshold``)."""
    return f"{threshold['rule']} threshold" if threshold else "threshold"


def _confusion_plots(out: Path, metrics: dict[str, Any], class_names: list[str]) -> None:
    """``confusion.png`` at the decision threshold (when there is one) and
    ``confusion-oracle.png`` at the threshold chosen on the test labels (the paper's), each
    titled with its threshold."""
    from anomalyclip.evaluate import plots

    rows = "rows: true class, % of its frames"  # titles of three short lines: 4 classes fit
    decision = metrics.get("decision")
    if decision and decision.get("classes"):
        thr = decision["threshold"]
        plots.plot_confusion(
            np.asarray(decision["classes"]["confusion"]), class_names, out / "confusion.png",
            f"Confusion at the {threshold_label(thr)} {thr['value']:.3f}\nchosen without test "
            f"labels\n{rows}",
        )  # fmt: skip
    if metrics.get("confusion") is not None:
        plots.plot_confusion(
            np.asarray(metrics["confusion"]), class_names, out / "confusion-oracle.png",
            f"Oracle: confusion at the {metrics.get('threshold_rule', 'youden')} threshold "
            f"{metrics['threshold']:.3f}\nchosen on the test labels (the paper's evaluation)"
            f"\n{rows}",
        )  # fmt: skip


@dataclass
class EvalOptions:
    """How ``anomaly eval`` scores a run and decides: the store (default: the run's), the
    ground truth (default: the store's), the threshold rule (default: the run's threshold),
    where labelled rules choose (``calibrate_on``), and the event settings."""

    features: str | None = None
    annotations: str | None = None
    threshold_rule: str | None = None
    calibrate_on: str | None = None
    events: EventConfig = field(default_factory=lambda: EventConfig(threshold=0.5))
    batch_size: int = 64
    device: str | None = None
    progress: bool = True
    allow_backbone_mismatch: bool = False
    run_dir: str = "the run"  # for messages


def evaluate_run(
    model: torch.nn.Module, config: RunConfig, options: EvalOptions
) -> tuple[dict[str, Any], list[VideoResult]]:
    """The paper's metrics on the test split of the run's store, and the decisions at the
    run's threshold: what ``anomaly eval`` and the demo report."""
    from anomalyclip.runs import check_backbone
    from anomalyclip.store import open_store

    features = options.features or config.store["location"]
    with open_store(features) as st:
        if st.dataset != config.dataset:
            raise AnomalyError(
                f"{features}: store holds {st.dataset!r}, the run was trained on {config.dataset!r}"
            )
        check_backbone(config, st, options.run_dir, options.allow_backbone_mismatch)
        truth = read_annotations(st.dataset, options.annotations) if options.annotations else None
        found = evaluate_store(
            model, st, options.batch_size, options.device, options.progress, truth,
            str(options.annotations),
        )  # fmt: skip
        metrics, results = require_results(found, str(features))

    if options.threshold_rule is None and config.threshold is None:
        log.warning(
            "the run has no decision threshold: no events or decision metrics (give "
            "--threshold P, --threshold-rule fixed@T, or youden / best-f1 with --calibrate-on "
            "STORE)"
        )
        return metrics, results
    if options.calibrate_on is not None and str(options.calibrate_on) == str(features):
        log.warning("%s: choosing the threshold on the evaluated split itself", features)
    threshold = decision_threshold(
        model, config, options.threshold_rule, options.calibrate_on, options.device
    )
    decide(metrics, results, threshold, options.events)
    return metrics, results


def decision_threshold(
    model: torch.nn.Module,
    config: RunConfig,
    rule: str | None = None,
    calibrate_on: str | None = None,
    device: torch.device | str | None = None,
):
    """The threshold ``eval``, ``predict`` and ``watch`` decide with: the run's own, or
    ``rule`` applied now; a labelled rule (youden / best-f1) chooses on the frames of the
    store ``calibrate_on``, which ``model`` scores."""

    def labelled() -> tuple[np.ndarray, np.ndarray, str]:
        if calibrate_on is None:
            raise AnomalyError(
                f"threshold rule {rule} needs frames with ground truth: name a validation "
                "store with --calibrate-on"
            )
        from anomalyclip.store import open_store

        with open_store(calibrate_on) as st:
            calib = require_results(evaluate_store(model, st, device=device), calibrate_on)[1]
        p = np.concatenate([r.p_abnormal for r in calib])
        abnormal = np.concatenate([r.labels for r in calib]) != model.cfg.normal_id
        return p, abnormal, f"{calibrate_on} ({len(calib)} videos with ground truth)"

    return run_threshold_record(config, rule, labelled)


def require_results(found, location: str):
    if found is None:
        raise AnomalyError(f"{location}: the store has no test videos to evaluate")
    return found
