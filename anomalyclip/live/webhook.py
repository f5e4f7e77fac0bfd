"""``--webhook URL``: every line POSTed as JSON, from a thread of its own.

- **Never holds up scoring.** Lines wait in a bounded queue; when it is full the oldest is
  dropped and counted.
- **Bounded per line.** Each request has one overall deadline (``timeout`` seconds for
  connecting, sending and reading the whole reply: a receiver that answers one byte a
  second is cut off there, where a per-read socket timeout would wait for ever). A failed
  request is retried ``retries`` times with doubling back-off, then the line is given up and
  counted.
- **Credentials.** ``https://user:password@host/path`` sends them as HTTP Basic auth
  (percent-decoded; a ``/`` in them must be written ``%2F``). The URL is shown only masked
  (:func:`anomalyclip.inputs.redact`).
- **At exit**, what is queued is delivered for up to ``drain`` seconds (not at all after a
  second stop request); lines still queued then are counted as unsent and said once.
- Requests go straight to the host: proxy variables are not used.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import logging
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from anomalyclip.errors import AnomalyError
from anomalyclip.inputs import redact
from anomalyclip.live.sinks import Sink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    queue: int = 1000  # lines waiting; the oldest is dropped when full
    retries: int = 5  # attempts after the first
    backoff: float = 0.5  # seconds before the first retry, doubled each time
    max_backoff: float = 30.0
    timeout: float = 5.0  # seconds for a whole request: connect, send, read the reply
    drain: float = 5.0  # seconds at exit to deliver what is still queued


@dataclass(frozen=True)
class Target:
    """Where and how to POST: a webhook URL taken apart."""

    https: bool
    host: str
    port: int | None
    path: str  # with the query
    authorization: str | None  # the Basic auth header of the URL's user:password


def parse_target(url: str) -> Target:
    """The :class:`Target` of a webhook URL; a one-line error for one that is not usable."""
    shown = redact(url)
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise AnomalyError(f"--webhook {shown}: expected an http:// or https:// URL")
    try:
        port = parts.port
    except ValueError as exc:
        raise AnomalyError(f"--webhook {shown}: {exc}") from exc
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    authorization = None
    if "@" in parts.netloc:
        pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode()
    return Target(parts.scheme.lower() == "https", parts.hostname, port, path, authorization)


class Webhook(Sink):
    """POSTs each line to ``cfg.url`` (module docstring). Counts ``sent``, ``failed`` (given
    up after every retry), ``dropped`` (queue full) and ``unsent`` (queued at exit)."""

    name = "webhook"

    def __init__(self, cfg: WebhookConfig) -> None:
        self.cfg = cfg
        self.target = parse_target(cfg.url)
        self.shown = redact(cfg.url)
        self._queue: deque[tuple[str, bytes]] = deque()  # (kind, body)
        self._cond = threading.Condition()
        self._closing = False  # deliver what is queued, then stop
        self._abort = threading.Event()  # stop now: the time to deliver is over
        self._conn: http.client.HTTPConnection | None = None  # the request in flight
        self._thread = threading.Thread(target=self._run, name="webhook", daemon=True)
        self.sent = self.failed = self.dropped = self.unsent = 0

    def start(self) -> None:
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def write(self, record: dict, line: str) -> None:
        """Queue the line; never blocks."""
        with self._cond:
            if len(self._queue) >= self.cfg.queue:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((str(record.get("kind")), line.encode()))
            self._cond.notify()

    def close(self, hurry: threading.Event | None = None) -> None:
        """Deliver what is queued for up to ``cfg.drain`` seconds (until ``hurry`` is set),
        then stop, cutting off the request in flight; count and say what was not delivered."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        deadline = time.monotonic() + self.cfg.drain
        while self._thread.is_alive() and time.monotonic() < deadline:
            if hurry is not None and hurry.is_set():
                break
            self._thread.join(0.05)
        if self._thread.is_alive():
            self._abort.set()
            _cut(self._conn)
            self._thread.join(1.0)
        with self._cond:
            self.unsent += len(self._queue)
            self._queue.clear()
        if self.unsent:
            log.warning("webhook %s: %d lines not delivered (still queued at exit)",
                        self.shown, self.unsent)  # fmt: skip

    def report(self) -> dict[str, int]:
        return {"sent": self.sent, "failed": self.failed, "dropped": self.dropped,
                "unsent": self.unsent}  # fmt: skip

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or self._abort.is_set():
                    return
                kind, body = self._queue.popleft()
            self._deliver(kind, body)

    def _deliver(self, kind: str, body: bytes) -> None:
        delay, why = self.cfg.backoff, ""
        for attempt in range(self.cfg.retries + 1):
            why = self._post(body)
            if why is None:
                self.sent += 1
                return
            log.debug("webhook %s: attempt %d failed: %s", self.shown, attempt + 1, why)
            if self._abort.is_set() or (attempt < self.cfg.retries and self._abort.wait(delay)):
                self.unsent += 1  # the watch is over and so is its time to deliver
                return
            delay = min(self.cfg.max_backoff, 2 * delay)
        self.failed += 1
        log.warning("webhook %s: gave up on a %s line after %d attempts (%s)",
                    self.shown, kind, self.cfg.retries + 1, why)  # fmt: skip

    def _post(self, body: bytes) -> str | None:
        """One request within ``cfg.timeout`` seconds, all of it; None when it succeeded,
        else why it failed."""
        t = self.target
        kind = http.client.HTTPSConnection if t.https else http.client.HTTPConnection
        conn = kind(t.host, t.port, timeout=self.cfg.timeout)
        headers = {"Content-Type": "application/json"}
        if t.authorization:
            headers["Authorization"] = t.authorization
        done, expired = threading.Event(), threading.Event()

        def watchdog() -> None:  # past the deadline, cut until the request has ended
            if not done.wait(self.cfg.timeout):
                expired.set()
                while not done.is_set():
                    _cut(conn)  # again, in case the socket did not exist yet
                    done.wait(0.05)

        self._conn = conn
        threading.Thread(target=watchdog, name="webhook-deadline", daemon=True).start()
        try:
            conn.request("POST", t.path, body, headers)
            response = conn.getresponse()
            response.read()
            if 200 <= response.status < 300:
                return None
            return f"HTTP {response.status} {response.reason}"
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if expired.is_set():
                return f"no complete reply within {self.cfg.timeout:g} s"
            return redact(getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
        finally:
            done.set()
            self._conn = None
            conn.close()


def _cut(conn: http.client.HTTPConnection | None) -> None:
    """End a request from another thread: shutting its socket down wakes a blocked read."""
    sock = getattr(conn, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
