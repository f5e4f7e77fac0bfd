"""Where a watch's lines go. Each output is a :class:`Sink`; the watch hands every line to
each of its sinks in turn.

A line is a record (``kind``, ``source``, the event's fields...) and its JSON text, encoded
once (:func:`encode`) so that every output carries the same bytes. A sink never raises and
never holds up scoring for long: what it cannot deliver it counts, says once, and reports in
the watch's summary (:meth:`Sink.report`). The sinks here:

- :class:`TextStream`: one line per record on stdout, flushed at once;
- :class:`JsonLinesFile`: ``events.jsonl``, appended one whole line at a time (a line is
  written entirely or not at all, even on a full disk);
- :class:`~anomalyclip.live.webhook.Webhook`: each line POSTed from a thread of its own;
- :class:`~anomalyclip.live.mqtt.MqttFeed`: a change-feed of events and camera states on an
  MQTT broker;
- :class:`~anomalyclip.live.metrics.Metrics`: Prometheus metrics over HTTP;
- :class:`~anomalyclip.live.retention.ClipRetention`: keeps ``clips/`` within its budget;
- :class:`~anomalyclip.live.ui_state.UiState`: what the live page (``--ui``) shows.

Besides lines, a sink hears of each camera's state (:meth:`Sink.state`: ``online``,
``reconnecting``, ``offline``; every camera ``offline`` once more before :meth:`Sink.close`),
and a sink that needs the scores themselves gets every scored hop (:meth:`Sink.scores`).
Another output is another sink: subclass :class:`Sink`, and add it to the watcher's
``sinks`` (:func:`standard_sinks` makes those the options ask for).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import TextIO

import numpy as np

log = logging.getLogger(__name__)


def now_iso() -> str:
    """The time a line is reported: UTC, ISO 8601, milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def encode(record: dict) -> str:
    """A record as one line of JSON (no newline): numpy scalars as numbers."""
    return json.dumps(record, allow_nan=False, default=_plain)


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


class Sink:
    """One output of a watch (module docstring). Subclasses implement :meth:`write`."""

    name = "output"

    def start(self) -> None:
        """Called once before the first line (a sink with a thread starts it here)."""

    def write(self, record: dict, line: str) -> None:
        """Deliver one line; never raises, never blocks for long."""
        raise NotImplementedError

    def scores(self, source: str, times: np.ndarray, p: np.ndarray, lag: np.ndarray) -> None:
        """The rows of ``source`` just scored: their times, p(A) and seconds from arrival to
        score, (T,) each. Most sinks ignore them (the live page draws them)."""

    def state(self, camera: str, state: str) -> None:
        """Camera ``camera`` is now ``online``, ``reconnecting`` or ``offline``."""

    def close(self, hurry: threading.Event | None = None) -> None:
        """No more lines. Once ``hurry`` is set (a second stop request), give up at once what
        would take time (and count it)."""

    def report(self) -> dict[str, int]:
        """Counts for the watch's summary."""
        return {}


class TextStream(Sink):
    """Lines to a text stream (stdout), each flushed at once. A closed pipe (the consumer
    went away) ends this output, not the watch; other failures are counted and said once."""

    name = "stdout"

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.written = self.unwritten = 0
        self._closed = self._said = False

    def write(self, record: dict, line: str) -> None:
        if not self._closed:
            try:
                self.stream.write(line + "\n")
                self.stream.flush()
                self.written += 1
                return
            except (OSError, ValueError) as exc:  # ValueError: the stream was closed
                self._closed = isinstance(exc, (BrokenPipeError, ValueError))
                if not self._said:
                    self._said = True
                    log.warning("stdout: a line could not be written (%s); the other outputs "
                                "go on", getattr(exc, "strerror", None) or exc)  # fmt: skip
        self.unwritten += 1

    def report(self) -> dict[str, int]:
        return {"written": self.written, "unwritten": self.unwritten}


class JsonLinesFile(Sink):
    """Lines appended to ``path``, each with one ``write`` of the whole line.

    A write the disk cuts short (no space left) is truncated back to where it began, so the
    file only ever holds whole lines; the line is counted as not written and the watch goes
    on. The first failure is logged once (later ones are counted, not repeated), and writing
    resumes by itself once the disk has room again. Lines reach the operating system at
    once: a watch killed at any moment leaves every reported line in the file.

    With ``max_bytes``, a line that would take the file past it starts a new file first:
    ``events.jsonl`` becomes ``events.jsonl.1`` (``.1`` becomes ``.2``, ...), and of those
    ``keep`` are kept; an older one is deleted, with a line in the log.
    """

    name = "events.jsonl"

    def __init__(self, path: Path, max_bytes: int | None = None, keep: int = 5) -> None:
        self.path = Path(path)
        self.max_bytes, self.keep = max_bytes, keep
        self.written = self.unwritten = self.rotated = self.deleted = 0
        self._error: str | None = None
        # the caller checked the folder (cli: before torch); a failure here is one line
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)

    def _rotate(self) -> None:
        """``path`` -> ``path.1`` -> ... -> ``path.<keep>``; the one past ``keep`` goes."""
        oldest = self.path.with_name(f"{self.path.name}.{self.keep}")
        if oldest.exists():
            oldest.unlink()
            self.deleted += 1
            log.info("retention: deleted %s (the oldest of %d rotated event logs)", oldest,
                     self.keep)  # fmt: skip
        for k in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{k}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{k + 1}"))
        os.close(self._fd)
        self._fd = -1
        if self.keep > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
            self.deleted += 1
        self._fd = self._open()
        self.rotated += 1

    def write(self, record: dict, line: str) -> None:
        data = (line + "\n").encode()
        try:
            if self._fd < 0:
                self._fd = self._open()
            end = os.fstat(self._fd).st_size
            if self.max_bytes and end and end + len(data) > self.max_bytes:
                self._rotate()
                end = 0
            done = os.write(self._fd, data)
            if done != len(data):  # cut short: leave no part of a line behind
                os.ftruncate(self._fd, end)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a short write means
        except OSError as exc:
            self.unwritten += 1
            if self._error is None:
                log.warning(
                    "%s: a line could not be written (%s); lines that cannot be written are "
                    "counted in the summary, scoring and the other outputs go on",
                    self.path,
                    exc.strerror or exc,
                )
            self._error = exc.strerror or str(exc)
            return
        self.written += 1

    def close(self, hurry: threading.Event | None = None) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def report(self) -> dict[str, int]:
        counts = {"written": self.written, "unwritten": self.unwritten}
        if self.max_bytes:
            counts |= {"rotated": self.rotated, "deleted": self.deleted}
        return counts


def standard_sinks(cfg, stdout: TextIO | None, watcher) -> list[Sink]:
    """The sinks ``cfg`` (a :class:`~anomalyclip.live.config.WatchConfig`) asks for: stdout,
    ``events.jsonl`` and, where set, the webhook, the MQTT feed, the metrics endpoint and the
    clips' retention; those that report on the watch read ``watcher``."""
    keep = cfg.retention
    max_bytes = int(keep.max_log_mb * 2**20) if keep and keep.max_log_mb else None
    events = JsonLinesFile(Path(cfg.out) / "events.jsonl", max_bytes, keep.keep_logs if keep else 5)
    sinks: list[Sink] = [TextStream(stdout), events]
    if cfg.webhook:
        from anomalyclip.live.webhook import Webhook, WebhookConfig

        sinks.append(Webhook(WebhookConfig(cfg.webhook)))
    if cfg.mqtt:
        from anomalyclip.live.mqtt import MqttConfig, MqttFeed

        sinks.append(MqttFeed(MqttConfig(cfg.mqtt), [s.camera.name for s in watcher.streams]))
    if cfg.metrics:
        from anomalyclip.live.metrics import Metrics

        sinks.append(Metrics(cfg.metrics, watcher))
    if keep and (keep.max_gb or keep.max_days) and cfg.save_clips:
        from anomalyclip.live.retention import ClipRetention

        sinks.append(ClipRetention(Path(cfg.out) / "clips", keep, watcher.clips))
    return sinks
