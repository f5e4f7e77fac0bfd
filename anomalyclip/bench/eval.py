"""Test-mode inference benchmark at the UCF-Crime shape.

Frames/s of :func:`anomalyclip.model.inference.score_videos` over random-length videos with
the model in eval mode (E = 256, depth 1, 32 x 16 grids, batches of 64 sequences), for three
setups of the same weights, interleaved over rounds:

- ``reference``: direct convolutions and the class prompts' text features recomputed for
  every batch (how evaluation ran before the fast path);
- ``fast fp32``: what ``anomaly eval`` / ``predict`` run: the convolution algorithm ``auto``
  (Winograd at this width on a CPU), text features computed once while the weights stay the
  same (``model/memo.py``);
- ``fast bf16``: the same under bf16 autocast.

Also the wall time of one 4096-frame video alone, and the share of the wall time outside the
model's forward (gathering the wrapped-around sequences, putting scores back in order). The fast
paths are tested against the reference in ``tests/unit/model/test_inference.py``. The process
runs under ``anomaly eval``'s allocator policy (:mod:`anomalyclip.kernels.allocator`: glibc
keeps freed memory; it lasts for the process), every setup alike.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import tempfile
import time
from pathlib import Path

import torch

from anomalyclip.backbone import build_clip
from anomalyclip.bench.train import Shape, bench_network
from anomalyclip.kernels.allocator import keep_freed_memory, keeps_freed_memory
from anomalyclip.model import AnomalyCLIP
from anomalyclip.model.inference import score_fn, score_videos

log = logging.getLogger(__name__)

SETUPS = ("reference", "fast fp32", "fast bf16")


def _reference_score(model: AnomalyCLIP, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(x, text=model.prompt_learner())  # text features recomputed every batch
    return out.p_abnormal, out.probs


def timed_score_fn(model: AnomalyCLIP, setup: str, seconds: list[float]):
    """The model's ``score_fn`` (the reference one for ``reference``) for ``score_videos``,
    timed: it appends the wall time of each model call."""
    fast = score_fn(model)

    def score(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t0 = time.perf_counter()
        bf16 = torch.autocast("cpu", torch.bfloat16) if setup == "fast bf16" else None
        with bf16 or contextlib.nullcontext():
            p, probs = _reference_score(model, x) if setup == "reference" else fast(x)
        seconds.append(time.perf_counter() - t0)
        return p.float(), probs.float()

    return score


def _score(model, setup, videos, shape: Shape, batch_size: int) -> tuple[float, float]:
    model_s: list[float] = []
    fn = timed_score_fn(model, setup, model_s)
    t0 = time.perf_counter()
    scores, _ = score_videos(
        videos, fn, shape.model.num_segments, shape.model.seg_length, batch_size
    )
    wall = time.perf_counter() - t0
    assert [len(s) for s in scores] == [len(v) for v in videos]
    return wall, sum(model_s)


def measure(
    shape: Shape | None = None,
    n_videos: int = 16,
    frames: tuple[int, int] = (500, 12000),
    batch_size: int = 64,
    setups: tuple[str, ...] = SETUPS,
    rounds: int = 3,
    threads: int | None = 2,
    seed: int = 0,
) -> dict:
    """Median frames/s, 4096-frame time and outside-model share per setup."""
    shape = shape or Shape()
    if threads:
        torch.set_num_threads(threads)
    keep_freed_memory()  # what `anomaly eval` applies on the CPU
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(frames[0], frames[1] + 1, (n_videos,), generator=gen).tolist()
    videos = [torch.randn(n, shape.model.feature_dim, generator=gen) for n in lengths]
    one = [torch.randn(4096, shape.model.feature_dim, generator=gen)]
    with tempfile.TemporaryDirectory(prefix="anomaly-bench-eval-") as tmp:
        clip_dir = build_clip(Path(tmp) / "clip", shape.clip)
        models = {
            s: bench_network(clip_dir, shape, "direct" if s == "reference" else "auto").eval()
            for s in setups
        }
    state = next(iter(models.values())).state_dict()
    for model in models.values():  # the same weights whatever the setup
        model.load_state_dict(state)
    total = sum(lengths)
    samples: dict[str, list[tuple[float, float, float]]] = {s: [] for s in setups}
    for _ in range(rounds):
        for setup in setups:
            wall, inside = _score(models[setup], setup, videos, shape, batch_size)
            single, _ = _score(models[setup], setup, one, shape, batch_size)
            samples[setup].append((wall, inside, single))
    rows = []
    for setup, runs in samples.items():
        wall = statistics.median(r[0] for r in runs)
        inside = statistics.median(r[1] for r in runs)
        rows.append({
            "setup": setup,
            "wall_s": wall,
            "model_s": inside,
            "frames_per_s": total / wall,
            "outside_model_share": (wall - inside) / wall,
            "video_4096_s": statistics.median(r[2] for r in runs),
        })  # fmt: skip
    for row in rows:
        row["speedup"] = row["frames_per_s"] / rows[0]["frames_per_s"]
    return {
        "shape": {**shape.describe(), "batch": batch_size},
        "videos": n_videos,
        "frames": total,
        "rows": rows,
        "kept_memory": keeps_freed_memory(),
    }


def table(result: dict) -> str:
    lines = [
        f"{result['videos']} videos, {result['frames']} frames, "
        f"batches of {result['shape']['batch']} sequences",
        f"{'setup':<11}{'wall s':>8}{'model s':>9}{'frames/s':>10}{'outside':>9}"
        f"{'4096 fr s':>11}{'speedup':>9}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['setup']:<11}{r['wall_s']:>8.2f}{r['model_s']:>9.2f}{r['frames_per_s']:>10.0f}"
            f"{100 * r['outside_model_share']:>8.1f}%{r['video_4096_s']:>11.3f}"
            f"{r['speedup']:>8.2f}x"
        )
    return "\n".join(lines)
