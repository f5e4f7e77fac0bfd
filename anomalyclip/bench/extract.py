"""Extraction benchmark: how fast the image tower runs per precision and attention kernel,
and whether the pipeline keeps it busy.

For each setup (precision x attention x frame path; by default fp32 eager, fp32 SDPA, bf16
SDPA on the native path, and fp32 SDPA on the authors' path where OpenCV is installed), from
one run on the same machine, model, inputs and batch size:

- ``model_fps``: the image tower alone on pre-decoded, pre-cropped uint8 tensors (the ceiling);
- ``pipeline_fps``: :func:`~anomalyclip.extract.pipeline.extract` end to end, from encoded
  video files to a written store (decoding, preprocessing, queueing, writing included);
- ``ratio = pipeline_fps / model_fps`` (the target is >= 0.9: decoding hidden behind the
  model), ``speedup`` = model_fps / the first setup's model_fps;
- ``gflops``: model_fps x the tower's FLOPs per frame (counted by torch's FLOP counter on one
  frame: matrix multiplies, the patch convolution and attention), and ``of_peak``: that
  against the matrix-multiply peak of the setup's precision, measured in the same run (None
  where it would exceed 1, which is not possible: :mod:`anomalyclip.bench.peak`).

And once per run, ``profile``: the seconds per frame of each stage done one after the other
in one thread (decode, resize + crop, model at the first setup's precision, store write) and
each stage's share of their sum: where the pipeline's work goes; and the authors' path's
resize + crop (JPEG round trip, PIL decode and resize) per frame, for comparison.

Inputs are H.264 videos rendered like the demo's. Setups are measured interleaved and each
measurement repeated (the best kept), so a busy neighbour on a shared machine distorts the
ratios less. ``model=None`` builds a random CLIP of the real ViT-B/16 size (no download).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from anomalyclip.backbone import build_clip
from anomalyclip.bench.flops import flop_counter
from anomalyclip.bench.peak import of_peak, peaks
from anomalyclip.datasets.registry import DEMO, VideoEntry
from anomalyclip.extract.config import ExtractConfig
from anomalyclip.extract.decode import VideoSource
from anomalyclip.extract.encoder import ImageEncoder
from anomalyclip.extract.pipeline import extract, preprocessing_attrs
from anomalyclip.extract.preprocess import crop_frame, resize_crop
from anomalyclip.store import VideoRecord, open_store, provenance
from anomalyclip.synthetic import encode_video, render_scene

log = logging.getLogger(__name__)

SETUPS = (("fp32", "eager", "native"), ("fp32", "sdpa", "native"), ("bf16", "sdpa", "native"))
AUTHORS_SETUP = ("fp32", "sdpa", "authors")


def default_setups() -> tuple[tuple[str, str, str], ...]:
    """:data:`SETUPS`, and the authors' path where OpenCV is installed."""
    return SETUPS + ((AUTHORS_SETUP,) if importlib.util.find_spec("cv2") else ())


@dataclass(frozen=True)
class ExtractBench:
    """What to measure: ``model`` (None: random ViT-B/16 size), ``frames`` in ``videos``
    videos of ``size`` (width, height), ``setups`` of (precision, attention, preprocess)."""

    model: str | Path | None = None
    frames: int = 128
    videos: int = 2
    size: tuple[int, int] = (320, 240)
    batch_size: int = 32
    workers: int = 2
    device: str = "cpu"
    setups: tuple[tuple[str, str, str], ...] = field(default_factory=default_setups)
    repeats: int = 2
    peak_n: int = 2048


def _make_videos(folder: Path, bench: ExtractBench) -> list[Path]:
    rng = np.random.default_rng(0)
    lengths = np.full(bench.videos, bench.frames // bench.videos)
    lengths[: bench.frames % bench.videos] += 1
    paths = []
    for k, length in enumerate(lengths):
        frames, _ = render_scene("Explosion", rng, int(length), bench.size)
        paths.append(folder / f"bench_{k}.mp4")
        encode_video(paths[-1], frames)
    return paths


def frame_flops(encoder: ImageEncoder) -> int:
    """FLOPs of the image tower for one 224x224 frame (a multiply-add counts 2)."""
    counter = flop_counter()
    with counter:
        encoder(torch.zeros(1, 3, 224, 224, dtype=torch.uint8))
    return int(counter.get_total_flops())


def _model_seconds(encoder: ImageEncoder, crops: torch.Tensor, batch_size: int) -> float:
    """Seconds to embed ``crops`` (N, 3, 224, 224) uint8 in batches (output on the CPU)."""
    t0 = time.perf_counter()
    for i in range(0, len(crops), batch_size):
        encoder(crops[i : i + batch_size])
    return time.perf_counter() - t0


def profile(paths: list[Path], encoder: ImageEncoder, batch_size: int) -> dict:
    """Seconds per frame of each stage run alone, one after the other, and their shares."""
    t0 = time.perf_counter()
    images = [np.stack([f.image for f in VideoSource(p)]) for p in paths]  # (T, H, W, 3) each
    decode = time.perf_counter() - t0
    t0 = time.perf_counter()
    crops = torch.cat([resize_crop(v[i : i + batch_size])
                       for v in images for i in range(0, len(v), batch_size)])  # fmt: skip
    prep = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = torch.cat([encoder(crops[i : i + batch_size]) for i in range(0, len(crops), batch_size)])
    model = time.perf_counter() - t0
    url = f"memory://bench-extract-{uuid.uuid4().hex}"
    with open_store(url, mode="a") as st:
        attrs = provenance(
            dataset="demo",
            classes=DEMO.classes,
            backbone=encoder.describe(),
            preprocessing=preprocessing_attrs(),
            sampling={"mode": "all", "value": None},
        )
        st.init(attrs)
        t0 = time.perf_counter()
        start = 0
        for k, v in enumerate(images):
            feats = rows[start : start + len(v)].numpy().astype(np.float16)  # (T, D)
            st.write_video(VideoRecord(f"v{k}", fps=15.0, num_frames=len(v)), feats)
            start += len(v)
        write = time.perf_counter() - t0
    n = len(crops)
    stages = {"decode": decode, "preprocess": prep, "model": model, "write": write}
    total = sum(stages.values())
    out = {f"{k}_ms_per_frame": 1e3 * s / n for k, s in stages.items()}
    out.update({f"{k}_share": s / total for k, s in stages.items()})
    if importlib.util.find_spec("cv2"):
        frames = [f.image for p in paths for f in VideoSource(p, pixels="bgr24")]
        t0 = time.perf_counter()
        for image in frames:
            crop_frame(image, "authors", "bgr24")
        out["preprocess_authors_ms_per_frame"] = 1e3 * (time.perf_counter() - t0) / len(frames)
    return out


def _rows(bench: ExtractBench, encoders: list, seconds: tuple, n: int, flops: int,
          peak: dict) -> list[dict]:  # fmt: skip
    """One result row per setup from its best (model, pipeline) seconds."""
    rows = []
    for k, (enc, (precision, attention, mode)) in enumerate(zip(encoders, bench.setups,
                                                                  strict=True)):  # fmt: skip
        model_fps, pipe_fps = n / min(seconds[0][k]), n / min(seconds[1][k])
        gflops = model_fps * flops / 1e9
        dtype = "bf16" if enc.precision == "bf16" else "fp32"
        rows.append({
            "setup": f"{precision} {attention}" + ("" if mode == "native" else f" {mode}"),
            "preprocess": mode,
            "precision": enc.precision,
            "model_fps": model_fps,
            "pipeline_fps": pipe_fps,
            "ratio": pipe_fps / model_fps,
            "gflops": gflops,
            "peak_dtype": dtype,
            "peak_gflops": peak[dtype],
            "of_peak": of_peak(gflops, peak[dtype]),  # None: above the peak measured
        })  # fmt: skip
    for row in rows:
        row["speedup"] = row["model_fps"] / rows[0]["model_fps"]
        row["pipeline_speedup"] = row["pipeline_fps"] / rows[0]["pipeline_fps"]
    return rows


def measure(bench: ExtractBench = ExtractBench()) -> dict:
    """Measure every setup (see the module docstring); returns a dict with ``rows``."""
    start, load_start = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="anomalyclip-bench-") as tmp:
        tmp = Path(tmp)
        model = bench.model or build_clip(tmp / "clip", "vit-b-16")
        paths = _make_videos(tmp, bench)
        entries = [VideoEntry(p.stem, p, "Normal", "test") for p in paths]
        encoders = [ImageEncoder(model, bench.device, p, a) for p, a, _ in bench.setups]
        flops = frame_flops(encoders[0])
        crops = torch.cat([resize_crop(np.stack([f.image for f in VideoSource(p)])) for p in paths])
        n, b = len(crops), bench.batch_size
        for enc in encoders:
            enc(crops[:b])  # warm-up (allocator, kernels)
        before = peaks(bench.peak_n)
        model_s = [[] for _ in encoders]
        pipe_s = [[] for _ in encoders]
        for r in range(bench.repeats):  # interleaved, so all see the same machine state
            for k, enc in enumerate(encoders):
                model_s[k].append(_model_seconds(enc, crops, b))
                cfg = ExtractConfig(dataset="demo", batch_size=b, workers=bench.workers,
                                    preprocess=bench.setups[k][2], progress=False)  # fmt: skip
                store = tmp / f"store-{k}-{r}.zarr"
                t0 = time.perf_counter()
                summary = extract(entries, store, enc, cfg)
                pipe_s[k].append(time.perf_counter() - t0)
                if not summary.ok or summary.frames != n:
                    raise RuntimeError(f"benchmark extraction went wrong: {summary.format()}")
        after = peaks(bench.peak_n)
        peak = {p: (before[p] + after[p]) / 2 for p in before}
        rows = _rows(bench, encoders, (model_s, pipe_s), n, flops, peak)
        result = {
            **host(),
            "device": bench.device,
            "threads": torch.get_num_threads(),
            "frames": n,
            "input": f"{len(paths)} x H.264 {bench.size[0]}x{bench.size[1]}",
            "batch_size": b,
            "workers": bench.workers,
            "gflop_per_frame": flops / 1e9,
            "peak_fp32_gflops": peak["fp32"],
            "peak_bf16_gflops": peak["bf16"],
            "rows": rows,
            "profile": profile(paths, encoders[0], b),
        }
        result["wall_s"] = time.perf_counter() - start
        result["load_avg_range"] = (load_start, os.getloadavg()[0])  # 1-minute, start and end
        log.info("bench extract: %s", result)
        return result


def host() -> dict:
    """The CPU's name and today's date (UTC), for a table that says where it was measured."""
    from datetime import datetime, timezone

    from anomalyclip.environment import cpu_name

    return {"cpu": cpu_name(), "date": datetime.now(timezone.utc).strftime("%Y-%m-%d")}


def table(result: dict) -> str:
    """The result as a plain-text table."""
    width = max(12, *(len(r["setup"]) for r in result["rows"]))
    lines = [
        f"{result['frames']} frames ({result['input']}), batch {result['batch_size']}, "
        f"{result['workers']} decoder threads, {result['threads']} torch threads; "
        f"{result['gflop_per_frame']:.3g} GFLOP/frame; matmul peak fp32 "
        f"{result['peak_fp32_gflops']:.0f}, bf16 {result['peak_bf16_gflops']:.0f} GFLOP/s",
        f"{'setup':<{width}} {'model fps':>9} {'pipe fps':>9} {'pipe/model':>10} {'speedup':>8} "
        f"{'pipe speedup':>12} {'GFLOP/s':>8} {'of peak':>8}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['setup']:<{width}} {r['model_fps']:>9.2f} {r['pipeline_fps']:>9.2f} "
            f"{r['ratio']:>10.2f} {r['speedup']:>7.2f}x {r['pipeline_speedup']:>11.2f}x "
            f"{r['gflops']:>8.1f} "
            + (f"{'*':>8}" if r["of_peak"] is None else f"{r['of_peak']:>8.2f}")
        )
    if any(r["of_peak"] is None for r in result["rows"]):
        lines.append("*: above the matmul peak measured in the run (not possible: the peak "
                     "was measured low); no share shown")  # fmt: skip
    p = result["profile"]
    stages = ("decode", "preprocess", "model", "write")
    lines.append(
        f"one-thread profile ({result['rows'][0]['setup']}): "
        + ", ".join(f"{s} {p[f'{s}_ms_per_frame']:.1f} ms ({p[f'{s}_share']:.0%})" for s in stages)
    )
    if "preprocess_authors_ms_per_frame" in p:
        lines.append(
            f"authors' frame path (JPEG q95, PIL decode + resize): "
            f"{p['preprocess_authors_ms_per_frame']:.1f} ms a frame, one thread (native "
            f"resize + crop {p['preprocess_ms_per_frame']:.1f} ms)"
        )
    return "\n".join(lines)


def readme_text(result: dict, command: str) -> str:
    """What ``--readme`` writes: the command that measured, where and when, and its table."""
    load = result["load_avg_range"]
    return (
        f"`{command}` on {result['cpu']}, {result['threads']} threads, {result['date']} "
        f"({result['wall_s'] / 60:.0f} min; load average {load[0]:.1f} at the start, "
        f"{load[1]:.1f} at the end):\n\n"
        f"```text\n{table(result)}\n```"
    )
