"""Decoder threads: sources in, uint8 CLIP crops out, in arrival order.

Each thread decodes one whole source at a time, resizes and crops each frame as it comes
(PyAV and torch's resize both release the GIL, so threads overlap with the model; so do
OpenCV's JPEG encoder and PIL's decoder and resize on the authors' path) and puts
the crops in chunks on a bounded queue, so decoding runs ahead of the consumer by at most a
few chunks.
Iterating a :class:`Decoders` yields, per source, its :class:`Chunk` s in frame order, then
one :class:`Done` or one :class:`Failed`.

Every decoded frame (and every wait for room on the queue) is a heartbeat. A thread that
shows none for ``stall_timeout`` seconds has its source reported as :class:`Failed`, is left
behind (a thread stuck in C cannot be stopped; nothing it sends later is passed on) and a
fresh thread takes the sources still waiting.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from anomalyclip.errors import AnomalyError
from anomalyclip.extract.config import ExtractConfig
from anomalyclip.extract.decode import VideoSource
from anomalyclip.extract.preprocess import crop_frame, frame_pixels

log = logging.getLogger(__name__)


@dataclass
class Chunk:
    """Consecutive kept frames of one source."""

    video: int  # position of the source in the list given to Decoders
    pixels: torch.Tensor  # (n, 3, 224, 224) uint8
    frames: np.ndarray  # (n,) int64 decoded frame numbers
    times: np.ndarray  # (n,) float64 seconds


@dataclass
class Done:
    """A source decoded to its end; every chunk of it came before this."""

    video: int
    num_decoded: int
    fps: float
    truncated: str = ""  # why the source looks cut short ("" if it does not)


@dataclass
class Failed:
    video: int
    reason: str


@dataclass
class _Exit:
    worker: int


@dataclass
class _Shared:
    """What the decoder threads share with the iterating thread."""

    work: queue.Queue  # (video, path) still to decode
    out: queue.Queue  # Chunk, Done, Failed, _Exit
    stop: threading.Event
    config: ExtractConfig
    pin: bool
    beats: dict[int, tuple[int, float]] = field(default_factory=dict)  # worker -> (video, time)
    abandoned: set[int] = field(default_factory=set)  # workers given up on as stalled


class _Worker:
    """One decoder thread's loop (:meth:`run`), putting its messages on ``shared.out``."""

    def __init__(self, shared: _Shared, worker: int) -> None:
        self.shared, self.worker = shared, worker

    def alive(self) -> bool:
        return not self.shared.stop.is_set() and self.worker not in self.shared.abandoned

    def beat(self, video: int) -> None:
        self.shared.beats[self.worker] = (video, time.monotonic())

    def put(self, item, video: int | None = None) -> bool:
        """Put ``item`` on the queue; False once the run stopped or gave up on this worker."""
        while self.alive():
            if video is not None:
                self.beat(video)  # waiting for the consumer is not a stalled decoder
            try:
                self.shared.out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def flush(self, video: int, crops: list, frames: list, times: list) -> bool:
        pixels = torch.cat(crops)  # (n, 3, 224, 224) uint8
        if self.shared.pin:
            pixels = pixels.pin_memory()
        item = Chunk(video, pixels, np.asarray(frames, np.int64), np.asarray(times, np.float64))
        crops.clear(), frames.clear(), times.clear()
        return self.put(item, video)

    def decode(self, video: int, path: Path) -> bool:
        """Chunks of one source, then Done; False when told to stop.

        Each frame is resized and cropped as soon as it is decoded (the same crops bit for
        bit as a batch's), so a chunk holds only 224x224 crops. Stacking a chunk's full-size
        frames first (64 x 1.3 MB at 768x576) and resizing them together cost more: 62-125
        ms against 41-58 ms for 64 frames one by one, and 190-320 MB more peak memory in an
        extraction with two threads. A source that changes its size mid-stream needs nothing
        special."""
        cfg = self.shared.config
        pixels = frame_pixels(cfg.preprocess, folder=Path(path).is_dir())
        source = VideoSource(path, cfg.sampling, cfg.folder_fps, pixels=pixels)
        crops: list[torch.Tensor] = []
        frames: list[int] = []
        times: list[float] = []
        for frame in source:
            self.beat(video)
            image = frame.image if cfg.zone is None else cfg.zone.apply(frame.image, pixels)
            crops.append(crop_frame(image, cfg.preprocess, pixels))  # (1, 3, 224, 224)
            frames.append(frame.index)
            times.append(frame.time)
            if len(crops) == cfg.batch_size and not self.flush(video, crops, frames, times):
                return False
        if crops and not self.flush(video, crops, frames, times):
            return False
        done = Done(video, source.num_decoded, source.fps or 0.0, source.truncated)
        return self.put(done, video)

    def run(self) -> None:
        while self.alive():
            try:
                video, path = self.shared.work.get_nowait()
            except queue.Empty:
                break
            self.beat(video)
            try:
                if not self.decode(video, path):
                    return
            except AnomalyError as exc:
                self.put(Failed(video, str(exc)), video)
            except Exception as exc:  # a decoder bug must not take the whole run down
                log.exception("unexpected error while decoding %s", path)
                self.put(Failed(video, f"{path}: unexpected {type(exc).__name__}: {exc}"), video)
            self.shared.beats.pop(self.worker, None)
        self.put(_Exit(self.worker))


class Decoders:
    """``config.workers`` decoder threads over ``paths``; iterate for their messages.

    Use as a context manager: leaving it (also on Ctrl-C) stops the threads, without waiting
    on a stalled one. ``pin`` puts the crops in pinned memory (for a CUDA model).
    """

    def __init__(self, paths: Sequence[Path], config: ExtractConfig, pin: bool = False) -> None:
        self._paths = list(paths)
        work: queue.Queue = queue.Queue()
        for i, path in enumerate(self._paths):
            work.put((i, path))
        self.workers = max(1, min(config.workers, len(paths)))
        out: queue.Queue = queue.Queue(maxsize=2 * self.workers + 2)
        self.shared = _Shared(work, out, threading.Event(), config, pin)
        self.threads: list[threading.Thread] = []

    def _start_worker(self) -> None:
        k = len(self.threads)
        worker = _Worker(self.shared, k)
        self.threads.append(threading.Thread(target=worker.run, name=f"decode-{k}", daemon=True))
        self.threads[-1].start()

    def __enter__(self) -> Decoders:
        for _ in range(self.workers):
            self._start_worker()
        return self

    def __exit__(self, *exc) -> None:
        self.shared.stop.set()
        deadline = time.monotonic() + 2.0
        for t in self.threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def _stalled(self) -> Iterator[Failed]:
        """Give up on each source whose thread showed no progress for ``stall_timeout`` s,
        and start a fresh thread for the sources still waiting."""
        shared, timeout = self.shared, self.shared.config.stall_timeout
        now = time.monotonic()
        for worker, (video, last) in list(shared.beats.items()):
            if worker in shared.abandoned or now - last < timeout:
                continue
            shared.abandoned.add(worker)
            shared.beats.pop(worker, None)
            yield Failed(video, f"{self._paths[video]}: no frame decoded for {timeout:g} s "
                                "(the decoder stalled; damaged or truncated file?)")  # fmt: skip
            if not shared.work.empty():
                self._start_worker()

    def __iter__(self) -> Iterator[Chunk | Done | Failed]:
        shared = self.shared
        exited: set[int] = set()
        given_up: set[int] = set()  # failed sources whose thread may still send items
        while set(range(len(self.threads))) - exited - shared.abandoned:
            for failed in self._stalled():
                given_up.add(failed.video)
                yield failed
            try:
                item = shared.out.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(item, _Exit):
                exited.add(item.worker)
            elif item.video in given_up:
                continue  # late news from a thread given up on
            else:
                if isinstance(item, Failed):
                    given_up.add(item.video)
                yield item
