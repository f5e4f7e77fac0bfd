"""What every dataset has in common: its spec (classes in id order), the video record, intervals.

A class id is a position in the spec's class tuple, and the same ids are used by the store,
the model's prompts and the metrics, so the order is part of the contract (each dataset module
fixes it; the published datasets follow the AnomalyCLIP authors' label files). Intervals are
half-open ``[start, end)`` in decoded frame numbers everywhere inside the package; each
parser converts its file's own convention once, at the border.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from anomalyclip.errors import AnomalyError
from anomalyclip.names import normalise_label

if TYPE_CHECKING:  # numpy is imported where masks are made: listing videos needs none
    import numpy as np

Interval = tuple[int, int]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's identity: its classes in id order and which one is Normal."""

    name: str
    title: str
    classes: tuple[str, ...]
    normal_id: int
    primary_metric: str = "auc"  # the headline metric the literature reports: "auc" or "ap"

    @property
    def normal(self) -> str:
        return self.classes[self.normal_id]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def anomaly_classes(self) -> tuple[str, ...]:
        return tuple(c for i, c in enumerate(self.classes) if i != self.normal_id)

    def class_id(self, label: str) -> int:
        """Id of a class name; case, underscores and spaces are forgiven ("car accident")."""
        if label in self.classes:
            return self.classes.index(label)
        wanted = normalise_label(label)
        for i, name in enumerate(self.classes):
            if normalise_label(name) == wanted:
                return i
        valid = ", ".join(self.classes)
        raise AnomalyError(f"unknown {self.title} class {label!r}; valid classes: {valid}")

    def canonical(self, label: str) -> str:
        """The spec's spelling of a class name."""
        return self.classes[self.class_id(label)]


@dataclass
class VideoEntry:
    """One video of a dataset, as found on disk.

    ``video_id`` is the dataset-relative path without extension (the store key); ``path`` is a
    video file or a folder of frames; ``intervals`` are the anomalous ``[start, end)`` frame
    ranges of a test video (empty for normal and for training videos: training is weakly
    supervised and must never see them).
    """

    video_id: str
    path: Path
    label: str
    split: str
    intervals: list[Interval] = field(default_factory=list)


# --------------------------------------------------------------------------- intervals


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint, non-empty intervals covering the same frames."""
    merged: list[list[int]] = []
    for start, end in sorted((int(s), int(e)) for s, e in intervals if e > s):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def frame_labels(intervals: Sequence[Interval], frames: np.ndarray) -> np.ndarray:
    """Boolean anomaly label of each row whose decoded frame number is ``frames[i]``.

    Works for any sampling (every frame, a stride, an fps) because it looks up frame numbers,
    not row positions.
    """
    import numpy as np

    frames = np.asarray(frames, dtype=np.int64)
    merged = merge_intervals(intervals)
    if not merged:
        return np.zeros(frames.shape, dtype=bool)
    bounds = np.asarray(merged, dtype=np.int64)  # (K, 2), sorted and disjoint
    k = np.searchsorted(bounds[:, 0], frames, side="right") - 1  # last interval starting <= f
    return (k >= 0) & (frames < bounds[np.maximum(k, 0), 1])


def mask_to_intervals(mask: np.ndarray) -> list[Interval]:
    """Runs of True in a per-frame mask, as ``[start, end)`` intervals."""
    import numpy as np

    m = np.asarray(mask, dtype=bool).astype(np.int8)
    edges = np.diff(np.concatenate(([0], m, [0])))  # +1 where a run starts, -1 past its end
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def intervals_to_mask(intervals: Sequence[Interval], num_frames: int) -> np.ndarray:
    """Per-frame boolean mask of length ``num_frames``."""
    import numpy as np

    return frame_labels(intervals, np.arange(num_frames))
