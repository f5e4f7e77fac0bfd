"""Feature store benchmark: size on disk and the cost of reading one training batch.

The question it answers: does keeping features in a float16 Zarr / HDF5 store (checksummed,
compressed, one file or one tree) cost training speed compared with the float32 per-video
``.npy`` files that papers publish? A training batch is what ``train/`` reads
(docs/training.md): 64 videos, each sampled by the uniform rule (TSN-style) as 32 equal
spans with 16 consecutive frames at a random start in each (modulo the length for short
videos), i.e. 512 rows per video.

Reads are timed twice: "cold", after asking the kernel to drop every file of the format from
the page cache (``posix_fadvise(DONTNEED)``, no root needed; as close to a first epoch as a
benchmark can get without owning the machine), and "warm", with everything cached (later
epochs on a machine with enough memory). Numbers are medians over several batches and are
reported as ratios to ``.npy`` read through ``np.load(mmap_mode="r")``.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from anomalyclip.store import VideoRecord, open_store, provenance
from anomalyclip.train.data import uniform_indices

log = logging.getLogger(__name__)

DIM = 512
SEGMENTS = 32  # N
SEGMENT_LEN = 16  # L
BATCH_VIDEOS = 64
FORMATS = ("zarr", "hdf5", "npy")


@dataclass
class Layout:
    """Where each format lives inside the benchmark folder."""

    root: Path

    @property
    def zarr(self) -> Path:
        return self.root / "features.zarr"

    @property
    def hdf5(self) -> Path:
        return self.root / "features.h5"

    @property
    def npy(self) -> Path:
        return self.root / "npy"

    def npy_file(self, video_id: str) -> Path:
        return self.npy / f"{video_id}.npy"


def video_lengths(n_videos: int, frames_per_video: int, rng: np.random.Generator) -> np.ndarray:
    """Lengths spread over [T/2, 3T/2]: UCF-Crime and XD-Violence videos vary by that much."""
    lo, hi = max(1, frames_per_video // 2), max(2, frames_per_video * 3 // 2)
    return rng.integers(lo, hi, size=n_videos)


def synthetic_features(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 512) float32 rows that look like CLIP image embeddings of consecutive frames.

    A per-video mean plus a slowly drifting AR(1) component plus per-frame noise: adjacent
    rows are close (as consecutive frames are), so compression sees realistic redundancy
    rather than white noise, which no codec could shrink.
    """
    base = rng.normal(0.0, 0.5, size=(1, DIM)).astype(np.float32)  # (1, D)
    steps = rng.normal(0.0, 0.05, size=(n, DIM)).astype(np.float32)  # (n, D)
    drift = np.empty_like(steps)
    acc = np.zeros(DIM, dtype=np.float32)
    decay = np.float32(0.98)
    # the recurrence is sequential in time but vectorised over the 512 channels
    for t in range(n):
        acc = decay * acc + steps[t]
        drift[t] = acc
    noise = rng.normal(0.0, 0.02, size=(n, DIM)).astype(np.float32)
    return base + drift + noise


def sample_rows(length: int, rng: np.random.Generator) -> np.ndarray:
    """(N*L,) row indices of one training sample, exactly as the trainer draws them."""
    return uniform_indices(length, SEGMENTS, SEGMENT_LEN, rng).reshape(-1)


def write_all(layout: Layout, lengths: np.ndarray, seed: int) -> dict[str, float]:
    """Write the same features in the three formats; returns seconds spent per format."""
    attrs = provenance(
        dataset="bench",
        classes=["Normal", "Anomaly"],
        backbone={"model": "synthetic", "dim": DIM, "output": "image_embeds"},
        preprocessing={},
        sampling={"mode": "all", "value": None},
    )
    layout.npy.mkdir(parents=True, exist_ok=True)
    seconds = dict.fromkeys(FORMATS, 0.0)
    rng = np.random.default_rng(seed)
    with open_store(layout.zarr, "w") as z, open_store(layout.hdf5, "w") as h:
        z.init(attrs)
        h.init(attrs)
        for i, n in enumerate(tqdm(lengths, desc="write", unit="video")):
            vid = f"video_{i:04d}"
            feats = synthetic_features(int(n), rng)
            rec = VideoRecord(vid, split="train", label="Normal", fps=30.0)
            t0 = time.perf_counter()
            z.write_video(rec, feats)
            t1 = time.perf_counter()
            h.write_video(rec, feats)
            t2 = time.perf_counter()
            np.save(layout.npy_file(vid), feats, allow_pickle=False)
            t3 = time.perf_counter()
            for fmt, dt in zip(FORMATS, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                seconds[fmt] += dt
    return seconds


def disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def evict(path: Path) -> None:
    """Drop a file (or every file under a folder) from the page cache, where the OS allows."""
    if not hasattr(os, "posix_fadvise"):
        return
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def batch_reader(fmt: str, layout: Layout) -> Callable[[list[str], list[np.ndarray]], np.ndarray]:
    """A function reading (videos, N*L, D) float32 rows, as the training loader would."""

    def from_store(path: Path):
        def read(ids: list[str], index: list[np.ndarray]) -> np.ndarray:
            with open_store(path) as st:
                rows = [st.rows(vid, idx) for vid, idx in zip(ids, index, strict=True)]
            return np.stack(rows).astype(np.float32)

        return read

    def from_npy(ids: list[str], index: list[np.ndarray]) -> np.ndarray:
        rows = []
        for vid, idx in zip(ids, index, strict=True):
            arr = np.load(layout.npy_file(vid), mmap_mode="r", allow_pickle=False)
            rows.append(np.asarray(arr[idx]))
            del arr
        return np.stack(rows)

    return {"zarr": from_store(layout.zarr), "hdf5": from_store(layout.hdf5), "npy": from_npy}[fmt]


def time_reads(
    layout: Layout, lengths: np.ndarray, seed: int, batches: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds per batch for every format: wall time cold and warm, and CPU time warm.

    CPU time (all threads of this process) is reported because wall time on a shared machine
    also measures the neighbours; it also checks that all formats return the same rows.
    """
    ids = [f"video_{i:04d}" for i in range(len(lengths))]
    readers = {fmt: batch_reader(fmt, layout) for fmt in FORMATS}
    paths = {"zarr": layout.zarr, "hdf5": layout.hdf5, "npy": layout.npy}
    times = {cache: {fmt: [] for fmt in FORMATS} for cache in ("cold", "warm", "warm_cpu")}
    for b in tqdm(range(batches), desc="read", unit="batch"):
        batch_rng = np.random.default_rng([seed, b])
        chosen = batch_rng.choice(len(ids), size=min(BATCH_VIDEOS, len(ids)), replace=False)
        batch_ids = [ids[i] for i in chosen]
        index = [sample_rows(int(lengths[i]), batch_rng) for i in chosen]
        results = {}
        for cache in ("cold", "warm"):
            for fmt in FORMATS:
                if cache == "cold":
                    evict(paths[fmt])
                t0, c0 = time.perf_counter(), time.process_time()
                results[fmt] = readers[fmt](batch_ids, index)
                times[cache][fmt].append(time.perf_counter() - t0)
                if cache == "warm":
                    times["warm_cpu"][fmt].append(time.process_time() - c0)
        # every format must hand back the same rows (float16-rounded for the stores)
        expected = results["npy"].astype(np.float16).astype(np.float32)
        for fmt in ("zarr", "hdf5"):
            if not np.array_equal(results[fmt], expected):
                raise AssertionError(f"{fmt} batch {b} differs from the .npy batch")
    return times


def measure(
    out_dir: str | Path,
    n_videos: int = 64,
    frames_per_video: int = 4000,
    seed: int = 0,
    batches: int = 5,
) -> dict:
    """Write ``n_videos`` synthetic videos in every format, then time batch reads.

    ``frames_per_video`` is the mean length; lengths are drawn from [T/2, 3T/2].
    Returns sizes, write seconds, median seconds per batch (``read_s``: wall time cold and
    warm, CPU time warm) and the same as ratios to ``.npy`` (``read_vs_npy``).
    """
    layout = Layout(Path(out_dir))
    if layout.npy.exists():  # stale files of an earlier, larger run would count in the size
        shutil.rmtree(layout.npy)
    rng = np.random.default_rng(seed)
    lengths = video_lengths(n_videos, frames_per_video, rng)
    write_s = write_all(layout, lengths, seed)

    sizes = {
        "zarr": disk_bytes(layout.zarr),
        "hdf5": disk_bytes(layout.hdf5),
        "npy": disk_bytes(layout.npy),
    }
    times = time_reads(layout, lengths, seed, batches)
    read_s = {cache: {f: statistics.median(v) for f, v in t.items()} for cache, t in times.items()}
    return {
        "videos": n_videos,
        "frames": int(lengths.sum()),
        "batch": [min(BATCH_VIDEOS, n_videos), SEGMENTS * SEGMENT_LEN, DIM],
        "bytes": sizes,
        "size_vs_npy": {f: sizes[f] / sizes["npy"] for f in FORMATS},
        "write_s": write_s,
        "read_s": read_s,
        "read_vs_npy": {
            cache: {f: v[f] / v["npy"] for f in FORMATS} for cache, v in read_s.items()
        },
    }


def table(result: dict) -> str:
    """The result as a small fixed-width table: size, then read time per batch (median)."""
    lines = [
        f"{result['videos']} videos, {result['frames']:,} frames; batch "
        + " x ".join(map(str, result["batch"])),
        f"{'format':<9}{'size MiB':>9}{'x npy':>7}"
        + "".join(f"{name:>13}{'x npy':>7}" for name in ("cold ms", "warm ms", "warm cpu ms")),
    ]
    labels = {"zarr": "zarr f16", "hdf5": "h5 f16", "npy": "npy f32"}
    for f in FORMATS:
        line = (
            f"{labels[f]:<9}{result['bytes'][f] / (1 << 20):>9.1f}{result['size_vs_npy'][f]:>7.2f}"
        )
        for cache in ("cold", "warm", "warm_cpu"):
            line += (
                f"{result['read_s'][cache][f] * 1e3:>13.1f}{result['read_vs_npy'][cache][f]:>7.2f}"
            )
        lines.append(line)
    return "\n".join(lines)
