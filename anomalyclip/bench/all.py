"""Every benchmark, quickly, in one run, as one table.

``anomaly bench all`` runs the store, extraction, training, evaluation, demo and predict
benchmarks at sizes that finish in about a quarter of an hour on a 2-core CPU, and prints one
Markdown table: per stage what was measured, the ratio that matters (always between two
things measured in this same run: absolute times move by 2x between hosts of one kind) and
the target. ``--readme README.md`` writes the table into the README between the
``<!-- bench:all -->`` markers, so the README's performance section is never typed by hand.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from anomalyclip.bench.extract import ExtractBench
from anomalyclip.bench.peak import share_text
from anomalyclip.bench.train import TrainBench
from anomalyclip.environment import cpu_name
from anomalyclip.extract.encoder import cpu_has_bf16

log = logging.getLogger(__name__)

BEGIN, END = "<!-- bench:all -->", "<!-- /bench:all -->"
NO_BF16 = (
    "This CPU has no bf16 units: training and extraction are timed in fp32 only (torch "
    "would emulate bf16 there, tens of times slower than fp32), so their bf16 targets are not "
    "measured by this run. The inference and `predict` bf16 rows are emulated bf16."
)


@dataclass(frozen=True)
class AllBench:
    """Each stage's sizes; the defaults are the quick ones (about a quarter of an hour on 2
    cores). ``bf16`` None: the training and extraction stages time bf16 only where the CPU
    multiplies bf16 in hardware. Without bf16 units torch emulates it, tens of times slower
    than fp32: those rows would take over an hour and time the emulation, not bf16. The
    inference and ``predict`` stages keep their bf16 rows (small models: minutes at most).
    ``glibc``: the trainer's default step again with glibc's own allocator settings (None:
    not measured); ``store`` and ``eval``: keyword arguments of those benches; ``demo``: the
    demo and ``predict`` on its run (the slowest stage, minutes)."""

    bf16: bool | None = None
    train: TrainBench = field(default_factory=lambda: TrainBench(steps=2))
    glibc: TrainBench | None = field(default_factory=lambda: TrainBench(
        convs=("winograd",), steps=2, store_frames=(500, 1000), load_batches=2,
        store_videos=64,  # the fewest a batch of 64 (32 + 32) can be drawn from
        keep_memory=(False,),
    ))  # fmt: skip
    extract: ExtractBench = field(default_factory=lambda: ExtractBench(frames=48, repeats=1))
    store: dict = field(default_factory=lambda: {"n_videos": 32, "frames_per_video": 2000,
                                                 "batches": 3})  # fmt: skip
    eval: dict = field(default_factory=lambda: {"n_videos": 8, "rounds": 2})
    demo: bool = True


def measure(bench: AllBench | None = None, progress: bool = True) -> dict:
    """Run every stage of ``bench``; returns their results by name, plus the host (whether
    bf16 was timed in training and extraction) and the wall time."""
    from anomalyclip.bench import eval as eval_bench
    from anomalyclip.bench import extract as extract_bench
    from anomalyclip.bench import train as train_bench

    bench = bench or AllBench()
    t0 = time.perf_counter()
    bf16 = cpu_has_bf16() if bench.bf16 is None else bench.bf16
    results: dict = {}

    def stage(name: str, fn) -> None:  # noqa: ANN001
        start = time.perf_counter()
        if progress:
            log.info("bench all: %s ...", name)
        results[name] = fn()
        log.info("bench all: %s done in %.0f s", name, time.perf_counter() - start)

    train = replace(bench.train, bf16=(False, True) if bf16 else (False,))
    stage("train", lambda: train_bench.measure(train))
    if bench.glibc is not None:
        stage("train, glibc defaults", lambda: train_bench.measure(bench.glibc))
    # extraction before the stages that apply their commands' allocator policy (it lasts for
    # the process, and `anomaly features` does not set it)
    setups = tuple(s for s in bench.extract.setups if bf16 or s[0] != "bf16")
    stage("extract", lambda: extract_bench.measure(replace(bench.extract, setups=setups)))
    stage("store", lambda: _store(bench.store))
    stage("eval", lambda: eval_bench.measure(**bench.eval))
    if bench.demo:
        stage("demo, predict", _demo_and_predict)
        results.update(results.pop("demo, predict"))
    results["host"] = {
        "cpu": cpu_name(),
        "cores": torch.get_num_threads(),
        "torch": torch.__version__,
        "bf16": bf16,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "wall_s": time.perf_counter() - t0,
    }
    return results


def _demo_and_predict() -> dict:
    import tempfile

    from anomalyclip.bench import demo, predict

    with tempfile.TemporaryDirectory(prefix="anomaly-bench-all-") as tmp:
        out = {"demo": demo.measure(Path(tmp) / "demo")}
        out["predict"] = predict.measure(Path(tmp) / "demo" / "run")
    return out


def _store(sizes: dict) -> dict:
    import tempfile

    from anomalyclip.bench import store

    with tempfile.TemporaryDirectory(prefix="anomaly-bench-store-") as tmp:
        return store.measure(tmp, **sizes)


def _row(stage: str, measured: str, ratio: str, target: str) -> str:
    return f"| {stage} | {measured} | {ratio} | {target} |"


def _train_rows(result: dict) -> list[str]:
    rows = []
    peak = result["peak_gflops"]
    for row in result["rows"]:
        dtype = "bf16" if row["bf16"] else "fp32"
        rate = share_text(row["executed_gflops"], peak[dtype], f"{dtype} matmul peak")
        allocator = "" if row.get("kept_memory", True) else ", glibc allocator defaults"
        rows.append(_row(
            f"train step, UCF shape, {dtype}, {row['conv']}{allocator}",
            f"{row['step_s']:.2f} s; {rate.replace(' GFLOP/s', ' GFLOP/s executed', 1)}; "
            f"peak RSS {row['peak_rss_mb'] / 1024:.1f} GB",
            f"{row['speedup_vs_published']:.2f}x the published code's equivalent",
            "fp32 ≥ 0.85 of peak; bf16 ≥ 4.5x published; ≤ 2.0 GB",
        ))  # fmt: skip
    return rows


def _predict_rows(result: dict) -> list[str]:
    from anomalyclip.bench import predict

    rows = []
    pr = {row["precision"]: row for row in result["rows"]}
    for precision, row in pr.items():
        s = row["seconds"]
        rows.append(_row(
            f"`anomaly predict --render`, demo CLIP in {precision}, 2 videos 768x576",
            f"{row['frames_per_s']:.0f} frames/s ({row['frames']} frames in {s['predict']:.1f} "
            f"s, the best of {predict.runs_text(row)}): "
            f"extract {s['extract'] / s['predict']:.0%}, render "
            f"{s['render'] / s['predict']:.0%}, rest {s['rest'] / s['predict']:.0%}",
            f"{row['frames_per_s'] / pr['fp32']['frames_per_s']:.2f}x fp32"
            if precision != "fp32" and "fp32" in pr else "",
            "≥ 150 frames/s",
        ))  # fmt: skip
    return rows


def _demo_row(de: dict) -> str:
    steps = ", ".join(f"{k} {v:.0f}" for k, v in de["seconds"].items() if k != "total")
    return _row(
        "`make demo` steps",
        f"{de['seconds']['total']:.0f} s ({steps} s), peak RSS {de['peak_rss_mb'] / 1024:.1f} "
        f"GB; frame AUC {de['frame_auc']:.3f}; "
        f"{de['events_found_iou_0.3']}/{de['planted_events']} planted events at IoU ≥ 0.3; "
        f"far@1 alarms on {100 * de['alarm_rate_test_normal_videos']:.1f} % of normal test "
        f"videos' frames ({100 * de['alarm_rate_test_normal_frames']:.1f} % of all normal frames)",
        "", "≤ 150 s, ≤ 2 GB, AUC ≥ 0.9",
    )  # fmt: skip


def table(r: dict) -> str:
    """One Markdown table of every stage."""
    lines = [
        f"`anomaly bench all` on {r['host']['cpu']}, {r['host']['cores']} threads, "
        f"torch {r['host']['torch']}, {r['host']['date']} ({r['host']['wall_s'] / 60:.0f} min).",
        "",
        "| stage | measured | ratio in the same run | target |",
        "|---|---|---|---|",
    ]
    for part in ("train", "train, glibc defaults"):
        if part in r:
            lines += _train_rows(r[part])
    ev = r["eval"]
    for row in ev["rows"]:
        lines.append(_row(
            f"test-mode inference, UCF shape, {row['setup']}",
            f"{row['frames_per_s']:,.0f} frames/s; a 4096-frame video {row['video_4096_s']:.3f} s",
            f"{row['speedup']:.2f}x the reference path",
            "≥ 4x; 4096 frames ≤ 0.25 s fp32",
        ))  # fmt: skip
    ex = r["extract"]
    for row in ex["rows"]:
        lines.append(_row(
            f"CLIP ViT-B/16 extraction, {row['setup']}",
            f"pipeline {row['pipeline_fps']:.2f} frames/s, model {row['model_fps']:.2f}; "
            + share_text(row["gflops"], row["peak_gflops"], f"{row['peak_dtype']} matmul peak"),
            f"{row['pipeline_speedup']:.2f}x fp32 eager (pipeline)",
            "≥ 3x in bf16",
        ))  # fmt: skip
    st = r["store"]
    lines.append(_row(
        "training batches from the store (64 x 512 rows)",
        f"float16 Zarr {st['size_vs_npy']['zarr']:.2f}x the size of float32 .npy; a batch "
        f"{1e3 * st['read_s']['warm']['zarr']:.0f} ms warm, "
        f"{1e3 * st['read_s']['cold']['zarr']:.0f} ms cold",
        f"Zarr read {st['read_vs_npy']['warm']['zarr']:.2f}x the .npy time (warm), "
        f"{st['read_vs_npy']['cold']['zarr']:.2f}x (cold)",
        "far below a training step",
    ))  # fmt: skip
    if "demo" in r:
        lines += _predict_rows(r["predict"])
        lines.append(_demo_row(r["demo"]))
    if not r["host"].get("bf16", True):
        lines += ["", NO_BF16]
    return "\n".join(lines)


def write_readme(readme: str | Path, text: str, block: str = "all") -> None:
    """Replace what stands between the ``<!-- bench:BLOCK -->`` markers of ``readme`` with
    ``text``."""
    from anomalyclip.checks import readme_block, readme_markers

    path = readme_block(readme, block)
    begin, end = readme_markers(block)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    path.write_text(pattern.sub(lambda _: f"{begin}\n{text}\n{end}", path.read_text()))
