"""The feature store: one ``(frames, dim)`` array per video plus everything needed to trust it.

Layout (identical in Zarr and HDF5)::

    /                     root attributes: schema, dataset, backbone, preprocessing, sampling,
                          dtype, producer (see :mod:`anomalyclip.store.meta`)
    videos/<key>          (T, D) features in the stored dtype; attributes = a VideoRecord
    frames/<key>          (T,) int64 decoded frame number of each row
    times/<key>           (T,) float64 presentation time of each row, seconds
    failures/<key>        empty group whose attributes say which source failed and why

Records, keys and checksums are in :mod:`anomalyclip.store.records`, verification in
:mod:`anomalyclip.store.integrity`, the counts of ``store info`` in
:mod:`anomalyclip.store.summary`.

A video is written data first and its ``complete`` flag last, together with a SHA-256 of its
rows; a reader only ever sees complete videos, so a killed writer leaves at worst an
incomplete video that the next run redoes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from anomalyclip.errors import AnomalyError, one_line
from anomalyclip.store import integrity
from anomalyclip.store.backend import Backend, open_backend
from anomalyclip.store.meta import (
    SCHEMA,
    SCHEMA_VERSION,
    StoreMeta,
    shown,
)
from anomalyclip.store.records import (
    VideoRecord,
    full_key,
    is_bounded,
    video_id_of,
    video_key,
)
from anomalyclip.store.summary import summarize
from anomalyclip.store.write import StoreWriter

log = logging.getLogger(__name__)


class FeatureStore(StoreWriter):
    """Reader and writer of one feature store, whatever its format (see module docstring)."""

    def __init__(self, location: str | Path, mode: str = "r", storage_options: dict | None = None):
        self.location = str(location)
        self.mode = mode
        self._b: Backend = open_backend(self.location, mode, storage_options)
        self._trusted: set[str] = set()  # keys whose arrays were found whole (see _checked_key)
        if mode == "r":
            attrs = self._b.get_attrs("")
            if attrs.get("schema") != SCHEMA:
                self._b.close()
                raise AnomalyError(f"{self.location}: not an anomalyclip feature store")
            version = attrs.get("schema_version", 0)
            if not isinstance(version, int) or isinstance(version, bool):
                self._b.close()
                raise AnomalyError(
                    f"{self.location}: root attribute schema_version = {shown(version)}"
                    ": expected an integer"
                )
            if version > SCHEMA_VERSION:
                self._b.close()
                raise AnomalyError(
                    f"{self.location}: store schema version {attrs['schema_version']} is newer "
                    f"than this package supports ({SCHEMA_VERSION}); upgrade anomalyclip"
                )

    @classmethod
    def open(
        cls, location: str | Path, mode: str = "r", storage_options: dict | None = None
    ) -> FeatureStore:
        """The store at ``location``, as :func:`open_store` opens it (``mode`` ``"r"`` by
        default: list and read its videos); a context manager that closes it."""
        return cls(location, mode, storage_options)

    # -- context manager ---------------------------------------------------------------------
    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is None:
            self.close()
            return
        try:  # already failing: closing must not replace that error with its own
            self._b.close()
        except Exception:  # noqa: BLE001
            log.debug("%s: error while closing after an error", self.location, exc_info=True)

    def close(self) -> None:
        """Close the store (an HDF5 file is flushed: that write can fail too)."""
        with self._writing("the store's last changes"):
            self._b.close()

    # -- root ----------------------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The format's reader and writer (Zarr or HDF5): names, arrays and attributes."""
        return self._b

    @property
    def attrs(self) -> dict:
        return self._b.get_attrs("")

    @property
    def meta(self) -> StoreMeta:
        """The root attributes, typed (:class:`anomalyclip.store.meta.StoreMeta`)."""
        return StoreMeta.from_attrs(self.attrs)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.meta.dtype)

    @property
    def dataset(self) -> str:
        """The dataset's name; one line naming the store when it is not text."""
        value = self.attrs.get("dataset")
        if not isinstance(value, str) or not value:
            raise AnomalyError(
                f"{self.location}: root attribute dataset = {shown(value)}: expected a dataset name"
            )
        return value

    # -- reading -------------------------------------------------------------------------------
    def keys(self) -> list[str]:
        return self._b.names("videos")

    def video_ids(self, split: str | None = None, complete: bool = True) -> list[str]:
        """Ids of the stored videos (complete ones only, unless ``complete=False``, which also
        lists videos whose record cannot be read at all).

        A video whose record is damaged is refused by name when only complete ones are asked
        for: skipping it would silently change what is trained or evaluated on.
        """
        if complete:
            return [r.video_id for r in self.records(split)]
        out = []
        for key in self.keys():
            try:
                rec = self.load_record(key)
            except ValueError:
                if split is None:
                    out.append(self.id_of(key))
                continue
            if split is None or rec.split == split:
                out.append(rec.video_id)
        return out

    def records(self, split: str | None = None) -> list[VideoRecord]:
        """Records of the complete videos; AnomalyError naming the first damaged one, or the
        first whose split or label is not one of the store's (it would be dropped silently)."""
        root = integrity.root_problem(self.attrs)
        if root:
            raise AnomalyError(f"{self.location}: {root} (`anomaly store verify` lists them)")
        classes, dataset = integrity.store_classes(self), self.meta.dataset
        recs = []
        for key in self.keys():
            rec = self.record_by_key(key)
            if not rec.complete:
                continue
            recs.append(rec)
            problem = integrity.fields_problem(rec, classes, dataset)
            if self.key_for(rec.video_id) != key:
                problem = f"its record names another video ({rec.video_id!r})"
            if problem:
                raise AnomalyError(
                    f"{self.location}: video {self.id_of(key)!r}: {problem} (`anomaly store "
                    "verify` lists every damaged video)"
                )
        return [r for r in recs if split is None or r.split == split]

    def load_record(self, key: str) -> VideoRecord:
        """A video's record; ValueError with a short reason when it cannot be read."""
        try:
            attrs = self._b.get_attrs(f"videos/{key}")
        except Exception as exc:  # whatever the library or the JSON parser raises
            reason = f"unreadable attributes ({type(exc).__name__}: {one_line(exc)})"
            raise ValueError(reason) from None
        if isinstance(attrs, dict):
            attrs.setdefault("video_id", self.id_of(key))
        return VideoRecord.from_attrs(attrs)

    def record_by_key(self, key: str) -> VideoRecord:
        try:
            return self.load_record(key)
        except ValueError as exc:
            raise AnomalyError(
                f"{self.location}: video {self.id_of(key)!r}: {exc} (`anomaly store verify` "
                "lists every damaged video)"
            ) from None

    def listing(self) -> list[tuple[str, VideoRecord | None, str]]:
        """(video id, record or None, state) of every stored video, damaged ones included;
        state is ``ok``, ``incomplete`` or ``damaged: <reason>``."""
        out = []
        for key in self.keys():
            try:
                rec = self.load_record(key)
            except ValueError as exc:
                out.append((self.id_of(key), None, f"damaged: {exc}"))
                continue
            state = "ok" if rec.complete else "incomplete"
            if rec.complete and rec.truncated:
                state = f"ok (truncated source: {rec.truncated})"
            out.append((rec.video_id, rec, state))
        return out

    def truncated(self) -> dict[str, str]:
        """Complete videos whose source looked cut short, with why (stored as decoded)."""
        return {r.video_id: r.truncated for r in self.records() if r.truncated}

    def key_for(self, video_id: str) -> str:
        """The key of a video id (:func:`.records.video_key`); a long id that an older
        writer stored under its whole key keeps that key."""
        key = video_key(video_id)
        if is_bounded(key):
            full = full_key(video_id)
            if not self._exists(f"videos/{key}") and (
                self._exists(f"videos/{full}") or self._exists(f"failures/{full}")
            ):
                return full
        return key

    def id_of(self, key: str) -> str:
        """The video id of a key: unquoted, or for a bounded key its record's ``video_id``."""
        if not is_bounded(key):
            return video_id_of(key)
        for group in ("videos", "failures"):
            try:
                found = self._b.get_attrs(f"{group}/{key}").get("video_id")
            except Exception:  # noqa: BLE001 - unreadable: the key is all there is
                continue
            if isinstance(found, str):
                return found
        return key

    def _exists(self, path: str) -> bool:
        try:
            return self._b.exists(path)
        except OSError:  # a name longer than the file system takes: not there
            return False

    def has_video(self, video_id: str) -> bool:
        return self._b.exists(f"videos/{self.key_for(video_id)}")

    def record(self, video_id: str) -> VideoRecord:
        if not self.has_video(video_id):
            raise AnomalyError(f"{self.location}: no video {video_id!r}")
        return self.record_by_key(self.key_for(video_id))

    def is_complete(self, video_id: str, fingerprint: str | None = None) -> bool:
        """True when the video is fully written (and, if given, from the same source bytes);
        a video whose record cannot be read is not, so the next extraction redoes it."""
        if not self.has_video(video_id):
            return False
        try:
            rec = self.load_record(self.key_for(video_id))
        except ValueError:
            return False
        return rec.complete and (fingerprint is None or rec.fingerprint == fingerprint)

    def _checked_key(self, video_id: str) -> str:
        """The key of a video whose arrays are all present and as long as its record says.

        A deleted Zarr chunk reads as zeros (the fill value), which no checksum on the read
        path would see; so before a video's first read through this handle, every chunk of
        its three arrays must exist and their lengths must match the record (one listing per
        array), and what else ``verify`` checks that is cheap must hold
        (:func:`.integrity.read_problem`: dtype, width, frame order, intervals; split and
        label are checked by :meth:`records`). Then cached: a full SHA-256 per read would
        re-read and hash whole videos on every training batch. Damaged bytes are caught on
        read by the chunks' CRC32C / Fletcher-32, and a changed-but-valid rewrite only by
        ``verify``'s checksum.
        """
        key = self.key_for(video_id)
        if key in self._trusted:
            return key
        problem = integrity.read_problem(self, key)
        if problem and not self._b.exists(f"videos/{key}"):
            raise AnomalyError(f"{self.location}: no video {video_id!r}")
        if problem:
            raise AnomalyError(
                f"{self.location}: video {video_id!r}: {problem} (`anomaly store verify` lists "
                "every damaged video)"
            )
        self._trusted.add(key)
        return key

    def _read(self, video_id: str, group: str, selection=Ellipsis) -> np.ndarray:
        key = self._checked_key(video_id)
        try:
            return self._b.array(f"{group}/{key}")[selection]
        except (OSError, TimeoutError) as exc:
            raise AnomalyError(
                f"{self.location}: video {video_id!r}: cannot read {group}/ ({one_line(exc)})"
            ) from exc
        except Exception as exc:  # codec and checksum errors: whatever the library raises
            raise AnomalyError(
                f"{self.location}: video {video_id!r}: damaged data in {group}/ ({one_line(exc)})"
            ) from exc

    def features(self, video_id: str) -> np.ndarray:
        """All rows of a video, in the stored dtype."""
        return self._read(video_id, "videos")

    def rows(self, video_id: str, index: np.ndarray) -> np.ndarray:
        """Selected rows (any order, repeats allowed), reading only the span they cover."""
        index = np.asarray(index, dtype=np.int64)
        lo, hi = int(index.min()), int(index.max()) + 1
        block = self._read(video_id, "videos", slice(lo, hi))
        if block.shape[0] != hi - lo:
            raise AnomalyError(
                f"{self.location}: video {video_id!r}: rows {lo}..{hi - 1} asked, "
                f"{block.shape[0] + lo} stored"
            )
        return block[index - lo]

    def frames(self, video_id: str) -> np.ndarray:
        return self._read(video_id, "frames")

    def times(self, video_id: str) -> np.ndarray:
        return self._read(video_id, "times")

    def failures(self) -> dict[str, dict]:
        names = self._b.names("failures")
        return {self.id_of(key): self._b.get_attrs(f"failures/{key}") for key in names}

    def size_bytes(self) -> int:
        return self._b.size_bytes()

    # -- summaries and integrity (anomalyclip.store.summary, anomalyclip.store.integrity) ------
    def summary(self) -> dict:
        """Counts for ``anomaly store info`` (:func:`.summary.summarize`)."""
        return summarize(self)

    def check_video(self, key: str) -> str | None:
        """Why a stored video cannot be trusted (:func:`.integrity.check_video`)."""
        return integrity.check_video(self, key)

    def root_problem(self) -> str | None:
        """What is wrong in the root attributes (:func:`.integrity.root_problem`)."""
        return integrity.root_problem(self.attrs)

    def verify(
        self, progress: bool = False, classes: Sequence[str] | None = None
    ) -> dict[str, str]:
        """Every damaged, missing or incomplete video (:func:`.integrity.verify`); labels are
        checked against the classes the store records, else against ``classes``."""
        return integrity.verify(self, progress, classes)


def open_store(
    location: str | Path, mode: str = "r", storage_options: dict | None = None
) -> FeatureStore:
    """Open a feature store: a Zarr directory, ``.zip``, fsspec URL, or an ``.h5`` file.

    ``mode``: ``"r"`` read an existing store, ``"a"`` create or add to one, ``"w"`` start anew.
    """
    return FeatureStore(location, mode, storage_options)
