"""Real services for the watch's service tests: a mosquitto broker and an MQTT subscriber, and a
Prometheus scrape, all on 127.0.0.1.

The broker is Debian's ``mosquitto`` (``make install`` installs it where it is missing),
started here on a free port with a configuration file written by the test. Where it is not
installed the tests skip with one line, except in CI (``ANOMALYCLIP_REQUIRE_SERVICES=1``,
set by ``.ci/run``), where they fail: a service test never passes by not running.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from watch_helpers import free_port

REQUIRED = os.environ.get("ANOMALYCLIP_REQUIRE_SERVICES") == "1"


def mosquitto_binary() -> str:
    """The broker's path; skips the test (fails it in CI) where it is not installed."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).is_file()),
        None,
    )
    if found is None:
        message = "mosquitto is not installed (make install installs it with apt-get)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return found


class Mosquitto:
    """A mosquitto broker on 127.0.0.1:``port`` (a free one by default), configured by a
    file written in ``folder``; ``passwords`` (user -> password) turns anonymous access off;
    ``persistence`` keeps sessions and retained messages across a restart."""

    def __init__(self, folder: Path, passwords: dict[str, str] | None = None,
                 persistence: bool = False) -> None:  # fmt: skip
        self.binary = mosquitto_binary()
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        lines = [f"listener {self.port} 127.0.0.1", f"persistence {str(persistence).lower()}",
                 f"persistence_location {self.folder}/", "log_dest stderr",
                 "log_type error", "log_type warning", "log_type notice"]  # fmt: skip
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to a user that cannot read here
        if passwords:
            file = self.folder / "passwords"
            file.write_text("")
            for user, password in passwords.items():
                subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd",
                                "-b", str(file), user, password], check=True)  # fmt: skip
            file.chmod(0o600)
            lines += ["allow_anonymous false", f"password_file {file}"]
        else:
            lines.append("allow_anonymous true")
        self.config = self.folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"mosquitto exited: {self.proc.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("mosquitto did not listen within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its persistence file, then exits
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def url(self, prefix: str = "", user: str = "") -> str:
        return f"mqtt://{user + '@' if user else ''}127.0.0.1:{self.port}{prefix}"


class Subscriber:
    """A paho client subscribed to ``topic`` (QoS 1) that keeps every message it gets:
    ``messages`` holds (topic, payload text, retained flag, arrival time). With a
    ``client_id`` its session persists (clean_session off): a broker with persistence keeps
    what arrives for it while it reconnects."""

    def __init__(self, broker: Mosquitto, topic: str = "#", client_id: str = "",
                 auth: tuple[str, str] | None = None) -> None:  # fmt: skip
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.messages: list[tuple[str, str, bool, float]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not client_id)  # fmt: skip
        if auth:
            self.client.username_pw_set(*auth)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self.topic, qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port, 30)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        with self.lock:
            self.messages.append((message.topic, message.payload.decode(), bool(message.retain),
                                  time.monotonic()))  # fmt: skip

    def on(self, topic: str) -> list[str]:
        with self.lock:
            return [m[1] for m in self.messages if m[0] == topic]

    def wait_for(self, topic: str, payload: str | None = None, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.on(topic)
            if got and (payload is None or payload in got):
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained(broker: Mosquitto, topic: str, timeout: float = 10) -> str | None:
    """The message ``broker`` retains on ``topic``, as a new subscriber gets it (None: none)."""
    sub = Subscriber(broker, topic)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with sub.lock:
                kept = [m[1] for m in sub.messages if m[2]]
            if kept:
                return kept[-1]
            time.sleep(0.05)
        return None
    finally:
        sub.close()


def scrape(port: int) -> dict:
    """``/metrics`` of 127.0.0.1:``port``, parsed with Prometheus' own text parser:
    {sample name: {frozenset of label items: value}}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    samples: dict[str, dict] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples
