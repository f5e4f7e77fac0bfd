"""Test-mode inference benchmark at the UCF-Crime shape (issue 6).

Frames/s of :func:`anomalyclip.model.inference.score_videos` over a set of random-length
videos with the model in eval mode (E = 256, depth 1, 32 x 16 grids, batches of 64
sequences), and the share of the wall time spent outside the model's forward (gathering the
wrapped-around sequences, putting scores back in frame order). The text features do not
depend on the input, so they are computed once, as an evaluation would, and the timed
forward is selector + temporal model + probabilities.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from anomalyclip.backbone import build_clip
from anomalyclip.bench.train import Shape, bench_network
from anomalyclip.model import AnomalyCLIP
from anomalyclip.model.anomalyclip import class_probabilities
from anomalyclip.model.inference import score_videos
from anomalyclip.model.selector import drop_normal

log = logging.getLogger(__name__)


def timed_score_fn(model: AnomalyCLIP, seconds: list[float]):
    """``score_fn`` for ``score_videos`` that appends the wall time of each model call."""
    with torch.inference_mode():
        text = drop_normal(model.text_features(), model.cfg.normal_id)  # (A, D), input-free

    def score(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t0 = time.perf_counter()
        centred = x - model.centroid
        similarity = model.selector_model(centred, text, model.centroid)  # (B, N, L, A)
        feats = torch.cat([similarity, centred], -1) if model.cfg.concat_similarity else centred
        p = torch.sigmoid(model.temporal_model(feats))  # (B, N, L)
        probs = class_probabilities(similarity, p, model.cfg.normal_id)
        seconds.append(time.perf_counter() - t0)
        return p, probs

    return score


def measure(
    shape: Shape | None = None,
    n_videos: int = 16,
    frames: tuple[int, int] = (500, 12000),
    batch_size: int = 64,
    convs: tuple[str, ...] = ("direct", "winograd"),
    rounds: int = 3,
    threads: int | None = 2,
    seed: int = 0,
) -> dict:
    """Median frames/s and outside-model share per convolution algorithm, interleaved rounds."""
    shape = shape or Shape()
    if threads:
        torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(frames[0], frames[1] + 1, (n_videos,), generator=gen).tolist()
    videos = [torch.randn(n, shape.model.feature_dim, generator=gen) for n in lengths]
    with tempfile.TemporaryDirectory(prefix="anomaly-bench-eval-") as tmp:
        clip_dir = build_clip(Path(tmp) / "clip", shape.clip)
        models = {conv: bench_network(clip_dir, shape, conv).eval() for conv in convs}
    state = next(iter(models.values())).state_dict()
    for model in models.values():  # the same weights whatever the algorithm
        model.load_state_dict(state)
    total = sum(lengths)
    samples: dict[str, list[tuple[float, float]]] = {c: [] for c in convs}
    for _ in range(rounds):
        for conv in convs:
            model_s: list[float] = []
            t0 = time.perf_counter()
            scores, _ = score_videos(
                videos,
                timed_score_fn(models[conv], model_s),
                shape.model.num_segments,
                shape.model.seg_length,
                batch_size,
            )
            wall = time.perf_counter() - t0
            assert [len(s) for s in scores] == lengths
            samples[conv].append((wall, sum(model_s)))
    rows = []
    for conv, runs in samples.items():
        wall = statistics.median(w for w, _ in runs)
        inside = statistics.median(m for _, m in runs)
        rows.append(
            {
                "conv": conv,
                "wall_s": wall,
                "model_s": inside,
                "frames_per_s": total / wall,
                "outside_model_share": (wall - inside) / wall,
            }
        )
    return {
        "shape": {**shape.describe(), "batch": batch_size},
        "videos": n_videos,
        "frames": total,
        "rows": rows,
    }


def table(result: dict) -> str:
    lines = [
        f"{result['videos']} videos, {result['frames']} frames, "
        f"batches of {result['shape']['batch']} sequences",
        f"{'conv':<10}{'wall s':>9}{'model s':>9}{'frames/s':>10}{'outside model':>15}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['conv']:<10}{r['wall_s']:>9.2f}{r['model_s']:>9.2f}{r['frames_per_s']:>10.0f}"
            f"{100 * r['outside_model_share']:>14.1f}%"
        )
    return "\n".join(lines)
