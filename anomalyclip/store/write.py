"""Writing to a feature store: the root attributes once, then one video at a time.

:class:`StoreWriter` is the writing half of :class:`anomalyclip.store.FeatureStore` (which
holds the backend ``_b``, the ``location`` and the cache of trusted keys ``_trusted``). A
video's rows are written first and its ``complete`` flag last, with the SHA-256 of the rows as
stored; a failed write (disk full, store unreachable, read-only) is one line naming the store
and what was being written.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict

import numpy as np

from anomalyclip.errors import AnomalyError
from anomalyclip.store.backend import disk_error, remote_error
from anomalyclip.store.meta import COMPATIBILITY_FIELDS, SCHEMA, first_difference
from anomalyclip.store.records import (
    VideoRecord,
    check_values,
    content_sha256,
    intervals_problem,
)

log = logging.getLogger(__name__)


class StoreWriter:
    """The writing methods of a feature store (mixed into ``FeatureStore``)."""

    def init(self, attrs: dict) -> None:
        """Write the root attributes of a new store, or check an existing one agrees.

        The attributes are written in one update, so a killed writer leaves all or none of
        them. A root left incomplete anyway (by an older writer) is written anew when no
        complete video is in the store, and refused otherwise: nothing could tell what those
        videos were extracted with.
        """
        current = self._b.get_attrs("")
        required = ("schema", *COMPATIBILITY_FIELDS, "dtype")
        missing = [k for k in required if k not in current]
        if current.get("schema") == SCHEMA and missing:
            done = [r for _, r, _ in self.listing() if r is not None and r.complete]
            if done:
                raise AnomalyError(
                    f"{self.location}: root attributes are incomplete (no {', '.join(missing)}) "
                    f"but {len(done)} complete videos are stored; cannot tell what they were "
                    "extracted with"
                )
            log.warning("%s: incomplete root attributes, written anew", self.location)
            current = {}
        if current.get("schema") == SCHEMA:
            diff = first_difference(current, attrs, COMPATIBILITY_FIELDS + ("dtype",))
            if diff:
                raise AnomalyError(f"{self.location}: existing store differs in {diff}")
        elif current:
            raise AnomalyError(f"{self.location}: not an anomalyclip feature store")
        with self._writing("the root attributes"):
            if not current:
                self._b.set_attrs("", attrs)
            for group in ("videos", "frames", "times", "failures"):
                self._b.ensure_group(group)
            self._b.flush(
                "zarr.json", *(f"{g}/zarr.json" for g in ("videos", "frames", "times", "failures"))
            )

    # -- writing -------------------------------------------------------------------------------
    def write_video(
        self,
        record: VideoRecord,
        features: np.ndarray,
        frames: np.ndarray | None = None,
        times: np.ndarray | None = None,
    ) -> VideoRecord:
        """Store one video's rows; the ``complete`` flag is written last.

        ``frames`` defaults to 0..T-1 and ``times`` to ``frames / fps`` (or NaN without fps).
        """
        key = self.key_for(record.video_id)
        self._trusted.discard(key)
        features = np.asarray(features)
        if features.ndim != 2:
            raise AnomalyError(
                f"{record.video_id}: features must be (frames, dim), got {features.shape}"
            )
        dim = self.meta.dim
        if dim and features.shape[1] != dim:
            raise AnomalyError(
                f"{record.video_id}: features have dim {features.shape[1]}, the store holds {dim}"
            )
        n = features.shape[0]
        if frames is None:
            frames = np.arange(n, dtype=np.int64)
        if times is None:
            times = frames / record.fps if record.fps > 0 else np.full(n, np.nan)
        frames = np.asarray(frames, dtype=np.int64)
        times = np.asarray(times, dtype=np.float64)
        if frames.shape != (n,) or times.shape != (n,):
            raise AnomalyError(f"{record.video_id}: frames and times must have one entry per row")
        check_values(record.video_id, features, self.dtype)
        problem = intervals_problem(record.intervals, frames)
        if problem:
            raise AnomalyError(f"{record.video_id}: {problem}")
        stored = np.ascontiguousarray(features.astype(self.dtype, copy=False))

        rec = VideoRecord(**{**asdict(record), "num_frames": n, "complete": False})
        rec.intervals = [[int(s), int(e)] for s, e in record.intervals]
        rec.sha256 = content_sha256(stored, frames, times)
        with self._writing(f"video {record.video_id!r}"):
            self._b.reserve(stored.nbytes + frames.nbytes + times.nbytes)
            self._b.delete(f"failures/{key}")
            self._unflag(key)  # an interrupted or outdated copy never reads as done
            self._b.write_array(f"frames/{key}", frames, {})
            self._b.write_array(f"times/{key}", times, {})
            if self._b.write_once:
                rec.complete = True
                self._b.write_array(f"videos/{key}", stored, asdict(rec))
            else:
                self._b.write_array(f"videos/{key}", stored, asdict(rec))
                self._b.flush(f"frames/{key}", f"times/{key}", f"videos/{key}")  # rows on disk
                self._b.set_attrs(f"videos/{key}", {"complete": True})  # before the flag
                rec.complete = True
            self._b.flush(f"videos/{key}/zarr.json")
        return rec

    def check_rows(
        self, video_id: str, features: np.ndarray, frames: np.ndarray | None = None,
        intervals: list | tuple = (),
    ) -> None:  # fmt: skip
        """AnomalyError when ``write_video`` would refuse these rows' values (NaN or inf, or
        beyond float16's range in a float16 store) or, given the rows' ``frames``, these
        anomalous ``intervals`` (not inside the video): a writer records such a video as
        failed and goes on."""
        check_values(video_id, np.asarray(features), self.dtype)
        if frames is not None:
            problem = intervals_problem([list(i) for i in intervals], np.asarray(frames))
            if problem:
                raise AnomalyError(f"{video_id}: {problem}")

    def _unflag(self, key: str) -> None:
        """Make a stored copy of a video incomplete before touching it (one metadata write);
        a copy whose metadata cannot be read is removed instead."""
        if not self._b.exists(f"videos/{key}"):
            return
        try:
            self._b.set_attrs(f"videos/{key}", {"complete": False})
        except Exception as exc:
            if remote_error(exc) or isinstance(exc, OSError):
                raise
            self._b.delete(f"videos/{key}")

    def record_failure(self, video_id: str, source: str, error: str) -> None:
        """Record why a video could not be stored. It replaces what was stored of it: a
        video is either complete, or failed with a reason, never both (its old rows are
        made incomplete first, then removed, then the failure is written)."""
        key = self.key_for(video_id)
        self._trusted.discard(key)
        with self._writing(f"the failure of {video_id!r}"):
            self._unflag(key)
            for group in ("videos", "frames", "times"):
                self._b.delete(f"{group}/{key}")
            self._b.ensure_group("failures")
            self._b.delete(f"failures/{key}")
            self._b.ensure_group(
                f"failures/{key}", {"video_id": video_id, "source": source, "error": error}
            )
            self._b.flush("videos/", "frames/", "times/", f"failures/{key}")

    def delete_video(self, video_id: str) -> None:
        key = self.key_for(video_id)
        self._trusted.discard(key)
        with self._writing(f"video {video_id!r}"):
            self._unflag(key)
            for group in ("videos", "frames", "times"):
                self._b.delete(f"{group}/{key}")

    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Turn a failed write (disk full, store unreachable or forbidden, read-only) into
        one line naming the store and what was being written."""
        try:
            yield
        except AnomalyError:
            raise
        except Exception as exc:
            reason = remote_error(exc) or disk_error(exc)
            if reason is None:
                raise
            raise AnomalyError(f"{self.location}: cannot write {what} ({reason})") from exc
