"""Planted synthetic feature stores for training tests.

Normal frames lie near a low-dimensional subspace; inside each abnormal video one interval is
shifted along its class's direction. As in real CLIP, where a class's text embedding points
towards images of that class, the direction of class c is the one the untrained model's
prompt for c points to (t_c - m), plus a random component of equal size: the text gives the
weak supervision a start, the rest must be learned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from anomalyclip.backbone import describe
from anomalyclip.datasets import get_dataset
from anomalyclip.runs import build_network
from anomalyclip.store import VideoRecord, open_store, provenance
from anomalyclip.train.config import TrainConfig
from anomalyclip.train.loop import _seed_everything

D = 512


def initial_text_features(clip_dir: Path, cfg: TrainConfig, dataset: str = "demo") -> torch.Tensor:
    """(C, D) text features of the model that training with ``cfg`` starts from."""
    _seed_everything(cfg.seed)
    spec = get_dataset(dataset)
    model = build_network(cfg.model.with_data(spec.classes, spec.normal_id, D), clip_dir)
    with torch.no_grad():
        return model.text_features().double()


def planted_store(
    path: Path,
    clip_dir: Path,
    cfg: TrainConfig,
    *,
    n_abnormal: int = 8,
    n_normal: int = 24,
    n_test_abnormal: int = 4,
    n_test_normal: int = 8,
    shuffle_labels: bool = False,
    strength: float = 1.5,
    seed: int = 0,
) -> Path:
    """Write a 'demo'-dataset store; with ``shuffle_labels`` the training videos' labels are
    permuted (abnormal and normal mixed), so nothing links a bag's label to its content."""
    spec = get_dataset("demo")
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((6, D)) / np.sqrt(D)
    offset = rng.standard_normal(D) / np.sqrt(D)
    text = initial_text_features(clip_dir, cfg).numpy()
    directions = {}
    for c, name in enumerate(spec.classes):
        if c == spec.normal_id:
            continue
        toward = text[c] - offset
        toward /= np.linalg.norm(toward)
        noise = rng.standard_normal(D)
        noise -= noise @ toward * toward
        directions[name] = toward + noise / np.linalg.norm(noise)
        directions[name] /= np.linalg.norm(directions[name])

    def video(label: str) -> tuple[np.ndarray, list[list[int]]]:
        T = int(rng.integers(160, 360))
        x = offset + rng.standard_normal((T, 6)) @ basis + 0.02 * rng.standard_normal((T, D))
        if label == spec.normal:
            return x, []
        s = int(rng.integers(0, T - 64))
        e = s + int(rng.integers(24, 64))
        x[s:e] += strength * directions[label]
        return x, [[s, e]]

    abnormal = [n for n in spec.classes if n != spec.normal]
    plan = [("train", abnormal[i % len(abnormal)]) for i in range(n_abnormal)]
    plan += [("train", spec.normal)] * n_normal
    plan += [("test", abnormal[i % len(abnormal)]) for i in range(n_test_abnormal)]
    plan += [("test", spec.normal)] * n_test_normal
    videos = [(split, label, *video(label)) for split, label in plan]
    if shuffle_labels:
        train = [i for i, v in enumerate(videos) if v[0] == "train"]
        labels = [videos[i][1] for i in train]
        for i, j in zip(train, rng.permutation(len(train)), strict=True):
            videos[i] = (videos[i][0], labels[j], videos[i][2], videos[i][3])

    with open_store(path, "w") as st:
        st.init(
            provenance(
                dataset="demo",
                classes=spec.classes,
                backbone=describe(clip_dir),
                preprocessing={"synthetic": True},
                sampling={"mode": "all", "value": None},
                dtype="float32",
            )
        )
        for i, (split, label, x, intervals) in enumerate(videos):
            rec = VideoRecord(
                f"{split}/{label}/v{i:03d}",
                label=label,
                split=split,
                fps=15.0,
                intervals=intervals if split == "test" else [],
            )
            st.write_video(rec, x.astype(np.float32))
    return path


def quick_run(
    tmp: Path, clip_dir: Path, epochs: int, n_each: int, grid: tuple[int, int] | None = None
) -> tuple[Path, Path]:
    """(store, run directory) of a short demo-config run on a planted store, for the tests
    of what reads a trained run (evaluation, prediction). One more normal video than
    ``n_each`` is written: training holds one out to set the decision threshold. ``grid``:
    (segments, frames per segment) instead of the demo preset's."""
    from anomalyclip.train import resolve_config, train

    # the demo preset's batch of 8, smaller when there are fewer videos of a kind
    shape = {"num_segments": grid[0], "seg_length": grid[1]} if grid else {}
    cfg = resolve_config("demo", epochs=epochs, warmup_epochs=1, workers=1,
                         batch_size=2 * min(4, n_each), **shape)  # fmt: skip
    store = planted_store(tmp / "s.zarr", clip_dir, cfg, n_abnormal=n_each, n_normal=n_each + 1)
    train(store, tmp / "run", cfg, progress=False)
    return store, tmp / "run"
