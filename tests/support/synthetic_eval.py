"""A synthetic evaluation folder, written by the package's own evaluation code (metrics,
decisions, events, per-video CSVs, ``report.html``) from generated scores instead of a
model's, so the report can be tried at any size without scoring a dataset.

Shaped like UCF-Crime's test split by default: 290 videos at 30 fps (140 abnormal over its 13
classes, 150 normal), lengths spread log-normally (a few hundred to tens of thousands of
rows) and scaled to ``frames`` rows in all (1.1 M by default), one or two anomalous intervals
per abnormal video. p(A) is a slowly drifting noisy baseline, raised inside the intervals by
an amount that varies from video to video (so some intervals are missed), with brief bursts
on normal footage (so there are false events) and single-row spikes (which the report's
downsampled curves must keep).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anomalyclip.datasets import get_dataset
from anomalyclip.evaluate.evaluation import VideoResult, decide, write_outputs
from anomalyclip.evaluate.metrics import evaluate_arrays
from anomalyclip.events import EventConfig
from anomalyclip.thresholds import Threshold

FPS = 30.0


def _curve(rng: np.random.Generator, T: int, intervals: list[list[int]]) -> np.ndarray:
    drift = np.convolve(rng.standard_normal(T + 300), np.ones(300) / 300, "valid")[:T]
    p = 0.18 + 0.6 * drift + 0.05 * rng.standard_normal(T)
    for s, e in intervals:
        p[s:e] += rng.uniform(0.1, 0.7)
    for _ in range(rng.poisson(T / 4000)):  # bursts on any footage
        s = int(rng.integers(0, T))
        p[s : s + int(rng.integers(20, 90))] += 0.5
    spikes = rng.integers(0, T, size=max(1, T // 5000))
    p[spikes] = rng.uniform(0.6, 1.0, size=spikes.size)
    return np.clip(p, 0.001, 0.999)


def _probs(rng, p: np.ndarray, labels: np.ndarray, normal_id: int, C: int) -> np.ndarray:
    logits = rng.standard_normal((p.size, C))
    logits[np.arange(p.size), labels] += 2.0 * (labels != normal_id)
    logits[:, normal_id] = -np.inf
    share = np.exp(logits - logits.max(1, keepdims=True))
    share /= share.sum(1, keepdims=True)
    probs = share * p[:, None]
    probs[:, normal_id] = 1.0 - p
    return probs.astype(np.float32)


def synthetic_results(
    videos: int = 290, frames: int = 1_100_000, seed: int = 0
) -> tuple[list[VideoResult], tuple[str, ...], int]:
    """The test videos' results (scores, ground truth), with UCF-Crime's classes."""
    spec = get_dataset("ucf")
    classes, normal_id = spec.classes, spec.normal_id
    anomalies = [c for c in range(len(classes)) if c != normal_id]
    rng = np.random.default_rng(seed)
    lengths = rng.lognormal(0.0, 0.9, size=videos)
    lengths = np.maximum(120, np.round(lengths / lengths.sum() * frames)).astype(int)
    results = []
    for i, T in enumerate(lengths):
        abnormal = i < videos * 140 // 290
        label = anomalies[i % len(anomalies)] if abnormal else normal_id
        intervals = []
        for _ in range(int(rng.integers(1, 3)) if abnormal else 0):
            s = int(rng.integers(0, T - 60))
            intervals.append([s, min(T, s + int(rng.integers(60, max(61, T // 4))))])
        intervals = sorted(intervals)
        truth = np.full(T, normal_id)
        for s, e in intervals:
            truth[s:e] = label
        p = _curve(rng, T, intervals).astype(np.float32)
        name = f"{classes[label]}/{classes[label]}{i:03d}_x264"
        results.append(
            VideoResult(
                name,
                np.arange(T),
                np.arange(T) / FPS,
                p,
                _probs(rng, p, truth, normal_id, len(classes)),
                truth,
                intervals,
                label=classes[label],
                fps=FPS,
            )  # fmt: skip
        )
    return results, classes, normal_id


def synthetic_eval(out: Path, videos: int = 290, frames: int = 1_100_000, seed: int = 0):
    """Write the evaluation folder (decided at a fixed threshold of 0.5, events found with
    ``anomaly eval``'s default settings); returns (folder, results)."""
    results, classes, normal_id = synthetic_results(videos, frames, seed)
    metrics = evaluate_arrays(
        np.concatenate([r.p_abnormal for r in results]),
        np.concatenate([r.probs for r in results]),
        np.concatenate([r.labels for r in results]),
        classes,
        normal_id,
    )
    metrics.update(dataset="ucf", videos=len(results))
    decide(metrics, results, Threshold(0.5, "fixed@0.5", "fixed by the user"), EventConfig(0.5))
    write_outputs(out, metrics, results, classes, normal_id, max_video_plots=0)
    return Path(out), results
