"""``anomaly watch --metrics``: Prometheus metrics, scraped over HTTP from 127.0.0.1 and read
with Prometheus' own text parser, against what the watch says in its summary line.

The stream is the demo-style event video sent live over HTTP by the real sender
(``tests/support/stream_sender.py``, played once): once it has ended, the watch's counters stand
still while it waits for the camera to come back, so a scrape then must give exactly the
numbers the summary line prints at exit.
"""

from __future__ import annotations

import io
import re
import time

import pytest
from services import scrape
from synthetic_stores import quick_run
from watch_helpers import closed, event_video, free_port, read_events, sender, watch

from anomalyclip.errors import AnomalyError
from anomalyclip.events import EventConfig
from anomalyclip.live.config import WatchConfig
from anomalyclip.live.metrics import listen_address
from anomalyclip.live.watch import Watcher, load_for_watch, run_sampling

STARTUP = 180


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_clip):
    return quick_run(tmp_path_factory.mktemp("run"), tiny_clip, epochs=1, n_each=4)[1]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return event_video(tmp_path_factory.mktemp("video"))


def summary_counts(lines: list[str], label: str) -> dict[str, int]:
    line = next(x for x in lines if x.startswith(f"summary {label}:"))
    parts = (re.fullmatch(r"([a-z ]+?) (\d+)", p) for p in line.split(": ", 1)[1].split(", "))
    return {m.group(1).replace(" ", "_"): int(m.group(2)) for m in parts if m}


def value(samples: dict, name: str, **labels) -> float:
    return samples[name][frozenset(labels.items())]


@pytest.mark.slow
def test_metrics_match_the_summary_line(run_dir, video, tmp_path):
    port, metrics = free_port(), free_port()
    send = sender("http", video, port, "--once")
    url = f"http://127.0.0.1:{port}/cam"
    camera = f"127.0.0.1_{port}_cam"
    proc = watch([url], run_dir, tmp_path, 0.0, "--drop", "none", "--metrics", str(metrics))
    seen_up = False
    try:
        assert proc.wait_for(rf"metrics on http://127\.0\.0\.1:{metrics}/metrics", STARTUP), \
            proc.tail()  # fmt: skip
        deadline = time.monotonic() + STARTUP
        while not proc.wait_for("stream lost", 0.2) and time.monotonic() < deadline:
            samples = scrape(metrics)
            seen_up |= value(samples, "anomalyclip_source_up", camera=camera) == 1.0
        assert proc.wait_for("stream lost", 1), proc.tail()
        time.sleep(1.0)  # the break is handled: the open event is closed and counted
        samples = scrape(metrics)
        assert proc.finish() == 0
    finally:
        send.kill()
        proc.kill()
    assert seen_up  # while the stream played
    counts = summary_counts(proc.err, url)
    frames = {stage: value(samples, "anomalyclip_frames_total", camera=camera, stage=stage)
              for stage in ("decoded", "sampled", "scored", "dropped", "corrupt")}  # fmt: skip
    assert frames == {stage: counts[stage] for stage in frames}
    assert frames["scored"] == 90 and frames["dropped"] == 0
    assert value(samples, "anomalyclip_source_up", camera=camera) == 0.0  # reconnecting now
    assert 1 <= value(samples, "anomalyclip_reconnects_total", camera=camera) <= \
        counts["reconnects"]  # fmt: skip
    assert value(samples, "anomalyclip_lag_seconds_count", camera=camera) == counts["scored"]
    assert value(samples, "anomalyclip_lag_seconds_bucket", camera=camera, le="+Inf") == 90
    assert value(samples, "anomalyclip_threshold", camera=camera) == 0.0
    events = closed(read_events(tmp_path / "events.jsonl"))
    by_class = samples["anomalyclip_events_total"]
    assert sum(by_class.values()) == len(events) == 1
    assert value(samples, "anomalyclip_events_total", camera=camera,
                 **{"class": events[0]["class"]}) == 1  # fmt: skip
    clip_batches = value(samples, "anomalyclip_model_batch_seconds_count", part="clip")
    assert 90 / 32 <= clip_batches <= 90
    assert value(samples, "anomalyclip_model_batch_seconds_count", part="temporal") >= 1
    written = value(samples, "anomalyclip_output_total", output="events.jsonl",
                    outcome="written")  # fmt: skip
    assert written == len(read_events(tmp_path / "events.jsonl")) - 1  # the gap line came later


def test_each_watch_has_a_registry_of_its_own(run_dir, video, tmp_path):
    """Two watches in one process export side by side, each its own numbers (the process-wide
    default registry would refuse the second's metrics as duplicates)."""
    model, encoder, config = load_for_watch(run_dir, None, "cpu")
    sinks = []
    for k in range(2):
        cfg = WatchConfig(EventConfig(0.5 + k / 10), out=tmp_path / str(k), status_every=0,
                          metrics="127.0.0.1:0")  # fmt: skip
        watcher = Watcher([video], model, encoder, run_sampling(config, run_dir), cfg,
                          io.StringIO())  # fmt: skip
        (metrics,) = [s for s in watcher.sinks if s.name == "metrics"]
        metrics.start()
        sinks.append(metrics)
    try:
        thresholds = [value(scrape(m.port), "anomalyclip_threshold", camera="event") for m in sinks]
    finally:
        for m in sinks:
            m.close()
    assert thresholds == [0.5, 0.6]


def test_metrics_listen_on_the_loopback_unless_told_otherwise():
    assert listen_address("9108") == ("127.0.0.1", 9108)
    assert listen_address("127.0.0.1:9108") == ("127.0.0.1", 9108)
    assert listen_address("0.0.0.0:9108") == ("0.0.0.0", 9108)  # only when written out
    assert listen_address("[::1]:9108") == ("::1", 9108)
    for bad in ("x", "127.0.0.1:", "host:99999", ""):
        with pytest.raises(AnomalyError, match="expected \\[HOST:\\]PORT"):
            listen_address(bad)
