"""Which waiting frames go into the next CLIP batch: the same share for every source.

All sources of a watch share each CLIP forward of at most ``batch_size`` frames.
:class:`RoundRobin` deals the batch out one frame per source per turn, over the sources
that have frames waiting, so busy sources get equal shares (20 busy sources and a batch of
32: twelve get 2 frames, eight get 1) and an idle one leaves its share to the others. The
turn starts where the previous batch's ended, so the sources that get the extra frame
rotate: over batches, every busy source gets the same number of frames.
"""

from __future__ import annotations

from collections.abc import Sequence

from anomalyclip.live.sources import FrameItem, FrameQueue, Notice


class RoundRobin:
    """Takes up to ``budget`` frames from the sources' queues for one batch (module
    docstring)."""

    def __init__(self) -> None:
        self.next = 0  # the queue that is dealt to first in the next batch

    def take(
        self, queues: Sequence[FrameQueue | None], budget: int
    ) -> list[tuple[int, list[FrameItem | Notice]]]:
        """(index of the queue, its items in order) for each queue that gave something,
        in index order; ``None`` stands for a source that has ended. A queue's take stops
        after a notice (the frames after it wait for the next batch)."""
        n = len(queues)
        order = [(self.next + j) % n for j in range(n)]
        dealing = [k for k in order if queues[k] is not None]
        taken: dict[int, list] = {}
        while budget > 0 and dealing:
            still = []
            for k in dealing:
                if budget == 0:
                    break
                items = queues[k].take(1)
                if not items:
                    continue  # nothing waiting: its share goes to the others
                taken.setdefault(k, []).extend(items)
                if isinstance(items[0], FrameItem):
                    budget -= 1
                    still.append(k)
                    self.next = (k + 1) % n
            dealing = still
        return sorted(taken.items())
