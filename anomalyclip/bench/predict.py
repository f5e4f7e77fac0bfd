"""``anomaly predict --render`` end to end, and where its time goes.

The videos are surveillance-sized (768 x 576 at 25 fps by default, the size of the common
pedestrian-camera samples) so that decoding and scaling cost what they cost in use; the model
is a run folder (``bench all`` passes the demo's). Per precision of the image tower (the fp32
reference, then bf16: ``predict --precision``), three timings in one process, after a
warm-up ``predict`` of a short clip in each precision (imports, font cache, kernel set-up:
a process's one-time costs, which would otherwise fall on whichever precision runs first):

- ``predict``: :func:`anomalyclip.evaluate.predict.predict` with ``render=True``: load the run,
  extract features, score, write CSVs, events, plots and the MP4s. It runs ``repeats``
  rounds, the precisions interleaved within each round, and the fastest run of each
  precision is the one reported (``runs`` lists them all): on a shared host a neighbour's
  burst slows one run by up to 2x, and the best of a few is what the machine can do;
- ``extract``: the extraction alone, as predict runs it (decode, CLIP, an in-memory store);
- ``render``: :func:`anomalyclip.evaluate.render.render_video` alone on the same scores,
  read back from predict's CSVs (decode again, draw, encode).

The rest of ``predict`` (model loading, scoring, CSV, events, plot) is the difference. Only
the extraction depends on the precision.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from anomalyclip.datasets.core import VideoEntry
    from anomalyclip.evaluate.predict import Written
    from anomalyclip.model import AnomalyCLIP


def make_videos(folder: Path, lengths: tuple[int, ...], size: tuple[int, int]) -> list[Path]:
    """Demo-world videos (a panning scene, moving blobs, sensor noise) at ``size``, 25 fps."""
    from anomalyclip.synthetic import encode_video, render_scene

    paths = []
    for k, length in enumerate(lengths):
        frames, _ = render_scene("Explosion", np.random.default_rng([5, k]), length, size)
        paths.append(folder / f"camera_{k}.mp4")
        encode_video(paths[-1], frames, fps=25)
    return paths


def measure(
    run_dir: str | Path,
    videos: list[str | Path] | None = None,
    lengths: tuple[int, ...] = (795, 270),
    size: tuple[int, int] = (768, 576),
    precisions: tuple[str, ...] = ("fp32", "bf16"),
    repeats: int = 3,
) -> dict:
    """Time ``predict --render`` on ``videos`` (default: generated ones of ``lengths`` frames),
    the best of ``repeats`` runs per image-tower precision, and its parts once each."""
    from anomalyclip.datasets.core import VideoEntry
    from anomalyclip.kernels.allocator import keep_freed_memory
    from anomalyclip.runs import load_model

    keep_freed_memory()  # what `anomaly predict` applies on the CPU
    model, config = load_model(run_dir)
    rows = []
    with tempfile.TemporaryDirectory(prefix="anomaly-bench-predict-") as tmp:
        tmp = Path(tmp)
        paths = [Path(v) for v in videos] if videos else make_videos(tmp, lengths, size)
        entries = [VideoEntry(f"v{i}", p, "", "predict", []) for i, p in enumerate(paths)]
        runs, outputs = _time_predict(paths, run_dir, tmp, precisions, repeats)
        for precision in precisions:
            out, results = tmp / precision, outputs[precision]
            t_predict = min(runs[precision])
            t_extract, stamps = _time_extract(entries, run_dir, config, precision)
            t_render = _time_render(results, stamps, model, out)
            frames = sum(r.frames for r in results)
            rows.append({
                "precision": precision,
                "frames": frames,
                "seconds": {
                    "predict": t_predict,
                    "extract": t_extract,
                    "render": t_render,
                    "rest": max(0.0, t_predict - t_extract - t_render),
                },
                "frames_per_s": frames / t_predict,
                "runs": runs[precision],
            })  # fmt: skip
    return {"frames": rows[0]["frames"], "rows": rows}


def _time_predict(
    paths: list[Path], run_dir: str | Path, tmp: Path, precisions: tuple[str, ...], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[Written]]]:
    """Seconds of each ``predict --render`` run per precision, and each precision's last
    results; after a warm-up run per precision."""
    from anomalyclip.evaluate.predict import PredictConfig, predict

    warm = make_videos(tmp / "warm-up", (16,), (64, 48))
    for precision in precisions:  # a process's one-time costs, outside the timings
        predict(warm, run_dir, tmp / "warm-up" / precision,
                PredictConfig(precision=precision, render=True))  # fmt: skip
    runs: dict[str, list[float]] = {precision: [] for precision in precisions}
    outputs = {}
    for r in range(repeats):  # interleaved, so every precision sees the same machine state
        for precision in precisions:
            out = tmp / precision / f"predict-{r}"
            t0 = time.perf_counter()
            outputs[precision], failed = predict(
                paths, run_dir, out, PredictConfig(precision=precision, render=True)
            )
            runs[precision].append(time.perf_counter() - t0)
            if failed:
                raise RuntimeError(f"bench predict: videos failed: {failed}")
    return runs, outputs


def _time_extract(
    entries: list[VideoEntry], run_dir: str | Path, config: dict, precision: str
) -> tuple[float, list[tuple[np.ndarray, np.ndarray]]]:
    """Seconds of the extraction alone, as predict runs it, and each video's (frames, times)."""
    from anomalyclip.extract.pipeline import extract
    from anomalyclip.runs import run_clip
    from anomalyclip.store import open_store

    store = f"memory://anomaly-bench-{uuid.uuid4().hex}"
    t0 = time.perf_counter()
    extract(entries, store, run_clip(run_dir, config), dtype="float32",
            precision=precision, dataset=config.dataset, progress=False)  # fmt: skip
    seconds = time.perf_counter() - t0
    with open_store(store) as st:
        stamps = [(st.frames(e.video_id), st.times(e.video_id)) for e in entries]
    return seconds, stamps


def _time_render(results: list[Written], stamps: list, model: AnomalyCLIP, out: Path) -> float:
    """Seconds of rendering the videos alone, on the scores predict drew."""
    from anomalyclip.evaluate.render import Scores, render_video
    from anomalyclip.evaluate.report import read_video_csv

    scores = []  # what predict drew, read back from its CSVs: the bars and cursor move
    for r, (fr, times) in zip(results, stamps, strict=True):
        back = read_video_csv(r.csv)
        p, probs = back["p_abnormal"], back["probs"]
        scores.append(Scores(fr, times, p, probs, model.cfg.classes, model.cfg.normal_id))
    t0 = time.perf_counter()
    for r, sc in zip(results, scores, strict=True):
        render_video(r.source, out / "render" / f"{r.source.stem}.mp4", sc, 0.6, r.events)
    return time.perf_counter() - t0


def runs_text(row: dict) -> str:
    """A row's predict runs in seconds, e.g. ``"7.8/7.2/8.2 s"``."""
    return "/".join(f"{t:.1f}" for t in row["runs"]) + " s"


def table(result: dict) -> str:
    lines = []
    for row in result["rows"]:
        s = row["seconds"]
        total = s["predict"]
        lines.append(
            f"predict --render, CLIP in {row['precision']}: {row['frames']} frames in "
            f"{total:.1f} s = {row['frames_per_s']:.0f} frames/s "
            f"(best of {len(row['runs'])}: {runs_text(row)})"
        )
        for name in ("extract", "render", "rest"):
            lines.append(f"  {name:<8} {s[name]:6.1f} s  ({100 * s[name] / total:4.0f} %)")
    return "\n".join(lines)
