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

import av
import numpy as np
import torch

from anomalyclip.datasets.registry import DEMO
from anomalyclip.permissions import make_shareable

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


# -- scene rendering ------------------------------------------------------------------------
def _smooth_texture(rng: np.random.Generator, h: int, w: int, cell: int = 20) -> np.ndarray:
    """(h, w, 3) float texture in [0, 255]: a random grid of ``cell``-pixel cells, bilinearly
    upsampled, periodic along x so a panning camera can wrap around without a seam."""
    cy, cx = max(1, h // cell), max(1, w // cell)
    grid = rng.uniform(0, 1, (cy + 1, cx + 1, 3))
    grid[:, -1] = grid[:, 0]
    ys = np.linspace(0, cy, h)
    xs = np.linspace(0, cx, w, endpoint=False)
    y0 = np.minimum(ys.astype(int), cy - 1)
    x0 = np.minimum(xs.astype(int), cx - 1)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
    g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    tex = (g00 * (1 - fx) + g01 * fx) * (1 - fy) + (g10 * (1 - fx) + g11 * fx) * fy
    base = rng.uniform(60, 140, 3)  # a muted scene colour
    return np.clip(base + (tex - 0.5) * 90, 0, 255)


NUM_CAMERAS = 4  # fixed scenes the videos are filmed in, as in surveillance datasets


class _Scene:
    """Normal scene: one of the cameras' backgrounds, panning slowly, drifting soft blobs and
    noise, all frames at once."""

    def __init__(self, rng: np.random.Generator, h: int, w: int, num_blobs: int = 3) -> None:
        self.rng, self.h, self.w = rng, h, w
        camera = np.random.default_rng([7919, int(rng.integers(NUM_CAMERAS))])
        self.texture = _smooth_texture(camera, h, 2 * w).astype(np.float32)  # room to pan
        self.pan = rng.uniform(0.2, 0.6) * rng.choice([-1, 1])  # pixels per frame
        self.blob_pos = rng.uniform([0, 0], [w, h], (num_blobs, 2))  # (B, 2) x, y
        self.blob_vel = rng.uniform(-0.8, 0.8, (num_blobs, 2))
        self.blob_rad = rng.uniform(8, 16, num_blobs)
        self.blob_col = rng.uniform(40, 220, (num_blobs, 3)).astype(np.float32)
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def render(self, num_frames: int) -> np.ndarray:
        """(T, h, w, 3) float32 frames."""
        t = np.arange(num_frames)
        shifts = np.round(t * self.pan).astype(int) % (2 * self.w)
        wrapped = np.concatenate([self.texture, self.texture[:, : self.w]], axis=1)  # (h, 3w, 3)
        frames = np.empty((num_frames, self.h, self.w, 3), np.float32)
        for i, s in enumerate(shifts):  # slice copies: far faster than a fancy-index gather
            frames[i] = wrapped[:, s : s + self.w]
        pos = (self.blob_pos + t[:, None, None] * self.blob_vel) % [self.w, self.h]  # (T, B, 2)
        # separable Gaussian blobs: alpha = gy (T, B, h, 1) * gx (T, B, 1, w)
        r2 = 2 * self.blob_rad[None, :, None] ** 2  # (1, B, 1)
        gx = np.exp(-((np.arange(self.w) - pos[..., 0:1]) ** 2) / r2).astype(np.float32)
        gy = np.exp(-((np.arange(self.h) - pos[..., 1:2]) ** 2) / r2).astype(np.float32)
        # far tails to exact zero: float32 subnormals (below 1.2e-38) make the painting below
        # ~30x slower, and an alpha under 1e-36 changes no pixel
        gx[gx < 1e-18], gy[gy < 1e-18] = 0, 0
        alpha = gy[..., :, None] * gx[..., None, :]  # (T, B, h, w)
        for b in range(len(self.blob_rad)):  # few blobs, painted in order
            a = alpha[:, b, :, :, None]  # (T, h, w, 1)
            frames += a * (self.blob_col[b] - frames)
        # sensor noise from a small bank of noise frames, drawn at random per frame
        bank = 3 * self.rng.standard_normal((16, self.h, self.w, 3), dtype=np.float32)
        frames += bank[self.rng.integers(0, len(bank), num_frames)]
        return frames


def _explosion(frame: np.ndarray, scene: _Scene, k: int, n: int, params: dict) -> np.ndarray:
    cx, cy, rmax = params["cx"], params["cy"], params["rmax"]
    radius = rmax * (0.3 + 0.7 * min(1.0, (k + 1) / max(1, 0.5 * n)))  # a fast bloom
    d = np.sqrt((scene.xx - cx) ** 2 + (scene.yy - cy) ** 2) / radius  # (h, w)
    inside = np.clip(3 * (1 - d), 0, 1)[..., None]  # opaque fireball, soft outer third
    core = np.array([255, 245, 160])  # yellow-white core, orange rim
    rim = np.array([255, 120, 20])
    colour = core * (1 - d[..., None].clip(0, 1)) + rim * d[..., None].clip(0, 1)
    flicker = 0.9 + 0.1 * np.sin(k * 1.7)
    return frame * (1 - inside) + colour * flicker * inside


def _intruder(frame: np.ndarray, scene: _Scene, k: int, n: int, params: dict) -> np.ndarray:
    w = scene.w
    x = 10 + (w - 20) * (k + 0.5) / n  # crosses the frame, fully in view the whole event
    if params["leftward"]:
        x = w - x
    y = params["y"]  # feet
    body = (np.abs(scene.xx - x) < 20) & (scene.yy > y - 66) & (scene.yy < y)
    head = (scene.xx - x) ** 2 + (scene.yy - (y - 78)) ** 2 < 12**2
    mask = (body | head)[..., None]
    return np.where(mask, params["colour"], frame)


def _tampering(frame: np.ndarray, scene: _Scene, k: int, n: int, params: dict) -> np.ndarray:
    if params["kind"] == "covered":
        return frame * 0.12 + params["rng"].normal(0, 25, frame.shape)
    # defocus: separable box blur of width 15, washed out towards grey
    kernel = 15
    pad = np.pad(frame, ((kernel, kernel), (kernel, kernel), (0, 0)), mode="edge")
    c = np.cumsum(pad, axis=0)
    pad = (c[kernel:] - c[:-kernel]) / kernel
    c = np.cumsum(pad, axis=1)
    pad = (c[:, kernel:] - c[:, :-kernel]) / kernel
    h, w = frame.shape[:2]
    off = kernel // 2 + 1
    blurred = pad[off : off + h, off : off + w]
    return 0.6 * blurred + 0.4 * 128


_EVENTS: dict[str, Callable] = {
    "Explosion": _explosion,
    "Intruder": _intruder,
    "Tampering": _tampering,
}


def _event_params(label: str, rng: np.random.Generator, h: int, w: int) -> dict:
    if label == "Explosion":
        return {"cx": rng.uniform(0.3, 0.7) * w, "cy": rng.uniform(0.3, 0.7) * h, "rmax": 0.45 * h}
    if label == "Intruder":
        return {
            "leftward": bool(rng.integers(2)),
            "y": rng.uniform(0.85, 0.98) * h,
            "colour": rng.uniform([170, 0, 0], [250, 50, 60]),  # a red jacket
        }
    return {"kind": "covered" if rng.integers(2) else "defocus", "rng": rng}


def render_video(
    label: str, rng: np.random.Generator, num_frames: int, size: tuple[int, int]
) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """(T, H, W, 3) uint8 frames of one demo video and its anomalous intervals.

    The scene and the event draw from separate streams split off ``rng``, so a video of any
    class is, outside its event, pixel for pixel the Normal video of the same ``rng`` state.
    """
    w, h = size
    scene_rng, event_rng = rng.spawn(2)
    scene = _Scene(scene_rng, h, w)
    intervals: list[tuple[int, int]] = []
    if label != NORMAL:
        length = int(event_rng.uniform(0.15, 0.3) * num_frames)
        start = int(event_rng.uniform(0.2, 0.6) * num_frames)
        intervals = [(start, min(num_frames, start + length))]
        params = _event_params(label, event_rng, h, w)
    frames = scene.render(num_frames)  # (T, h, w, 3) float32
    for s, e in intervals:
        for t in range(s, e):
            frames[t] = _EVENTS[label](frames[t], scene, t - s, e - s, params)
    return np.clip(frames, 0, 255).round().astype(np.uint8), intervals


def video_codec() -> str:
    """H.264 when PyAV's FFmpeg has libx264, MPEG-4 Part 2 otherwise."""
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def write_video(path: Path, frames: np.ndarray, fps: int = 15) -> None:
    """Encode (T, H, W, 3) uint8 RGB frames (even H and W) into an MP4 file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    codec = video_codec()
    tmp = path.with_name(path.name + ".part")  # never leave a half-written video behind
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "veryfast", "crf": "18"}
        else:
            stream.bit_rate = 2_000_000
        for t, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = t  # in the encoder's time base, 1 / fps
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    tmp.replace(path)


def generate_demo_videos(
    root: str | Path,
    n_train_normal: int = 32,
    n_train_abnormal_per_class: int = 12,
    n_test_normal: int = 8,
    n_test_abnormal_per_class: int = 3,
    seed: int = 0,
    size: tuple[int, int] = (160, 120),
    frames: tuple[int, int] = (128, 192),
    fps: int = 15,
) -> list[DemoVideo]:
    """Write the demo dataset under ``root`` (layout in the module docstring).

    Deterministic: video ``k`` of the returned list draws its length (uniform in ``frames``,
    inclusive) and then its pixels (:func:`render_video`) from ``default_rng([seed, k])``.
    ``size`` is (width, height).
    """
    root = Path(root)
    plan = [("train", NORMAL, n_train_normal), ("test", NORMAL, n_test_normal)]
    for label in ANOMALIES:
        plan += [("train", label, n_train_abnormal_per_class)]
        plan += [("test", label, n_test_abnormal_per_class)]
    jobs = [(split, label, k) for split, label, count in plan for k in range(count)]

    def make(index: int) -> DemoVideo:
        split, label, k = jobs[index]
        rng = np.random.default_rng([seed, index])
        num_frames = int(rng.integers(frames[0], frames[1] + 1))
        pixels, intervals = render_video(label, rng, num_frames, size)
        video_id = f"{split}/{label}/{label}_{split}_{k:03d}"
        path = root / f"{video_id}.mp4"
        write_video(path, pixels, fps)
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
    generate: dict = field(default_factory=dict)  # generate_demo_videos options (scale)
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
    run.videos = generate_demo_videos(run.video_root, seed=run.seed, **run.generate)
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


def _pooled_states(module: torch.nn.Module, projection: torch.nn.Module, fn) -> torch.Tensor:
    """Inputs of ``projection`` (the pooled states) while ``fn()`` runs ``module``."""
    seen: list[torch.Tensor] = []
    hook = projection.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            fn()
    finally:
        hook.remove()
    return torch.cat(seen).double()


def _ridge(x: torch.Tensor, y: torch.Tensor, lam: float = 1e-4) -> torch.Tensor:
    """W (out, in) minimising ||x W^T - y||^2 + lam * n * ||W||^2 (inputs standardised by scale)."""
    reg = lam * x.shape[0] * x.square().mean() * torch.eye(x.shape[1], dtype=x.dtype)
    return torch.linalg.solve(x.T @ x + reg, x.T @ y).T


def pretrain_projections(clip_dir: Path, seed: int = 0, clips_per_class: int = 24) -> None:
    """Stand in for CLIP's pre-training: make the tiny random CLIP's two towers agree.

    Real CLIP was trained on captioned images until a picture of an explosion and the word
    "explosion" land close together. A random CLIP has no such knowledge: its image
    embeddings are dominated by nuisance (background, motion, noise) and its text embeddings
    point anywhere, so a demo built on it could not show what AnomalyCLIP does. Here both
    projection layers are fitted by ridge regression on captioned clips of the demo's world
    that are not part of the dataset (rendered in memory from a disjoint seed stream): each
    frame's pooled image state, and each class prompt's pooled text state (over many random
    initial contexts, as AnomalyCLIP draws them), are mapped to a per-class anchor vector.
    Only ``visual_projection`` and ``text_projection`` change; both towers stay random.
    """
    from transformers import CLIPModel

    from anomalyclip.backbone import load_text
    from anomalyclip.extract.preprocess import preprocess
    from anomalyclip.model.prompt import PromptLearner

    model = CLIPModel.from_pretrained(str(clip_dir)).eval()
    gen = torch.Generator().manual_seed(seed)
    names = DEMO.classes
    anchors = torch.randn(
        len(names), model.config.projection_dim, generator=gen, dtype=torch.float64
    )

    def clip(job: tuple[int, int]) -> torch.Tensor:
        c, k = job
        rng = np.random.default_rng([seed, 10_000 + c, k])
        pixels, intervals = render_video(names[c], rng, 96, (160, 120))
        if intervals:
            pixels = pixels[intervals[0][0] : intervals[0][1]]
        return preprocess(pixels[:: max(1, len(pixels) // 24)])

    jobs = [(c, k) for c in range(len(names)) for k in range(clips_per_class)]
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        images = list(pool.map(clip, jobs))  # rendering releases the GIL
    targets = [c for (c, _), im in zip(jobs, images, strict=True) for _ in range(len(im))]
    pixels = torch.cat(images)
    v = _pooled_states(model, model.visual_projection, lambda: model.get_image_features(pixels))
    counts = torch.bincount(torch.tensor(targets), minlength=len(names)).double()
    weight = (1.0 / counts[targets]).sqrt()[:, None]  # every class counts the same
    visual = _ridge(v * weight, anchors[targets] * weight)

    text_model, tokenizer = load_text(clip_dir)
    learner = PromptLearner(names, text_model, tokenizer, 8)

    def prompts() -> None:
        for _ in range(32):
            learner.ctx.copy_(torch.randn(learner.ctx.shape, generator=gen) * 0.02)
            learner()

    h = _pooled_states(text_model, text_model.text_projection, prompts)
    text = _ridge(h, anchors.repeat(32, 1))
    with torch.no_grad():
        model.visual_projection.weight.copy_(visual.float())
        model.text_projection.weight.copy_(text.float())
    model.save_pretrained(clip_dir)
    make_shareable(*Path(clip_dir).glob("*.safetensors"))  # safetensors writes 0600


def step_pretrain(run: DemoRun) -> str:
    """Step 3: stand-in for CLIP's pre-training (see :func:`pretrain_projections`)."""
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
        return train(run.store, run.run_dir, cfg, progress=run.progress)


def step_evaluate(run: DemoRun) -> dict:
    """Step 6: the paper's metrics on the demo test split, CSVs and plots."""
    from anomalyclip.evaluate.run import EvalOptions, evaluate_run, write_outputs
    from anomalyclip.train.build import load_model

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
    out_dir: str | Path = "demo", seed: int = 0, progress: bool = True, **generate
) -> DemoRun:
    """Run every step of :data:`DEMO_STEPS` in order into ``out_dir``.

    ``generate`` overrides :func:`generate_demo_videos`' defaults (tests run a smaller demo).
    """
    run = DemoRun(Path(out_dir), seed=seed, progress=progress, generate=generate)
    run.out.mkdir(parents=True, exist_ok=True)
    for name, step in DEMO_STEPS:
        t0 = time.perf_counter()
        run.results[name] = step(run)
        run.timings[name] = time.perf_counter() - t0
        log.info("demo step %s: %.1f s", name, run.timings[name])
    return run
