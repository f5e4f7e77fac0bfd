"""The options of a watch, checked before anything heavy is imported (a typo fails fast)."""

from __future__ import annotations

import re
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

    def __post_init__(self) -> None:
        if self.drop not in (None, *DROP_POLICIES):
            raise AnomalyError(f"--drop {self.drop}: expected one of {', '.join(DROP_POLICIES)}")
        if self.rtsp_transport not in ("tcp", "udp"):
            raise AnomalyError(f"RTSP transport {self.rtsp_transport!r}: expected tcp or udp")
        if self.queue < 1 or self.stall <= 0 or self.backoff <= 0 or self.speed <= 0:
            raise AnomalyError("queue, stall, back-off and speed must be positive")

    def drops_oldest(self, source: Source) -> bool:
        return (self.drop or ("oldest" if is_live(source) else "none")) == "oldest"


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
    update_every: float = 1.0  # seconds of growth between "updated" lines of an open event
    max_event: float = 600.0  # an event this long is closed and the next piece opens

    def __post_init__(self) -> None:
        if self.hop <= 0 or self.batch_size < 1:
            raise AnomalyError(f"--hop {self.hop}: a positive number of seconds")
        if self.status_every < 0 or self.pre_roll < 0 or self.post_roll < 0:
            raise AnomalyError("status interval, pre-roll and post-roll are seconds >= 0")
        if self.webhook and not re.match(r"^https?://", self.webhook):
            raise AnomalyError(f"--webhook {self.webhook}: expected an http:// or https:// URL")
