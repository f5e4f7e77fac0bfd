"""Training-step benchmark at the paper's UCF-Crime shape.

One optimisation step of AnomalyCLIP: batch 64 (32 abnormal + 32 normal) x 32 segments x 16
frames of 512-d features, E = 256, depth 1, the 14 UCF-Crime prompts through a ViT-B/16-sized
text tower (random weights, built locally). Each configuration (convolution algorithm x
fp32 / bf16 autocast) runs in a subprocess of its own so its peak RSS is its own (taken over
its warm-up and timed steps); inside it, forward and backward are timed separately over
several steps (medians).

Everything is read against the fp32 matrix-multiply peak measured in the same subprocess just
before and after its steps, because shared hosts of the same kind differ by ~2x and a loaded
host's speed drifts within a run. The published implementation (reversible layers:
the forward is recomputed in the backward, ~4x the forward's FLOPs per step) runs at ~0.84 of
``torch.mm``'s fp32 rate (the yardstick that efficiency was measured against, kept apart from
the peak, :mod:`anomalyclip.bench.peak`), so its equivalent time here is 4 x the temporal
model's forward FLOPs / (0.84 x torch.mm's rate) (docs/performance.md, "Training speed");
at the paper's shape 4 x 663 GFLOP = 2.65 TFLOP (the text tower's ~4% more are left out of it).
"Nominal" FLOPs are those of the direct convolution (what the model computes), "executed"
those actually run (fewer with Winograd).

The data-loading rate is batches/s of :func:`anomalyclip.train.data.iterate_batches` over a
float16 Zarr store of random features, to compare with the step rate.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from anomalyclip.backbone import build_clip
from anomalyclip.bench.flops import flop_counter
from anomalyclip.bench.peak import of_peak, peak_rss_mb, peaks, reset_peak_rss
from anomalyclip.datasets import get_dataset
from anomalyclip.kernels.allocator import keep_freed_memory, keeps_freed_memory
from anomalyclip.model import AnomalyCLIP, ModelConfig
from anomalyclip.runs import build_network
from anomalyclip.store import VideoRecord, open_store, provenance
from anomalyclip.train.config import PRESETS, TrainConfig
from anomalyclip.train.data import SegmentSampler, TrainingSet, epoch_plan, iterate_batches

log = logging.getLogger(__name__)

PUBLISHED_EFFICIENCY = 0.84  # fraction of torch.mm's fp32 rate the published step runs at
PUBLISHED_FORWARDS_PER_STEP = 4  # reversible layers: forward + (recomputed forward + backward)


def ucf_model(feature_dim: int = 512, **hyper_parameters) -> ModelConfig:
    """The network the trainer builds for UCF-Crime (its preset, then ``hyper_parameters``
    by their training-option names), on ``feature_dim``-d features."""
    spec = get_dataset("ucf")
    model = TrainConfig.from_dict({**PRESETS["ucf"], **hyper_parameters}).model
    return model.with_data(spec.classes, spec.normal_id, feature_dim)


@dataclass
class Shape:
    """Benchmark shape: the network (default: the paper's UCF-Crime configuration), the
    videos per step and the text tower (an anomalyclip.backbone.build_clip shape)."""

    model: ModelConfig = field(default_factory=ucf_model)
    batch: int = 64
    clip: str = "vit-b-16"

    def describe(self) -> dict:
        """What the reports print of the shape."""
        m = self.model
        return {"batch": self.batch, "segments": m.num_segments, "seg_length": m.seg_length,
                "dim": m.feature_dim, "emb_dim": m.emb_dim, "depth": m.depth, "heads": m.heads,
                "clip": self.clip}  # fmt: skip


@dataclass
class StepResult:
    conv: str
    bf16: bool
    forward_s: float
    backward_s: float
    step_s: float
    peak_rss_mb: float
    nominal_gflop_fwd: float
    temporal_gflop_fwd: float  # the temporal model's share: what the published cost counts
    nominal_gflop_bwd: float
    executed_gflop_fwd: float
    executed_gflop_bwd: float
    peak_fp32: float  # matmul GFLOP/s measured around this configuration's steps
    peak_bf16: float
    load_avg: float  # 1-minute load average when the steps ended
    kept_memory: bool = True  # glibc told to keep freed memory (anomalyclip.kernels.allocator)
    peak_fp32_mm: float = 0.0  # torch.mm's fp32 GFLOP/s alone (what PUBLISHED_EFFICIENCY reads)


def bench_network(clip_dir: Path, shape: Shape, conv: str = "direct") -> AnomalyCLIP:
    """The network of ``shape`` as the trainer builds it, in training mode, with
    convolution algorithm ``conv``."""
    return build_network(shape.model, clip_dir, conv).train()


def _batch(shape: Shape, num_classes: int, normal_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    m = shape.model
    x = torch.randn(shape.batch, m.num_segments, m.seg_length, m.feature_dim, generator=gen)
    half = shape.batch // 2
    abnormal = [c for c in range(num_classes) if c != normal_id]
    labels = torch.tensor([abnormal[i % len(abnormal)] for i in range(half)] + [normal_id] * half)
    return x, labels


def _count(
    model: AnomalyCLIP, x: torch.Tensor, labels: torch.Tensor, bf16: bool
) -> tuple[int, int, int]:
    """(forward, backward, temporal model's forward) FLOPs of one step (torch's counter)."""
    gen = torch.Generator().manual_seed(0)
    autocast = torch.autocast("cpu", torch.bfloat16, enabled=bf16)
    with flop_counter() as counter, autocast:
        loss, _ = model.loss(model(x), labels, generator=gen)
    forward = counter.get_total_flops()
    temporal = sum(counter.get_flop_counts().get("AnomalyCLIP.temporal_model", {}).values())
    with flop_counter() as counter:
        loss.backward()
    model.zero_grad(set_to_none=True)
    return forward, counter.get_total_flops(), temporal


def _time_steps(
    model: AnomalyCLIP, x: torch.Tensor, labels: torch.Tensor, bf16: bool, steps: int
) -> tuple[float, float]:
    """Median seconds of the forward and the backward over ``steps`` steps after a warm-up."""
    gen = torch.Generator().manual_seed(0)
    forward, backward = [], []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            loss, _ = model.loss(model(x), labels, generator=gen)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        model.zero_grad(set_to_none=True)
        forward.append(t1 - t0)
        backward.append(t2 - t1)
    return statistics.median(forward[1:]), statistics.median(backward[1:])


def measure_step(
    clip_dir: Path,
    shape: Shape,
    conv: str,
    bf16: bool,
    steps: int = 3,
    threads: int | None = None,
    peak_n: int = 4096,
    keep_memory: bool = True,
) -> StepResult:
    """Time ``steps`` training steps (after one warm-up) of one configuration, in this process.

    The matmul peak is measured just before and just after the steps (mean of the two), so
    the configuration is read against the load the machine had while it ran.
    ``keep_memory`` applies ``anomaly train``'s allocator setting (it lasts for the process).
    The nominal FLOPs are counted on a direct-convolution model built first (FLOP counts do
    not depend on the weights), the rest on the model with ``conv``.
    """
    if threads:
        torch.set_num_threads(threads)
    reference = bench_network(clip_dir, shape, "direct")
    x, labels = _batch(shape, reference.cfg.num_classes, reference.cfg.normal_id)
    nominal = _count(reference, x, labels, bf16)  # before the allocator policy: what this
    del reference  # direct-convolution pass frees goes back to the system, as in a trainer
    if keep_memory:
        keep_freed_memory()
    torch.manual_seed(0)
    model = bench_network(clip_dir, shape, conv)
    before = peaks(peak_n)
    executed = _count(model, x, labels, bf16)
    reset = reset_peak_rss()
    fwd, bwd = _time_steps(model, x, labels, bf16, steps)
    after = peaks(peak_n)
    return StepResult(
        conv=conv,
        bf16=bf16,
        forward_s=fwd,
        backward_s=bwd,
        step_s=fwd + bwd,
        peak_rss_mb=peak_rss_mb(reset),
        nominal_gflop_fwd=nominal[0] / 1e9,
        temporal_gflop_fwd=nominal[2] / 1e9,
        nominal_gflop_bwd=nominal[1] / 1e9,
        executed_gflop_fwd=executed[0] / 1e9,
        executed_gflop_bwd=executed[1] / 1e9,
        peak_fp32=(before["fp32"] + after["fp32"]) / 2,
        peak_bf16=(before["bf16"] + after["bf16"]) / 2,
        peak_fp32_mm=(before["fp32_mm"] + after["fp32_mm"]) / 2,
        load_avg=os.getloadavg()[0],
        kept_memory=keeps_freed_memory(),
    )


def _child(queue, clip_dir: str, step_args: tuple) -> None:  # noqa: ANN001
    """The spawned process: :func:`measure_step` on ``clip_dir`` and the rest of its arguments."""
    result = measure_step(Path(clip_dir), *step_args)
    queue.put(asdict(result))


def measure_in_subprocess(
    clip_dir: Path,
    shape: Shape,
    conv: str,
    bf16: bool,
    steps: int,
    threads: int | None,
    peak_n: int = 4096,
    keep_memory: bool = True,
) -> StepResult:
    """:func:`measure_step` in a fresh process, so its peak RSS is this configuration's alone."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(
        target=_child,
        args=(queue, str(clip_dir), (shape, conv, bf16, steps, threads, peak_n, keep_memory)),
    )
    proc.start()
    result = queue.get()
    proc.join()
    return StepResult(**result)


def write_random_store(
    path: Path, n_videos: int, frames: tuple[int, int], dim: int, seed: int = 0
) -> None:
    """A float16 UCF-labelled Zarr store of random features, half abnormal, half normal."""
    ucf = get_dataset("ucf")
    abnormal = [c for i, c in enumerate(ucf.classes) if i != ucf.normal_id]
    rng = np.random.default_rng(seed)
    with open_store(path, "w") as store:
        store.init(
            provenance(
                dataset="ucf",
                classes=get_dataset("ucf").classes,
                backbone={"model": "synthetic", "dim": dim, "output": "image_embeds"},
                preprocessing={},
                sampling={"mode": "all", "value": None},
            )
        )
        for i in range(n_videos):
            n = int(rng.integers(frames[0], frames[1] + 1))
            label = abnormal[i % len(abnormal)] if i % 2 == 0 else "Normal"
            feats = rng.standard_normal((n, dim), dtype=np.float32).astype(np.float16)
            store.write_video(
                VideoRecord(f"video_{i:04d}", split="train", label=label, fps=30.0), feats
            )


def loading_rate(store_path: Path, shape: Shape, batches: int, workers: int = 2) -> float:
    """Batches/s that ``iterate_batches`` delivers from the store (one epoch plan, truncated)."""
    with open_store(store_path) as store:
        data = TrainingSet.from_store(store)
        plan = epoch_plan(data, shape.batch, seed=0, epoch=0)
        plan = (plan * (-(-batches // len(plan))))[:batches]
        t0 = time.perf_counter()
        count = 0
        sampler = SegmentSampler(shape.model.num_segments, shape.model.seg_length)
        for batch in iterate_batches(store, data, plan, sampler, 0, 0, workers):
            assert batch.features.shape[0] == shape.batch
            count += 1
        return count / (time.perf_counter() - t0)


def summarize(result: StepResult) -> dict[str, float | str | bool]:
    """Derived numbers of one configuration: rates, fractions of peak, published-code ratio."""
    peak_fp32, peak_bf16 = result.peak_fp32, result.peak_bf16
    nominal = (result.nominal_gflop_fwd + result.nominal_gflop_bwd) * 1e9
    executed = (result.executed_gflop_fwd + result.executed_gflop_bwd) * 1e9
    published_flop = PUBLISHED_FORWARDS_PER_STEP * result.temporal_gflop_fwd * 1e9
    mm = result.peak_fp32_mm or peak_fp32  # the efficiency was measured against torch.mm's
    published_s = published_flop / (PUBLISHED_EFFICIENCY * mm * 1e9)
    peak = peak_bf16 if result.bf16 else peak_fp32
    return {
        **asdict(result),
        "effective_gflops": nominal / result.step_s / 1e9,
        "executed_gflops": executed / result.step_s / 1e9,
        "executed_fraction_of_peak": of_peak(executed / result.step_s / 1e9, peak),
        "published_tflop": published_flop / 1e12,
        "published_equivalent_s": published_s,
        "speedup_vs_published": published_s / result.step_s,
    }


@dataclass
class TrainBench:
    """What to measure: each of ``convs`` x ``bf16`` (autocast) x ``keep_memory`` (True: the
    trainer's allocator setting, :mod:`anomalyclip.kernels.allocator`; False: glibc's) at
    ``shape`` (None: the paper's UCF-Crime one), interleaved over ``rounds``; then the
    loading rate from a random store of ``store_videos`` videos."""

    shape: Shape | None = None
    convs: tuple[str, ...] = ("direct", "winograd")
    bf16: tuple[bool, ...] = (False,)
    steps: int = 3
    rounds: int = 1
    threads: int | None = 2
    store_videos: int = 128
    store_frames: tuple[int, int] = (1000, 4000)
    load_batches: int = 8
    subprocess: bool = True  # each configuration in a process of its own (its own peak RSS)
    peak_n: int = 4096
    keep_memory: tuple[bool, ...] = (True,)


def measure(bench: TrainBench | None = None) -> dict:
    """The whole benchmark; configurations interleaved over ``bench.rounds``, medians kept."""
    bench = bench or TrainBench()
    shape = bench.shape or Shape()
    if bench.threads:
        torch.set_num_threads(bench.threads)
    timing = (bench.steps, bench.threads, bench.peak_n)
    with tempfile.TemporaryDirectory(prefix="anomaly-bench-train-") as tmp:
        clip_dir = build_clip(Path(tmp) / "clip", shape.clip)
        configs = [(c, b, k) for k in bench.keep_memory for b in bench.bf16 for c in bench.convs]
        samples: dict[tuple[str, bool, bool], list[StepResult]] = {cfg: [] for cfg in configs}
        for _ in range(bench.rounds):
            for conv, use_bf16, keep in configs:
                measure_one = measure_in_subprocess if bench.subprocess else measure_step
                samples[(conv, use_bf16, keep)].append(
                    measure_one(clip_dir, shape, conv, use_bf16, *timing, keep)
                )
        store_path = Path(tmp) / "features.zarr"
        write_random_store(
            store_path, bench.store_videos, bench.store_frames, shape.model.feature_dim
        )
        rate = loading_rate(store_path, shape, bench.load_batches)
    rows = [summarize(_median_result(s)) for s in samples.values()]
    peak = {k: statistics.median(r[f"peak_{k}"] for r in rows) for k in ("fp32", "bf16")}
    fastest = min(r["step_s"] for r in rows)
    return {
        "shape": shape.describe(),
        "peak_gflops": peak,
        "rows": rows,
        "loading_batches_per_s": rate,
        "fastest_step_per_s": 1 / fastest,
        "loading_over_step_rate": rate * fastest,
        "memory": "peak RSS over the timed steps (VmHWM reset before them) of one subprocess "
        "per configuration, text tower included",
    }


def _median_result(results: list[StepResult]) -> StepResult:
    first = results[0]
    measured = ["forward_s", "backward_s", "peak_rss_mb", "peak_fp32", "peak_bf16"]
    measured += ["peak_fp32_mm", "load_avg"]
    med = {k: statistics.median(getattr(r, k) for r in results) for k in measured}
    return StepResult(**{**asdict(first), **med, "step_s": med["forward_s"] + med["backward_s"]})


def _percent(share: float | None) -> str:
    return f"{'*':>7}" if share is None else f"{100 * share:>6.0f}%"


def table(result: dict) -> str:
    peak = result["peak_gflops"]
    lines = [
        f"matmul peak (median over configurations): fp32 {peak['fp32']:.0f} GFLOP/s, "
        f"bf16 {peak['bf16']:.0f} GFLOP/s; each row is read against its own",
        f"{'config':<16}{'peak':>6}{'load':>6}{'fwd s':>8}{'bwd s':>8}{'step s':>8}"
        f"{'RSS MB':>8}{'nom GF':>8}"
        f"{'exec GF':>9}{'eff GF/s':>9}{'%peak':>7}{'publ. s':>9}{'speedup':>8}",
    ]
    for r in result["rows"]:
        name = (
            f"{r['conv']}{' bf16' if r['bf16'] else ' fp32'}{'' if r['kept_memory'] else ' libc'}"
        )
        lines.append(
            f"{name:<16}{r['peak_fp32']:>6.0f}{r['load_avg']:>6.1f}{r['forward_s']:>8.2f}"
            f"{r['backward_s']:>8.2f}{r['step_s']:>8.2f}"
            f"{r['peak_rss_mb']:>8.0f}{r['nominal_gflop_fwd'] + r['nominal_gflop_bwd']:>8.0f}"
            f"{r['executed_gflop_fwd'] + r['executed_gflop_bwd']:>9.0f}"
            f"{r['effective_gflops']:>9.1f}{_percent(r['executed_fraction_of_peak'])}"
            f"{r['published_equivalent_s']:>9.2f}{r['speedup_vs_published']:>7.2f}x"
        )
    if any(r["executed_fraction_of_peak"] is None for r in result["rows"]):
        lines.append("*: above the matmul peak measured in the run (not possible: the peak "
                     "was measured low); no share shown")  # fmt: skip
    lines.append(
        f"data loading: {result['loading_batches_per_s']:.2f} batches/s vs fastest step "
        f"{result['fastest_step_per_s']:.2f} steps/s "
        f"({result['loading_over_step_rate']:.1f}x headroom)"
    )
    lines.append(f"memory: {result['memory']}")
    return "\n".join(lines)
