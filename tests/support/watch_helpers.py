"""Helpers of the watch tests: processes (watcher, senders) on the loopback, and the offline
reference that live results are compared with."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_bound(port: int) -> bool:
    """Is some process receiving on UDP ``port`` of the loopback? (Linux ``/proc/net/udp``)"""
    try:
        table = Path("/proc/net/udp").read_text()
    except OSError:
        return False
    return f":{port:04X} " in table


class Proc:
    """A child process whose stdout and stderr lines are collected as they come."""

    def __init__(self, cmd: list[str]) -> None:
        self.cmd = cmd
        self.p = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._pumps = [
            threading.Thread(target=self._pump, args=(stream, sink), daemon=True)
            for stream, sink in ((self.p.stdout, self.out), (self.p.stderr, self.err))
        ]
        for pump in self._pumps:
            pump.start()

    @staticmethod
    def _pump(stream, sink: list[str]) -> None:
        for line in stream:
            sink.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float, count: int = 1, where: str = "err") -> bool:
        deadline = time.monotonic() + timeout
        lines = self.err if where == "err" else self.out
        while time.monotonic() < deadline:
            if sum(bool(re.search(pattern, line)) for line in list(lines)) >= count:
                return True
            if self.p.poll() is not None:
                self._drain()
                return sum(bool(re.search(pattern, line)) for line in list(lines)) >= count
            time.sleep(0.05)
        return False

    def _drain(self, timeout: float = 10) -> None:
        """After the exit: every line the child wrote is in ``out`` and ``err``."""
        for pump in self._pumps:
            pump.join(timeout)

    def wait(self, timeout: float) -> int:
        """The exit status, once the child has ended and its output is all read."""
        code = self.p.wait(timeout)
        self._drain()
        return code

    def finish(self, sig: int = signal.SIGINT, timeout: float = 30) -> int:
        """Send ``sig`` and wait for the exit status."""
        if self.p.poll() is None:
            self.p.send_signal(sig)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            raise AssertionError(f"{self.cmd[:4]} did not exit: {self.tail()}") from None

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.err[-n:])


def sender(transport: str, ts: Path, port: int, *extra: str) -> Proc:
    proc = Proc(
        [sys.executable, str(HERE / "stream_sender.py"), transport, str(ts), "--port", str(port)]
        + list(extra)
    )
    if transport != "udp":
        assert proc.wait_for("listening on", 120, where="out"), proc.tail()
    return proc


def watch(
    sources: list[str], run_dir: Path, out: Path, threshold: float | None, *extra: str
) -> Proc:
    """``anomaly watch`` in a child process (``threshold`` None: the run's own)."""
    given = [] if threshold is None else ["--threshold", str(threshold)]
    cmd = [sys.executable, "-m", "anomalyclip.cli", "watch", *sources, "--checkpoint",
           str(run_dir), "--out", str(out), *given, "--status-every", "0.5", "--stall", "1.5",
           *extra]  # fmt: skip
    return Proc(cmd)


def event_video(folder: Path) -> Path:
    """6 s of a demo-style scene with an explosion, 15 fps, 160x120, H.264 in MPEG-TS (what a
    camera sends): the watch tests' video."""
    import numpy as np
    from stream_sender import encode_ts

    from anomalyclip.synthetic import render_scene

    frames, _ = render_scene("Explosion", np.random.default_rng(5), 90, (160, 120))
    return encode_ts(Path(folder) / "event.ts", [frames])


def read_only_folder(folder: Path):
    """Make ``folder`` (created) refuse writes for this process, also as root (a read-only
    tmpfs mounted on it); a generator for a fixture: yields the folder, then undoes it."""
    import os

    import pytest

    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here ({done.stderr.strip()[:80]})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], capture_output=True)


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def closed(events: list[dict], source: str | None = None) -> list[dict]:
    return [e for e in events if e["kind"] == "closed" and source in (None, e["source"])]


def offline(run_dir: Path, video: Path, threshold: float) -> dict:
    """What offline ``predict`` computes for ``video``: the same extraction into an in-memory
    store, whole-video scoring, events of the whole curve."""
    from anomalyclip.datasets.registry import VideoEntry
    from anomalyclip.events import EventConfig, find_events
    from anomalyclip.extract.pipeline import extract
    from anomalyclip.model.inference import score_fn, score_video
    from anomalyclip.runs import load_model
    from anomalyclip.store import open_store

    model, config = load_model(run_dir)
    url = f"memory://watch-offline-{uuid.uuid4().hex}"
    entry = VideoEntry("v", Path(video), "", "predict", [])
    summary = extract([entry], url, config.get("clip"), dataset=config.dataset, dtype="float32",
                      progress=False)  # fmt: skip
    assert summary.ok, summary.failed
    with open_store(url) as st:
        feats, frames, times = st.features("v"), st.frames("v"), st.times("v")
    N, L = model.cfg.num_segments, model.cfg.seg_length
    p, probs = score_video(torch.from_numpy(feats), score_fn(model), N, L)
    curve = {"frames": frames, "times": times, "p": p.numpy(), "probs": probs.numpy()}
    labels = (list(model.cfg.classes), model.cfg.normal_id)
    events = [e.to_dict() for e in find_events(str(video), curve, labels, EventConfig(threshold))]
    return {**curve, "events": events}


def assert_events_match(live: list[dict], reference: list[dict], tol: float) -> None:
    """Same number of events, each boundary within ``tol`` seconds, the same class."""
    assert len(live) == len(reference), (
        [(e["start_time"], e["end_time"]) for e in live],
        [(e["start_time"], e["end_time"]) for e in reference],
    )
    for a, b in zip(live, reference, strict=True):
        assert abs(a["start_time"] - b["start_time"]) <= tol, (a, b)
        assert abs(a["end_time"] - b["end_time"]) <= tol, (a, b)
        assert a["class"] == b["class"], (a, b)


def stable_threshold(p: np.ndarray, exit_ratio: float = 0.8) -> tuple[float, float]:
    """(threshold, margin): the threshold in [0.3, 0.9] whose entry and exit levels lie
    farthest from every p(A) of the curve, among those that give at least one event."""
    best = (0.5, -1.0)
    for t in np.linspace(0.3, 0.9, 121):
        if p.max() < t:
            continue
        margin = min(np.abs(p - t).min(), np.abs(p - t * exit_ratio).min())
        best = max(best, (float(t), float(margin)), key=lambda b: b[1])
    return best
