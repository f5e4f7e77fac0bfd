"""Packing crops of consecutive videos into fixed-size model batches, and handing the rows back.

Frames of several videos share a batch (a short video does not waste batch slots); each
batch remembers whose every frame is, so the embeddings split back per video in frame order.
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
    """Crops in (video by video, frame order), batches of exactly ``size`` frames out.

    ``add`` returns the batches it completed (none, one, or several for a long chunk);
    ``flush`` the last, short batch; ``drop`` forgets a failed video's waiting crops.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"batch size must be >= 1, got {size}")
        self.size = size
        self._pixels: list[torch.Tensor] = []  # waiting crops, in arrival order
        self._owner: list[np.ndarray] = []  # (n,) video of each waiting crop

    def __len__(self) -> int:
        return sum(len(o) for o in self._owner)

    def add(self, video: int, pixels: torch.Tensor) -> list[Batch]:
        self._pixels.append(pixels)
        self._owner.append(np.full(len(pixels), video))
        full = []
        while len(self) >= self.size:
            full.append(self._take(self.size))
        return full

    def flush(self) -> Batch | None:
        return self._take(len(self)) if len(self) else None

    def drop(self, video: int) -> None:
        if not self._owner:
            return
        owner = np.concatenate(self._owner)  # (m,)
        keep = owner != video
        self._pixels = [torch.cat(self._pixels)[torch.from_numpy(keep)]]
        self._owner = [owner[keep]]

    def _take(self, n: int) -> Batch:
        pixels = torch.cat(self._pixels)  # (m, 3, 224, 224)
        owner = np.concatenate(self._owner)  # (m,)
        rest = len(owner) - n
        self._pixels = [pixels[n:]] if rest else []
        self._owner = [owner[n:]] if rest else []
        return Batch(pixels[:n], owner[:n])
