"""The CLIP batch of a watch is shared fairly among its sources."""

from __future__ import annotations

import threading
import time
from collections import Counter

import torch

from anomalyclip.live.schedule import RoundRobin
from anomalyclip.live.sources import FrameItem, FrameQueue, Notice
from anomalyclip.live.stats import SourceStats


def queues(n: int, frames: int) -> list[FrameQueue]:
    out = []
    for _ in range(n):
        q = FrameQueue(1000, False, threading.Event(), SourceStats())
        for i in range(frames):
            q.put(FrameItem(i, i / 15, torch.zeros(3, 2, 2, dtype=torch.uint8), time.monotonic()),
                  threading.Event())  # fmt: skip
        out.append(q)
    return out


def frames_per_source(batch) -> Counter:
    counts = Counter()
    for k, items in batch:
        counts[k] += sum(isinstance(i, FrameItem) for i in items)
    return counts


def test_twenty_busy_sources_share_a_batch_of_32_round_robin():
    """Every source has frames waiting: a batch gives each 1 or 2, and the sources that get
    the second frame rotate, so over five batches (160 frames) each source gets 8."""
    qs = queues(20, 100)
    rr = RoundRobin()
    total = Counter()
    for _ in range(5):
        batch = rr.take(qs, 32)
        counts = frames_per_source(batch)
        assert sum(counts.values()) == 32
        assert sorted(set(counts.values())) == [1, 2] and len(counts) == 20
        total += counts
        # each source comes once, its frames in order, without a gap
        assert len(batch) == len({k for k, _ in batch})
        for _, items in batch:
            idx = [i.index for i in items]
            assert idx == list(range(idx[0], idx[0] + len(idx)))
    assert set(total.values()) == {8}


def test_idle_and_ended_sources_leave_their_share_to_busy_ones():
    qs = queues(4, 50)
    qs[1] = queues(1, 0)[0]  # idle: nothing waiting
    rr = RoundRobin()
    counts = frames_per_source(rr.take([qs[0], qs[1], None, qs[3]], 32))
    assert counts == Counter({0: 16, 3: 16})
    # a source with 3 frames waiting gives 3, the rest goes to the others
    qs = queues(3, 50)
    qs[2] = queues(1, 3)[0]
    counts = frames_per_source(RoundRobin().take(qs, 32))
    assert counts[2] == 3 and sorted([counts[0], counts[1]]) == [14, 15]


def test_a_notice_ends_its_sources_take():
    """Frames after a notice wait for the next batch, so a notice (a break, a new
    connection) is handled between the frames before it and those after it."""
    qs = queues(2, 0)
    stop = threading.Event()
    for i in range(3):
        qs[0].put(FrameItem(i, i / 15, torch.zeros(3, 2, 2, dtype=torch.uint8), 0.0), stop)
    qs[0].put(Notice("lost"), stop)
    for i in range(3, 10):
        qs[0].put(FrameItem(i, i / 15, torch.zeros(3, 2, 2, dtype=torch.uint8), 0.0), stop)
    batch = dict(RoundRobin().take(qs, 32))
    assert [getattr(i, "index", i.kind if isinstance(i, Notice) else None) for i in batch[0]] == [
        0, 1, 2, "lost"
    ]  # fmt: skip
    assert 1 not in batch
