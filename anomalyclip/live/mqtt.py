"""``--mqtt mqtt://[user:password@]host[:port][/prefix]``: the watch as an MQTT change-feed.

Topics, under ``prefix`` (``anomalyclip`` by default), all published with QoS 1:

- ``<prefix>/<camera>/events``: one JSON message per change of an event: ``id`` (the same in
  every message of one event, and unique across restarts: the camera, the UTC time the
  event opened and a random suffix), ``type`` (``new``, ``update``, ``end``), ``camera``,
  ``source``, then the event as ``predict`` reports it and ``reported_at``;
- ``<prefix>/<camera>/state``: ``online``, ``reconnecting`` or ``offline``, retained;
- ``<prefix>/available``: ``online``, retained, while the watch runs. The connection carries
  a last will, ``offline`` (retained), which the broker publishes when the watch dies without
  a goodbye (killed, its machine down); a clean exit publishes ``offline`` itself.

**Never holds up scoring.** :meth:`MqttFeed.write` only appends to a bounded queue (its
oldest message is dropped and counted when full). A thread of the feed hands the queue to
paho-mqtt's client, at most ``inflight`` messages not yet acknowledged by the broker at a
time, while the client's own network thread talks to the broker and reconnects with
back-off (1 s doubling to 30 s). Unacknowledged messages are sent again after a reconnect;
every (re)connection publishes the availability and each camera's state again, so a broker
restarted without its retained messages gets them back.

**Credentials** go in the CONNECT packet only; the URL is shown masked
(:func:`anomalyclip.inputs.redact`) in every log line. Plain TCP (``mqtt://``) only.

Counts for the summary: ``sent`` (acknowledged by the broker), ``dropped`` (queue full),
``unsent`` (queued or unacknowledged at exit).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import unquote, urlsplit

from anomalyclip.errors import AnomalyError
from anomalyclip.inputs import redact
from anomalyclip.live.sinks import Sink, encode

log = logging.getLogger(__name__)

TYPES = {"opened": "new", "updated": "update", "closed": "end"}
EXTRA = "pip install 'anomalyclip[service]'"


@dataclass(frozen=True)
class Broker:
    """Where the feed goes: an ``mqtt://`` URL taken apart."""

    host: str
    port: int
    prefix: str
    user: str | None
    password: str | None


def parse_broker(url: str) -> Broker:
    """The :class:`Broker` of ``url``; a one-line error (the URL masked) when it is unusable."""
    shown = redact(url)
    parts = urlsplit(url)
    if parts.scheme.lower() != "mqtt" or not parts.hostname:
        raise AnomalyError(f"--mqtt {shown}: expected mqtt://[user:password@]host[:port][/prefix]")
    try:
        port = parts.port or 1883
    except ValueError as exc:
        raise AnomalyError(f"--mqtt {shown}: {exc}") from None
    prefix = parts.path.strip("/") or "anomalyclip"
    levels = prefix.split("/")
    if any(not level or set(level) & set("+#") for level in levels) or parts.query:
        raise AnomalyError(f"--mqtt {shown}: the prefix {prefix!r} is not a topic (no empty "
                           "levels, '+', '#' or '?')")  # fmt: skip
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return Broker(parts.hostname, port, prefix, user, password)


@dataclass(frozen=True)
class MqttConfig:
    url: str
    queue: int = 1000  # messages waiting; the oldest is dropped when full
    inflight: int = 20  # messages handed to the client and not yet acknowledged
    keepalive: int = 30  # seconds
    min_delay: int = 1  # reconnect back-off, seconds, doubled up to max_delay
    max_delay: int = 30
    drain: float = 5.0  # seconds at exit to deliver what is queued

    def __post_init__(self) -> None:
        parse_broker(self.url)
        if importlib.util.find_spec("paho") is None:
            raise AnomalyError(f"--mqtt: the paho-mqtt package is not installed ({EXTRA})")
        if self.queue < 1 or self.inflight < 1:
            raise AnomalyError(f"mqtt queue {self.queue} / inflight {self.inflight}: at least 1")


class MqttFeed(Sink):
    """Events and camera states to an MQTT broker (module docstring)."""

    name = "mqtt"

    def __init__(self, cfg: MqttConfig, cameras: list[str]) -> None:
        self.cfg, self.broker = cfg, parse_broker(cfg.url)
        self.shown = redact(cfg.url)
        self._queue: deque[tuple[str, str, bool]] = deque()  # (topic, payload, retain)
        self._announce: deque[tuple[str, str, bool]] = deque()  # after each connection first
        self._cond = threading.Condition()
        self._inflight: set[int] = set()  # message ids handed over, not yet acknowledged
        self._early: set[int] = set()  # acknowledged before publish() returned their id
        self._states: dict[str, str] = dict.fromkeys(cameras, "reconnecting")
        self._ids: dict[tuple[str, int], str] = {}  # (camera, first frame) -> event id
        self._connected = self._closing = False
        self._abort = threading.Event()
        self._said: set[str] = set()
        self._client = None
        self._thread = threading.Thread(target=self._run, name="mqtt", daemon=True)
        self.sent = self.dropped = self.unsent = 0

    def topic(self, *levels: str) -> str:
        return "/".join((self.broker.prefix, *levels))

    # -- the sink ----------------------------------------------------------------------------
    def start(self) -> None:
        import paho.mqtt.client as mqtt

        client_id = f"anomalyclip-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        if self.broker.user is not None:
            client.username_pw_set(self.broker.user, self.broker.password)
        client.will_set(self.topic("available"), "offline", qos=1, retain=True)
        client.reconnect_delay_set(self.cfg.min_delay, self.cfg.max_delay)
        client.on_connect, client.on_connect_fail = self._on_connect, self._on_connect_fail
        client.on_disconnect, client.on_publish = self._on_disconnect, self._on_publish
        self._client = client
        client.connect_async(self.broker.host, self.broker.port, self.cfg.keepalive)
        client.loop_start()
        self._thread.start()

    def write(self, record: dict, line: str) -> None:
        kind = TYPES.get(record.get("kind"))
        if kind is None or "camera" not in record:
            return  # gaps are told by the state topic, clips by events.jsonl
        key = (record["camera"], record.get("start_frame"))
        event_id = self._ids.get(key) or self._new_id(record["camera"])
        self._ids[key] = event_id
        if kind == "end":
            del self._ids[key]
        body = {"id": event_id, "type": kind, **{k: v for k, v in record.items() if k != "kind"}}
        self._put(self.topic(record["camera"], "events"), encode(body), False)

    def state(self, camera: str, state: str) -> None:
        self._states[camera] = state
        self._put(self.topic(camera, "state"), state, True)

    def close(self, hurry: threading.Event | None = None) -> None:
        """Deliver what is queued for up to ``cfg.drain`` seconds, say ``offline``, and
        disconnect cleanly (the broker then keeps the last will to itself)."""
        if self._client is None:
            return
        self._put(self.topic("available"), "offline", True)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        deadline = time.monotonic() + self.cfg.drain
        while self._thread.is_alive() and time.monotonic() < deadline:
            if hurry is not None and hurry.is_set():
                break
            self._thread.join(0.05)
        self._abort.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join(1.0)
        self._client.disconnect()
        self._client.loop_stop()
        with self._cond:
            self.unsent += len(self._queue) + len(self._inflight)
            self._queue.clear()
        if self.unsent:
            log.warning("mqtt %s: %d messages not delivered (queued or unacknowledged at "
                        "exit)", self.shown, self.unsent)  # fmt: skip

    def report(self) -> dict[str, int]:
        return {"sent": self.sent, "dropped": self.dropped, "unsent": self.unsent}

    # -- the feed's thread -------------------------------------------------------------------
    def _new_id(self, camera: str) -> str:
        opened = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        return f"{camera}-{opened}-{secrets.token_hex(4)}"

    def _put(self, topic: str, payload: str, retain: bool) -> None:
        with self._cond:
            if len(self._queue) >= self.cfg.queue:
                self._queue.popleft()
                self.dropped += 1
                self._say("queue full: the oldest messages are dropped (counted)")
            self._queue.append((topic, payload, retain))
            self._cond.notify_all()

    def _next(self) -> tuple[str, str, bool] | None:
        """The next message to hand over, once the broker may take it; None: stop."""
        with self._cond:
            while not self._abort.is_set():
                if self._closing and not (self._queue or self._inflight or self._announce):
                    return None
                room = self._connected and len(self._inflight) < self.cfg.inflight
                if room and (self._announce or self._queue):
                    return (self._announce or self._queue).popleft()
                self._cond.wait(0.25)
            return None

    def _run(self) -> None:
        while (message := self._next()) is not None:
            topic, payload, retain = message
            info = self._client.publish(topic, payload, qos=1, retain=retain)
            with self._cond:  # kept by the client (sent again after a reconnect) unless refused
                if info.mid in self._early:
                    self._early.discard(info.mid)
                    self.sent += 1
                elif info.rc in (0, 4):  # MQTT_ERR_SUCCESS, MQTT_ERR_NO_CONN
                    self._inflight.add(info.mid)
                else:
                    self.unsent += 1

    # -- the client's callbacks (its network thread) -----------------------------------------
    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self._say(f"the broker refused the connection ({reason}); retrying with back-off")
            return
        log.info("mqtt %s: connected", self.shown)
        self._said.clear()
        with self._cond:
            self._announce.clear()
            self._announce.append((self.topic("available"), "online", True))
            for camera, state in self._states.items():
                self._announce.append((self.topic(camera, "state"), state, True))
            self._connected = True
            self._cond.notify_all()

    def _on_connect_fail(self, client, userdata) -> None:
        self._say("cannot connect; retrying with back-off")

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        with self._cond:
            self._connected = False
        if not self._closing:
            self._say(f"connection lost ({reason}); reconnecting with back-off")

    def _on_publish(self, client, userdata, mid, reason, properties) -> None:
        with self._cond:
            if mid not in self._inflight:
                self._early.add(mid)  # publish() has not returned this id yet
            elif reason.is_failure:  # the broker refused it (an ACL): never delivered
                self._inflight.discard(mid)
                self.unsent += 1
                self._say(f"a message was refused ({reason})")
            else:
                self._inflight.discard(mid)
                self.sent += 1
            self._cond.notify_all()

    def _say(self, what: str) -> None:
        """Log ``what`` once until the next successful connection."""
        if what not in self._said:
            self._said.add(what)
            log.warning("mqtt %s: %s", self.shown, what)
