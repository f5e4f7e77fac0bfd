"""``anomaly bench calibrate DEMO``: what a camera's own threshold changes on a camera the run
never saw.

``DEMO`` is an ``anomaly demo`` output; its run was trained on the demo's four cameras (four
backgrounds). For each of ``cameras`` new backgrounds (camera numbers 4, 5, ... which the
demo never films), this renders demo-world footage of that camera, from seeds apart from the
demo's:

- ``calibration``: normal videos, the footage a site would call normal; ``anomaly calibrate``'s
  :func:`~anomalyclip.live.calibrate.calibrate_camera` sets the camera's threshold on them
  (the run's rule, ``far@1``);
- ``evaluation``: other normal videos of the same camera, and videos with one planted event
  each (every demo class in turn), scored as ``predict`` scores them.

At the run's threshold and at the camera's own, it counts on the evaluation videos: false
alarms (events) per hour of normal video, the share of normal frames over the threshold, and
the planted events found (an event at temporal IoU >= 0.3, matched one to one).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from anomalyclip.events import EventConfig, find_events

IOU = 0.3
FPS = 15


def render_camera(folder: Path, camera: int, seed: int, counts: tuple[int, int, int]) -> dict:
    """The videos of one new camera: ``counts`` = (calibration normal, evaluation normal,
    evaluation videos per demo class); 192 frames (12.8 s) each, 160x120 as the demo's."""
    from anomalyclip.demo import ANOMALIES, NORMAL
    from anomalyclip.synthetic import encode_video, render_scene

    n_cal, n_normal, per_class = counts
    plan = [("calibration", NORMAL)] * n_cal + [("evaluation", NORMAL)] * n_normal
    plan += [("evaluation", label) for label in ANOMALIES for _ in range(per_class)]
    videos: dict[str, list] = {"calibration": [], "evaluation": []}
    for k, (part, label) in enumerate(plan):
        rng = np.random.default_rng([seed, 90_000 + camera, k])
        frames, intervals = render_scene(label, rng, 192, (160, 120), camera=camera)
        path = folder / f"camera{camera}" / part / f"{label}_{k:03d}.mp4"
        encode_video(path, frames, FPS)
        videos[part].append((path, intervals))
    return videos


def decisions(curves: list[tuple[dict, list]], labels, threshold: float) -> dict:
    """False alarms per hour of normal video, normal frames over the threshold, planted
    events found at IoU >= 0.3, for ``curves`` ((curve, true intervals) per video)."""
    from anomalyclip.evaluate.event_metrics import Scored, match

    alarms = normal_rows = over = 0
    seconds = 0.0
    pred, truth = [], []
    for i, (curve, intervals) in enumerate(curves):
        found = find_events(str(i), curve, labels, EventConfig(threshold))
        if not intervals:
            alarms += len(found)
            normal_rows += len(curve["p"])
            over += int((curve["p"] >= threshold).sum())
            seconds += len(curve["p"]) / FPS
        pred += [Scored(i, e.start_frame, e.end_frame, e.label, e.peak) for e in found]
        truth += [Scored(i, s, e) for s, e in intervals]
    hits = match(pred, truth, IOU)
    return {"threshold": threshold, "false_alarms_per_hour": alarms / (seconds / 3600),
            "false_alarms": alarms, "normal_seconds": seconds,
            "normal_frames_over": over / max(normal_rows, 1),
            "found": int(hits.sum()), "planted": len(truth)}  # fmt: skip


def measure(
    demo: str | Path, cameras: int = 3, seed: int = 0,
    counts: tuple[int, int, int] = (6, 12, 2), precision: str = "fp32",
) -> dict:  # fmt: skip
    """Run's threshold against each new camera's own (module docstring)."""
    from anomalyclip.evaluate.predict import PredictConfig, Predictor
    from anomalyclip.live.calibrate import CalibrateConfig, calibrate_camera

    run = Path(demo) / "run"
    predictor = Predictor(run, precision=precision)
    labels = (list(predictor.classes), predictor.normal_id)
    run_value = predictor.threshold
    result = {"demo": str(demo), "run_threshold": run_value, "cameras": []}
    t0 = time.perf_counter()
    for camera in range(4, 4 + cameras):
        with tempfile.TemporaryDirectory(prefix="anomaly-bench-calibrate-") as tmp:
            videos = render_camera(Path(tmp), camera, seed, counts)
            cal = [p for p, _ in videos["calibration"]]
            record = calibrate_camera(run, f"camera{camera}", cal,
                                      CalibrateConfig(precision=precision))  # fmt: skip
            paths = [p for p, _ in videos["evaluation"]]
            scored, _ = predictor.predict(paths, PredictConfig(threshold=run_value))
            truth = {str(path): intervals for path, intervals in videos["evaluation"]}
            curves = [(pred.curve, truth[pred.source]) for pred in scored]
        own = record["threshold"]["value"]
        result["cameras"].append({
            "camera": camera, "calibration_seconds": record["seconds"],
            "calibration_frames": record["frames"],
            "run": decisions(curves, labels, run_value), "own": decisions(curves, labels, own),
        })  # fmt: skip
    result["seconds"] = time.perf_counter() - t0
    return result


def table(result: dict) -> str:
    lines = [
        f"run threshold {result['run_threshold']:.4f} (far@1 on the demo's held-out videos)",
        "| camera | threshold | value | false alarms / h of normal video | normal frames over "
        "| planted events found (IoU >= 0.3) |",
        "|---|---|---|---|---|---|",
    ]
    for cam in result["cameras"]:
        for key, name in (
            ("run", "run's"),
            ("own", f"own (far@1, {cam['calibration_seconds']:.0f} s)"),
        ):
            d = cam[key]
            lines.append(
                f"| {cam['camera']} | {name} | {d['threshold']:.4f} | "
                f"{d['false_alarms_per_hour']:.0f} ({d['false_alarms']} in "
                f"{d['normal_seconds']:.0f} s) | {100 * d['normal_frames_over']:.1f} % | "
                f"{d['found']} / {d['planted']} |"
            )
    lines.append(f"{result['seconds']:.0f} s")
    return "\n".join(lines)
