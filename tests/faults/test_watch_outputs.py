"""What ``anomaly watch`` writes when its outputs misbehave: a full disk, a read-only clips
folder, clip names that collide, webhook receivers that fail, stall or drip; the frame ring
clips are cut from.

Everything is real: a 256 KiB tmpfs filled up (the kernel's own ENOSPC, and the short
write a nearly full page gives), a read-only tmpfs, HTTP receivers on 127.0.0.1, the demo
video decoded by PyAV and scored by a trained run, clips encoded by x264 and decoded back.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import json
import logging
import os
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pytest
from synthetic_stores import quick_run
from test_faults import small_disk  # noqa: F401 - the 256 KiB tmpfs fixture
from watch_helpers import Proc, closed, event_video, read_events, read_only_folder

from anomalyclip.events import EventConfig
from anomalyclip.live.clips import FrameRing
from anomalyclip.live.config import WatchConfig
from anomalyclip.live.watch import Watcher, load_for_watch, run_sampling
from anomalyclip.live.webhook import Webhook, WebhookConfig

STARTUP = 180  # seconds a watch process may take (imports torch on a busy machine)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_clip):
    return quick_run(tmp_path_factory.mktemp("run"), tiny_clip, epochs=1, n_each=4)[1]


@pytest.fixture(scope="module")
def loaded(run_dir):
    model, encoder, config = load_for_watch(run_dir, None, "cpu")
    return model, encoder, run_sampling(config, run_dir)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return event_video(tmp_path_factory.mktemp("video"))


def watch_files(loaded, sources, out, **options) -> tuple[dict, list[dict]]:
    """Threshold 0: every row is abnormal, so each file is one event from its first frame to
    its last (90 frames): its clip holds the whole video."""
    model, encoder, sampling = loaded
    cfg = WatchConfig(EventConfig(0.0), out=out, status_every=0, **options)
    summary = Watcher(sources, model, encoder, sampling, cfg, io.StringIO()).run()
    return summary, read_events(Path(out) / "events.jsonl")


def frames_in(path: Path) -> int:
    with av.open(str(path)) as clip:
        return sum(1 for _ in clip.decode(video=0))


@pytest.mark.slow
def test_clips_never_overwrite_each_other(loaded, video, tmp_path):
    """``a/cam.ts`` and ``b/cam.ts`` both start an event at frame 0: two cameras named
    ``cam`` and ``cam-2``; then a second watch into the same folder does it again. Four clips,
    four names, none replaced."""
    for cam in ("a", "b"):
        (tmp_path / cam).mkdir()
        (tmp_path / cam / "cam.ts").write_bytes(video.read_bytes())
    sources = [tmp_path / "a" / "cam.ts", tmp_path / "b" / "cam.ts"]
    out = tmp_path / "out"
    watch_files(loaded, sources, out, save_clips=True)
    first = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (out / "clips").iterdir()}
    summary, lines = watch_files(loaded, sources, out, save_clips=True)
    named = [Path(e["clip"]) for e in lines if e.get("clip")]
    assert len(named) == len(set(named)) == 4 and set(first) <= set(named)
    assert sorted(p.name for p in named) == [
        "cam-000000000-1.mp4", "cam-000000000.mp4", "cam-2-000000000-1.mp4", "cam-2-000000000.mp4"
    ]  # fmt: skip
    assert all(frames_in(p) == 90 for p in named)
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in first} == first
    assert sorted(os.listdir(out / "clips")) == sorted(p.name for p in named)  # no leftovers
    assert summary["outputs"]["clips"] == {"written": 2, "failed": 0, "unfinished": 0}


def test_sources_that_cannot_be_read_end_with_their_reason(loaded, tmp_path):
    """A protocol this FFmpeg lacks is not retried forever; a file that fails ends."""
    bogus, missing = "nosuchproto://127.0.0.1:9/cam", str(tmp_path / "missing.mp4")
    summary, lines = watch_files(loaded, [bogus, missing], tmp_path)
    failed = {name: s["failed"] for name, s in summary["sources"].items()}
    assert failed[bogus] == f"{bogus}: this FFmpeg build cannot read nosuchproto://"
    assert failed[missing].startswith(f"{missing}: cannot open")
    assert lines == [] and summary["scored"] == 0


@pytest.mark.slow
def test_an_endless_event_is_reported_in_bounded_pieces(loaded, video, tmp_path):
    """Threshold 0 keeps one event open for the whole stream; at most ``max_event`` seconds
    of it are held before it is closed and the next piece opens."""
    _, lines = watch_files(loaded, [video], tmp_path, max_event=2.0)
    pieces = closed(lines)
    assert len(pieces) == 3  # 6 s of video: [0, ~2), [~2, ~4), [~4, 6)
    assert all(2.0 <= e["duration"] < 2.0 + 1.0 + 1e-9 for e in pieces[:-1])  # + one update
    assert pieces[0]["start_frame"] == 0 and pieces[-1]["end_frame"] == 90
    assert all(a["end_frame"] == b["start_frame"] for a, b in zip(pieces, pieces[1:], strict=False))


@pytest.fixture
def read_only_clips(tmp_path):
    yield from read_only_folder(tmp_path / "out" / "clips")


@pytest.mark.slow
def test_a_read_only_clips_folder_names_no_clip(loaded, video, read_only_clips):
    summary, lines = watch_files(loaded, [video], read_only_clips.parent, save_clips=True)
    events = [e for e in lines if e["kind"] in ("opened", "updated", "closed")]
    clips = [e for e in lines if e["kind"] == "clip"]
    assert events and all(Path(e["clip"]).is_file() for e in lines if e.get("clip"))
    assert len(clips) == 1 and clips[0]["clip"] is None and clips[0]["frames"] == 0
    why = ("Read-only file system", "Permission denied")
    assert clips[0]["clip_error"] in why
    assert all(e["clip_error"] in why for e in events)  # known when the event opened
    assert summary["outputs"]["clips"] == {"written": 0, "failed": 1, "unfinished": 0}
    assert summary["scored"] == 90  # scoring went on


def fill(mount: Path) -> None:
    """Write zeros until the disk refuses more."""
    fd = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


@pytest.mark.slow
def test_a_full_disk_loses_lines_whole_and_says_so(run_dir, video, small_disk):  # noqa: F811
    """``events.jsonl`` already holds 4000 bytes, the rest of the disk is filled: the next
    line fits 96 bytes into the file's last page and no more (a short write). The watch
    goes on, stdout gets every line, the file keeps only whole lines, one warning says so
    and the summary counts what was lost; clips fail with their reason."""
    mount, _ = small_disk
    out = mount / "watch"
    out.mkdir()
    before = json.dumps({"kind": "gap", "source": "earlier", "pad": "x" * 3940}) + "\n"
    (out / "events.jsonl").write_text(before)
    fill(mount)
    proc = Proc([sys.executable, "-m", "anomalyclip.cli", "watch", str(video), "--checkpoint",
                 str(run_dir), "--out", str(out), "--threshold", "0", "--save-clips",
                 "--status-every", "0"])  # fmt: skip
    assert proc.wait(STARTUP) == 0, proc.tail()
    proc.wait_for("summary output clips", 10)
    printed = [json.loads(x) for x in proc.out if x.startswith("{")]
    assert (out / "events.jsonl").read_text() == before  # nothing partial was left
    kinds = [e["kind"] for e in printed]
    assert kinds[0] == "opened" and kinds[-1] == "closed" and kinds.count("clip") == 1
    (clip,) = [e for e in printed if e["kind"] == "clip"]
    assert clip["clip"] is None and clip["clip_error"] == "No space left on device"
    assert not any("Traceback" in line for line in proc.err), proc.tail()
    warned = [line for line in proc.err if "events.jsonl: a line could not be written" in line]
    assert len(warned) == 1 and "No space left on device" in warned[0]
    summary = f"summary output events.jsonl: written 0, unwritten {len(printed)}"
    assert summary in proc.err and f"summary output stdout: written {len(printed)}, unwritten 0" \
        in proc.err  # fmt: skip
    assert sorted(os.listdir(out / "clips")) == []  # a failed clip leaves no file


def test_the_clip_ring_keeps_the_newest_frames_within_its_byte_cap():
    one = np.zeros((120, 160, 3), np.uint8).nbytes
    ring = FrameRing(seconds=100.0, max_bytes=10 * one)
    for i in range(50):
        ring.add(i * 0.25, np.full((120, 160, 3), i, np.uint8))
    kept = ring.since(-1.0)
    assert [t for t, _ in kept] == [i * 0.25 for i in range(40, 50)]  # the newest 10
    assert [int(image[0, 0, 0]) for _, image in kept] == list(range(40, 50))
    assert sum(image.nbytes for _, image in kept) <= 10 * one
    ring = FrameRing(seconds=1.0, max_bytes=1 << 30)  # and the time bound
    for i in range(50):
        ring.add(i * 0.25, np.zeros((120, 160, 3), np.uint8))
    assert [t for t, _ in ring.since(-1.0)] == [11.25, 11.5, 11.75, 12.0, 12.25]
    assert ring.since(12.0) == ring.since(-1.0)[-1:]
    # frames are kept downscaled to 480 px on the longer side, in even sizes (x264, yuv420p)
    assert ring.target_size(1920, 1080) == (480, 270) and ring.target_size(641, 361) == (480, 270)
    assert ring.target_size(320, 240) == (320, 240)


class Receiver:
    """A webhook receiver on 127.0.0.1: answers ``status``; with ``gate`` set to an Event,
    each request waits for it before answering. Records bodies, paths, auth headers."""

    def __init__(self, status: int = 200, gate: threading.Event | None = None) -> None:
        self.bodies, self.paths, self.auth = [], [], []
        self.arrived = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the handler API's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.paths.append(self.path)
                receiver.auth.append(self.headers.get("Authorization"))
                receiver.arrived.set()
                if gate is not None:
                    gate.wait(60)
                if status == 200:
                    receiver.bodies.append(json.loads(body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def line(i: int) -> tuple[dict, str]:
    record = {"kind": "opened", "source": "cam", "n": i}
    return record, json.dumps(record)


def test_webhook_credentials_go_as_basic_auth_and_are_never_shown(caplog):
    receiver = Receiver()
    url = f"http://hookuser:h00k%40SECRET@127.0.0.1:{receiver.port}/events?site=3"
    hook = Webhook(WebhookConfig(url, retries=0))
    hook.start()
    hook.write(*line(0))
    hook.close()
    receiver.close()
    assert hook.report() == {"sent": 1, "failed": 0, "dropped": 0, "unsent": 0}
    assert receiver.auth == ["Basic " + base64.b64encode(b"hookuser:h00k@SECRET").decode()]
    assert receiver.paths == ["/events?site=3"] and receiver.bodies == [line(0)[0]]
    # a receiver that is gone: the warning names the hook, masked
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    hook = Webhook(WebhookConfig(f"http://hookuser:h00k%40SECRET@127.0.0.1:{closed}/", retries=0))
    hook.start()
    with caplog.at_level(logging.DEBUG):
        hook.write(*line(1))
        hook.close()
    assert hook.report()["failed"] == 1
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert f"webhook http://hookuser:***@127.0.0.1:{closed}/: gave up" in warning
    assert not any("SECRET" in r.getMessage() for r in caplog.records)


def test_webhook_gives_up_after_its_retries_and_counts(caplog):
    receiver = Receiver(status=503)
    hook = Webhook(WebhookConfig(f"http://127.0.0.1:{receiver.port}/", retries=2, backoff=0.01))
    hook.start()
    with caplog.at_level(logging.WARNING):
        for i in range(3):
            hook.write(*line(i))
        hook.close()
    receiver.close()
    assert hook.report() == {"sent": 0, "failed": 3, "dropped": 0, "unsent": 0}
    assert len(receiver.paths) == 9  # each line: the first attempt and 2 retries
    assert sum("gave up on a opened line after 3 attempts (HTTP 503" in r.getMessage()
               for r in caplog.records) == 3  # fmt: skip


def test_webhook_queue_drops_its_oldest_when_full():
    gate = threading.Event()
    receiver = Receiver(gate=gate)
    hook = Webhook(WebhookConfig(f"http://127.0.0.1:{receiver.port}/", queue=3, retries=0))
    hook.start()
    hook.write(*line(0))
    assert receiver.arrived.wait(30)  # line 0 is in flight, held by the receiver
    for i in range(1, 10):
        hook.write(*line(i))  # never blocks: 1..6 are dropped, 7, 8, 9 wait
    gate.set()
    hook.close()
    receiver.close()
    assert hook.report() == {"sent": 4, "failed": 0, "dropped": 6, "unsent": 0}
    assert [b["n"] for b in receiver.bodies] == [0, 7, 8, 9]


def test_webhook_lines_still_queued_at_exit_are_counted_and_said(caplog):
    gate = threading.Event()  # never opened while the hook runs: a receiver that hangs
    receiver = Receiver(gate=gate)
    cfg = WebhookConfig(f"http://127.0.0.1:{receiver.port}/", retries=0, timeout=60, drain=0.5)
    hook = Webhook(cfg)
    hook.start()
    try:
        hook.write(*line(0))
        assert receiver.arrived.wait(30)
        for i in range(1, 4):
            hook.write(*line(i))
        with caplog.at_level(logging.WARNING):
            hook.close()  # half a second to drain, then the request in flight is cut
        assert not hook.is_alive()
        assert hook.report() == {"sent": 0, "failed": 0, "dropped": 0, "unsent": 4}
        assert any("4 lines not delivered (still queued at exit)" in r.getMessage()
                   for r in caplog.records)  # fmt: skip
    finally:
        gate.set()
        receiver.close()


class Drip:
    """A receiver that reads the request, then answers one byte every half second: each read
    of the sender gets data well within any per-read timeout, and the reply never ends."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.stop = threading.Event()
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 10000:
                if self.stop.wait(0.5):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.mark.slow
def test_a_receiver_that_drips_cannot_hold_the_webhook():
    """Deadline 1 s per request, one retry: the line is given up after two cut-off requests
    (a few seconds; the bound below leaves a busy machine ample room)."""
    drip = Drip()
    cfg = WebhookConfig(f"http://127.0.0.1:{drip.port}/", retries=1, backoff=0.1, timeout=1.0,
                        drain=60.0)  # fmt: skip
    hook = Webhook(cfg)
    hook.start()
    try:
        hook.write(*line(0))
        hook.close()  # returns once the line is delivered or given up (60 s at most)
        assert not hook.is_alive()
        assert hook.report() == {"sent": 0, "failed": 1, "dropped": 0, "unsent": 0}
        assert drip.connections == 2
    finally:
        drip.close()
