"""``anomaly watch --mqtt``: the change-feed on a real broker (Debian's mosquitto on 127.0.0.1,
``tests/support/services.py``), read by a real subscriber (paho).

The watch runs as a process on a demo-style video played live (``--realtime``): what the
subscriber gets is checked against what ``predict`` writes for the same video, message by
message against the watch's own ``events.jsonl``, and through what an operator meets: the
watch killed (the broker's last will), the broker stopped and restarted mid-run (scoring goes
on, nothing is lost), a feed with nowhere to go (bounded, drops counted), credentials (sent,
never shown). As in ``tests/live/test_watch_live.py``, the run is a short training on planted
features and the decision threshold is set where no p(A) of the offline curve lies near it,
so live and offline events are the same events.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from services import Mosquitto, Subscriber, retained
from synthetic_stores import quick_run
from watch_helpers import (
    assert_events_match,
    event_video,
    offline,
    read_events,
    stable_threshold,
    watch,
)

# every test runs a real broker (mosquitto) and waits for what it delivers: slow
pytestmark = pytest.mark.slow

STARTUP = 180  # seconds a watch process may take to start (imports torch on a busy machine)
FPS = 15
EVENT_KINDS = {"opened": "new", "updated": "update", "closed": "end"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_clip):
    # the paper's 32 x 16 grids: after one epoch their scores rise on the event video
    return quick_run(tmp_path_factory.mktemp("run"), tiny_clip, epochs=1, n_each=4,
                     grid=(32, 16))[1]  # fmt: skip


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return event_video(tmp_path_factory.mktemp("video"))


def long_video(folder: Path, seconds: int) -> Path:
    """``seconds`` of a demo-style normal scene, 15 fps, 160x120, MPEG-TS."""
    from stream_sender import encode_ts

    from anomalyclip.synthetic import render_scene

    frames, _ = render_scene("Normal", np.random.default_rng(11), seconds * FPS, (160, 120))
    return encode_ts(Path(folder) / "long.ts", [frames])


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker").start()
    yield b
    b.stop()


def feed_by_id(messages: list[str]) -> dict[str, list[dict]]:
    by_id: dict[str, list[dict]] = {}
    for text in messages:
        body = json.loads(text)
        by_id.setdefault(body["id"], []).append(body)
    return by_id


def test_the_change_feed_of_a_video_played_live_is_what_predict_finds(run_dir, video, broker,
                                                                       tmp_path):  # fmt: skip
    from anomalyclip.evaluate.predict import PredictConfig, predict

    threshold, margin = stable_threshold(offline(run_dir, video, 0.5)["p"])
    config = PredictConfig(threshold=threshold)
    predicted, failed = predict([video], run_dir, tmp_path / "predict", config)
    assert not failed and predicted[0].events, "the threshold must give events to compare"
    reference = json.loads(predicted[0].events_file.read_text())
    sub = Subscriber(broker, "site/#")
    proc = watch([str(video)], run_dir, tmp_path / "out", threshold, "--realtime",
                 "--precision", "fp32", "--mqtt", broker.url("/site"))  # fmt: skip
    try:
        assert proc.wait(STARTUP) == 0, proc.tail()
        assert sub.wait_for("site/available", "offline", 30)
    finally:
        proc.kill()
        sub.close()
    by_id = feed_by_id(sub.on("site/event/events"))
    assert len(by_id) == len(reference)
    ends = []
    for event_id, bodies in by_id.items():
        types = [b["type"] for b in bodies]
        assert types[0] == "new" and types[-1] == "end" and set(types[1:-1]) <= {"update"}, types
        assert types.count("new") == types.count("end") == 1
        assert event_id.startswith("event-") and {b["camera"] for b in bodies} == {"event"}
        ends.append(bodies[-1])
    # the events predict writes, within the live/offline difference (here: none, see above)
    ends.sort(key=lambda e: e["start_time"])
    assert_events_match(ends, reference, tol=1.0 / FPS + 1e-6)
    for end, ref in zip(ends, reference, strict=True):
        assert set(ref) <= set(end)  # every field predict reports
    # one message per line of events.jsonl, in order, nothing dropped
    lines = [e for e in read_events(tmp_path / "out" / "events.jsonl") if e["kind"] in EVENT_KINDS]
    got = [json.loads(m) for m in sub.on("site/event/events")]
    assert [(g["type"], g["reported_at"]) for g in got] == [
        (EVENT_KINDS[e["kind"]], e["reported_at"]) for e in lines]  # fmt: skip
    assert f"summary output mqtt: sent {len(sub.messages)}, dropped 0, unsent 0" in proc.err
    assert "online" in sub.on("site/event/state")
    assert sub.on("site/available")[0] == "online"
    # a clean exit: offline, retained, for the watch and its camera
    assert retained(broker, "site/available") == "offline"
    assert retained(broker, "site/event/state") == "offline"


def test_the_last_will_says_offline_when_the_watch_is_killed(run_dir, broker, tmp_path):
    source = long_video(tmp_path, 60)
    sub = Subscriber(broker)
    proc = watch([str(source)], run_dir, tmp_path / "out", None, "--realtime",
                 "--mqtt", broker.url())  # fmt: skip
    try:
        assert sub.wait_for("anomalyclip/long/state", "online", STARTUP), proc.tail()
        assert retained(broker, "anomalyclip/available") == "online"
        proc.p.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert sub.wait_for("anomalyclip/available", "offline", 30)  # the broker's last will
    finally:
        proc.kill()
        sub.close()
    assert sub.on("anomalyclip/available") == ["online", "offline"]
    assert retained(broker, "anomalyclip/available") == "offline"


def test_a_broker_restarted_mid_run_loses_nothing(run_dir, tmp_path):
    """Threshold 0: one event open all along, an ``update`` every second. The broker is stopped
    for 5 s and started again (with persistence, as a production broker runs, so that the
    subscriber's session survives): scoring goes on meanwhile, the watch reconnects, and
    every line of ``events.jsonl`` reaches the subscriber."""
    source = long_video(tmp_path, 30)
    broker = Mosquitto(tmp_path / "broker", persistence=True).start()
    sub = Subscriber(broker, client_id="restart-test")
    proc = watch([str(source)], run_dir, tmp_path / "out", 0.0, "--realtime",
                 "--mqtt", broker.url())  # fmt: skip
    events = tmp_path / "out" / "events.jsonl"
    try:
        assert sub.wait_for("anomalyclip/long/events", None, STARTUP), proc.tail()
        time.sleep(2)
        broker.stop()
        at_stop = len(read_events(events))
        time.sleep(5)
        assert len(read_events(events)) > at_stop  # scoring went on without the broker
        broker.start()
        assert proc.wait(STARTUP) == 0, proc.tail()
        assert sub.wait_for("anomalyclip/available", "offline", 30)
    finally:
        proc.kill()
        sub.close()
        broker.stop()
    lines = [e for e in read_events(events) if e["kind"] in EVENT_KINDS]
    bodies = map(json.loads, sub.on("anomalyclip/long/events"))
    got = {(b["type"], b["reported_at"]) for b in bodies}
    assert got == {(EVENT_KINDS[e["kind"]], e["reported_at"]) for e in lines}
    assert len(feed_by_id(sub.on("anomalyclip/long/events"))) == 1  # one event, one id
    assert sum("connection lost" in line for line in proc.err) == 1, proc.tail()
    assert any("summary output mqtt: sent" in x and "dropped 0, unsent 0" in x for x in proc.err)


def test_the_feed_never_waits_for_a_broker_and_counts_what_it_drops(tmp_path):
    """50 messages for a broker that is not there yet, a queue of 10: the 40 oldest are
    dropped and counted; once the broker is up, the 10 newest arrive, with the availability
    and the camera's state; a broker restarted without persistence gets them back."""
    from anomalyclip.live.mqtt import MqttConfig, MqttFeed

    broker = Mosquitto(tmp_path / "broker")  # its port is chosen; it is not started yet
    feed = MqttFeed(MqttConfig(broker.url(), queue=10), ["cam"])
    feed.start()
    feed.state("cam", "online")
    for k in range(49):
        record = {"kind": "opened", "camera": "cam", "source": "x", "start_frame": k}
        feed.write(record, "")
    assert feed.report() == {"sent": 0, "dropped": 40, "unsent": 0}
    broker.start()
    sub = Subscriber(broker)
    try:
        assert sub.wait_for("anomalyclip/available", "online", 60)
        deadline = time.monotonic() + 30
        while len(sub.on("anomalyclip/cam/events")) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        frames = [json.loads(m)["start_frame"] for m in sub.on("anomalyclip/cam/events")]
        assert frames == list(range(39, 49))
        assert retained(broker, "anomalyclip/cam/state") == "online"
        announced = sub.on("anomalyclip/available").count("online")
        broker.stop()  # (mosquitto publishes its clients' last wills as it stops)
        broker.start()  # no persistence: its retained messages are gone, and come back
        deadline = time.monotonic() + 60  # the feed (and the subscriber) reconnect
        while time.monotonic() < deadline and \
                sub.on("anomalyclip/available").count("online") == announced:  # fmt: skip
            time.sleep(0.05)
        assert retained(broker, "anomalyclip/available") == "online"
        assert retained(broker, "anomalyclip/cam/state") == "online"
    finally:
        feed.close()
        sub.close()
        broker.stop()
    assert feed.report()["dropped"] == 40 and feed.report()["unsent"] == 0


def test_credentials_are_sent_and_never_shown(run_dir, video, tmp_path):
    broker = Mosquitto(tmp_path / "broker", passwords={"cam": "s3cr@et/1"}).start()
    sub = Subscriber(broker, auth=("cam", "s3cr@et/1"))
    good = broker.url(user="cam:s3cr%40et%2F1")
    bad = broker.url(user="cam:wr0ngpass")
    try:
        runs = []
        for url in (good, bad):
            out = tmp_path / f"out{len(runs)}"
            proc = watch([str(video)], run_dir, out, 0.0, "--mqtt", url)
            assert proc.wait(STARTUP) == 0, proc.tail()
            runs.append(proc)
        assert sub.wait_for("anomalyclip/event/events", None, 10)
    finally:
        sub.close()
        broker.stop()
    ok, refused = runs
    assert any("mqtt mqtt://cam:***@127.0.0.1" in line and "connected" in line for line in ok.err)
    assert any("refused the connection (Not authorized)" in line for line in refused.err)
    assert any("summary output mqtt: sent 0, dropped 0, unsent" in line for line in refused.err)
    shown = "\n".join(ok.out + ok.err + refused.out + refused.err)
    for secret in ("s3cr", "wr0ng"):
        assert secret not in shown
