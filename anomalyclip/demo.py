"""A built-in dataset and an end-to-end run that need no download.

:func:`generate_demo_videos` writes real encoded videos (H.264, or MPEG-4 Part 2 where PyAV's
FFmpeg lacks libx264) of synthetic scenes: a textured background that pans slowly, a few soft
blobs drifting across it and mild sensor noise. Abnormal videos carry one planted event with
an exact frame interval, framed by normal frames before and after, so their video-level label
is weak exactly as in the real datasets and a working detector has to localise:

- ``Explosion``: a bright yellow-orange disc that grows from a point and flickers;
- ``Intruder``: a figure in a red jacket (body and head) that crosses the frame fast;
- ``Tampering``: the camera is covered (dark and noisy) or defocused (heavy blur, washed out).

Layout (the registry's ``demo`` dataset)::

    <root>/train/<Class>/<Class>_train_<k>.mp4
    <root>/test/<Class>/<Class>_test_<k>.mp4
    <root>/annotations.txt        one line per test video: ``<split>/<Class>/<name> s1 e1``
                                  (end-exclusive decoded frame numbers; none for Normal)

:func:`run_demo` chains the steps of :data:`DEMO_STEPS`: generate the videos, build a tiny
random CLIP, stand in for its pre-training (:func:`align_text_projection`), extract the
features, train AnomalyCLIP and evaluate it on the test split.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from anomalyclip.datasets.registry import DEMO
from anomalyclip.extract.mp4 import video_codec
from anomalyclip.synthetic import encode_video, render_scene

log = logging.getLogger(__name__)

ANOMALIES = DEMO.anomaly_classes  # ("Explosion", "Intruder", "Tampering")
NORMAL = DEMO.normal


@dataclass
class DemoVideo:
    """Ground truth of one generated video."""

    video_id: str  # path relative to the root without extension (the registry's id)
    path: Path
    label: str
    split: str
    num_frames: int
    intervals: list[tuple[int, int]]  # anomalous [start, end) frames; empty for normal videos


@dataclass(frozen=True)
class DemoScale:
    """How many demo videos of each kind, and their size, length range and rate."""

    n_train_normal: int = 32
    n_train_abnormal_per_class: int = 12
    n_test_normal: int = 8
    n_test_abnormal_per_class: int = 3
    size: tuple[int, int] = (160, 120)  # (width, height)
    frames: tuple[int, int] = (128, 192)  # a video's length is drawn in this range, inclusive
    fps: int = 15


def generate_demo_videos(
    root: str | Path, seed: int = 0, scale: DemoScale | None = None
) -> list[DemoVideo]:
    """Write the demo dataset under ``root`` (layout in the module docstring), as many videos
    as ``scale`` says (:class:`DemoScale`; its defaults without one).

    Deterministic: video ``k`` of the returned list draws its length (uniform in
    ``scale.frames``, inclusive) and then its pixels
    (:func:`anomalyclip.synthetic.render_scene`) from ``default_rng([seed, k])``.
    """
    scale = scale or DemoScale()
    root = Path(root)
    plan = [("train", NORMAL, scale.n_train_normal), ("test", NORMAL, scale.n_test_normal)]
    for label in ANOMALIES:
        plan += [("train", label, scale.n_train_abnormal_per_class)]
        plan += [("test", label, scale.n_test_abnormal_per_class)]
    jobs = [(split, label, k) for split, label, count in plan for k in range(count)]

    def make(index: int) -> DemoVideo:
        split, label, k = jobs[index]
        rng = np.random.default_rng([seed, index])
        num_frames = int(rng.integers(scale.frames[0], scale.frames[1] + 1))
        pixels, intervals = render_scene(label, rng, num_frames, scale.size)
        video_id = f"{split}/{label}/{label}_{split}_{k:03d}"
        path = root / f"{video_id}.mp4"
        encode_video(path, pixels, scale.fps)
        return DemoVideo(video_id, path, label, split, num_frames, intervals)

    # numpy and the encoder release the GIL: two threads render and encode two videos at once
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        videos = list(pool.map(make, range(len(jobs))))
    lines = [
        " ".join([v.video_id, *(f"{s} {e}" for s, e in v.intervals)])
        for v in videos
        if v.split == "test"
    ]
    (root / "annotations.txt").write_text("\n".join(lines) + "\n")
    log.info("demo: %d videos (%s) in %s", len(videos), video_codec(), root)
    return videos


# -- the end-to-end run ---------------------------------------------------------------------
@dataclass
class DemoRun:
    """Where the demo puts things, and what each step produced (steps fill it in)."""

    out: Path
    seed: int = 0
    progress: bool = True
    precision: str = "fp32"  # the image tower's, in extraction (ExtractConfig.precision)
    generate: dict = field(default_factory=dict)  # DemoScale's fields to override
    videos: list[DemoVideo] = field(default_factory=list)
    results: dict = field(default_factory=dict)  # step name -> its result
    timings: dict[str, float] = field(default_factory=dict)  # step name -> seconds

    @property
    def video_root(self) -> Path:
        return self.out / "videos"

    @property
    def clip_dir(self) -> Path:
        return self.out / "clip"

    @property
    def store(self) -> Path:
        return self.out / "store.zarr"

    @property
    def run_dir(self) -> Path:
        return self.out / "run"

    @property
    def eval_dir(self) -> Path:
        return self.out / "run" / "eval"


def step_generate(run: DemoRun) -> list[DemoVideo]:
    """Step 1: render and encode the demo videos."""
    run.videos = generate_demo_videos(run.video_root, run.seed, DemoScale(**run.generate))
    return run.videos


def step_clip(run: DemoRun) -> Path:
    """Step 2: a tiny random CLIP in Hugging Face format (no download)."""
    from anomalyclip.backbone import build_clip

    return build_clip(run.clip_dir, "demo", seed=run.seed)


def step_extract(run: DemoRun):
    """Step 4: every frame of every video through the tiny CLIP into ``store.zarr``."""
    from anomalyclip.datasets import discover
    from anomalyclip.extract.pipeline import extract

    summary = extract(
        discover("demo", run.video_root),
        run.store,
        run.clip_dir,
        dataset="demo",
        root=run.video_root,
        batch_size=64,
        workers=2,
        precision=run.precision,
        progress=run.progress,
    )
    if not summary.ok:
        from anomalyclip.errors import AnomalyError

        vid, reason = next(iter(summary.failed.items()))
        raise AnomalyError(
            f"{run.store}: demo extraction failed for {len(summary.failed)} videos "
            f"(first: {vid}: {reason})"
        )
    return summary


def step_pretrain(run: DemoRun) -> str:
    """Step 3: stand-in for CLIP's pre-training (see :func:`pretrain_projections`)."""
    from anomalyclip.demo_pretrain import pretrain_projections

    pretrain_projections(run.clip_dir, run.seed)
    return "image and text projections fitted on captioned clips outside the dataset"


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block. The demo's temporal model is so small that
    its operations take microseconds, and splitting each over two threads costs more in
    wake-ups than it gains: measured ~9x slower with two threads on a busy 2-core host."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def step_train(run: DemoRun) -> dict:
    """Step 5: AnomalyCLIP on the demo store, the demo preset (a minute or two on a CPU)."""
    from anomalyclip.evaluate.evaluation import metrics_on_test_split
    from anomalyclip.train import resolve_config, train
    from anomalyclip.train.calibration import split_held_out

    cfg = resolve_config("demo")
    # a scaled-down demo (the tests') may have fewer videos of a kind than half a batch
    train_videos = [v for v in run.videos if v.split == "train"]
    normal = [v for v in train_videos if v.label == NORMAL]
    kept, _ = split_held_out(normal, cfg.calibration_share, cfg.seed)
    per_kind = min(len(train_videos) - len(normal), len(kept))
    cfg = cfg.updated(batch_size=2 * max(1, min(cfg.batch_size // 2, per_kind)))
    with one_thread():
        return train(
            run.store, run.run_dir, cfg, progress=run.progress, evaluate=metrics_on_test_split
        )


def step_evaluate(run: DemoRun) -> dict:
    """Step 6: the paper's metrics on the demo test split, CSVs and plots."""
    from anomalyclip.evaluate.evaluation import EvalOptions, evaluate_run, write_outputs
    from anomalyclip.runs import load_model

    model, config = load_model(run.run_dir)
    options = EvalOptions(features=str(run.store), progress=run.progress)
    metrics, results = evaluate_run(model, config, options)
    write_outputs(run.eval_dir, metrics, results, model.cfg.classes, model.cfg.normal_id)
    return metrics


DEMO_STEPS: list[tuple[str, Callable[[DemoRun], object]]] = [
    ("generate", step_generate),
    ("clip", step_clip),
    ("pretrain", step_pretrain),
    ("extract", step_extract),
    ("train", step_train),
    ("evaluate", step_evaluate),
]


def run_demo(
    out_dir: str | Path = "demo",
    seed: int = 0,
    progress: bool = True,
    precision: str = "fp32",
    **generate,
) -> DemoRun:
    """Run every step of :data:`DEMO_STEPS` in order into ``out_dir``.

    ``precision`` is the numeric precision of the image tower while features are extracted
    (``fp32``, ``bf16`` or ``auto``); ``generate`` overrides fields of :class:`DemoScale`
    (tests run a smaller demo).
    """
    run = DemoRun(Path(out_dir), seed, progress, precision, generate)
    run.out.mkdir(parents=True, exist_ok=True)
    for name, step in DEMO_STEPS:
        t0 = time.perf_counter()
        run.results[name] = step(run)
        run.timings[name] = time.perf_counter() - t0
        log.info("demo step %s: %.1f s", name, run.timings[name])
    return run
