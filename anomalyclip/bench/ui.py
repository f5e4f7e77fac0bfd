"""``anomaly bench watch --ui``: the live page's update rate, and what it costs scoring.

Generated demo-style scenes as H.264 files (320x240, 15 frames/s), ``cameras`` of them in
one watch, scored by the tiny CLIP and a temporal model of the demo's size (16 x 8 windows,
E = 32: the run ``anomaly demo`` trains), so scoring is fast and the page's share of the time
shows as much as it can. The page's client is a thread that does what the page's script
does: it reads ``/stream`` and fetches ``/frame/N`` each time a tile announces a new frame
(the browser tests check that the page fetches those).

- **Cost to scoring**: the cameras read as fast as the model takes them (``--drop none``),
  without the page, then with the page's state, its server and one client; the two kinds of
  run alternate ``runs`` times (a busy machine's drift hits both) and each reports rows
  scored per second and the process's CPU time per row (all its threads, the client's too:
  what a shared machine's other jobs do not disturb as much as they disturb wall time). The
  page's own work is also timed directly: the CPU time of the server's thread, and the time
  the readers spent making JPEGs, per second of the watch.
- **Update rate**: the cameras played in real time (``--realtime``) for ``seconds`` with the
  client: ``tile`` messages and frames fetched per second per camera.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from anomalyclip.backbone import build_clip
from anomalyclip.bench.train import Shape, bench_network, ucf_model
from anomalyclip.events import EventConfig
from anomalyclip.extract.decode import Sampling
from anomalyclip.extract.encoder import ImageEncoder
from anomalyclip.live.config import ReadConfig, WatchConfig
from anomalyclip.live.ui import LivePage, UiConfig, listen
from anomalyclip.live.ui_state import Preview
from anomalyclip.live.watch import Watcher
from anomalyclip.synthetic import encode_video, render_scene
from anomalyclip.train.config import PRESETS

FPS = 15
LABELS = ["Explosion", "Normal", "Intruder", "Tampering"]


class PageClient(threading.Thread):
    """Reads a page's event stream and fetches each frame it announces, as the page does;
    counts ``tile`` messages and frames per camera."""

    def __init__(self, url: str) -> None:
        super().__init__(name="page-client", daemon=True)
        self.host, self.port = url.split("//")[1].strip("/").rsplit(":", 1)
        self.tiles: Counter[int] = Counter()
        self.frames: Counter[int] = Counter()
        self.frame_bytes = 0
        self.ready = threading.Event()

    def _get(self, path: str) -> http.client.HTTPResponse:
        conn = http.client.HTTPConnection(self.host, int(self.port), timeout=30)
        conn.request("GET", path)
        return conn.getresponse()

    def run(self) -> None:
        try:
            stream = self._get("/stream")
            self.ready.set()
            shown: dict[int, int] = {}
            kind = None
            for raw in stream:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "tile":
                    tile = json.loads(line[6:])
                    self.tiles[tile["id"]] += 1
                    if tile["frame"] is not None and shown.get(tile["id"]) != tile["frame"]:
                        shown[tile["id"]] = tile["frame"]
                        self.frame_bytes += len(self._get(f"/frame/{tile['id']}").read())
                        self.frames[tile["id"]] += 1
        except (OSError, http.client.HTTPException):
            return  # the server went away: the run is over


def _videos(folder: Path, cameras: int, seconds: float) -> list[Path]:
    paths = []
    for k in range(cameras):
        path = folder / f"cam{k}.mp4"
        frames, _ = render_scene(LABELS[k % 4], np.random.default_rng([7, k]), int(seconds * FPS),
                                 (320, 240))  # fmt: skip
        encode_video(path, frames, FPS)
        paths.append(path)
    return paths


def _watch(models, videos: list[Path], out: Path, read: ReadConfig, page: bool) -> dict:
    """One watch of ``videos``; with ``page``, the page's server and a client too."""
    model, encoder = models
    cfg = WatchConfig(EventConfig(0.5), out=out, status_every=0, read=read, ui=page)
    with open(os.devnull, "w") as sink:
        watcher = Watcher(videos, model, encoder, Sampling(), cfg, sink)
        server = client = None
        if page:
            server = LivePage(watcher.ui, listen(UiConfig("127.0.0.1", 0))).start()
            client = PageClient(server.url)
            client.start()
            client.ready.wait(10)
        t0, cpu0 = time.monotonic(), time.process_time()
        summary = watcher.run()
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0
        if server is not None:
            server_cpu = _thread_cpu(server.native_id)
            server.stop()
            client.join(5)
    rows = summary["scored"]
    result = {"wall_s": wall, "scored": rows, "rows_per_s": rows / wall,
              "cpu_ms_per_row": 1000 * cpu / max(1, rows)}  # fmt: skip
    if server is not None:  # the page's own CPU time, per second of the watch
        jpegs = sum(cam.preview.busy for cam in watcher.ui.cameras)
        result.update(server_ms_per_s=1000 * server_cpu / wall, jpeg_ms_per_s=1000 * jpegs / wall)
    if client is not None:
        n, frames = len(videos), sum(client.frames.values())
        result.update(tiles_per_s=sum(client.tiles.values()) / n / wall,
                      frames_per_s=frames / n / wall,
                      jpeg_kb=client.frame_bytes / max(1, frames) / 1024)  # fmt: skip
    return result


def _thread_cpu(native_id: int | None) -> float:
    """CPU seconds (user + system) a thread of this process has used (Linux ``/proc``)."""
    try:
        stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    except (OSError, TypeError):
        return float("nan")
    fields = stat.rsplit(")", 1)[1].split()  # after the thread's name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _jpeg_ms(video: Path) -> float:
    """Median milliseconds to make one preview JPEG (convert, downscale, encode)."""
    import av

    preview, times = Preview(every=0.0), []
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            t0 = time.perf_counter()
            preview.offer(frame)
            times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def measure_ui(cameras: int = 3, runs: int = 5, seconds: float = 20.0, threads: int = 2) -> dict:
    """The page's cost to scoring and its update rate (module docstring)."""
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="anomaly-bench-ui-") as tmp:
        folder = Path(tmp)
        build_clip(folder / "clip", "tiny")
        demo = {k: PRESETS["demo"][k] for k in ("emb_dim", "depth", "heads", "num_segments",
                                                "seg_length", "concat_similarity")}  # fmt: skip
        shape = Shape(model=ucf_model(**demo), clip="tiny")
        models = (bench_network(folder / "clip", shape).eval(),
                  ImageEncoder(folder / "clip", "cpu", "fp32"))  # fmt: skip
        videos = _videos(folder, cameras, seconds)
        fast = ReadConfig(drop="none")
        _watch(models, videos, folder / "warm", fast, False)  # first-call costs out of the way
        without, with_page = [], []
        for k in range(runs):
            without.append(_watch(models, videos, folder / f"a{k}", fast, False))
            with_page.append(_watch(models, videos, folder / f"b{k}", fast, True))
        live = _watch(models, videos, folder / "live", ReadConfig(realtime=True), True)
        jpeg_ms = _jpeg_ms(videos[0])
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    a, b = med(without, "rows_per_s"), med(with_page, "rows_per_s")
    ca, cb = med(without, "cpu_ms_per_row"), med(with_page, "cpu_ms_per_row")
    return {"threads": torch.get_num_threads(), "cameras": cameras, "video_s": seconds,
            "without_ui": without, "with_ui": with_page, "rows_per_s_without": a,
            "rows_per_s_with": b, "ratio": b / a, "cpu_ms_per_row_without": ca,
            "cpu_ms_per_row_with": cb, "cpu_ratio": cb / ca, "live": live, "jpeg_ms": jpeg_ms,
            "load_avg": os.getloadavg()[0]}  # fmt: skip


def ui_table(r: dict) -> str:
    runs = lambda rows: ", ".join(f"{x['rows_per_s']:.1f}" for x in rows)  # noqa: E731
    med = lambda rows, key: statistics.median(x[key] for x in rows)  # noqa: E731
    live = r["live"]
    return "\n".join([
        f"{r['cameras']} cameras, 320x240 H.264 {FPS} fps, {r['video_s']:.0f} s each, tiny CLIP, "
        f"{r['threads']} threads",
        f"read as fast as possible, rows scored/s: without --ui {r['rows_per_s_without']:.1f} "
        f"({runs(r['without_ui'])}), with --ui and a page open {r['rows_per_s_with']:.1f} "
        f"({runs(r['with_ui'])}): ratio {r['ratio']:.3f}",
        "the page's own CPU time per second of watch (medians): server thread "
        f"{med(r['with_ui'], 'server_ms_per_s'):.1f} ms, JPEGs "
        f"{med(r['with_ui'], 'jpeg_ms_per_s'):.1f} ms; played in real time: "
        f"{live['server_ms_per_s']:.1f} ms and {live['jpeg_ms_per_s']:.1f} ms",
        f"process CPU time per row scored (medians): without --ui "
        f"{r['cpu_ms_per_row_without']:.2f} ms, with {r['cpu_ms_per_row_with']:.2f} ms: ratio "
        f"{r['cpu_ratio']:.3f}",
        f"played in real time with a page open: {live['tiles_per_s']:.2f} tile messages/s and "
        f"{live['frames_per_s']:.2f} frames/s per camera ({live['jpeg_kb']:.1f} KiB each), "
        f"{live['rows_per_s']:.1f} rows scored/s",
        f"one preview JPEG (convert, downscale, encode): {r['jpeg_ms']:.2f} ms, reader thread",
        f"load average {r['load_avg']:.1f}",
    ])  # fmt: skip
