"""Packing each video's crops into fixed-size model batches, and handing the rows back.

A batch holds frames of one video only (see :class:`Batcher` for why); it remembers whose
every frame is, so the embeddings split back per video in frame order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    pixels: torch.Tensor  # (n, 3, 224, 224) uint8
    owner: np.ndarray  # (n,) the video of each frame

    def split(self, rows: np.ndarray) -> list[tuple[int, np.ndarray]]:
        """(n, D) rows of this batch -> [(video, its rows (k, D) in frame order)], by video."""
        if len(rows) != len(self.owner):
            raise ValueError(f"{len(rows)} rows for a batch of {len(self.owner)} frames")
        return [(v, rows[self.owner == v]) for v in np.unique(self.owner).tolist()]


class Batcher:
    """Crops of each video, in frame order, into batches of exactly ``size`` frames of that
    one video (its last batch is short).

    A batch never mixes videos: a matrix multiply rounds a row differently with other rows
    around it (up to 2.5e-5 on the demo's features when batches took frames of consecutive
    videos in the order the decoder threads delivered them), so a shared batch would make a
    video's features depend on which videos were decoded beside it and on thread timing.
    Batched per video, the same video gives the same rows, bit for bit, in every run.

    ``add`` returns the batches of ``video`` it completed (none, one, or several for a long
    chunk); ``flush(video)`` that video's short last batch; ``flush_all`` every video's;
    ``drop`` forgets a failed video's waiting crops.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        self.size = size
        self._waiting: dict[int, list[torch.Tensor]] = {}  # video -> its crops, in order

    def __len__(self) -> int:
        return sum(self._count(video) for video in self._waiting)

    def _count(self, video: int) -> int:
        return sum(len(p) for p in self._waiting.get(video, ()))

    def add(self, video: int, pixels: torch.Tensor) -> list[Batch]:
        self._waiting.setdefault(video, []).append(pixels)
        full = []
        while self._count(video) >= self.size:
            full.append(self._take(video, self.size))
        return full

    def flush(self, video: int) -> Batch | None:
        waiting = self._count(video)
        return self._take(video, waiting) if waiting else None

    def flush_all(self) -> list[Batch]:
        return [b for v in sorted(self._waiting) if (b := self.flush(v)) is not None]

    def drop(self, video: int) -> None:
        self._waiting.pop(video, None)

    def _take(self, video: int, n: int) -> Batch:
        pixels = torch.cat(self._waiting.pop(video))  # (m, 3, 224, 224)
        if len(pixels) > n:
            self._waiting[video] = [pixels[n:]]
        return Batch(pixels[:n], np.full(n, video))
