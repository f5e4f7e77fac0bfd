"""The demo's stand-in for CLIP's pre-training.

The demo runs on a small CLIP with random weights (no download). Real CLIP learned from
captioned images to place a picture of an explosion near the word "explosion"; a random
one has no such knowledge, so the anomaly directions AnomalyCLIP builds from text would
point nowhere. :func:`pretrain_projections` gives the random towers that agreement on the
demo's own world, from captioned clips rendered apart from the dataset, by fitting only the
two projection layers.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from anomalyclip.datasets.registry import DEMO
from anomalyclip.permissions import make_shareable
from anomalyclip.synthetic import render_scene


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


def _image_features(model: torch.nn.Module, clips: list[torch.Tensor], chunk: int = 256) -> None:
    """CLIP image features of the uint8 crops (n, 3, 224, 224) of ``clips``, whole clips
    joined into chunks of at least ``chunk`` frames.

    All ~2,000 frames at once (their float32 pixels twice over, the image tower's
    activations) took ~6 GB; in chunks the result is the same bit for bit (each frame is
    computed on its own in eval mode; tests/unit/demo/test_demo.py). Chunks of 256 frames took ~5 %
    less CPU time than the old single batch with its copies (smaller chunks cost more: 64
    took ~1.5x one batch's time, 512 peaked 0.2 GB higher)."""
    from anomalyclip.extract.preprocess import normalize

    start = 0
    while start < len(clips):
        stop, frames = start, 0
        while stop < len(clips) and frames < chunk:
            frames += len(clips[stop])
            stop += 1
        model.get_image_features(normalize(torch.cat(clips[start:stop])))
        start = stop


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
    from anomalyclip.extract.preprocess import resize_crop
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
        pixels, intervals = render_scene(names[c], rng, 96, (160, 120))
        if intervals:
            pixels = pixels[intervals[0][0] : intervals[0][1]]
        return resize_crop(pixels[:: max(1, len(pixels) // 24)])  # (n, 3, 224, 224) uint8

    jobs = [(c, k) for c in range(len(names)) for k in range(clips_per_class)]
    with ThreadPoolExecutor(max_workers=min(2, os.cpu_count() or 1)) as pool:
        crops = list(pool.map(clip, jobs))  # rendering releases the GIL
    targets = [c for (c, _), im in zip(jobs, crops, strict=True) for _ in range(len(im))]
    v = _pooled_states(model, model.visual_projection, lambda: _image_features(model, crops))
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
