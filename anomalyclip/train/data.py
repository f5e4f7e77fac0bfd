"""Streaming training batches out of a feature store.

Each step needs, for B/2 abnormal and B/2 normal training videos, N segments of L
consecutive frames. Only those rows are read (from the span they cover), and a few threads
read ahead of the optimiser so the store is never the bottleneck.

By default every part of this follows the AnomalyCLIP authors' training code: which frames
a video gives (:func:`published_indices`), how many steps an epoch has and in which order the
videos come (:func:`epoch_plan`).
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from anomalyclip.datasets import get_dataset
from anomalyclip.errors import AnomalyError
from anomalyclip.store import DEFAULT_DIM, FeatureStore, VideoRecord

log = logging.getLogger(__name__)
T = TypeVar("T")


def published_indices(
    num_frames: int, num_segments: int, seg_length: int, rng: np.random.Generator
) -> np.ndarray:
    """(N, L) frame indices as the published training code samples them.

    Segment i starts at ``i * d + o_i`` and reads L consecutive frames, modulo the video's
    length F. The spacing is ``d = (max(F, N*L) - L + 1) // N``: a video shorter than N*L
    frames is spaced as if it had N*L, so (N=32, L=16) its segments start every 15 frames
    from frame 0 and a short clip is played several times in order at its own rate. Each
    segment draws its own offset ``o_i`` uniformly from ``[0, d - L + 1]``; that range is
    ``[0, 0]`` below N*L frames (and still at 512 and 513 frames, where d = 15), so only longer
    videos are sampled at random. Where ``d < L - 1`` (odd shapes with L > N + 1, which the
    published code cannot run) the offset is 0.
    """
    d = (max(num_frames, num_segments * seg_length) - seg_length + 1) // num_segments
    offset = rng.integers(0, max(d - seg_length + 2, 1), size=num_segments)  # (N,)
    start = np.arange(num_segments) * d + offset
    return (start[:, None] + np.arange(seg_length)[None, :]) % num_frames


def uniform_indices(
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


SAMPLERS = {"published": published_indices, "uniform": uniform_indices}


@dataclass(frozen=True)
class SegmentSampler:
    """Which N x L frames a training video gives: ``rule`` names an entry of :data:`SAMPLERS`.

    ``published`` (the default) is the authors' sampler. ``uniform`` (the TSN rule) cuts
    every video into N equal spans whatever its length, so each segment covers 1/N of the
    video: a short clip becomes one time-stretched pass of overlapping windows instead of
    several repeats at its own rate, and every frame of a long video can be drawn (the
    published sampler never reads the frames after frame N*d, up to N + L - 3 of them). One
    may prefer it for clips much shorter than N*L frames, where the published sampler shows
    the model the same frames several times per bag; it is not the paper's recipe.
    """

    num_segments: int
    seg_length: int
    rule: str = "published"

    def __call__(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        return SAMPLERS[self.rule](num_frames, self.num_segments, self.seg_length, rng)


@dataclass
class TrainingSet:
    """The training videos of a store, split by kind, with their class ids."""

    abnormal: list[VideoRecord]
    normal: list[VideoRecord]
    class_ids: dict[str, int]  # video id -> class id
    source: str = "training set"  # where the videos come from, for messages

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
        ids = {r.video_id: spec.class_id(r.label) for r in records}
        return cls(abnormal, normal, ids, str(store.location))

    def steps_per_epoch(self, batch_size: int) -> int:
        """Full half-batches of the larger kind: the published epoch length."""
        half = batch_size // 2
        if half < 1 or min(len(self.abnormal), len(self.normal)) < half:
            raise AnomalyError(
                f"{self.source}: batch size {batch_size} needs at least {half} abnormal and "
                f"{half} normal training videos (incomplete half-batches are dropped); found "
                f"{len(self.abnormal)} abnormal and {len(self.normal)} normal: lower --batch-size"
            )
        return max(len(self.abnormal), len(self.normal)) // half

    @functools.cached_property
    def normal_ids(self) -> frozenset[str]:
        return frozenset(r.video_id for r in self.normal)


def check_layout(videos: list[VideoRecord], data: TrainingSet) -> None:
    """Refuse a batch not laid out as training reads it: an even number of videos, the first
    half abnormal, the second half normal. The loss takes its abnormal and normal halves by
    position (anomalyclip.model.loss) and data-parallel training shards each half
    (:func:`local_positions`), so a batch of another layout would train on wrong targets
    without any error; every batch passes here as it is built (:func:`load_batch`)."""
    kinds = "".join("n" if v.video_id in data.normal_ids else "a" for v in videos)
    half = len(kinds) // 2
    if not kinds or len(kinds) % 2 or kinds != "a" * half + "n" * half:
        raise ValueError(
            f"batch of {len(kinds)} videos laid out {kinds!r} (a: abnormal, n: normal); "
            "training needs the first half abnormal and the second half normal"
        )


def centroid_sums(store: FeatureStore, records: list[VideoRecord]) -> tuple[torch.Tensor, int]:
    """Sum (float64) and count of the frame embeddings of ``records``: the normal centroid
    is their quotient, summed over processes first when the work is shared."""
    total = torch.zeros(store.meta.dim or DEFAULT_DIM, dtype=torch.float64)
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

    As the published training: each kind is a loader of ``batch_size // 2`` videos per batch,
    shuffled, its incomplete last batch dropped; an epoch has as many steps as the larger
    loader has full batches, and the smaller loader starts over with a fresh shuffle each
    time it runs out (so within one pass no video comes twice, and each pass leaves out its
    own remainder). The order depends only on (seed, epoch), which makes ``--resume`` exact.
    """
    half = batch_size // 2
    n_batches = data.steps_per_epoch(batch_size)
    rng = np.random.default_rng([seed, epoch, 0])

    def draw(videos: list[VideoRecord]) -> list[VideoRecord]:
        per_pass = len(videos) // half * half  # the videos one pass of the loader yields
        order: list[int] = []
        while len(order) < n_batches * half:
            order.extend(rng.permutation(len(videos))[:per_pass].tolist())
        return [videos[i] for i in order[: n_batches * half]]

    abn, nor = draw(data.abnormal), draw(data.normal)
    return [
        abn[b * half : (b + 1) * half] + nor[b * half : (b + 1) * half] for b in range(n_batches)
    ]


@dataclass
class Batch:
    features: torch.Tensor  # (B, N, L, D) float32
    labels: torch.Tensor  # (B,) class ids, abnormal first (check_layout)


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
    data: TrainingSet,
    sampler: SegmentSampler,
    rngs: list[np.random.Generator],
) -> Batch:
    """The batch of ``videos`` (laid out as :func:`check_layout` requires), each sampled by
    ``sampler`` with its own RNG."""
    check_layout(videos, data)
    rows = []
    for rec, rng in zip(videos, rngs, strict=True):
        idx = sampler(rec.num_frames, rng)  # (N, L)
        rows.append(store.rows(rec.video_id, idx.reshape(-1)).reshape(*idx.shape, -1))
    x = torch.from_numpy(np.stack(rows).astype(np.float32))
    y = torch.tensor([data.class_ids[r.video_id] for r in videos], dtype=torch.long)
    return Batch(x, y)


def read_ahead(
    load: Callable[[int], T], count: int, workers: int, prefetch: int = 4
) -> Iterator[T]:
    """``load(0) ... load(count - 1)``, yielded in order while ``workers`` threads run ahead.

    At most ``prefetch`` items past the one awaited are loaded early; the item awaited next
    always goes ahead. An exception raised by ``load`` is raised here, at its item's turn.
    Stopping the iteration early (``close``, or an error in the consumer) stops the threads.
    """
    results: dict[int, T | BaseException] = {}
    cond = threading.Condition()
    todo: queue.Queue[int] = queue.Queue()
    for i in range(count):
        todo.put(i)
    stop = threading.Event()
    state = {"next": 0}  # the item the consumer waits for

    def work() -> None:
        while not stop.is_set():
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            with cond:  # bound the read-ahead; the item awaited next always goes ahead
                cond.wait_for(lambda i=i: stop.is_set() or i < state["next"] + prefetch)
            if stop.is_set():
                return
            try:
                item: T | BaseException = load(i)
            except BaseException as exc:  # handed to the consumer, raised there
                item = exc
            with cond:
                results[i] = item
                cond.notify_all()

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for t in threads:
        t.start()
    try:
        for i in range(count):
            with cond:
                cond.wait_for(lambda i=i: i in results)
                item = results.pop(i)
                state["next"] = i + 1
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


def iterate_batches(
    store: FeatureStore,
    data: TrainingSet,
    plan: list[list[VideoRecord]],
    sampler: SegmentSampler,
    seed: int,
    epoch: int,
    workers: int = 2,
    positions: list[int] | None = None,
) -> Iterator[Batch]:
    """Yield the batches of ``plan`` in order while ``workers`` threads read ahead
    (:func:`read_ahead`; none with ``workers=0``).

    ``positions`` picks this process's videos of each global batch (all by default). Every
    video draws its frames from its own RNG, seeded by (seed, epoch, batch, position), so
    what is sampled depends neither on thread timing nor on how the batch is sharded.
    """

    def load(b: int) -> Batch:
        pos = positions if positions is not None else range(len(plan[b]))
        videos = [plan[b][j] for j in pos]
        rngs = [np.random.default_rng([seed, epoch, 1, b, j]) for j in pos]
        return load_batch(store, videos, data, sampler, rngs)

    if workers <= 0:
        yield from map(load, range(len(plan)))
    else:
        yield from read_ahead(load, len(plan), workers)
