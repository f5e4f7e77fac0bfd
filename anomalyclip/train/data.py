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


def centroid_sums(store: FeatureStore, records: list[VideoRecord]) -> tuple[torch.Tensor, int]:
    """Sum (float64) and count of the frame embeddings of ``records``: the normal centroid
    is their quotient, summed over processes first when the work is shared."""
    total = torch.zeros(int(store.attrs.get("backbone", {}).get("dim") or 512), dtype=torch.float64)
    count = 0
    for rec in records:
        x = store.features(rec.video_id).astype(np.float64)
        total += torch.from_numpy(x.sum(0))
        count += x.shape[0]
    return total, count


def epoch_plan(
    data: TrainingSet, batch_size: int, seed: int, epoch: int
) -> list[list[VideoRecord]]:
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
    return [
        abn[b * half : (b + 1) * half] + nor[b * half : (b + 1) * half] for b in range(n_batches)
    ]


@dataclass
class Batch:
    features: torch.Tensor  # (B, N, L, D) float32
    labels: torch.Tensor  # (B,) class ids, abnormal first


def local_positions(batch_size: int, rank: int, world: int) -> list[int]:
    """Positions in a global batch that one of ``world`` processes trains on.

    Each process takes a contiguous share of the abnormal half and the same share of the
    normal half, so its local batch keeps the abnormal-first layout the loss expects, and the
    shards concatenated in rank order give back the global order.
    """
    half = batch_size // 2
    if half % world:
        raise AnomalyError(f"batch size {batch_size} does not split over {world} processes")
    share = half // world
    mine = list(range(rank * share, (rank + 1) * share))
    return mine + [half + i for i in mine]


def load_batch(
    store: FeatureStore,
    videos: list[VideoRecord],
    class_ids: dict[str, int],
    num_segments: int,
    seg_length: int,
    rngs: list[np.random.Generator],
) -> Batch:
    rows = []
    for rec, rng in zip(videos, rngs, strict=True):
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
    positions: list[int] | None = None,
) -> Iterator[Batch]:
    """Yield the batches of ``plan`` in order while ``workers`` threads read ahead.

    ``positions`` picks this process's videos of each global batch (all by default). Every
    video draws its frames from its own RNG, seeded by (seed, epoch, batch, position), so
    what is sampled depends neither on thread timing nor on how the batch is sharded.
    """

    def load(b: int) -> Batch:
        pos = positions if positions is not None else range(len(plan[b]))
        videos = [plan[b][j] for j in pos]
        rngs = [np.random.default_rng([seed, epoch, 1, b, j]) for j in pos]
        return load_batch(store, videos, data.class_ids, num_segments, seg_length, rngs)

    if workers <= 0:
        for b in range(len(plan)):
            yield load(b)
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
                cond.wait_for(lambda b=b: stop.is_set() or b < state["next"] + prefetch)
            if stop.is_set():
                return
            try:
                item: Batch | BaseException = load(b)
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
