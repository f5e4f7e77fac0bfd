"""``anomaly watch`` on real streams over the loopback (127.0.0.1 only), against offline scoring.

The stream is a demo-style video with a planted explosion, encoded as H.264 in MPEG-TS the
way cameras send it (keyframe every second, no B-frames) and sent by a separate process
(``tests/support/stream_sender.py``) in real time (x3) over UDP, HTTP and RTSP (TCP-interleaved and
UDP RTP, ``tests/support/rtsp_server.py``). The watcher decodes what arrives, so everything the
field throws at a receiver is really exercised: probing a stream joined live, packets that
arrive over time, a sender that dies, garbage datagrams, a new frame size mid-stream.

The run is a short training on planted features (``synthetic_stores.quick_run``): what it detects
in real video is arbitrary, and the tests do not ask it to be right; they ask live scoring to
give what offline ``predict`` gives on the same frames. So the decision threshold is chosen
on the offline curve where no frame's p(A) lies within ``margin`` of it (or of its exit
threshold): live scores that stay within ``margin`` of offline ones must then give exactly
the offline events, and the tests check both halves (the curve distance, then the events).

This run's temporal model depends little on context (one epoch on planted features), so its
live and offline curves are close; a well-trained model's differ more, by the causal context
alone, which ``anomaly bench watch --agreement`` measures on the demo (README). That the
windows are the right ones is checked with a score that depends on every row of its window
in ``tests/unit/live/test_watch_window.py``.
"""

from __future__ import annotations

import io
import json
import re
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import av
import numpy as np
import pytest
from synthetic_stores import quick_run
from watch_helpers import (
    assert_events_match,
    closed,
    free_port,
    offline,
    read_events,
    sender,
    stable_threshold,
    udp_bound,
    watch,
)

from anomalyclip.events import Event, EventConfig
from anomalyclip.live.config import ReadConfig, WatchConfig
from anomalyclip.live.watch import Watcher, load_for_watch, run_sampling
from anomalyclip.synthetic import render_scene

SPEED = "3"
FPS = 15
STARTUP = 180  # seconds a process may take to start (imports torch; CI machines are busy)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_clip):
    # the paper's 32 x 16 grids: after one epoch their scores rise on the event video
    tmp = tmp_path_factory.mktemp("watch-run")
    return quick_run(tmp, tiny_clip, epochs=1, n_each=4, grid=(32, 16))[1]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    from stream_sender import encode_ts

    folder = tmp_path_factory.mktemp("watch-videos")
    event, _ = render_scene("Explosion", np.random.default_rng(5), 90, (160, 120))
    first, _ = render_scene("Normal", np.random.default_rng(6), 45, (160, 120))
    second, _ = render_scene("Intruder", np.random.default_rng(7), 45, (224, 168))
    return {
        "event": encode_ts(folder / "event.ts", [event]),
        "resize": encode_ts(folder / "resize.ts", [first, second]),  # 160x120, then 224x168
    }


@pytest.fixture(scope="module")
def reference(run_dir, videos):
    p = offline(run_dir, videos["event"], 0.5)["p"]
    threshold, margin = stable_threshold(p)
    ref = offline(run_dir, videos["event"], threshold)
    assert ref["events"], "the threshold must give events to compare"
    return {**ref, "threshold": threshold, "margin": margin}


def in_process_watch(run_dir, sources, out, threshold, read=ReadConfig(), encoder_hook=None):
    model, encoder, config = load_for_watch(run_dir, None, "cpu")
    if encoder_hook is not None:
        encoder = encoder_hook(encoder)
    cfg = WatchConfig(EventConfig(threshold), out=out, hop=0.5, status_every=0, read=read)
    watcher = Watcher(sources, model, encoder, run_sampling(config, run_dir), cfg, io.StringIO())
    rows = []
    watcher.on_rows = lambda *args: rows.append(args)
    summary = watcher.run()
    return summary, rows


@pytest.mark.slow
def test_file_watched_live_gives_the_offline_events(run_dir, videos, reference, tmp_path):
    summary, rows = in_process_watch(run_dir, [videos["event"]], tmp_path, reference["threshold"])
    frames = np.concatenate([r[1] for r in rows])
    times = np.concatenate([r[2] for r in rows])
    p = np.concatenate([r[3] for r in rows])
    # the same frames, numbered and timed as offline extraction does
    np.testing.assert_array_equal(frames, reference["frames"])
    np.testing.assert_array_equal(times, reference["times"])
    distance = float(np.abs(p - reference["p"]).max())
    assert distance < reference["margin"], (distance, reference["margin"])
    events = read_events(tmp_path / "events.jsonl")
    keys = set(Event("s", 0, 1, 0, 1, 1, 0, 1, "x", 1, [("x", 1)]).to_dict())
    assert all({"kind", "source", "reported_at"} | keys <= set(e) for e in events)
    assert {e["kind"] for e in events} <= {"opened", "updated", "closed"}
    assert_events_match(closed(events), reference["events"], tol=1e-9)
    # every event opened before it closed, and each update only grew it
    for ref in reference["events"]:
        mine = [e for e in events if e["start_frame"] == ref["start_frame"]]
        assert mine[0]["kind"] == "opened" and mine[-1]["kind"] == "closed"
        assert all(a["end_time"] <= b["end_time"] for a, b in zip(mine, mine[1:], strict=False))
    assert summary["scored"] == len(reference["p"]) and summary["dropped"] == 0


def test_realtime_pacing_changes_when_not_what(run_dir, videos, reference, tmp_path):
    read = ReadConfig(realtime=True, speed=6.0)
    t0 = time.monotonic()
    summary, rows = in_process_watch(run_dir, [videos["event"]], tmp_path, 0.5, read)
    duration = len(reference["p"]) / FPS / 6.0
    assert time.monotonic() - t0 >= 0.9 * duration  # paced at 6x the video's own rate
    p = np.concatenate([r[3] for r in rows])
    assert float(np.abs(p - reference["p"]).max()) < reference["margin"]
    assert summary["dropped"] == 0


class HeldEncoder:
    """The image tower, held at its first batch until ``release()`` is true: a model that
    falls behind by as much as the test decides, whatever the machine's speed."""

    def __init__(self, encoder, release):
        self.inner, self.dim, self.release = encoder, encoder.dim, release
        self.first: int | None = None  # frames in the batch that was held

    def __call__(self, pixels):
        if self.first is None:
            self.first = len(pixels)
            deadline = time.monotonic() + 120
            while not self.release() and time.monotonic() < deadline:
                time.sleep(0.01)
        return self.inner(pixels)


def test_falling_behind_drops_by_policy_and_stays_bounded(run_dir, videos, tmp_path):
    """The model is held at its first batch while the reader goes on (90 frames, a queue
    of 8). ``oldest``: the reader never waits; the queue keeps the newest 8 frames, the
    older ones are dropped and counted, and what is scored after the hold is the newest
    (the lag is bounded by the queue). ``none``: the reader waits for room (memory bounded
    by the queue); nothing is lost, every frame is scored in order behind the backlog."""
    model, encoder, config = load_for_watch(run_dir, None, "cpu")
    for drop in ("oldest", "none"):
        cfg = WatchConfig(EventConfig(0.5), out=tmp_path / drop, hop=0.5, status_every=0,
                          read=ReadConfig(drop=drop, queue=8))  # fmt: skip
        watcher = Watcher([videos["event"]], model, encoder, run_sampling(config, run_dir), cfg,
                          io.StringIO())  # fmt: skip
        (stream,) = watcher.streams
        waiting = []

        def release(stream=stream, drop=drop, waiting=waiting) -> bool:
            done = stream.stats.state == "ended" if drop == "oldest" else len(stream.queue) >= 8
            if done:
                waiting.append(len(stream.queue))
            return done

        watcher.encoder = held = HeldEncoder(encoder, release)
        rows = []
        watcher.on_rows = lambda *args, rows=rows: rows.append(args)
        summary = watcher.run()
        (src,) = summary["sources"].values()
        frames = np.concatenate([r[1] for r in rows]).tolist()
        assert src["sampled"] == 90 and src["scored"] + src["dropped"] == 90  # all counted
        k = held.first
        if drop == "oldest":
            assert 1 <= k <= 8 and waiting[0] == 8 + 1  # the newest 8 frames and "ended"
            assert frames == list(range(k)) + list(range(82, 90))
            assert src["dropped"] == 90 - k - 8
        else:
            assert waiting[0] == 8 and src["dropped"] == 0 and frames == list(range(90))
        assert 0 <= src["lag_p50_s"] <= src["lag_p99_s"] < float("inf")


@pytest.fixture(scope="module")
def streams(run_dir, videos, reference, tmp_path_factory):
    """One watch process over five live sources at once (one batched CLIP forward for all):
    clean UDP, HTTP, RTSP over TCP, UDP with garbage, HTTP with a resolution change; RTSP
    over UDP in a second process (the transport is a process option). Runs until every
    stream has played and been lost, then SIGINT."""
    out = tmp_path_factory.mktemp("streams")
    ports = {name: free_port() for name in ("http", "rtsp_tcp", "rtsp_udp", "resize")}
    ports["udp"] = free_port(2)
    ports["garbage"] = free_port(2)
    senders = [
        sender("http", videos["event"], ports["http"], "--speed", SPEED, "--once"),
        sender("rtsp", videos["event"], ports["rtsp_tcp"], "--speed", SPEED, "--once"),
        sender("rtsp", videos["event"], ports["rtsp_udp"], "--speed", SPEED, "--once"),
        sender("http", videos["resize"], ports["resize"], "--speed", SPEED, "--once"),
    ]
    urls = {
        "udp": f"udp://127.0.0.1:{ports['udp']}",
        "http": f"http://127.0.0.1:{ports['http']}/cam",
        "rtsp_tcp": f"rtsp://127.0.0.1:{ports['rtsp_tcp']}/cam",
        "garbage": f"udp://127.0.0.1:{ports['garbage']}",
        "resize": f"http://127.0.0.1:{ports['resize']}/cam",
    }
    main = watch(list(urls.values()), run_dir, out, reference["threshold"], "--drop", "none")
    # the RTSP-over-UDP source needs its own watcher option; it runs beside, in a second one
    rtsp_udp_url = f"rtsp://127.0.0.1:{ports['rtsp_udp']}/cam"
    side = watch([rtsp_udp_url], run_dir, out / "rtsp_udp", reference["threshold"],
                 "--rtsp-transport", "udp", "--drop", "none")  # fmt: skip
    try:
        deadline = time.monotonic() + STARTUP
        while not (udp_bound(ports["udp"]) and udp_bound(ports["garbage"])):
            assert time.monotonic() < deadline and main.p.poll() is None, main.tail()
            time.sleep(0.1)
        senders.append(sender("udp", videos["event"], ports["udp"], "--speed", SPEED))
        senders.append(
            sender("udp", videos["event"], ports["garbage"], "--speed", SPEED, "--garbage", "6")
        )
        assert main.wait_for(r"stream lost", STARTUP, count=len(urls)), main.tail()
        assert side.wait_for(r"stream lost", STARTUP), side.tail()
        codes = main.finish(), side.finish()
    finally:
        for proc in [*senders, main, side]:
            proc.kill()
    return {"out": out, "urls": {**urls, "rtsp_udp": rtsp_udp_url}, "codes": codes,
            "main": main, "side": side}  # fmt: skip


def summary_of(proc, url: str) -> dict:
    """The counters of ``url`` in the watch's closing ``summary`` line on stderr."""
    line = next(x for x in proc.err if x.startswith(f"summary {url}:"))
    counts = {}
    for part in line.split(": ", 1)[1].split(", "):
        m = re.fullmatch(r"([a-z ]+?) (\d+)", part)
        if m:
            counts[m.group(1).replace(" ", "_")] = int(m.group(2))
    return counts


@pytest.mark.slow
@pytest.mark.parametrize("name", ["udp", "http", "rtsp_tcp", "rtsp_udp"])
def test_live_streams_give_the_offline_events(streams, reference, name):
    assert streams["codes"] == (0, 0)
    url = streams["urls"][name]
    proc = streams["side"] if name == "rtsp_udp" else streams["main"]
    out = streams["out"] / "rtsp_udp" if name == "rtsp_udp" else streams["out"]
    events = read_events(out / "events.jsonl")
    stats = summary_of(proc, url)
    assert stats["dropped"] == 0  # --drop none: the reader waits, it never drops
    assert any(line.startswith(f"status {url}:") for line in proc.err)
    if name in ("udp", "rtsp_udp") and stats["corrupt"]:
        # datagrams lost (a machine too busy to read its socket in time) are counted as
        # corrupt packets, and scoring goes on; the comparison needs every frame
        assert stats["scored"] >= 0.6 * len(reference["p"]), stats
        return
    # every frame arrived and was scored (RTSP may hold back the very last one)
    assert len(reference["p"]) - 1 <= stats["scored"] <= len(reference["p"]), stats
    assert stats["corrupt"] == 0
    # a live stream is timed from its own first frame: compare on the offline timeline
    assert_events_match(closed(events, url), reference["events"], tol=1.0 / FPS + 1e-6)
    # the end of the stream is a break: reported at exit as a gap that never closed
    (gap,) = [e for e in events if e["kind"] == "gap" and e["source"] == url]
    assert gap["end"] is None and gap["start"] == pytest.approx(reference["times"][-1], abs=0.1)


def test_garbage_in_a_udp_stream_never_ends_the_watch(streams, reference):
    url = streams["urls"]["garbage"]
    stats = summary_of(streams["main"], url)
    assert stats["corrupt"] > 0  # the garbage was seen ...
    assert stats["scored"] >= 0.6 * len(reference["p"]), stats  # ... and scoring went on
    assert streams["codes"][0] == 0


def test_a_resolution_change_mid_stream_is_scored_through(streams):
    url = streams["urls"]["resize"]
    stats = summary_of(streams["main"], url)
    assert stats["resolution_changes"] == 1
    assert stats["scored"] == 90 and stats["dropped"] == 0, stats


@pytest.mark.slow
def test_sender_killed_and_restarted(run_dir, videos, tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/cam"
    started = time.monotonic()
    proc = watch([url], run_dir, tmp_path, 0.5, "--drop", "none")
    first = sender("http", videos["event"], port, "--speed", "1")
    second = None
    try:
        assert proc.wait_for(rf"status {re.escape(url)}: streaming, in [1-9]", STARTUP), proc.tail()
        first.kill()  # mid-stream
        assert proc.wait_for("stream lost", 60), proc.tail()
        lost = time.monotonic()  # the last frame before the break came before this
        time.sleep(1.5)
        restarted = time.monotonic()  # the first frame after the break comes after this
        second = sender("http", videos["event"], port, "--speed", SPEED)
        assert proc.wait_for(r'"kind": "gap"', 60, where="out"), proc.tail()
        seen = time.monotonic()
        assert proc.wait_for(r"stream lost", 60, count=2), proc.tail()  # played to its end
        assert proc.finish() == 0
    finally:
        for p in (first, second, proc):
            if p is not None:
                p.kill()
    events = read_events(tmp_path / "events.jsonl")
    gap = next(e for e in events if e["kind"] == "gap")
    # the gap's wall time spans the outage, on any machine: at least from the break being
    # noticed to the new sender, at most the whole run; the stream's time jumps by as much
    assert restarted - lost <= gap["seconds"] <= seen - started
    assert gap["end"] - gap["start"] == pytest.approx(gap["seconds"], abs=1 / FPS + 1e-6)
    stats = summary_of(proc, url)
    assert stats["gaps"] == 1 and stats["scored"] > 90  # scoring went on after the gap


@pytest.mark.slow
def test_sigterm_during_an_open_event(run_dir, videos, tmp_path):
    """Threshold 0: every row is abnormal, so an event opens and never closes by itself."""
    port = free_port(2)
    url = f"udp://127.0.0.1:{port}"
    proc = watch([url], run_dir, tmp_path, 0.0, "--drop", "none")
    send = None
    try:
        deadline = time.monotonic() + STARTUP
        while not udp_bound(port):
            assert time.monotonic() < deadline and proc.p.poll() is None, proc.tail()
            time.sleep(0.1)
        send = sender("udp", videos["event"], port, "--speed", "1", "--loop")
        assert proc.wait_for(r'"kind": "opened"', 60, where="out"), proc.tail()
        assert proc.finish(signal.SIGTERM) == 0
    finally:
        for p in (send, proc):
            if p is not None:
                p.kill()
    events = read_events(tmp_path / "events.jsonl")
    assert [e["kind"] for e in events][0] == "opened" and events[-1]["kind"] == "closed"
    assert events[-1]["start_frame"] == events[0]["start_frame"] == 0
    assert events[-1]["end_time"] >= events[0]["end_time"]
    assert summary_of(proc, url)["scored"] == events[-1]["end_frame"]  # closed at its last row


class Hook(BaseHTTPRequestHandler):
    """A webhook receiver that fails its first two requests (HTTP 503)."""

    received: list[dict] = []
    calls = 0

    def do_POST(self) -> None:  # noqa: N802 (the handler API's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).calls += 1
        if type(self).calls <= 2:
            self.send_response(503)
        else:
            type(self).received.append(json.loads(body))
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.mark.slow
def test_webhook_retries_and_event_clips(run_dir, videos, reference, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/events"
    try:
        proc = watch([str(videos["event"])], run_dir, tmp_path, reference["threshold"],
                     "--webhook", hook, "--save-clips")  # fmt: skip
        assert proc.wait(STARTUP) == 0, proc.tail()
    finally:
        server.shutdown()
    lines = read_events(tmp_path / "events.jsonl")
    assert Hook.received == lines and Hook.calls == len(lines) + 2  # delivered after retries
    printed = [json.loads(x) for x in proc.out if x.startswith("{")]
    assert printed == lines  # stdout carries the same lines
    clips = {e["start_frame"]: e for e in lines if e["kind"] == "clip"}
    assert sorted(clips) == [e["start_frame"] for e in closed(lines)]  # a clip line per event
    for event in closed(lines):
        clip_line = clips[event["start_frame"]]
        assert "clip_error" not in clip_line and "clip_error" not in event
        with av.open(clip_line["clip"]) as clip:
            n = sum(1 for _ in clip.decode(video=0))
        assert n == clip_line["frames"]
        # the event's frames and up to 2 s of pre- and post-roll, clipped to the video
        start = max(0.0, event["start_time"] - 2.0)
        end = min(reference["times"][-1] + 1 / FPS, event["end_time"] + 2.0)
        assert abs(n - round((end - start) * FPS)) <= 2, (n, start, end)


@pytest.mark.slow
def test_predict_takes_folders_and_lists(run_dir, videos, tmp_path):
    """A list naming a folder: the folder's videos (one with a suffix no table knows),
    not its notes."""
    import shutil

    from anomalyclip.evaluate.predict import predict

    cams = tmp_path / "cams"
    cams.mkdir()
    shutil.copy(videos["event"], cams / "north.mts")
    shutil.copy(videos["event"], cams / "south.dav")
    (cams / "notes.txt").write_text("the north gate\n")
    listing = tmp_path / "todo.txt"
    listing.write_text("# tonight's exports\ncams\n")
    results, failed = predict([str(listing)], run_dir, tmp_path / "out")
    assert failed == {} and sorted(r.source.name for r in results) == ["north.mts", "south.dav"]
    assert all(r.frames == 90 for r in results)
