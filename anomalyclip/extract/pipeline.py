"""Videos -> feature store: decoder workers overlapped with batched CLIP inference.

Shape of a run::

    entries ─► [decoder thread] ─┐                       ┌─► per-video buffers ─► store
               [decoder thread] ─┼─► bounded queue of ──►│ batches of exactly batch_size
               [decoder thread] ─┘   uint8 224x224 crops │ frames through the image tower
                                                         └─ (one consumer: the model)

Decoder threads (PyAV and torch's resize both release the GIL) decode a whole video each,
resize and crop its frames in chunks and put them on a bounded queue, so decoding runs ahead
of the model by at most a few batches of memory. The consumer packs frames of consecutive
videos into full batches (short videos do not waste batch slots), splits the embeddings back,
and writes a video to the store once all its frames are embedded. Only this thread touches
the store.

Resume and idempotence come from the store: a video whose copy is complete and whose source
fingerprint matches is skipped before decoding; anything else is (re)done, and the store's
complete-flag-last write means a killed run never leaves a video that reads as done.
A video that fails (cannot be opened, truncated, ...) is recorded in the store with its reason
and the run goes on. Every decoded frame is a heartbeat: a decoder that yields nothing for
``stall_timeout`` seconds has its video recorded as failed, is left behind (a thread stuck in
C cannot be stopped) and a fresh decoder takes the remaining videos.

Scale-out: ``shard=(rank, world)`` gives each of ``world`` processes a disjoint share of the
videos balanced by bytes (:func:`shard_entries`), all writing into one store. Under one launch
(``coordinated``, e.g. ``torchrun``) rank 0 writes the root attributes and the other ranks wait
for them, so a store's provenance is written once and never raced.
"""

from __future__ import annotations

import heapq
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from anomalyclip import backbone
from anomalyclip.datasets.registry import VideoEntry
from anomalyclip.errors import AnomalyError
from anomalyclip.extract.decode import Sampling, VideoSource
from anomalyclip.extract.encoder import ImageEncoder, Precision
from anomalyclip.extract.preprocess import resize_crop
from anomalyclip.store import SCHEMA, VideoRecord, fingerprint_file, open_store, provenance
from anomalyclip.store.backend import store_format

log = logging.getLogger(__name__)

ROOT_WAIT_S = 600.0  # how long ranks > 0 wait for rank 0 to write a store's root attributes
STALL_S = 120.0  # seconds without a decoded frame after which a video is given up as failed


def preprocessing_attrs() -> dict:
    """Every number of the preprocessing, for the store's provenance."""
    return {
        "resize": "shorter side to 224, bicubic, antialiased (longer = int(224 * long / short))",
        "crop": "centre 224x224",
        "crop_rounding": "round((side - 224) / 2)",
        "size": backbone.CLIP_IMAGE_SIZE,
        "scale": "1/255",
        "mean": list(backbone.CLIP_MEAN),
        "std": list(backbone.CLIP_STD),
        "implementation": "torch uint8 bicubic antialias (<= 2 grey levels from PIL)",
    }


@dataclass
class Summary:
    """What a run did; ``failed`` maps video ids to the reason."""

    total: int = 0
    extracted: int = 0
    skipped: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    truncated: dict[str, str] = field(default_factory=dict)  # stored, source cut short
    frames: int = 0
    seconds: float = 0.0

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        lines = [
            f"{self.total} videos: {self.extracted} extracted, {self.skipped} already done, "
            f"{len(self.failed)} failed"
            + (f", {len(self.truncated)} truncated" if self.truncated else "")
            + f"; {self.frames} frames in {self.seconds:.1f} s ({self.frames_per_s:.1f} frames/s)"
        ]
        lines += [f"  failed {vid}: {reason}" for vid, reason in sorted(self.failed.items())]
        lines += [f"  truncated {vid}: {why}" for vid, why in sorted(self.truncated.items())]
        return "\n".join(lines)


# -- messages from the decoder threads to the consumer ---------------------------------------
@dataclass
class _Chunk:
    video: int  # position in the work list
    pixels: torch.Tensor  # (n, 3, 224, 224) uint8
    frames: np.ndarray  # (n,) int64 decoded frame numbers
    times: np.ndarray  # (n,) float64 seconds


@dataclass
class _Done:
    video: int
    num_decoded: int
    fps: float
    truncated: str = ""  # why the source looks cut short ("" if it does not)


@dataclass
class _Failed:
    video: int
    reason: str


@dataclass
class _Exit:
    worker: int


@dataclass
class _Decoding:
    """What the decoder threads share with the consumer."""

    work: queue.Queue  # (video, path) still to decode
    out: queue.Queue  # _Chunk, _Done, _Failed, _Exit
    stop: threading.Event
    sampling: Sampling
    chunk: int  # frames per _Chunk
    folder_fps: float | None
    pin: bool
    beats: dict[int, tuple[int, float]] = field(default_factory=dict)  # worker -> (video, time)
    abandoned: set[int] = field(default_factory=set)  # workers given up on as stalled


def _decode_worker(ctx: _Decoding, worker: int) -> None:
    """Decode whole videos from ``ctx.work``; put chunks of crops, then _Done or _Failed, on
    ``ctx.out``; _Exit when the work is done. Each decoded frame (and each wait for room on
    the queue) is a heartbeat in ``ctx.beats``; a worker the consumer gave up on puts nothing
    more."""

    def alive() -> bool:
        return not ctx.stop.is_set() and worker not in ctx.abandoned

    def beat(video: int) -> None:
        ctx.beats[worker] = (video, time.monotonic())

    def put(item, video: int | None = None) -> bool:
        while alive():
            if video is not None:
                beat(video)  # waiting for the model is not a stalled decoder
            try:
                ctx.out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def flush(video: int, images: list, frames: list, times: list) -> bool:
        pixels = resize_crop(np.stack(images))  # (n, 3, 224, 224) uint8
        if ctx.pin:
            pixels = pixels.pin_memory()
        item = _Chunk(video, pixels, np.asarray(frames, np.int64), np.asarray(times, np.float64))
        images.clear(), frames.clear(), times.clear()
        return put(item, video)

    while alive():
        try:
            video, path = ctx.work.get_nowait()
        except queue.Empty:
            break
        beat(video)
        source = VideoSource(path, ctx.sampling, ctx.folder_fps)
        images: list[np.ndarray] = []
        frames: list[int] = []
        times: list[float] = []
        try:
            for frame in source:
                beat(video)
                if (
                    images
                    and frame.image.shape != images[0].shape
                    and not flush(video, images, frames, times)
                ):  # a resolution change mid-stream: chunks hold one size
                    return
                images.append(frame.image)
                frames.append(frame.index)
                times.append(frame.time)
                if len(images) == ctx.chunk and not flush(video, images, frames, times):
                    return
            if images and not flush(video, images, frames, times):
                return
            done = _Done(video, source.num_decoded, source.fps or 0.0, source.truncated)
            if not put(done, video):
                return
        except AnomalyError as exc:
            put(_Failed(video, str(exc)), video)
        except Exception as exc:  # a decoder bug must not take the whole run down
            log.exception("unexpected error while decoding %s", path)
            put(_Failed(video, f"{path}: unexpected {type(exc).__name__}: {exc}"), video)
        ctx.beats.pop(worker, None)
    put(_Exit(worker))


@dataclass
class _VideoState:
    chunks_in: int = 0  # frames received from the decoder
    embedded: int = 0  # frames through the model
    features: list = field(default_factory=list)
    frames: list = field(default_factory=list)
    times: list = field(default_factory=list)
    done: _Done | None = None


def _relative(path: Path, root: Path | None) -> str:
    """``path`` relative to ``root`` as listed (symlinks are not followed), else its name.

    Never raises: a broken entry (a symlink loop, an unreadable folder) is recorded as a
    failure of that video, which needs this name.
    """
    if root is not None:
        try:
            return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
        except ValueError:
            pass
        try:  # a root given through another symlinked spelling of the same folder
            return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
        except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop
            pass
    return Path(path).name


def extract(
    entries: Sequence[VideoEntry],
    store_path: str | Path,
    model: str | Path | ImageEncoder = backbone.DEFAULT_CLIP,
    device: str = "cpu",
    sampling: Sampling = Sampling(),
    batch_size: int = 64,
    workers: int = 2,
    dtype: str = "float16",
    *,
    dataset: str,
    root: str | Path | None = None,
    precision: Precision = "auto",
    folder_fps: float | None = None,
    shard: tuple[int, int] = (0, 1),
    coordinated: bool = False,
    root_timeout: float = ROOT_WAIT_S,
    progress: bool = True,
    strict: bool = False,
    stall_timeout: float = STALL_S,
) -> Summary:
    """Extract CLIP frame embeddings of ``entries`` into the store at ``store_path``.

    ``model`` is a hub id, a local Hugging Face directory, or a loaded :class:`ImageEncoder`
    (reused by the demo and the benchmark). ``shard=(rank, world)`` takes this process's share
    of the entries (:func:`shard_entries`), so several processes (one per GPU, or the tasks of
    a job array) share a dataset. ``coordinated`` says the ``world`` processes were started
    together and write the same store: rank 0 writes its root attributes, the others wait up
    to ``root_timeout`` seconds for them. ``root`` makes the stored source paths relative.
    A source that decodes to far less than its header declares is stored and flagged as
    truncated (``Summary.truncated``), or with ``strict`` recorded as failed. A video whose
    decoder yields no frame for ``stall_timeout`` seconds is recorded as failed and the run
    goes on; Ctrl-C stops the run at once (what is complete stays, nothing half-done reads as
    complete, failures seen so far are recorded).
    Returns a :class:`Summary`; failures are also recorded in the store.
    """
    if batch_size < 1 or workers < 1:
        raise AnomalyError(f"batch size and workers must be >= 1 (got {batch_size}, {workers})")
    rank, world = shard
    entries = shard_entries(entries, rank, world)
    if coordinated and world > 1 and store_format(store_path) != "zarr":
        raise AnomalyError(
            f"{store_path}: {world} processes cannot write one {store_format(store_path)} "
            "store at once; extract into a Zarr directory or URL (export it afterwards)"
        )
    encoder = model if isinstance(model, ImageEncoder) else ImageEncoder(model, device, precision)
    attrs = provenance(
        dataset=dataset,
        backbone=encoder.describe(),
        preprocessing=preprocessing_attrs(),
        sampling=sampling.describe(),
        dtype=dtype,
        device=str(encoder.device),
    )
    attrs["producer"]["shard"] = f"{rank}/{world}"  # who wrote the root attributes
    summary = Summary(total=len(entries))
    t0 = time.perf_counter()
    if coordinated and rank > 0:
        _wait_for_root(store_path, root_timeout)
    with open_store(store_path, mode="a") as st:
        existed = st.attrs.get("schema") == SCHEMA
        st.init(attrs)  # writes them, or checks the existing ones agree
        log.info(
            "rank %d/%d: %s root attributes of %s",
            rank, world, "checked" if existed else "wrote", store_path,
        )  # fmt: skip
        todo: list[tuple[VideoEntry, int, str]] = []
        for entry in entries:
            try:
                size, fp = fingerprint_file(entry.path)
            except OSError as exc:
                reason = f"{entry.path}: cannot read ({exc.strerror or exc})"
                st.record_failure(entry.video_id, _relative(entry.path, root), reason)
                summary.failed[entry.video_id] = reason
                continue
            if st.is_complete(entry.video_id, fingerprint=fp):
                summary.skipped += 1
            else:
                todo.append((entry, size, fp))
        log.info(
            "%d videos: %d to extract, %d already in %s",
            len(entries),
            len(todo),
            summary.skipped,
            store_path,
        )
        if todo:
            _run(
                todo, st, encoder, summary, sampling, batch_size, workers, dtype, root,
                folder_fps, progress, strict, stall_timeout,
            )  # fmt: skip
    summary.seconds = time.perf_counter() - t0
    return summary


def _run(
    todo: list[tuple[VideoEntry, int, str]],
    st,
    encoder: ImageEncoder,
    summary: Summary,
    sampling: Sampling,
    batch_size: int,
    workers: int,
    dtype: str,
    root: str | Path | None,
    folder_fps: float | None,
    progress: bool,
    strict: bool = False,
    stall_timeout: float = STALL_S,
) -> None:
    """The decode -> queue -> model -> store loop over the videos to do."""
    work: queue.Queue = queue.Queue()
    for i, (entry, _, _) in enumerate(todo):
        work.put((i, entry.path))
    workers = min(workers, len(todo))
    ctx = _Decoding(
        work, queue.Queue(maxsize=2 * workers + 2), threading.Event(), sampling, batch_size,
        folder_fps, pin=encoder.device.type == "cuda",
    )  # fmt: skip
    threads: list[threading.Thread] = []

    def start_worker() -> None:
        k = len(threads)
        threads.append(
            threading.Thread(target=_decode_worker, args=(ctx, k), name=f"decode-{k}", daemon=True)
        )
        threads[-1].start()

    states: dict[int, _VideoState] = {}
    given_up: set[int] = set()  # videos failed while their decoder may still send items
    pending_pixels: list[torch.Tensor] = []  # crops waiting for a full batch, in arrival order
    pending_owner: list[np.ndarray] = []  # (n,) video of each waiting crop
    bar = tqdm(total=None, unit="frame", desc="extract", disable=not progress, dynamic_ncols=True)
    videos_done = 0

    def finish(video: int) -> None:
        nonlocal videos_done
        state = states.pop(video)
        entry, size, fp = todo[video]
        feats = (
            np.concatenate(state.features)
            if state.features
            else np.zeros((0, encoder.dim), np.float32)
        )
        try:
            st.check_rows(entry.video_id, feats)
        except AnomalyError as exc:  # e.g. embeddings beyond float16's range
            fail(video, str(exc))
            return
        truncated = state.done.truncated
        if truncated and strict:
            fail(video, f"{entry.path}: truncated (--strict): {truncated}")
            return
        record = VideoRecord(
            video_id=entry.video_id,
            source=_relative(entry.path, root),
            label=entry.label,
            split=entry.split,
            fps=float(state.done.fps),
            num_frames=int(feats.shape[0]),
            source_size=int(size),
            fingerprint=fp,
            intervals=[[int(s), int(e)] for s, e in entry.intervals],
            truncated=truncated,
        )
        st.write_video(
            record,
            feats.astype(dtype),
            np.concatenate(state.frames) if state.frames else np.zeros(0, np.int64),
            np.concatenate(state.times) if state.times else np.zeros(0, np.float64),
        )
        summary.extracted += 1
        summary.frames += feats.shape[0]
        if truncated:
            summary.truncated[entry.video_id] = truncated
            log.warning("%s: stored, but the source looks truncated: %s", entry.path, truncated)
        videos_done += 1
        bar.set_postfix_str(f"{videos_done}/{len(todo)} videos", refresh=False)
        log.debug("%s: %d rows, %d decoded", entry.video_id, len(feats), state.done.num_decoded)

    def fail(video: int, reason: str) -> None:
        entry = todo[video][0]
        st.record_failure(entry.video_id, _relative(entry.path, root), reason)
        summary.failed[entry.video_id] = reason
        log.warning("failed: %s", reason)

    def run_model(n: int) -> None:
        """Embed the first ``n`` waiting crops and hand the rows to their videos."""
        pixels = torch.cat(pending_pixels)  # (m, 3, 224, 224)
        owner = np.concatenate(pending_owner)  # (m,)
        emb = encoder(pixels[:n]).numpy()  # (n, D)
        pending_pixels[:] = [pixels[n:]] if n < len(owner) else []
        pending_owner[:] = [owner[n:]] if n < len(owner) else []
        owner = owner[:n]
        bar.update(n)
        for video in np.unique(owner).tolist():
            state = states[video]
            rows = emb[owner == video]  # (k, D), in frame order
            state.features.append(rows)
            state.embedded += len(rows)
            if state.done is not None and state.embedded == state.chunks_in:
                finish(video)

    def drop(video: int) -> None:
        """Forget a failed video's state and its crops still waiting for a batch."""
        states.pop(video, None)
        given_up.add(video)
        if pending_owner:
            owner = np.concatenate(pending_owner)
            keep = owner != video
            pending_pixels[:] = [torch.cat(pending_pixels)[torch.from_numpy(keep)]]
            pending_owner[:] = [owner[keep]]

    def check_stalls() -> None:
        """Give up on a video whose decoder made no progress for ``stall_timeout`` seconds:
        record it as failed and let a fresh worker take on the remaining videos."""
        now = time.monotonic()
        for worker, (video, last) in list(ctx.beats.items()):
            if worker in ctx.abandoned or now - last < stall_timeout:
                continue
            ctx.abandoned.add(worker)
            ctx.beats.pop(worker, None)
            drop(video)
            fail(video, f"{todo[video][0].path}: no frame decoded for {stall_timeout:g} s "
                        "(the decoder stalled; damaged or truncated file?)")  # fmt: skip
            if not work.empty():
                start_worker()

    for _ in range(workers):
        start_worker()
    exited: set[int] = set()
    try:
        while set(range(len(threads))) - exited - ctx.abandoned:
            check_stalls()
            try:
                item = ctx.out.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(item, _Exit):
                exited.add(item.worker)
            elif getattr(item, "video", None) in given_up:
                continue  # late news from a decoder given up on
            elif isinstance(item, _Chunk):
                state = states.setdefault(item.video, _VideoState())
                state.chunks_in += len(item.frames)
                state.frames.append(item.frames)
                state.times.append(item.times)
                pending_pixels.append(item.pixels)
                pending_owner.append(np.full(len(item.frames), item.video))
                while sum(len(o) for o in pending_owner) >= batch_size:
                    run_model(batch_size)
            elif isinstance(item, _Done):
                state = states.setdefault(item.video, _VideoState())
                state.done = item
                if state.embedded == state.chunks_in:
                    finish(item.video)
            elif isinstance(item, _Failed):
                drop(item.video)
                fail(item.video, item.reason)
        remaining = sum(len(o) for o in pending_owner)
        if remaining:
            run_model(remaining)
    finally:  # also on Ctrl-C: stop the decoders, without waiting on a stalled one
        ctx.stop.set()
        deadline = time.monotonic() + 2.0
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        bar.close()


def _source_size(path: Path) -> int:
    """Bytes of a video file, or of all files of a folder of frames (0 when unreadable)."""
    p = Path(path)
    try:
        if p.is_dir():
            return sum(f.stat().st_size for f in p.iterdir() if f.is_file())
        return p.stat().st_size
    except OSError:  # the owning rank records the failure when it fingerprints it
        return 0


def shard_entries(entries: Sequence[VideoEntry], rank: int, world: int) -> list[VideoEntry]:
    """This rank's share of ``entries``: disjoint across ranks, complete, balanced by bytes.

    Greedy longest-processing-time: sources from largest to smallest (ties by video id) each
    go to the rank with the fewest bytes so far (ties to the lower rank). Every rank computes
    the same assignment from the same file sizes, with no communication, and the loads end
    within one source of each other (max - min <= the largest source). Bytes stand in for
    decoding + embedding time, which a round-robin over ids ignores: one long video per rank
    would otherwise decide when the whole job ends. Returned in video-id order.
    """
    if world < 1 or not 0 <= rank < world:
        raise AnomalyError(f"shard {rank}/{world}: need 0 <= rank < world size")
    sized = sorted(
        ((_source_size(e.path), e) for e in entries), key=lambda s: (-s[0], s[1].video_id)
    )
    loads = [(0, r) for r in range(world)]  # heap of (bytes so far, rank)
    mine: list[VideoEntry] = []
    for size, entry in sized:
        load, owner = heapq.heappop(loads)
        heapq.heappush(loads, (load + size, owner))
        if owner == rank:
            mine.append(entry)
    return sorted(mine, key=lambda e: e.video_id)


def _wait_for_root(store_path: str | Path, timeout: float, poll: float = 0.2) -> None:
    """Block until rank 0 has written the store's root attributes (ranks > 0 of one launch).

    Opening read-only never creates anything, so waiting ranks cannot race rank 0 into an
    empty root; any error while the store is being created (absent, no attributes yet, a
    metadata file caught half-written) means "not yet" and is retried.
    """
    deadline = time.monotonic() + timeout
    last = "no store yet"
    while True:
        try:
            with open_store(store_path, mode="r") as st:
                if st.attrs.get("schema") == SCHEMA:
                    return
        except Exception as exc:  # noqa: BLE001 - every failure here means "not written yet"
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise AnomalyError(
                f"{store_path}: rank 0 did not write the store's root attributes within "
                f"{timeout:.0f} s (last: {last})"
            )
        time.sleep(poll)


def shard_from_env() -> tuple[int, int]:
    """(rank, world size) under ``torchrun`` (or any launcher setting RANK/WORLD_SIZE)."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
