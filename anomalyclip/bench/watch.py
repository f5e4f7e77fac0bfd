"""``anomaly bench watch``: how fast a watch keeps up on this machine, and whether it stays
bounded over a long stream.

Everything runs through the real path: a generated H.264 stream (demo-style scenes with
planted events, ``size`` pixels, 15 frames/s) decoded by PyAV in the watch's reader thread,
the frame queue, one CLIP forward per batch, the causal windows and the temporal model every
hop (the paper's UCF-Crime shape: E = 256, 32 x 16 windows), the event tracker and the event
log. Text towers and image towers are random weights of the named shape (built locally).

- **Sustained rate** (per configuration: the tiny CLIP, ViT-B/16 in fp32 and in bf16
  autocast). A watch costs ``c_f`` seconds per frame (decode, crop, CLIP) and ``c_h`` per
  hop (the temporal model over a whole window, whatever the hop's length): ``c_h`` timed
  alone, ``c_f`` from a run with the stream read as fast as possible. A camera at R
  frames/s with the default 0.5 s hop needs R * c_f + 2 * c_h <= 1 second per second, so
  R* = (1 - 2 c_h) / c_f is the estimate. The stream, encoded at R frames/s, is then played
  in real time for ``trial`` seconds per rate: up by 20 % while a rate passes, down by 15 %
  while it fails. A rate passes with no dropped frame and a p99 lag (frame due -> scored)
  under ``MAX_LAG`` seconds; the highest passing rate is reported.
``threads`` caps torch's threads (2 = the 2-core machine the project targets); run the
command under ``taskset -c 0,1`` for a 2-core measurement on a larger machine.
"""

from __future__ import annotations

import logging
import os
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anomalyclip.backbone import build_clip
from anomalyclip.bench.train import Shape, bench_network
from anomalyclip.events import EventConfig
from anomalyclip.extract.decode import Sampling
from anomalyclip.extract.encoder import ImageEncoder
from anomalyclip.extract.preprocess import resize_crop
from anomalyclip.live.config import ReadConfig, WatchConfig
from anomalyclip.live.stats import resident_bytes
from anomalyclip.live.watch import Watcher
from anomalyclip.live.window import CausalWindow, live_score_fn, score_windows
from anomalyclip.model import AnomalyCLIP
from anomalyclip.model.inference import score_video
from anomalyclip.synthetic import encode_video, render_scene

log = logging.getLogger(__name__)

FPS = 15
MAX_LAG = 2.0  # seconds: a real-time trial whose p99 lag exceeds this is not keeping up
MAX_VIDEO_SECONDS = 3600.0  # a soak plays at most an hour of video


@dataclass(frozen=True)
class Setup:
    """One configuration: the CLIP shape and the image tower's precision."""

    clip: str  # "tiny" | "vit-b-16"
    precision: str = "fp32"  # "fp32" | "bf16"

    @property
    def name(self) -> str:
        return self.clip if self.clip == "tiny" else f"{self.clip} {self.precision}"


def render_stream(seconds: float, size: tuple[int, int]) -> np.ndarray:
    """(T, H, W, 3) uint8 frames of demo-style scenes, a planted event in every 10-second
    piece (rendered a piece at a time, so memory stays small)."""
    labels = ["Normal", "Explosion", "Intruder", "Tampering"]
    n = max(1, int(round(seconds / 10)))
    return np.concatenate(
        [render_scene(labels[k % 4], np.random.default_rng([42, k]), 10 * FPS, size)[0]
         for k in range(n)]
    )  # fmt: skip


class Bench:
    """The models of one configuration, and watches of the stream with them."""

    def __init__(self, setup: Setup, folder: Path, frames: np.ndarray) -> None:
        self.setup, self.folder, self.frames = setup, folder, frames
        clip_dir = folder / f"clip-{setup.clip}"
        if not (clip_dir / "config.json").exists():
            build_clip(clip_dir, setup.clip)
        self.encoder = ImageEncoder(clip_dir, "cpu", setup.precision)
        self.model = bench_network(clip_dir, Shape(clip=setup.clip)).eval()
        self.threshold = self._threshold()

    def stream(self, fps: int) -> Path:
        """The frames as an H.264 file at ``fps`` frames/s (a camera of that rate)."""
        path = self.folder / f"stream-{fps}.mp4"
        if not path.exists():
            encode_video(path, self.frames, fps)
        return path

    def _threshold(self) -> float:
        """The 90th percentile of the stream's offline p(A): events open and close."""
        crops = resize_crop(self.frames[: 20 * FPS : 2])  # (T, 3, 224, 224)
        feats = torch.cat([self.encoder(crops[i : i + 32]) for i in range(0, len(crops), 32)])
        p, _ = score_video(feats, live_score_fn(self.model), 32, 16)
        return float(np.quantile(p.numpy(), 0.9))

    def watch(self, fps: int, read: ReadConfig, seconds: float, **options) -> dict:
        """Watch the stream at ``fps`` for ``seconds`` of wall time, or until an hour of
        video is scored; the summary. ``options``: ``hop`` (seconds), ``sample_rss``,
        ``min_rows`` (keep going, up to 5 minutes, until that many rows are scored)."""
        sample_rss = options.get("sample_rss", False)
        cfg = WatchConfig(
            EventConfig(self.threshold), out=self.folder / "out", status_every=0, read=read,
            hop=options.get("hop", 0.5),
        )  # fmt: skip
        with open(os.devnull, "w") as sink:
            stream = self.stream(fps)
            watcher = Watcher([stream], self.model, self.encoder, Sampling(), cfg, sink)
            rows: list[tuple[float, int]] = []  # (monotonic, rows) per scored hop
            watcher.on_rows = lambda *a: rows.append((time.monotonic(), len(a[1])))
            done = threading.Event()
            result: dict = {}

            def body() -> None:
                result.update(watcher.run())
                done.set()

            thread = threading.Thread(target=body, daemon=True)
            t0 = time.monotonic()
            thread.start()
            rss: list[tuple[float, int]] = []
            first_minute = min(60.0, seconds / 4)
            while not done.wait(1.0):
                elapsed = time.monotonic() - t0
                if sample_rss:
                    rss.append((elapsed, resident_bytes()))
                scored = sum(s.stats.embedded for s in watcher.streams)  # scored at the end
                enough = scored >= options.get("min_rows", 0) or elapsed > 300
                if (elapsed >= seconds and enough) or scored >= MAX_VIDEO_SECONDS * fps:
                    watcher.stop()
            thread.join()
        # rows/s after the first 10 % of the time (model warm-up, queues filling)
        warm = t0 + 0.1 * (rows[-1][0] - t0) if rows else t0
        later = [(t, n) for t, n in rows if t >= warm]
        rate = sum(n for _, n in later[1:]) / (later[-1][0] - later[0][0]) if len(later) > 2 else 0
        out = {
            "fps": fps,
            "wall_s": result["seconds"],
            "rows_per_s": rate,
            "scored": result["scored"],
            "dropped": result["dropped"],
            "lag_p50_s": result["lag_p50_s"],
            "lag_p99_s": result["lag_p99_s"],
            "video_s": result["scored"] / fps,
        }
        if sample_rss and rss:
            after = [m for t, m in rss if t >= first_minute] or [rss[-1][1]]
            out.update(
                rss_first_minute_mb=after[0] / 2**20,
                rss_end_mb=rss[-1][1] / 2**20,
                rss_max_mb=max(m for _, m in rss) / 2**20,
                rss_growth=(rss[-1][1] - after[0]) / after[0],
                rss_at_s=first_minute,
            )
        return out

    def costs(self, seconds: float) -> tuple[float, float]:
        """(seconds per frame, seconds per hop): the temporal model over one full window,
        timed alone (median of 5), and a run with the stream read as fast as possible at a
        480-row hop, for ``seconds`` and at least 64 rows, less its hops' share."""
        window = CausalWindow(self.encoder.dim, 512, 512)
        (w,) = window.push(np.random.default_rng(0).standard_normal((512, self.encoder.dim)),
                           np.arange(512), np.arange(512) / FPS)  # fmt: skip
        score = live_score_fn(self.model)
        timed = []
        for _ in range(6):
            t0 = time.perf_counter()
            score_windows([w], score, 32, 16)
            timed.append(time.perf_counter() - t0)
        per_hop = statistics.median(timed[1:])
        r = self.watch(FPS, ReadConfig(drop="none", loop=True), seconds, hop=480 / FPS, min_rows=64)
        per_frame = max(1e-4, r["wall_s"] / max(1, r["scored"]) - per_hop / 480)
        return per_frame, per_hop

    def passes(self, r: dict) -> bool:
        return r["dropped"] == 0 and r["lag_p99_s"] < MAX_LAG

    def sustained(self, trial: float) -> dict:
        """The highest camera frame rate watched in real time without drops (module doc)."""
        per_frame, per_hop = self.costs(trial)
        estimate = max(1, int((1 - 2 * per_hop) / per_frame)) if 2 * per_hop < 1 else 1
        trials: dict[int, dict] = {}
        rate = estimate
        while rate >= 1 and rate not in trials and len(trials) < 8:
            read = ReadConfig(realtime=True, drop="oldest", loop=True)
            trials[rate] = r = self.watch(rate, read, trial)
            log.info("%s: %d fps: %s", self.setup.name, rate, r)
            if self.passes(r):
                if any(not self.passes(t) for f, t in trials.items() if f > rate):
                    break  # the rate above failed: this is the highest
                rate = max(rate + 1, round(rate * 1.2))
            else:
                if any(self.passes(t) for f, t in trials.items() if f < rate):
                    break
                rate = min(rate - 1, round(rate * 0.85))
        passing = [f for f, t in trials.items() if self.passes(t)]
        best = trials[max(passing)] if passing else None
        return {
            "config": self.setup.name,
            "seconds_per_frame": per_frame,
            "seconds_per_hop": per_hop,
            "estimate_fps": estimate,
            "sustained_fps": max(passing) if passing else 0,
            "lag_p50_s": best["lag_p50_s"] if best else float("nan"),
            "lag_p99_s": best["lag_p99_s"] if best else float("nan"),
            "trials": list(trials.values()),
        }

    def soak(self, seconds: float) -> dict:
        """The looped stream as fast as it is scored, for ``seconds`` (at most an hour of
        video): memory, rate, lag, drops."""
        out = self.watch(FPS, ReadConfig(drop="none", loop=True), seconds, sample_rss=True)
        return {**out, "config": self.setup.name}


def measure(
    clip: str = "all",
    precision: str = "all",
    soak: float = 0.0,
    trial: float = 20.0,
    threads: int | None = 2,
    size: tuple[int, int] = (320, 240),
) -> dict:
    """Sustained real-time rates (and a soak when ``soak`` > 0) per configuration."""
    if threads:
        torch.set_num_threads(threads)
    setups = []
    if clip in ("all", "tiny"):
        setups.append(Setup("tiny"))
    if clip in ("all", "vit-b-16"):
        setups += [Setup("vit-b-16", p) for p in ("fp32", "bf16") if precision in ("all", p)]
    result: dict = {"threads": torch.get_num_threads(), "size": list(size), "rows": [], "soak": []}
    with tempfile.TemporaryDirectory(prefix="anomaly-bench-watch-") as tmp:
        folder = Path(tmp)
        frames = render_stream(60.0, size)
        for setup in setups:
            bench = Bench(setup, folder, frames)
            if soak > 0:
                result["soak"].append(bench.soak(soak))
            else:
                result["rows"].append(bench.sustained(trial))
    result["load_avg"] = os.getloadavg()[0]
    return result


def table(result: dict) -> str:
    lines = [f"{result['threads']} threads, {result['size'][0]}x{result['size'][1]} H.264 15 fps"]
    if result["rows"]:
        lines.append(
            f"{'configuration':<16}{'ms/frame':>9}{'ms/hop':>8}{'estimate':>10}{'real time':>11}"
            f"{'lag p50':>9}{'p99':>7}"
        )
        for r in result["rows"]:
            lines.append(
                f"{r['config']:<16}{1000 * r['seconds_per_frame']:>9.1f}"
                f"{1000 * r['seconds_per_hop']:>8.0f}{r['estimate_fps']:>6d} fps"
                f"{r['sustained_fps']:>7d} fps{r['lag_p50_s']:>8.2f}s{r['lag_p99_s']:>6.2f}s"
            )
    for s in result["soak"]:
        lines.append(
            f"soak {s['config']}: {s['wall_s']:.0f} s, {s['video_s']:.0f} s of video, "
            f"{s['rows_per_s']:.1f} rows/s, lag p50 {s['lag_p50_s']:.2f} s p99 "
            f"{s['lag_p99_s']:.2f} s, dropped {s['dropped']}, RSS {s['rss_first_minute_mb']:.0f}"
            f" MB at {s['rss_at_s']:.0f} s -> {s['rss_end_mb']:.0f} MB at the end "
            f"({100 * s['rss_growth']:+.1f} %, max {s['rss_max_mb']:.0f} MB)"
        )
    lines.append(f"load average {result['load_avg']:.1f}")
    return "\n".join(lines)


def agreement(demo_dir: str | Path, hops: tuple[float, ...] = (0.5, 2.0)) -> dict:
    """Live against offline scores of the same frames, on a demo's test videos.

    ``demo_dir`` is an ``anomaly demo`` output (videos, store, trained run). The test videos
    are watched as files (every frame, no drops, all at once as sources of one watch) at each
    hop, and compared with offline scoring of the same frames from the store: frame AUC of
    both, the distance between the curves, and the events at the run's threshold.
    """
    from sklearn.metrics import roc_auc_score

    from anomalyclip.live.watch import load_for_watch, run_threshold_value

    demo = Path(demo_dir)
    model, encoder, config = load_for_watch(demo / "run", None, "cpu")
    threshold = run_threshold_value(config, demo / "run", None)
    offline = _offline_scores(demo, model)
    truth = np.concatenate([v["truth"] for v in offline.values()])
    p_off = np.concatenate([v["p"] for v in offline.values()])
    result = {"videos": len(offline), "frames": int(truth.size), "threshold": threshold,
              "auc_offline": float(roc_auc_score(truth, p_off)), "hops": []}  # fmt: skip
    cfg_events = EventConfig(threshold)
    for hop in hops:
        with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as sink:
            cfg = WatchConfig(cfg_events, out=tmp, hop=hop, status_every=0)
            watcher = Watcher([Path(v) for v in offline], model, encoder, Sampling(), cfg, sink)
            rows: dict[str, list] = {v: [] for v in offline}
            watcher.on_rows = lambda name, f, t, p, c, rows=rows: rows[name].append((f, p, c))
            watcher.run()
        found = _compare_hop(offline, rows, (list(model.cfg.classes), model.cfg.normal_id),
                             cfg_events)  # fmt: skip
        result["hops"].append({"hop_s": hop, **found})
    return result


def _offline_scores(demo: Path, model: AnomalyCLIP) -> dict[str, dict]:
    """Each test video's offline scores from the demo's store, by its video file: frames,
    times, p(A), class probabilities and the true frame labels."""
    from anomalyclip.datasets import frame_labels
    from anomalyclip.model.inference import score_fn
    from anomalyclip.store import open_store

    offline: dict[str, dict] = {}
    cfg = model.cfg  # the run's own windows (the demo preset's are 16 x 8)
    with open_store(demo / "store.zarr") as st:
        for rec in st.records(split="test"):
            feats = torch.from_numpy(st.features(rec.video_id).astype(np.float32))
            p, probs = score_video(feats, score_fn(model), cfg.num_segments, cfg.seg_length)
            frames = st.frames(rec.video_id)
            offline[str(demo / "videos" / f"{rec.video_id}.mp4")] = {
                "frames": frames,
                "times": st.times(rec.video_id),
                "p": p.numpy(),
                "probs": probs.numpy(),
                "truth": frame_labels([tuple(i) for i in rec.intervals], frames),
            }
    return offline


def _compare_hop(
    offline: dict[str, dict],
    rows: dict[str, list],
    labels_of: tuple[list[str], int],
    cfg_events: EventConfig,
) -> dict:
    """One hop's live ``rows`` (frames, p(A), probabilities per batch) against the offline
    scores: frame AUC, the curves' distance, and the events found in each."""
    from sklearn.metrics import roc_auc_score

    from anomalyclip.events import find_events

    truth = np.concatenate([v["truth"] for v in offline.values()])
    p_off = np.concatenate([v["p"] for v in offline.values()])
    live_p, diffs, n_live, n_off, starts, ends = [], [], 0, 0, [], []
    for name, ref in offline.items():
        frames = np.concatenate([r[0] for r in rows[name]])
        p = np.concatenate([r[1] for r in rows[name]])
        probs = np.concatenate([r[2] for r in rows[name]])
        assert np.array_equal(frames, ref["frames"]), name  # the very same frames
        live_p.append(p)
        diffs.append(np.abs(p - ref["p"]))
        curve = {"frames": frames, "times": ref["times"], "p": p, "probs": probs}
        ev_live = find_events(name, curve, labels_of, cfg_events)
        ev_off = find_events(name, ref, labels_of, cfg_events)
        n_live, n_off = n_live + len(ev_live), n_off + len(ev_off)
        for a in ev_off:  # the live event overlapping it most
            best = max(ev_live, default=None, key=lambda b: _overlap(a, b))
            if best is not None and _overlap(a, best) > 0:
                starts.append(best.start_time - a.start_time)
                ends.append(best.end_time - a.end_time)
    d = np.concatenate(diffs)
    p_live = np.concatenate(live_p)
    return {
        "auc_live": float(roc_auc_score(truth, p_live)),
        "mean_abs_diff": float(d.mean()),
        "p99_abs_diff": float(np.quantile(d, 0.99)),
        "max_abs_diff": float(d.max()),
        "pearson": float(np.corrcoef(p_live, p_off)[0, 1]),
        "events_offline": n_off,
        "events_live": n_live,
        "start_shift_s": [float(np.median(starts)), float(np.max(np.abs(starts)))]
        if starts
        else None,
        "end_shift_s": [float(np.median(ends)), float(np.max(np.abs(ends)))] if ends else None,
    }


def _overlap(a, b) -> float:
    return max(0.0, min(a.end_time, b.end_time) - max(a.start_time, b.start_time))
