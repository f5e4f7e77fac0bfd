"""The feature store: one ``(frames, dim)`` array per video plus everything needed to trust it.

Layout (identical in Zarr and HDF5)::

    /                     root attributes: schema, dataset, backbone, preprocessing, sampling,
                          dtype, producer (see :func:`provenance`)
    videos/<key>          (T, D) features in the stored dtype; attributes = a VideoRecord
    frames/<key>          (T,) int64 decoded frame number of each row
    times/<key>           (T,) float64 presentation time of each row, seconds
    failures/<key>        empty group whose attributes say which source failed and why

``<key>`` is the video id with ``/`` and other unsafe characters percent-encoded, so the
dataset's relative path (``Abuse/Abuse028_x264``) is kept without nesting groups.

A video is written data first and its ``complete`` flag last, together with a SHA-256 of its
rows; a reader only ever sees complete videos, so a killed writer leaves at worst an
incomplete video that the next run redoes.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote

import numpy as np

from anomalyclip.errors import AnomalyError
from anomalyclip.store.backend import Backend, disk_error, open_backend, remote_error
from anomalyclip.store.meta import DTYPES, SCHEMA, SCHEMA_VERSION, StoreMeta

log = logging.getLogger(__name__)

# The fields two stores must share to be merged or read together.
COMPATIBILITY_FIELDS = ("dataset", "backbone", "preprocessing", "sampling")


MAX_TEXT = 4096  # characters of any text attribute of a video (ids, paths, labels, hashes)
MAX_INTERVALS = 100_000  # anomalous intervals of one video
_RECORD_TYPES = {
    "video_id": str, "source": str, "label": str, "split": str, "fps": float, "num_frames": int,
    "source_size": int, "fingerprint": str, "intervals": list, "sha256": str, "complete": bool,
    "truncated": str,
}  # fmt: skip


@dataclass
class VideoRecord:
    """What the store knows about one video besides its rows."""

    video_id: str
    source: str = ""  # path relative to the dataset root
    label: str = ""  # class name
    split: str = ""  # "train" | "test"
    fps: float = 0.0
    num_frames: int = 0  # rows stored
    source_size: int = -1
    fingerprint: str = ""
    intervals: list[list[int]] = field(default_factory=list)  # anomalous [start, end) frames
    sha256: str = ""
    complete: bool = False
    truncated: str = ""  # why the source looks cut short of its header ("" if it does not)

    @classmethod
    def from_attrs(cls, attrs: dict) -> VideoRecord:
        """A record from stored attributes; ValueError (with a short reason) when they are not
        what a writer of this package leaves: wrong types, oversized text or interval lists."""
        if not isinstance(attrs, dict):
            raise ValueError("attributes are not a mapping")
        values = {}
        for f in fields(cls):
            if f.name not in attrs:
                continue
            value = attrs[f.name]
            kind = _RECORD_TYPES[f.name]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise ValueError(f"attribute {f.name!r} is not {kind.__name__}")
            if isinstance(value, str) and len(value) > MAX_TEXT:
                raise ValueError(f"attribute {f.name!r} is too long ({len(value):,} characters)")
            if f.name == "intervals":
                if len(value) > MAX_INTERVALS:
                    raise ValueError(f"attribute 'intervals' has {len(value):,} entries")
                if not all(
                    isinstance(i, list) and len(i) == 2 and all(type(x) is int for x in i)
                    for i in value
                ):
                    raise ValueError("attribute 'intervals' is not a list of [start, end]")
            values[f.name] = value
        return cls(**values)


def video_key(video_id: str) -> str:
    """The store name of a video id; refuses ids that could escape the store."""
    path = PurePosixPath(video_id)
    if (
        not video_id
        or video_id.startswith("/")
        or "\\" in video_id
        or any(part in ("", ".", "..") for part in video_id.split("/"))
        or path.is_absolute()
    ):
        raise AnomalyError(f"{video_id!r}: invalid video id (empty, absolute or with '..')")
    key = quote(video_id, safe="-_.,+=@()[]~ ")
    if key.startswith("__"):
        key = "%5F" + key[1:]
    return key


def video_id_of(key: str) -> str:
    return unquote(key)


def _check_values(video_id: str, features: np.ndarray, dtype: np.dtype) -> None:
    """Refuse rows that would not be stored as given: NaN or inf, or (in a float16 store)
    values beyond float16's range, which would silently become inf."""
    finite = np.isfinite(features)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        raise AnomalyError(
            f"{video_id}: {len(bad)} row(s) with NaN or inf (first: row {int(bad[0])})"
        )
    if dtype == np.float16 and features.size:
        peak = float(np.abs(features).max())
        limit = float(np.finfo(np.float16).max)
        if peak > limit:
            raise AnomalyError(
                f"{video_id}: values up to {peak:.4g} exceed float16's range (±{limit:g}); "
                "store them as float32 (--dtype float32)"
            )


def _values_problem(parts: dict[str, np.ndarray]) -> str | None:
    """Rows that cannot be right whatever their checksum says."""
    bad = ~np.isfinite(parts["videos"]).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        return f"{int(bad.sum())} row(s) of features with NaN or inf (first: row {first})"
    frames, times = parts["frames"], parts["times"]
    if frames.size and (frames.min() < 0 or (np.diff(frames) <= 0).any()):
        return "frame numbers are not increasing"
    if not np.isnan(times).all() and (not np.isfinite(times).all() or (np.diff(times) <= 0).any()):
        return "presentation times are not increasing"
    return None


def content_sha256(features: np.ndarray, frames: np.ndarray, times: np.ndarray) -> str:
    """Checksum of a video's rows exactly as stored (dtype and byte order included)."""
    h = hashlib.sha256()
    for arr in (features, frames, times):
        arr = np.ascontiguousarray(arr)
        h.update(str(arr.dtype.str).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def fingerprint_file(path: str | Path, sample: int = 1 << 20) -> tuple[int, str]:
    """Size and a cheap content fingerprint of a source video (or a folder of frames).

    Hashing whole videos would cost as much I/O as decoding them on resume, so the
    fingerprint covers the size and three 1 MiB samples (start, middle, end): any re-encode,
    truncation or replacement changes it.
    """
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file())
        size = 0
        for f in files:
            st = f.stat()
            size += st.st_size
            h.update(f"{f.name}:{st.st_size};".encode())
        return size, "dir-sha256:" + h.hexdigest()
    size = p.stat().st_size
    h.update(str(size).encode())
    with p.open("rb") as fh:
        for offset in sorted({0, max(0, size // 2 - sample // 2), max(0, size - sample)}):
            fh.seek(offset)
            h.update(fh.read(sample))
    return size, "sample-sha256:" + h.hexdigest()


def first_difference(
    a: dict, b: dict, fields_: tuple[str, ...] = COMPATIBILITY_FIELDS
) -> str | None:
    """Dotted name of the first compatibility field where two root attribute sets differ."""

    def walk(x, y, prefix: str) -> str | None:
        if isinstance(x, dict) and isinstance(y, dict):
            for key in sorted(set(x) | set(y)):
                found = walk(x.get(key), y.get(key), f"{prefix}.{key}")
                if found:
                    return found
            return None
        return None if x == y else f"{prefix} ({x!r} != {y!r})"

    for name in fields_:
        found = walk(a.get(name), b.get(name), name)
        if found:
            return found
    return None


def shorten(value: object, limit: int = 120) -> str:
    """``str(value)`` cut to ``limit`` characters: what an error may echo of stored text."""
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, capped: what an error may quote of another."""
    return shorten(" ".join(str(exc).split()) or type(exc).__name__, limit)


def describe_backbone(backbone: dict | None) -> str:
    """``model (weights 0123456789ab, dim 512)``: what tells two backbones apart, short."""
    if not isinstance(backbone, dict) or not backbone:
        return "an unrecorded backbone"
    detail = []
    if backbone.get("weights_sha256"):
        detail.append(f"weights {str(backbone['weights_sha256'])[:12]}")
    if backbone.get("dim"):
        detail.append(f"dim {shorten(backbone['dim'], 12)}")
    name = shorten(backbone.get("model", "?"))
    return f"{name} ({', '.join(detail)})" if detail else name


def backbone_difference(expected: dict | None, found: dict | None) -> str | None:
    """Why features from backbone ``found`` do not fit a model trained on ``expected``.

    The weight hash decides when both sides have one (a local copy of the same weights may
    carry another name); otherwise the model id does. The width must always agree. None when
    they fit, or when ``expected`` was never recorded (nothing to compare against).
    """
    if not expected:
        return None
    found = found or {}
    if expected.get("dim") and found.get("dim") and expected["dim"] != found["dim"]:
        return "dim"
    if expected.get("weights_sha256") and found.get("weights_sha256"):
        return None if expected["weights_sha256"] == found["weights_sha256"] else "weights_sha256"
    return None if expected.get("model") == found.get("model") else "model"


class FeatureStore:
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
            if attrs.get("schema_version", 0) > SCHEMA_VERSION:
                self._b.close()
                raise AnomalyError(
                    f"{self.location}: store schema version {attrs['schema_version']} is newer "
                    f"than this package supports ({SCHEMA_VERSION}); upgrade anomalyclip"
                )

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
        return self.meta.dataset

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
        key = video_key(record.video_id)
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
        _check_values(record.video_id, features, self.dtype)
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

    def check_rows(self, video_id: str, features: np.ndarray) -> None:
        """AnomalyError when ``write_video`` would refuse these rows' values (NaN or inf, or
        beyond float16's range in a float16 store): a writer records such a video as failed
        and goes on."""
        _check_values(video_id, np.asarray(features), self.dtype)

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
        key = video_key(video_id)
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
        key = video_key(video_id)
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
                rec = self._load_record(key)
            except ValueError:
                if split is None:
                    out.append(video_id_of(key))
                continue
            if split is None or rec.split == split:
                out.append(rec.video_id)
        return out

    def records(self, split: str | None = None) -> list[VideoRecord]:
        """Records of the complete videos; AnomalyError naming the first damaged one."""
        recs = [self.record_by_key(k) for k in self.keys()]
        return [r for r in recs if r.complete and (split is None or r.split == split)]

    def _load_record(self, key: str) -> VideoRecord:
        """A video's record; ValueError with a short reason when it cannot be read."""
        try:
            attrs = self._b.get_attrs(f"videos/{key}")
        except Exception as exc:  # whatever the library or the JSON parser raises
            reason = f"unreadable attributes ({type(exc).__name__}: {one_line(exc)})"
            raise ValueError(reason) from None
        if isinstance(attrs, dict):
            attrs.setdefault("video_id", video_id_of(key))
        return VideoRecord.from_attrs(attrs)

    def record_by_key(self, key: str) -> VideoRecord:
        try:
            return self._load_record(key)
        except ValueError as exc:
            raise AnomalyError(
                f"{self.location}: video {video_id_of(key)!r}: {exc} (`anomaly store verify` "
                "lists every damaged video)"
            ) from None

    def listing(self) -> list[tuple[str, VideoRecord | None, str]]:
        """(video id, record or None, state) of every stored video, damaged ones included;
        state is ``ok``, ``incomplete`` or ``damaged: <reason>``."""
        out = []
        for key in self.keys():
            try:
                rec = self._load_record(key)
            except ValueError as exc:
                out.append((video_id_of(key), None, f"damaged: {exc}"))
                continue
            state = "ok" if rec.complete else "incomplete"
            if rec.complete and rec.truncated:
                state = f"ok (truncated source: {rec.truncated})"
            out.append((rec.video_id, rec, state))
        return out

    def truncated(self) -> dict[str, str]:
        """Complete videos whose source looked cut short, with why (stored as decoded)."""
        return {r.video_id: r.truncated for r in self.records() if r.truncated}

    def has_video(self, video_id: str) -> bool:
        return self._b.exists(f"videos/{video_key(video_id)}")

    def record(self, video_id: str) -> VideoRecord:
        if not self.has_video(video_id):
            raise AnomalyError(f"{self.location}: no video {video_id!r}")
        return self.record_by_key(video_key(video_id))

    def is_complete(self, video_id: str, fingerprint: str | None = None) -> bool:
        """True when the video is fully written (and, if given, from the same source bytes);
        a video whose record cannot be read is not, so the next extraction redoes it."""
        if not self.has_video(video_id):
            return False
        try:
            rec = self._load_record(video_key(video_id))
        except ValueError:
            return False
        return rec.complete and (fingerprint is None or rec.fingerprint == fingerprint)

    def _checked_key(self, video_id: str) -> str:
        """The key of a video whose arrays are all present and as long as its record says.

        A deleted Zarr chunk reads as zeros (the fill value), which no checksum on the read
        path would see; so before a video's first read through this handle, every chunk of
        its three arrays must exist and their lengths must match the record (one listing per
        array, then cached: a full SHA-256 per read would re-read and hash whole videos on
        every training batch). Damaged bytes are caught on read by the chunks' CRC32C /
        Fletcher-32, and a changed-but-valid rewrite only by ``verify``'s checksum.
        """
        key = video_key(video_id)
        if key in self._trusted:
            return key
        problem = self._structure_problem(key)
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
        return {
            video_id_of(key): self._b.get_attrs(f"failures/{key}")
            for key in self._b.names("failures")
        }

    def size_bytes(self) -> int:
        return self._b.size_bytes()

    def summary(self) -> dict:
        """Counts for ``anomaly store info``: per split and class, frames, size."""
        meta = self.meta
        listing = self.listing()
        recs = [r for _, r, _ in listing if r is not None]
        done = [r for r in recs if r.complete]
        per_split = Counter(r.split for r in done)
        per_class = Counter(f"{r.split}/{r.label}" for r in done)
        return {
            "location": self.location,
            "dataset": meta.dataset,
            "backbone": meta.model,
            "dim": meta.dim,
            "dtype": meta.dtype,
            "sampling": meta.sampling,
            "videos": len(done),
            "incomplete": len(recs) - len(done),
            "damaged": len(listing) - len(recs),
            "truncated": sum(1 for r in done if r.truncated),
            "failed": len(self._b.names("failures")),
            "frames": int(sum(r.num_frames for r in done)),
            "per_split": dict(sorted(per_split.items())),
            "per_class": dict(sorted(per_class.items())),
            "size_bytes": self.size_bytes(),
        }

    # -- integrity -----------------------------------------------------------------------------
    def _structure_problem(self, key: str) -> str | None:
        """Why a video's record or arrays cannot be read as a whole (None: all there)."""
        try:
            rec = self._load_record(key)
        except ValueError as exc:
            return str(exc)
        if not rec.complete:
            return "incomplete (no completeness flag)"
        for group in ("videos", "frames", "times"):
            try:
                state = self._b.array_state(f"{group}/{key}")
            except Exception as exc:  # an unreadable array header is damage too
                return f"unreadable array {group}/ ({type(exc).__name__}: {one_line(exc)})"
            if state is None:
                return f"missing array {group}/"
            rows, missing = state
            if missing:
                return f"{missing} missing chunk(s) in {group}/"
            if rows != rec.num_frames:
                return f"has {rows} rows in {group}/, its record says {rec.num_frames}"
        return None

    def check_video(self, key: str) -> str | None:
        """Why a stored video cannot be trusted, or None when its rows match its checksum."""
        problem = self._structure_problem(key)
        if problem:
            return problem
        rec = self._load_record(key)
        parts = {}
        for group in ("videos", "frames", "times"):
            try:
                parts[group] = self._b.array(f"{group}/{key}")[...]
            except Exception as exc:  # codec / checksum / I/O errors all mean damage here
                return f"damaged data in {group}/ ({type(exc).__name__}: {one_line(exc)})"
        if content_sha256(parts["videos"], parts["frames"], parts["times"]) != rec.sha256:
            return "checksum mismatch (content changed since it was written)"
        return _values_problem(parts) or self._record_problem(rec, parts["videos"])

    def _record_problem(self, rec: VideoRecord, features: np.ndarray) -> str | None:
        """What in a readable record contradicts the store: label, split, intervals, width."""
        from anomalyclip.datasets import get_dataset

        meta = self.meta  # compared only where valid: root_problem reports the rest
        if meta.dim is not None and features.shape[1] != meta.dim:
            return f"rows have width {features.shape[1]}, the store's backbone {meta.dim}"
        if meta.dtype in DTYPES and str(features.dtype) != meta.dtype:
            return f"rows are {features.dtype}, the store holds {meta.dtype}"
        if rec.split not in ("train", "test"):
            return f"split {shorten(rec.split, 40)!r} is not train or test"
        try:
            get_dataset(self.dataset).class_id(rec.label)
        except AnomalyError:
            return f"label {shorten(rec.label, 40)!r} is not a class of dataset {self.dataset!r}"
        if any(not 0 <= s < e for s, e in rec.intervals):
            return f"intervals {shorten(rec.intervals, 60)} are not [start, end) frames"
        return None

    def root_problem(self) -> str | None:
        """What is missing or invalid in the root attributes (None: all there)."""
        from anomalyclip.datasets import get_dataset

        attrs = self.attrs
        found = []
        if attrs.get("schema") != SCHEMA:
            found.append(f"schema is {shorten(attrs.get('schema'), 40)!r}")
        try:
            get_dataset(attrs.get("dataset") or "")
        except AnomalyError:
            found.append(f"dataset {shorten(attrs.get('dataset'), 40)!r} is unknown")
        if StoreMeta.from_attrs(attrs).dim is None:
            found.append("backbone has no dim")
        for name in ("preprocessing", "sampling"):
            if not isinstance(attrs.get(name), dict):
                found.append(f"no {name}")
        if attrs.get("dtype") not in DTYPES:
            found.append(f"dtype {shorten(attrs.get('dtype'), 20)!r} is not float16 or float32")
        return "root attributes: " + "; ".join(found) if found else None

    def verify(self, progress: bool = False) -> dict[str, str]:
        """Every damaged, missing or incomplete video, with the reason (empty dict: intact).

        Besides each video's arrays and checksum, its values (finite features, increasing
        frame numbers and times), its record (label of the store's dataset, split,
        intervals, width and dtype) and the root attributes (under the key ``/``) are checked.
        """
        from anomalyclip.progress import bar

        problems = {}
        root = self.root_problem()
        if root:
            problems["/"] = root
        for key in bar(self.keys(), desc="verify", unit="video", enabled=progress):
            reason = self.check_video(key)
            if reason:
                problems[video_id_of(key)] = reason
        return problems


def open_store(
    location: str | Path, mode: str = "r", storage_options: dict | None = None
) -> FeatureStore:
    """Open a feature store: a Zarr directory, ``.zip``, fsspec URL, or an ``.h5`` file.

    ``mode``: ``"r"`` read an existing store, ``"a"`` create or add to one, ``"w"`` start anew.
    """
    return FeatureStore(location, mode, storage_options)
