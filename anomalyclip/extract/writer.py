"""Assembling each video's rows and publishing whole videos to the feature store.

A video's pieces arrive interleaved with other videos': its frame numbers and times with
each decoded chunk, its embeddings batch by batch, and the decoder's end-of-video note.
:class:`Writer` keeps them per video and writes the video to the store only when the decoder
has finished it and every frame it sent has its row, so the store never holds part of a
video. It is the only code that touches the store during a run.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomalyclip.datasets.registry import VideoEntry
from anomalyclip.errors import AnomalyError
from anomalyclip.extract.config import ExtractConfig
from anomalyclip.extract.decoder_threads import Chunk, Done
from anomalyclip.store import VideoRecord

log = logging.getLogger(__name__)


@dataclass
class Summary:
    """What a run did; ``failed`` maps video ids to the reason."""

    total: int = 0
    extracted: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    truncated: dict[str, str] = field(default_factory=dict)  # stored, source cut short
    frames: int = 0
    seconds: float = 0.0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        lines = [
            f"{self.total} videos: {self.extracted} extracted, {self.skipped} already done, "
            f"{len(self.failed)} failed"
            + (f", {len(self.truncated)} truncated" if self.truncated else "")
            + f"; {self.frames} frames in {self.seconds:.1f} s ({self.frames_per_s:.1f} frames/s)"
        ]
        lines += [f"  failed {vid}: {reason}" for vid, reason in sorted(self.failed.items())]
        lines += [f"  truncated {vid}: {why}" for vid, why in sorted(self.truncated.items())]
        return "\n".join(lines)


@dataclass(frozen=True)
class Job:
    """A video to extract, with the size and fingerprint of its source taken before."""

    entry: VideoEntry
    size: int
    fingerprint: str


def relative(path: Path, root: str | Path | None) -> str:
    """``path`` relative to ``root`` as listed (symlinks are not followed), else its name.

    Never raises: a broken entry (a symlink loop, an unreadable folder) is recorded as a
    failure of that video, which needs this name.
    """
    if root is not None:
        try:
            return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
        except ValueError:
            pass
        try:  # a root given through another symlinked spelling of the same folder
            return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
        except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop
            pass
    return Path(path).name


@dataclass
class _Parts:
    """What has arrived of one video."""

    sent: int = 0  # frames the decoder sent
    rows: list = field(default_factory=list)  # (k, D) float32 blocks, in frame order
    frames: list = field(default_factory=list)  # (n,) int64 blocks
    times: list = field(default_factory=list)  # (n,) float64 blocks
    done: Done | None = None

    @property
    def embedded(self) -> int:
        return sum(len(r) for r in self.rows)


class Writer:
    """Publishes ``jobs[video]`` to ``store`` once all its rows arrived; records failures.

    Feed it :meth:`chunk` (frames sent to the model), :meth:`rows` (their embeddings),
    :meth:`done` (the decoder's end of the video) and :meth:`fail`. ``dim`` is the embedding
    size (for a video with no frame). Counts go to ``summary``.
    """

    def __init__(
        self, store, jobs: list[Job], config: ExtractConfig, summary: Summary, dim: int
    ) -> None:
        self.store, self.jobs, self.config = store, jobs, config
        self.summary, self.dim = summary, dim
        self.published = 0
        self._parts: dict[int, _Parts] = {}

    def chunk(self, chunk: Chunk) -> None:
        parts = self._parts.setdefault(chunk.video, _Parts())
        parts.sent += len(chunk.frames)
        parts.frames.append(chunk.frames)
        parts.times.append(chunk.times)

    def rows(self, video: int, rows: np.ndarray) -> None:
        parts = self._parts[video]
        parts.rows.append(rows)
        if parts.embedded > parts.sent:
            raise RuntimeError(f"video {video}: {parts.embedded} rows for {parts.sent} frames")
        self._publish_if_complete(video)

    def done(self, done: Done) -> None:
        self._parts.setdefault(done.video, _Parts()).done = done
        self._publish_if_complete(done.video)

    def fail(self, video: int, reason: str) -> None:
        """Record ``video`` as failed and forget what arrived of it."""
        self._parts.pop(video, None)
        entry = self.jobs[video].entry
        self.store.record_failure(entry.video_id, relative(entry.path, self.config.root), reason)
        self.summary.failed[entry.video_id] = reason
        log.warning("failed: %s", reason)

    @property
    def pending(self) -> list[int]:
        """Videos begun and not yet published or failed."""
        return sorted(self._parts)

    def _publish_if_complete(self, video: int) -> None:
        parts = self._parts[video]
        if parts.done is not None and parts.embedded == parts.sent:
            self._publish(video, self._parts.pop(video))

    def _publish(self, video: int, parts: _Parts) -> None:
        job, cfg = self.jobs[video], self.config
        entry, done = job.entry, parts.done
        feats = np.concatenate(parts.rows) if parts.rows else np.zeros((0, self.dim), np.float32)
        frames = np.concatenate(parts.frames) if parts.frames else np.zeros(0, np.int64)
        try:
            self.store.check_rows(entry.video_id, feats, frames, entry.intervals)
        except AnomalyError as exc:  # beyond float16's range, ground truth past the end
            self.fail(video, str(exc))
            return
        if done.truncated and cfg.strict:
            self.fail(video, f"{entry.path}: truncated (--strict): {done.truncated}")
            return
        record = VideoRecord(
            video_id=entry.video_id,
            source=relative(entry.path, cfg.root),
            label=entry.label,
            split=entry.split,
            fps=float(done.fps),
            num_frames=int(feats.shape[0]),
            source_size=int(job.size),
            fingerprint=job.fingerprint,
            intervals=[[int(s), int(e)] for s, e in entry.intervals],
            truncated=done.truncated,
        )
        self.store.write_video(
            record,
            feats.astype(cfg.dtype),
            frames,
            np.concatenate(parts.times) if parts.times else np.zeros(0, np.float64),
        )
        self.published += 1
        self.summary.extracted += 1
        self.summary.frames += feats.shape[0]
        if done.truncated:
            self.summary.truncated[entry.video_id] = done.truncated
            why = done.truncated
            log.warning("%s: stored, but the source looks truncated: %s", entry.path, why)
        log.debug("%s: %d rows, %d decoded", entry.video_id, len(feats), done.num_decoded)
