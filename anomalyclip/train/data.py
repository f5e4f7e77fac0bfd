"""Streaming training batches out of a feature store.

Each step needs, for B/2 abnormal and B/2 normal training videos, N segments of L
consecutive frames sampled TSN-style. Only those rows are read (from the span they cover),
and a few threads read ahead of the optimiser so the store is never the bottleneck.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from anomalyclip.datasets import get_dataset
from anomalyclip.errors import AnomalyError
from anomalyclip.store import FeatureStore, VideoRecord

log = logging.getLogger(__name__)


def tsn_indices(
    num_frames: int, num_segments: int, seg_length: int, rng: np.random.Generator
) -> np.ndarray:
    """(N, L) frame indices: N equal spans, L consecutive frames from a random start in each.

    Spans shorter than L (a video shorter than N*L) read on modulo the video's length.
    """
    bounds = np.floor(np.arange(num_segments + 1) * num_frames / num_segments).astype(np.int64)
    lo, hi = bounds[:-1], bounds[1:]
    room = np.maximum(hi - lo - seg_length + 1, 1)  # admissible start positions per span
    start = lo + (rng.random(num_segments) * room).astype(np.int64)
    return (start[:, None] + np.arange(seg_length)[None, :]) % num_frames


@dataclass
class TrainingSet:
    """The training videos of a store, split by kind, with their class ids."""

    abnormal: list[VideoRecord]
    normal: list[VideoRecord]
    class_ids: dict[str, int]  # video id -> class id

    @classmethod
    def from_store(cls, store: FeatureStore) -> TrainingSet:
        spec = get_dataset(store.dataset)
        records = store.records(split="train")
        abnormal = [r for r in records if spec.class_id(r.label) != spec.normal_id]
        normal = [r for r in records if spec.class_id(r.label) == spec.normal_id]
        if not abnormal or not normal:
            raise AnomalyError(
                f"{store.location}: training needs abnormal and normal training videos; "
                f"found {len(abnormal)} abnormal and {len(normal)} normal"
            )
        return cls(abnormal, normal, {r.video_id: spec.class_id(r.label) for r in records})


def compute_centroid(store: FeatureStore, records: list[VideoRecord]) -> torch.Tensor:
    """Mean embedding of every frame of the given (normal training) videos, in float64."""
    total, count = None, 0
    for rec in records:
        x = store.features(rec.video_id).astype(np.float64)
        total = x.sum(0) if total is None else total + x.sum(0)
        count += x.shape[0]
    if not count:
        raise AnomalyError(f"{store.location}: no frames to compute the normal centroid from")
    return torch.from_numpy(total / count).float()


def epoch_plan(data: TrainingSet, batch_size: int, seed: int, epoch: int) -> list[list[VideoRecord]]:
    """Video lists of every batch of one epoch: first half abnormal, second half normal.

    One epoch visits every video of the larger kind once; the smaller kind is cycled.
    The order depends only on (seed, epoch), which is what makes ``--resume`` exact.
    """
    half = batch_size // 2
    rng = np.random.default_rng([seed, epoch, 0])
    n_batches = max(1, -(-max(len(data.abnormal), len(data.normal)) // half))

    def draw(videos: list[VideoRecord]) -> list[VideoRecord]:
        order = []
        while len(order) < n_batches * half:
            order.extend(rng.permutation(len(videos)).tolist())
        return [videos[i] for i in order[: n_batches * half]]

    abn, nor = draw(data.abnormal), draw(data.normal)
    return [abn[b * half : (b + 1) * half] + nor[b * half : (b + 1) * half] for b in range(n_batches)]


@dataclass
class Batch:
    features: torch.Tensor  # (B, N, L, D) float32
    labels: torch.Tensor  # (B,) class ids, abnormal first


def load_batch(
    store: FeatureStore,
    videos: list[VideoRecord],
    class_ids: dict[str, int],
    num_segments: int,
    seg_length: int,
    rng: np.random.Generator,
) -> Batch:
    rows = []
    for rec in videos:
        idx = tsn_indices(rec.num_frames, num_segments, seg_length, rng)  # (N, L)
        rows.append(store.rows(rec.video_id, idx.reshape(-1)).reshape(*idx.shape, -1))
    x = torch.from_numpy(np.stack(rows).astype(np.float32))
    y = torch.tensor([class_ids[r.video_id] for r in videos], dtype=torch.long)
    return Batch(x, y)


def iterate_batches(
    store: FeatureStore,
    data: TrainingSet,
    plan: list[list[VideoRecord]],
    num_segments: int,
    seg_length: int,
    seed: int,
    epoch: int,
    workers: int = 2,
    prefetch: int = 4,
) -> Iterator[Batch]:
    """Yield the batches of ``plan`` in order while ``workers`` threads read ahead.

    Each batch gets its own RNG seeded by (seed, epoch, batch), so what is sampled does not
    depend on thread timing.
    """
    if workers <= 0:
        for b, videos in enumerate(plan):
            rng = np.random.default_rng([seed, epoch, 1, b])
            yield load_batch(store, videos, data.class_ids, num_segments, seg_length, rng)
        return

    results: dict[int, Batch | BaseException] = {}
    cond = threading.Condition()
    todo: queue.Queue[int | None] = queue.Queue()
    for b in range(len(plan)):
        todo.put(b)
    stop = threading.Event()
    state = {"next": 0}  # the batch the consumer waits for

    def work() -> None:
        while not stop.is_set():
            try:
                b = todo.get_nowait()
            except queue.Empty:
                return
            with cond:  # bound the read-ahead; the batch awaited next always goes ahead
                cond.wait_for(lambda: stop.is_set() or b < state["next"] + prefetch)
            if stop.is_set():
                return
            rng = np.random.default_rng([seed, epoch, 1, b])
            try:
                item: Batch | BaseException = load_batch(
                    store, plan[b], data.class_ids, num_segments, seg_length, rng
                )
            except BaseException as exc:  # handed to the consumer, raised there
                item = exc
            with cond:
                results[b] = item
                cond.notify_all()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    try:
        for b in range(len(plan)):
            with cond:
                cond.wait_for(lambda b=b: b in results)
                item = results.pop(b)
                state["next"] = b + 1
                cond.notify_all()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        with cond:
            cond.notify_all()
        for t in threads:
            t.join()
