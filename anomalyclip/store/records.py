"""What the store keeps of one video besides its rows, and how its rows are named and checked.

A video's rows live at ``videos/<key>``; ``<key>`` is the video id with ``/`` and other unsafe
characters percent-encoded (:func:`video_key`), so the dataset's relative path
(``Abuse/Abuse028_x264``) is kept without nesting groups. Its :class:`VideoRecord` is that
array's attributes; :func:`content_sha256` is the checksum of its rows exactly as stored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import PurePosixPath

import numpy as np

from anomalyclip.errors import AnomalyError
from anomalyclip.names import STORE_SAFE, cut_with_hash, percent_decode, percent_encode

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


KEY_MAX = 200  # characters (ASCII: bytes) of a key, well under the usual 255 of a file name
HASHED = "!"  # never in a percent-encoded id: marks a key cut to KEY_MAX and ended by a hash


def video_key(video_id: str) -> str:
    """The store name of a video id; refuses ids that could escape the store.

    The id is percent-encoded (as UTF-8; a file name that is not UTF-8 keeps its bytes), so
    ``Abuse/Abuse028_x264`` is ``Abuse%2FAbuse028_x264``. A key longer than :data:`KEY_MAX`
    (a long or non-Latin name: each CJK character takes 9) is cut and ends in ``!`` and a
    hash of the id: unique, and read back through the ``video_id`` of its record.
    """
    path = PurePosixPath(video_id)
    if (
        not video_id
        or video_id.startswith("/")
        or "\\" in video_id
        or any(part in ("", ".", "..") for part in video_id.split("/"))
        or path.is_absolute()
    ):
        raise AnomalyError(f"{video_id!r}: invalid video id (empty, absolute or with '..')")
    key = full_key(video_id)
    if len(key) > KEY_MAX:
        digest = hashlib.sha256(key.encode()).hexdigest()[:20]
        key = cut_with_hash(key, KEY_MAX - len(digest) - 1, HASHED, digest)
    return key


def full_key(video_id: str) -> str:
    """The whole percent-encoded id: the key of every id before keys were bounded."""
    key = percent_encode(video_id, STORE_SAFE)
    return "%5F" + key[1:] if key.startswith("__") else key


def video_id_of(key: str) -> str:
    """The id of an unbounded key (a bounded one's id is in its record)."""
    return percent_decode(key)


def is_bounded(key: str) -> bool:
    return HASHED in key


def check_values(video_id: str, features: np.ndarray, dtype: np.dtype) -> None:
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


def values_problem(parts: dict[str, np.ndarray]) -> str | None:
    """Rows that cannot be right whatever their checksum says."""
    bad = ~np.isfinite(parts["videos"]).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        return f"{int(bad.sum())} row(s) of features with NaN or inf (first: row {first})"
    return order_problem(parts["frames"], parts["times"])


def order_problem(frames: np.ndarray, times: np.ndarray) -> str | None:
    """Frame numbers and times that do not increase from row to row (times may all be NaN:
    a source without timestamps)."""
    if frames.size and (frames.min() < 0 or (np.diff(frames) <= 0).any()):
        return "frame numbers are not increasing"
    if not np.isnan(times).all() and (not np.isfinite(times).all() or (np.diff(times) <= 0).any()):
        return "presentation times are not increasing"
    return None


def frame_extent(frames: np.ndarray) -> int:
    """The frame after a video's last stored row: its last frame number plus the usual
    step between rows (0 without rows). Anomalous intervals lie in ``[0, extent)``."""
    if not frames.size:
        return 0
    step = int(np.median(np.diff(frames))) if frames.size > 1 else 1
    return int(frames[-1]) + max(step, 1)


def intervals_problem(intervals: list[list[int]], frames: np.ndarray) -> str | None:
    """The first anomalous interval that is empty or not inside the video's frames: one
    outside would make an anomalous video count as normal (none of its rows inside)."""
    end = frame_extent(np.asarray(frames))
    for s, e in intervals:
        if not 0 <= s < e <= end:
            return f"interval [{s}, {e}) is not inside the video's frames [0, {end})"
    return None


def content_sha256(features: np.ndarray, frames: np.ndarray, times: np.ndarray) -> str:
    """Checksum of a video's rows exactly as stored (dtype and byte order included)."""
    h = hashlib.sha256()
    for arr in (features, frames, times):
        arr = np.ascontiguousarray(arr)
        h.update(str(arr.dtype.str).encode() + str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()
