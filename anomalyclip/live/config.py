"""The options of a watch, checked before anything heavy is imported (a typo fails fast)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from anomalyclip.errors import AnomalyError
from anomalyclip.events import EventConfig
from anomalyclip.inputs import Source, is_live

DROP_POLICIES = ("oldest", "none")


@dataclass(frozen=True)
class ReadConfig:
    """How sources are read (defaults suit a live camera)."""

    realtime: bool = False  # files: paced at their own frame rate (times ``speed``)
    speed: float = 1.0
    drop: str | None = None  # "oldest" | "none"; None: oldest for live sources, none for files
    queue: int = 64  # frames waiting for the model, per source
    stall: float = 5.0  # seconds without data before a live source is reopened
    open_timeout: float = 10.0  # seconds to open (and probe) a live source
    backoff: float = 0.5  # first wait before reopening, doubled per failed attempt
    max_backoff: float = 8.0
    rtsp_transport: str = "tcp"  # or "udp"
    loop: bool = False  # files: start again at the end (long generated streams)
    preprocess: str = "native"  # the frame path (extract.preprocess): native | authors

    def __post_init__(self) -> None:
        if self.drop not in (None, *DROP_POLICIES):
            raise AnomalyError(f"--drop {self.drop}: expected one of {', '.join(DROP_POLICIES)}")
        if self.rtsp_transport not in ("tcp", "udp"):
            raise AnomalyError(f"RTSP transport {self.rtsp_transport!r}: expected tcp or udp")
        if self.queue < 1:
            raise AnomalyError(f"read queue {self.queue}: at least 1 frame")
        _positive("--stall", self.stall)
        _positive("open timeout", self.open_timeout)
        _positive("back-off", self.backoff)
        _positive("maximum back-off", self.max_backoff)
        _positive("playback speed", self.speed, unit="")

    def drops_oldest(self, source: Source) -> bool:
        return (self.drop or ("oldest" if is_live(source) else "none")) == "oldest"


@dataclass(frozen=True)
class RetentionConfig:
    """What is kept under ``--out``: clips within ``max_gb`` and ``max_days`` (oldest deleted
    first, never one still being written; 0: no limit), ``events.jsonl`` rotated past
    ``max_log_mb`` with ``keep_logs`` rotated files kept (0: never rotated)."""

    max_gb: float = 0.0
    max_days: float = 0.0
    max_log_mb: float = 0.0
    keep_logs: int = 5
    every: float = 60.0  # seconds between two looks at the clips (and after each new clip)

    def __post_init__(self) -> None:
        for name in ("max_gb", "max_days", "max_log_mb"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise AnomalyError(f"retention {name} {value}: a number >= 0 (0: no limit)")
        if self.keep_logs < 0:
            raise AnomalyError(f"retention keep_logs {self.keep_logs}: a count >= 0")
        _positive("retention interval", self.every)


@dataclass(frozen=True)
class WatchConfig:
    """Everything about a watch besides its sources, model and output folder."""

    events: EventConfig  # the threshold and how frames become events
    out: str | Path = "watch"  # folder for events.jsonl and clips/
    hop: float = 0.5  # seconds of rows between two scorings of a source
    batch_size: int = 32  # frames per CLIP forward at most (all sources together)
    status_every: float = 10.0  # seconds between status lines on stderr (0: none)
    read: ReadConfig = field(default_factory=ReadConfig)
    save_clips: bool = False
    pre_roll: float = 2.0  # seconds of clip before an event
    post_roll: float = 2.0  # and after it
    webhook: str | None = None
    ui: bool = False  # collect what the live page shows (live/ui_state.py)
    update_every: float = 1.0  # seconds of growth between "updated" lines of an open event
    max_event: float = 600.0  # an event this long is closed and the next piece opens
    mqtt: str | None = None  # mqtt://[user:password@]host[:port][/prefix]: the change-feed
    metrics: str | None = None  # [HOST:]PORT of the Prometheus endpoint
    retention: RetentionConfig | None = None

    def __post_init__(self) -> None:
        _positive("--hop", self.hop)
        if self.batch_size < 1:
            raise AnomalyError(f"--batch-size {self.batch_size}: at least 1 frame")
        for name, value in (("--status-every", self.status_every), ("pre-roll", self.pre_roll),
                            ("post-roll", self.post_roll)):  # fmt: skip
            if not (math.isfinite(value) and value >= 0):
                raise AnomalyError(f"{name} {value}: a number of seconds >= 0")
        _positive("update interval", self.update_every)
        _positive("maximum event length", self.max_event)
        if self.webhook:
            from anomalyclip.live.webhook import parse_target

            parse_target(self.webhook)
        if self.mqtt:
            from anomalyclip.live.mqtt import MqttConfig

            MqttConfig(self.mqtt)  # a bad URL or a missing package: one line, before torch
        if self.metrics:
            from anomalyclip.live.metrics import listen_address

            listen_address(self.metrics)


def _positive(name: str, value: float, unit: str = " of seconds") -> None:
    if not (math.isfinite(value) and value > 0):
        raise AnomalyError(f"{name} {value}: a positive, finite number{unit}")


def check_out(out: str | Path) -> Path:
    """The folder a watch writes to, created; a one-line error when ``events.jsonl`` cannot be
    written there (checked before the model loads)."""
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        os.close(os.open(folder / "events.jsonl", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666))
    except OSError as exc:
        raise AnomalyError(f"{out}: cannot write events here ({exc.strerror or exc})") from exc
    return folder
