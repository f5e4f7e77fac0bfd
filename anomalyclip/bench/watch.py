"""``anomaly bench watch``: how fast a watch keeps up on this machine, and whether it stays
bounded over a long stream.

Everything runs through the real path: a generated H.264 stream (demo-style scenes with
planted events, ``size`` pixels, 15 frames/s) decoded by PyAV in the watch's reader thread,
the frame queue, one CLIP forward per batch, the causal windows and the temporal model every
hop (the paper's UCF-Crime shape: E = 256, 32 x 16 windows), the event tracker and the event
log. Text towers and image towers are random weights of the named shape (built locally).

- **Sustained rate** (per configuration: the tiny CLIP, ViT-B/16 in fp32 and in bf16
  autocast): first the throughput with the stream read as fast as possible; then the stream
  is played in real time at decreasing rates, from that throughput down in 10 % steps, for
  ``trial`` seconds each, until a rate is scored with no dropped frame and a p99 lag (frame
  due -> scored) under ``MAX_LAG`` seconds. That rate is reported.
- **Soak** (``soak`` seconds of wall time, up to an hour of video): the stream, looped with
  continuing timestamps, scored as fast as the machine can; resident memory after the first
  minute and at the end, rows/s, lag percentiles, dropped frames.

``threads`` caps torch's threads (2 = the 2-core machine the project targets); run the
command under ``taskset -c 0,1`` for a 2-core measurement on a larger machine.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anomalyclip.backbone import build_clip
from anomalyclip.bench.train import Shape
from anomalyclip.bench.train import build_model as build_ucf_model
from anomalyclip.demo import render_video, write_video
from anomalyclip.evaluate.inference import score_video
from anomalyclip.events import EventConfig
from anomalyclip.extract.decode import Sampling, VideoSource
from anomalyclip.extract.encoder import ImageEncoder
from anomalyclip.extract.preprocess import resize_crop
from anomalyclip.live.sources import ReadConfig
from anomalyclip.live.stats import resident_bytes
from anomalyclip.live.watch import WatchConfig, Watcher
from anomalyclip.live.window import frozen_text_score_fn

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


def make_stream(folder: Path, seconds: float, size: tuple[int, int]) -> Path:
    """A demo-style H.264 clip of ``seconds``: normal scenes with a planted event in every
    10-second piece (rendered a piece at a time, so memory stays small)."""
    pieces = []
    labels = ["Normal", "Explosion", "Intruder", "Tampering"]
    n = max(1, int(round(seconds / 10)))
    for k in range(n):
        frames, _ = render_video(labels[k % 4], np.random.default_rng([42, k]), 10 * FPS, size)
        pieces.append(frames)
    path = folder / "stream.mp4"
    write_video(path, np.concatenate(pieces), FPS)
    return path


class Bench:
    """The models of one configuration, and watches of the stream with them."""

    def __init__(self, setup: Setup, folder: Path, stream: Path) -> None:
        self.setup, self.folder, self.stream = setup, folder, stream
        clip_dir = folder / f"clip-{setup.clip}"
        if not (clip_dir / "config.json").exists():
            build_clip(clip_dir, setup.clip)
        self.encoder = ImageEncoder(clip_dir, "cpu", setup.precision)
        self.model = build_ucf_model(clip_dir, Shape(clip=setup.clip)).eval()
        self.threshold = self._threshold()

    def _threshold(self) -> float:
        """The 90th percentile of the stream's offline p(A): events open and close."""
        images = np.stack([f.image for f in VideoSource(self.stream)][: 20 * FPS : 2])
        crops = resize_crop(images)  # (T, 3, 224, 224)
        feats = torch.cat([self.encoder(crops[i : i + 32]) for i in range(0, len(crops), 32)])
        p, _ = score_video(feats, frozen_text_score_fn(self.model), 32, 16)
        return float(np.quantile(p.numpy(), 0.9))

    def watch(self, read: ReadConfig, seconds: float, sample_rss: bool = False) -> dict:
        """Watch the stream for ``seconds`` of wall time, or until an hour of video is
        scored; the summary (with resident memory samples when ``sample_rss``)."""
        cfg = WatchConfig(
            EventConfig(self.threshold), out=self.folder / "out", status_every=0, read=read
        )
        with open(os.devnull, "w") as sink:
            watcher = Watcher([self.stream], self.model, self.encoder, Sampling(), cfg, sink)
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
                if elapsed >= seconds or sum(n for _, n in rows) >= MAX_VIDEO_SECONDS * FPS:
                    watcher.stop()
            thread.join()
        # rows/s after the first 10 % of the time (model warm-up, queues filling)
        warm = t0 + 0.1 * (rows[-1][0] - t0) if rows else t0
        later = [(t, n) for t, n in rows if t >= warm]
        rate = sum(n for _, n in later[1:]) / (later[-1][0] - later[0][0]) if len(later) > 2 else 0
        out = {
            "wall_s": result["seconds"],
            "rows_per_s": rate,
            "scored": result["scored"],
            "dropped": result["dropped"],
            "lag_p50_s": result["lag_p50_s"],
            "lag_p99_s": result["lag_p99_s"],
            "video_s": result["scored"] / FPS,
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

    def sustained(self, trial: float) -> dict:
        """Throughput, then the highest real-time rate scored without drops."""
        fast = self.watch(ReadConfig(drop="none", loop=True), trial)
        trials = []
        top = fast["rows_per_s"]
        for fraction in np.arange(1.0, 0.05, -0.1):
            rate = top * fraction
            read = ReadConfig(realtime=True, speed=rate / FPS, drop="oldest", loop=True)
            r = self.watch(read, trial)
            r["offered_fps"] = rate
            trials.append(r)
            log.info("%s: %.1f fps offered: %s", self.setup.name, rate, r)
            if r["dropped"] == 0 and r["lag_p99_s"] < MAX_LAG:
                break
        ok = [t for t in trials if t["dropped"] == 0 and t["lag_p99_s"] < MAX_LAG]
        return {
            "config": self.setup.name,
            "throughput_fps": top,
            "sustained_fps": ok[0]["offered_fps"] if ok else 0.0,
            "lag_p50_s": ok[0]["lag_p50_s"] if ok else float("nan"),
            "lag_p99_s": ok[0]["lag_p99_s"] if ok else float("nan"),
            "trials": trials,
        }

    def soak(self, seconds: float) -> dict:
        """The looped stream as fast as it is scored, for ``seconds`` (at most an hour of
        video): memory, rate, lag, drops."""
        out = self.watch(ReadConfig(drop="none", loop=True), seconds, sample_rss=True)
        return {**out, "config": self.setup.name}


def run(
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
        stream = make_stream(folder, 60.0, size)
        for setup in setups:
            bench = Bench(setup, folder, stream)
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
            f"{'configuration':<16}{'throughput':>12}{'real time':>11}{'lag p50':>9}{'p99':>7}"
        )
        for r in result["rows"]:
            lines.append(
                f"{r['config']:<16}{r['throughput_fps']:>8.1f} fps{r['sustained_fps']:>7.1f} fps"
                f"{r['lag_p50_s']:>8.2f}s{r['lag_p99_s']:>6.2f}s"
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

    from anomalyclip.datasets import frame_labels
    from anomalyclip.evaluate.run import score_fn
    from anomalyclip.events import find_events
    from anomalyclip.live.watch import load_for_watch, run_threshold
    from anomalyclip.store import open_store

    demo = Path(demo_dir)
    model, encoder, config = load_for_watch(demo / "run", None, "cpu")
    threshold = run_threshold(config, demo / "run", None)
    labels_of = (list(model.cfg.classes), model.cfg.normal_id)
    offline: dict[str, dict] = {}
    with open_store(demo / "store.zarr") as st:
        for rec in st.records(split="test"):
            feats = torch.from_numpy(st.features(rec.video_id).astype(np.float32))
            p, probs = score_video(feats, score_fn(model), 32, 16)
            frames = st.frames(rec.video_id)
            offline[str(demo / "videos" / f"{rec.video_id}.mp4")] = {
                "frames": frames,
                "times": st.times(rec.video_id),
                "p": p.numpy(),
                "probs": probs.numpy(),
                "truth": frame_labels([tuple(i) for i in rec.intervals], frames),
            }
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
        result["hops"].append(
            {
                "hop_s": hop,
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
                "end_shift_s": [float(np.median(ends)), float(np.max(np.abs(ends)))]
                if ends
                else None,
            }
        )
    return result


def _overlap(a, b) -> float:
    return max(0.0, min(a.end_time, b.end_time) - max(a.start_time, b.start_time))
