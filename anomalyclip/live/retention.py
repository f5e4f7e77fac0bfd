"""``[retention]``: clips kept within a size and an age, from a thread of their own.

:class:`ClipRetention` looks at ``clips/`` every ``every`` seconds and after each new clip:
clips older than ``max_days`` are deleted, then, while all clips together take more than
``max_gb``, the oldest (by modification time) go first. A clip still being written (its name
claimed, its ``.part`` file growing) counts towards ``max_gb`` but is never deleted, nor is
a file that is not a finished clip (an empty claimed name, anything but ``*.mp4``). Each
deletion is one info line in the log, and the summary counts them. ``events.jsonl`` is
rotated by its own sink (:class:`~anomalyclip.live.sinks.JsonLinesFile`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

from anomalyclip.live.config import RetentionConfig
from anomalyclip.live.sinks import Sink

log = logging.getLogger(__name__)


class ClipRetention(Sink):
    """Keeps ``folder``'s clips within ``cfg`` (module docstring); ``recorder`` (a
    :class:`~anomalyclip.live.clips.ClipRecorder`, or None) says which clips are being
    written."""

    name = "retention"

    def __init__(self, folder: Path, cfg: RetentionConfig, recorder=None) -> None:
        self.folder, self.cfg, self.recorder = Path(folder), cfg, recorder
        self.deleted = self.freed = 0
        self._wake, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def write(self, record: dict, line: str) -> None:
        if record.get("kind") == "clip" and record.get("clip"):
            self._wake.set()  # a new clip: look again now

    def close(self, hurry: threading.Event | None = None) -> None:
        """Stop looking; one last look first (the clips finished at exit count too)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(5.0)
        if not (hurry is not None and hurry.is_set()) and not self._thread.is_alive():
            self.prune()

    def report(self) -> dict[str, int]:
        return {"deleted": self.deleted, "freed MB": round(self.freed / 2**20)}

    def _run(self) -> None:
        while not self._stop.is_set():
            self.prune()
            self._wake.wait(self.cfg.every)
            self._wake.clear()

    def prune(self, now: float | None = None) -> list[Path]:
        """Delete what the limits do not allow (module docstring); returns the deleted."""
        now = time.time() if now is None else now
        busy = self.recorder.active() if self.recorder is not None else set()
        clips, writing = [], 0
        for path in self._files():
            try:
                st = path.stat()
            except OSError:
                continue  # gone meanwhile
            if path.name.endswith(".part") or path.with_name(path.name + ".part").exists():
                writing += st.st_size  # being written: counted, never deleted
            else:
                clips.append((st.st_mtime, st.st_size, path))
        clips.sort()
        total = writing + sum(size for _, size, _ in clips)
        deleted = []
        for mtime, size, path in clips:
            old = self.cfg.max_days and now - mtime > self.cfg.max_days * 86400
            over = self.cfg.max_gb and total > self.cfg.max_gb * 2**30
            if not (old or over) or path in busy or size == 0:
                continue
            try:
                path.unlink()
            except OSError as exc:
                log.warning("retention: cannot delete %s (%s)", path, exc.strerror or exc)
                continue
            total -= size
            self.deleted += 1
            self.freed += size
            deleted.append(path)
            why = "too old" if old else "over the size limit"
            days = (now - mtime) / 86400
            log.info("retention: deleted %s (%.1f MB, %.1f days old; %s)", path, size / 2**20,
                     days, why)  # fmt: skip
        return deleted

    def _files(self) -> list[Path]:
        """The clips and the parts of clips being written."""
        try:
            names = os.listdir(self.folder)
        except OSError:
            return []
        return [self.folder / n for n in names if n.endswith((".mp4", ".mp4.part"))]
