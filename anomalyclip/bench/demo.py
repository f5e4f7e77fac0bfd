"""How long the newcomer's first command takes, and what it shows.

Runs every step of :func:`anomalyclip.demo.run_demo` at its default size (the one ``make demo``
runs) and reports the seconds of each step and the demo's peak resident memory (the most of
its process's memory in RAM at any moment, counted from the demo's start) beside the numbers
the demo is judged by: frame
AUC, the alarm rate on the normal frames of the test videos at the run's ``far@1`` threshold
(chosen on held-out normal training videos, never on test labels), and how many planted test
events are found at temporal IoU >= 0.3.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def measure(out: str | Path | None = None, seed: int = 0, precision: str = "fp32") -> dict:
    """Run the demo into ``out`` (a temporary folder by default) and time it."""
    from anomalyclip.bench.peak import peak_rss_mb, reset_peak_rss
    from anomalyclip.demo import run_demo
    from anomalyclip.kernels.allocator import keep_freed_memory

    keep_freed_memory()  # what `anomaly demo` applies on the CPU
    with tempfile.TemporaryDirectory(prefix="anomaly-bench-demo-") as tmp:
        reset = reset_peak_rss()
        t0 = time.perf_counter()
        run = run_demo(out or tmp, seed=seed, progress=False, precision=precision)
        total = time.perf_counter() - t0
        peak = peak_rss_mb(reset)
        metrics = run.results["evaluate"]
    decision = metrics["decision"]
    found = decision["events"]["detection"]["0.3"]
    return {
        "precision": precision,
        "seconds": {**run.timings, "total": total},
        "peak_rss_mb": peak,
        "frame_auc": metrics["auc"],
        "threshold": decision["threshold"]["value"],
        "alarm_rate_test_normal_videos": decision["frames"]["alarm_rate_normal_videos"],
        "alarm_rate_test_normal_frames": decision["frames"]["alarm_rate_normal_frames"],
        "events_found_iou_0.3": found["true_positives"],
        "planted_events": found["intervals"],
        "false_events_per_hour": decision["events"]["false_events_per_hour"],
    }


def table(result: dict) -> str:
    seconds = result["seconds"]
    lines = ["step        seconds"]
    lines += [f"{name:<11} {value:7.1f}" for name, value in seconds.items()]
    lines += [f"peak resident memory {result['peak_rss_mb'] / 1024:.2f} GB"]
    lines += [
        f"frame AUC {result['frame_auc']:.3f}; at far@1 (threshold {result['threshold']:.3f}) "
        f"alarms on {100 * result['alarm_rate_test_normal_videos']:.1f} % of the frames of the "
        f"normal test videos, {100 * result['alarm_rate_test_normal_frames']:.1f} % of all "
        "normal test frames; "
        f"{result['events_found_iou_0.3']} of {result['planted_events']} planted events found "
        f"at IoU >= 0.3; {result['false_events_per_hour']:.1f} false events per hour"
    ]
    return "\n".join(lines)
