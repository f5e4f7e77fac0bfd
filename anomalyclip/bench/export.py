"""``anomaly bench export``: what an export buys on this CPU, and what int8 costs in accuracy.

Speed (:func:`measure`), all in one run, on a run of the paper's UCF-Crime shape (E = 256,
32 x 16 windows) over a ViT-B/16-shaped CLIP, random weights built locally (real CLIP
weights cannot be downloaded here):

- the image tower's frames/s per backend (torch fp32 and bf16 autocast, ONNX Runtime fp32
  and int8, OpenVINO fp32, int8, and bf16 where its CPU plugin has it), uint8 crops in,
  features out, as ratios to torch fp32; the best of ``repeats`` interleaved rounds. bf16 on
  a CPU without bf16 units is emulated (tens of seconds a frame): timed on 2 frames, once;
- the scorer's milliseconds per 512-row window per backend (median of 5);
- the highest camera rate ``watch`` keeps up with per backend, in real time without drops
  (:class:`anomalyclip.bench.watch.Bench`: the same stream, trials and criteria).

The int8 towers are calibrated on frames of the benchmark's own stream (demo-world scenes),
every candidate matrix multiply int8 (``--int8-min-cosine 0``: the speed int8 can give; the
sensitivity pass that keeps some float is judged on trained weights, by the accuracy part):
with random weights, activation ranges are not those of trained CLIP weights, so the int8
speed carries over to real weights but the accuracy measured here does not establish theirs.

Accuracy (:func:`demo_accuracy`): a trained ``anomaly demo`` run exported in every format,
its test videos extracted again through each exported image tower and evaluated with the
run's own model: frame AUC and planted events found at IoU >= 0.3, against fp32 torch.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anomalyclip.backbone import build_clip
from anomalyclip.bench.train import Shape, bench_network
from anomalyclip.bench.watch import FPS, Bench, Setup, render_stream
from anomalyclip.export.backends import Export
from anomalyclip.export.exporter import ExportConfig, export_run
from anomalyclip.export.openvino import has_bf16
from anomalyclip.export.quantize import Calibration
from anomalyclip.extract.encoder import ImageEncoder, cpu_has_bf16
from anomalyclip.extract.preprocess import resize_crop
from anomalyclip.live.window import CausalWindow, live_score_fn, score_windows
from anomalyclip.runs import run_inputs, save_run
from anomalyclip.synthetic import encode_video
from anomalyclip.thresholds import choose_threshold

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportBench:
    """``frames`` per timed image-tower call, ``repeats`` interleaved rounds, ``watch``
    trials of ``trial`` seconds (False: no watch rates), ``threads`` torch, ONNX Runtime
    and OpenVINO threads, ``size`` of the stream, ``clip`` the CLIP's shape (a
    :func:`~anomalyclip.backbone.build_clip` name; ``tiny`` for tests)."""

    frames: int = 16
    repeats: int = 3
    watch: bool = True
    trial: float = 20.0
    threads: int = 2
    size: tuple[int, int] = (320, 240)
    clip: str = "vit-b-16"


def _bench_run(folder: Path, clip_dir: Path, clip: str) -> Path:
    """A run folder of the UCF-Crime shape on ``clip_dir``, random weights (what export reads)."""
    model = bench_network(clip_dir, Shape(clip=clip)).eval()
    model.set_centroid(torch.randn(512, generator=torch.Generator().manual_seed(0)) * 0.1)
    run = folder / "run"
    config = {
        "dataset": "ucf",
        "clip": str(clip_dir),
        "model": model.cfg.to_dict(),
        "inputs": run_inputs(None, clip_dir, run, None),
        "threshold": choose_threshold("fixed@0.5").to_dict(),
    }
    return save_run(run, model, config, epoch=0)


def _setups(run: Path, folder: Path, stream: Path) -> dict[str, tuple]:
    """name -> (image encoder, scorer or model): every backend of the table."""
    from anomalyclip.runs import load_model

    model, config = load_model(run)
    clip = config.get("clip")
    cal = Calibration((str(stream),), frames=64)
    ort = Export(export_run(run, ExportConfig("onnx")), "onnxruntime")
    ov = Export(export_run(run, ExportConfig("openvino")), "openvino")
    every = {"int8": True, "calibration": cal, "min_cosine": 0.0}  # all candidates int8
    ort8 = Export(export_run(run, ExportConfig("onnx", out=folder / "onnx-int8", **every)),
                  "onnxruntime")  # fmt: skip
    ov8 = Export(export_run(run, ExportConfig("openvino", out=folder / "ov-int8", **every)),
                 "openvino")  # fmt: skip
    setups = {
        "torch fp32": (ImageEncoder(clip, "cpu", "fp32"), model),
        "torch bf16": (ImageEncoder(clip, "cpu", "bf16"), model),
        "onnxruntime fp32": (ort.image_encoder(), ort.scorer()),
        "onnxruntime int8": (ort8.image_encoder(), ort8.scorer()),
        "openvino fp32": (ov.image_encoder(), ov.scorer()),
        "openvino int8": (ov8.image_encoder(), ov8.scorer()),
    }
    if has_bf16():
        setups["openvino bf16"] = (ov.image_encoder(precision="bf16"), ov.scorer())
    return setups


def _seconds(fn, repeats: int) -> list[float]:  # noqa: ANN001 - a callable
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _emulated(name: str) -> bool:
    return name == "torch bf16" and not cpu_has_bf16()


def _tower_rates(setups: dict, crops: torch.Tensor, repeats: int) -> dict[str, dict]:
    """frames/s of each image tower: the best of ``repeats`` rounds, interleaved."""
    seconds: dict[str, list[float]] = {name: [] for name in setups}
    for name, (encoder, _) in setups.items():
        encoder(crops[:2] if _emulated(name) else crops)  # warm-up
    for _ in range(repeats):
        for name, (encoder, _) in setups.items():
            if _emulated(name) and seconds[name]:
                continue  # emulated bf16: once is enough (tens of seconds a frame)
            x = crops[:2] if _emulated(name) else crops
            seconds[name] += [s / len(x) for s in _seconds(lambda e=encoder, x=x: e(x), 1)]
    return {
        n: {"frames_per_s": 1 / min(s), "emulated": _emulated(n),
            "timed_frames": 2 if _emulated(n) else len(crops)}
        for n, s in seconds.items()
    }  # fmt: skip


def _scorer_ms(setups: dict, dim: int) -> dict[str, float]:
    """Milliseconds per 512-row window of each scorer (median of 5, after one)."""
    window = CausalWindow(dim, 512, 512)
    rng = np.random.default_rng(0)
    (w,) = window.push(0.1 * rng.standard_normal((512, dim)), np.arange(512), np.arange(512) / FPS)
    out = {}
    for name, (_, scorer) in setups.items():
        score = live_score_fn(scorer)
        times = _seconds(lambda s=score: score_windows([w], s, 32, 16), 6)
        out[name] = 1e3 * statistics.median(times[1:])
    return out


class _ExportedWatch(Bench):
    """:class:`Bench` on a given image tower and scorer instead of torch's."""

    def __init__(self, name: str, clip: str, folder: Path, frames: np.ndarray, encoder, scorer):  # noqa: ANN001
        self.setup, self.folder, self.frames = Setup(clip, name), folder, frames
        self.encoder, self.model = encoder, scorer
        self.threshold = self._threshold()


def measure(bench: ExportBench = ExportBench()) -> dict:
    """The speed part (module docstring)."""
    torch.set_num_threads(bench.threads)
    from datetime import date

    from anomalyclip.environment import cpu_name

    result: dict = {"threads": bench.threads, "cpu_bf16": cpu_has_bf16(), "cpu": cpu_name(),
                    "date": date.today().isoformat(), "clip": bench.clip}  # fmt: skip
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="anomaly-bench-export-") as tmp:
        folder = Path(tmp)
        frames = render_stream(60.0, bench.size)
        clip_dir = build_clip(folder / f"clip-{bench.clip}", bench.clip)
        stream = folder / f"stream-{FPS}.mp4"  # where Bench.stream(FPS) finds it
        encode_video(stream, frames, FPS)
        setups = _setups(_bench_run(folder, clip_dir, bench.clip), folder, stream)
        crops = resize_crop(frames[:: max(1, len(frames) // bench.frames)][: bench.frames])
        rates = _tower_rates(setups, crops, bench.repeats)
        base = rates["torch fp32"]["frames_per_s"]
        scorer = _scorer_ms(setups, 512)
        rows = []
        for name, (encoder, model) in setups.items():
            row = {"backend": name, **rates[name], "scorer_ms": scorer[name]}
            row["vs_torch_fp32"] = row["frames_per_s"] / base
            if bench.watch and not _emulated(name):
                bench_watch = _ExportedWatch(name, bench.clip, folder, frames, encoder, model)
                watch = bench_watch.sustained(bench.trial)
                row.update(watch_fps=watch["sustained_fps"], watch_estimate=watch["estimate_fps"])
            rows.append(row)
        result["rows"] = rows
        result["int8_cosine"] = _int8_cosine(setups, crops)
    result["load_avg"] = os.getloadavg()[0]
    result["wall_s"] = time.perf_counter() - t0
    return result


def _int8_cosine(setups: dict, crops: torch.Tensor) -> dict[str, float]:
    """Per-frame cosine of each int8 tower's features to torch fp32's (min over the frames)."""
    ref = setups["torch fp32"][0](crops).double()
    out = {}
    for name in ("onnxruntime int8", "openvino int8"):
        got = setups[name][0](crops).double()
        out[name] = float(torch.nn.functional.cosine_similarity(got, ref).min())
    return out


def demo_accuracy(demo_dir: str | Path | None = None) -> dict:
    """Frame AUC and planted events found at IoU >= 0.3 of an ``anomaly demo`` run (run
    into a temporary folder when ``demo_dir`` is None, ~2-3 minutes), its test videos
    extracted through each exported image tower (int8 calibrated on demo-world frames
    rendered afresh, not the test videos) and scored by the run's model."""
    from anomalyclip.datasets import discover
    from anomalyclip.demo import run_demo
    from anomalyclip.extract.pipeline import extract
    from anomalyclip.runs import load_model

    with tempfile.TemporaryDirectory(prefix="anomaly-bench-export-demo-") as tmp:
        if demo_dir is None:
            run_demo(tmp, progress=False)
        demo = Path(demo_dir or tmp)
        model, config = load_model(demo / "run")
        rows = [{"backend": "torch fp32", **_evaluate(model, config, demo / "store.zarr")}]
        entries = [e for e in discover("demo", demo / "videos") if e.split == "test"]
        for fmt, backend, int8 in (("onnx", "onnxruntime", False), ("onnx", "onnxruntime", True),
                                   ("openvino", "openvino", False),
                                   ("openvino", "openvino", True)):  # fmt: skip
            name = f"{backend} {'int8' if int8 else 'fp32'}"
            out = Path(tmp) / name.replace(" ", "-")
            export = Export(export_run(demo / "run", ExportConfig(fmt, int8, out=out)), backend)
            store = out.with_suffix(".zarr")
            done = extract(entries, store, export.image_encoder(), dataset="demo",
                           root=demo / "videos", progress=False)  # fmt: skip
            if not done.ok:
                raise RuntimeError(f"bench export: extraction failed: {done.format()}")
            rows.append({"backend": name, **_evaluate(model, config, store), **_int8(export)})
    return {"videos": len(entries), "rows": rows}


def _int8(export: Export) -> dict:
    """How many of the candidate matrix multiplies the sensitivity pass left int8."""
    record = export.manifest["graphs"]["image_tower"].get("int8")
    if not record:
        return {}
    return {"int8_matmuls": record["int8_matmuls"],
            "candidates": record["int8_matmuls"] + len(record["float_matmuls"])}  # fmt: skip


def _evaluate(model, config: dict, store: Path) -> dict:  # noqa: ANN001 - AnomalyCLIP
    from anomalyclip.evaluate.evaluation import EvalOptions, evaluate_run

    metrics, _ = evaluate_run(model, config, EvalOptions(features=str(store), progress=False))
    found = metrics["decision"]["events"]["detection"]["0.3"]
    return {"frame_auc": metrics["auc"], "events_found": found["true_positives"],
            "planted_events": found["intervals"]}  # fmt: skip


def table(result: dict) -> str:
    """Markdown: the speed table, the int8 notes, and the demo's accuracy when measured."""
    lines = []
    if result.get("rows"):
        lines += [
            f"`anomaly bench export` on {result['cpu']}, {result['threads']} threads, "
            f"{result['date']} ({result['wall_s'] / 60:.0f} min, load average "
            f"{result['load_avg']:.1f}); a {result['clip']}-shaped CLIP image tower and a "
            "UCF-Crime-shaped scorer, random weights.",
            "",
            "| backend | image tower frames/s | vs torch fp32 | scorer ms per 512-row window "
            "| `watch` real-time fps |",
            "|---|---|---|---|---|",
        ]
        for r in result["rows"]:
            watch = f"{r['watch_fps'] or '< 1'}" if "watch_fps" in r else "not measured"
            note = f" (emulated, {r['timed_frames']} frames)" if r["emulated"] else ""
            lines.append(
                f"| {r['backend']} | {r['frames_per_s']:.2f}{note} | {r['vs_torch_fp32']:.2f}x "
                f"| {r['scorer_ms']:.0f} | {watch} |"
            )
        lines += ["", _int8_text(result)]
    if result.get("accuracy"):
        acc = result["accuracy"]
        lines += ["", f"`anomaly demo` run, its {acc['videos']} test videos through each image "
                  "tower:", "", "| image tower | frame AUC | AUC - torch fp32 "
                  "| planted events found at IoU >= 0.3 | int8 matrix multiplies |",
                  "|---|---|---|---|---|"]  # fmt: skip
        base = acc["rows"][0]["frame_auc"]
        for r in acc["rows"]:
            delta = r["frame_auc"] - base
            int8 = f"{r['int8_matmuls']} of {r['candidates']}" if "candidates" in r else "-"
            lines.append(f"| {r['backend']} | {r['frame_auc']:.4f} | "
                         f"{f'{delta:+.4f}' if delta else '0'} | "
                         f"{r['events_found']} of {r['planted_events']} | {int8} |")  # fmt: skip
    return "\n".join(lines)


def _int8_text(result: dict) -> str:
    """int8's speed against fp32 (and against torch bf16 where the CPU has bf16 units: the
    target; emulated bf16 is no yardstick), and its cosine to fp32."""
    by = {r["backend"]: r["frames_per_s"] for r in result["rows"]}
    cos = result["int8_cosine"]
    against_fp32 = (
        f"OpenVINO {by['openvino int8'] / by['openvino fp32']:.2f}x OpenVINO fp32 "
        f"({by['openvino int8'] / by['torch fp32']:.2f}x torch fp32), ONNX Runtime "
        f"{by['onnxruntime int8'] / by['onnxruntime fp32']:.2f}x ONNX Runtime fp32 "
        f"({by['onnxruntime int8'] / by['torch fp32']:.2f}x torch fp32)"
    )
    if result["cpu_bf16"]:
        text = (
            f"int8 against torch bf16: OpenVINO {by['openvino int8'] / by['torch bf16']:.2f}x, "
            f"ONNX Runtime {by['onnxruntime int8'] / by['torch bf16']:.2f}x (target >= 2x); "
            f"against fp32: {against_fp32}."
        )
    else:
        text = (
            "This CPU has no bf16 units: torch runs bf16 emulated (its row above), so the "
            "target int8 >= 2x torch bf16 cannot be measured here. int8 against fp32, "
            f"measured instead: {against_fp32}."
        )
    return (
        f"{text} Per-frame cosine of int8 to fp32 features (min over the timed frames): "
        f"OpenVINO {cos['openvino int8']:.4f}, ONNX Runtime {cos['onnxruntime int8']:.4f}."
    )
