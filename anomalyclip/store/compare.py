"""``anomaly store compare``: how far two sets of features of the same videos lie apart, and why.

``A`` is a store; ``B`` is a store or a folder of per-video ``.npy`` files laid out as a
published release is (what ``anomaly store import-npy`` reads, :mod:`anomalyclip.store.npy`).
For every video in both:

- ``rows_a``, ``rows_b``: how many rows each holds;
- ``offset``: the shift ``k`` in ``-max_offset..max_offset`` that aligns them best (row ``i``
  of A against row ``i + k`` of B, over the rows both have; the smallest mean row distance
  wins, the smallest ``|k|`` among equals);
- ``cos_mean``, ``cos_min``: cosine similarity of the aligned rows (CLIP features share a
  large common component, so cosines near 1 say little on their own);
- ``distance``: the content distance, in %: the mean distance between aligned rows over the
  mean distance of A's rows to their mean (the video's mean feature, which every frame shares,
  taken out). 0 % is the same features; 100 % is as far apart as two frames of the video.

The summary weighs videos by their rows (the sum of row distances over the sum of spreads) and
the verdict is one line, by the rules of :func:`verdict` (thresholds in :data:`SAME` ...).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from anomalyclip.errors import AnomalyError
from anomalyclip.store.npy import NpyIndex, features_of, read_sources

MAX_OFFSET = 5  # frames either way
# Verdict thresholds on the content distance, in %. Measured on every 10th frame of the four
# real test videos through a random ViT-B/16-sized tower in fp32 (README, "Reproducing the
# published features"): torch's resize kernel against PIL's, no JPEG, 0.04-0.36; native
# against the authors' JPEG path 1.3-15; another tower's weights > 1000. Compute noise of one
# path (SDPA against eager attention) is some 50x below the smallest resize difference, and
# float16 storage is allowed for by its own estimate (rounding_floor), measured exact.
SAME = 0.02
RESIZE = 0.7
JPEG = 100.0  # farther than A's frames lie from their mean: not the same content at all
SAMPLING_RATIO = 0.02  # rows differing by more than this share (and > max_offset): sampling


@dataclass
class VideoComparison:
    video: str
    rows_a: int
    rows_b: int
    offset: int
    pairs: int  # aligned rows compared
    cos_mean: float
    cos_min: float
    distance: float  # content distance, % (NaN when A's rows have no spread: one frame)
    row_distance_sum: float  # sum of aligned row distances (for the summary)
    spread_sum: float  # sum of A's row distances to their mean, over the aligned rows
    rounding_sum: float = 0.0  # expected sum of row distances from float16 storage alone


@dataclass
class Comparison:
    a: str
    b: str
    b_kind: str  # "store" | "npy"
    dim_a: int
    dim_b: int
    max_offset: int
    dtype_a: str = "float32"  # as stored
    dtype_b: str = "float32"
    precision_a: str | None = None  # what the image tower computed in, where recorded
    precision_b: str | None = None
    videos: list[VideoComparison] = field(default_factory=list)
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """Frames and videos compared, the row-weighted distance, the spread of the
        per-video distances, the most common offset."""
        v = [x for x in self.videos if np.isfinite(x.distance)]
        spread = sum(x.spread_sum for x in v)
        rounding = 100 * sum(x.rounding_sum for x in v) / spread if spread > 0 else 0.0
        per_video = np.array([x.distance for x in v]) if v else np.zeros(0)
        offsets = Counter(x.offset for x in self.videos)
        worst = max(v, key=lambda x: x.distance) if v else None
        return {
            "videos": len(self.videos),
            "frames": int(sum(x.pairs for x in self.videos)),
            "distance": float(100 * sum(x.row_distance_sum for x in v) / spread)
            if spread > 0
            else (0.0 if v else float("nan")),
            "rounding_floor": float(rounding),  # % float16 storage explains on its own
            "median_distance": float(np.median(per_video)) if len(per_video) else float("nan"),
            "max_distance": float(per_video.max()) if len(per_video) else float("nan"),
            "worst": worst.video if worst else None,
            "cos_mean": float(np.mean([x.cos_mean for x in self.videos])) if self.videos else 1.0,
            "cos_min": min((x.cos_min for x in self.videos), default=1.0),
            "offset": offsets.most_common(1)[0][0] if offsets else 0,
            "videos_shifted": sum(1 for x in self.videos if x.offset != 0),
            "videos_rows_differ": sum(1 for x in self.videos if _rows_differ(x, self.max_offset)),
            "only_a": len(self.only_a),
            "only_b": len(self.only_b),
        }

    def to_dict(self) -> dict:
        """Everything, JSON-ready (a distance that cannot be computed is None, not NaN)."""
        out = asdict(self)
        out["summary"] = self.summary()
        out["verdict"] = verdict(self)
        return _finite(out)


def _finite(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _rows_differ(v: VideoComparison, max_offset: int) -> bool:
    gap = abs(v.rows_a - v.rows_b)
    return gap > max_offset and gap > SAMPLING_RATIO * max(v.rows_a, v.rows_b)


def rounding_norm(rows: np.ndarray, roundings: int) -> np.ndarray:
    """(n,) the expected length of the error ``roundings`` independent float16 roundings add
    to each of ``rows`` (n, D): per element uniform in half a float16 step either way."""
    step = np.spacing(np.abs(rows).astype(np.float16)).astype(np.float64)  # (n, D)
    return np.sqrt(roundings * (step**2).sum(axis=1) / 12)


def align(
    a: np.ndarray, b: np.ndarray, max_offset: int = MAX_OFFSET, roundings: int = 0
) -> VideoComparison:
    """Compare one video's rows: (n, D) ``a`` and (m, D) ``b`` (module docstring);
    ``roundings``: how many of the two went through float16 storage."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    best = None
    for k in sorted(range(-max_offset, max_offset + 1), key=abs):  # 0, -1, 1, -2, ...
        lo, hi = max(0, -k), min(len(a), len(b) - k)  # rows i of a with i + k in b
        if hi - lo < max(1, min(len(a), len(b)) // 2):
            continue  # too little overlap to judge this shift
        d = np.linalg.norm(a[lo:hi] - b[lo + k : hi + k], axis=1)  # (pairs,)
        if best is None or d.mean() < best[1].mean():
            best = (k, d, lo, hi)
    if best is None:
        raise AnomalyError(f"{len(a)} and {len(b)} rows cannot be aligned")
    k, d, lo, hi = best
    pa, pb = a[lo:hi], b[lo + k : hi + k]  # (pairs, D) each
    cos = (pa * pb).sum(1) / np.maximum(
        np.linalg.norm(pa, axis=1) * np.linalg.norm(pb, axis=1), 1e-30
    )
    spread = np.linalg.norm(pa - a.mean(axis=0), axis=1)  # (pairs,)
    ratio = 100 * d.sum() / spread.sum() if spread.sum() > 0 else (0.0 if not d.any() else np.nan)
    rounding = rounding_norm(pa, roundings).sum() if roundings else 0.0
    return VideoComparison(
        "", len(a), len(b), k, hi - lo, float(cos.mean()), float(cos.min()), float(ratio),
        float(d.sum()), float(spread.sum()), float(rounding),
    )  # fmt: skip


@dataclass
class _Side:
    """What B offers: its video ids, their rows, width, stored dtype, tower precision, and
    what it holds that A does not."""

    ids: set[str]
    rows: Callable[[str], np.ndarray]
    dim: int
    dtype: str
    precision: str | None
    unmatched: list[str]


def _npy_side(folder: Path, ids: list[str], ncrops: int, crop: int | str) -> _Side:
    """B as a ``.npy`` release, matched to A's video ids as ``import-npy`` matches them."""
    index = NpyIndex(folder)
    found, used = {}, set()
    for vid in ids:
        files = index.find(vid)
        if files is not None:
            found[vid] = files
            used.add(files.base)
    if not found:
        raise AnomalyError(f"{folder}: no .npy file matches a video of the store")
    first = np.load(next(iter(next(iter(found.values())).files.values())), mmap_mode="r")
    width = int(first.shape[-1])

    def rows(vid: str) -> np.ndarray:
        files = found[vid]
        per_crop = any(key is not None for key in files.files)
        sources, _ = read_sources(files, crop, ncrops)
        return features_of(sources, per_crop, crop, ncrops, width)

    unmatched = sorted(set(index.groups) - used)
    return _Side(set(found), rows, width, str(first.dtype), None, unmatched)


def _store_side(store, ids_a: list[str]) -> _Side:
    ids = set(store.video_ids())
    dim = store.meta.dim or (int(store.features(next(iter(ids))).shape[1]) if ids else 0)
    precision = store.meta.producer.get("precision")
    return _Side(ids, store.features, dim, store.meta.dtype, precision, sorted(ids - set(ids_a)))


def compare(
    a: str | Path,
    b: str | Path,
    max_offset: int = MAX_OFFSET,
    ncrops: int = 1,
    crop: int | str = 0,
) -> Comparison:
    """Compare the store ``a`` with the store or ``.npy`` folder ``b``, video by video.

    ``ncrops`` / ``crop`` read a multi-crop release as ``import-npy`` does."""
    from anomalyclip.store.store import open_store

    if max_offset < 0:
        raise AnomalyError(f"--max-offset must be >= 0, not {max_offset}")
    with open_store(a) as sa:
        ids_a = sa.video_ids()
        if not ids_a:
            raise AnomalyError(f"{a}: the store holds no complete video")
        if Path(str(b)).is_dir() and not _is_store_dir(Path(str(b))):
            return _run(sa, str(a), str(b), "npy", _npy_side(Path(b), ids_a, ncrops, crop),
                        max_offset)  # fmt: skip
        with open_store(b) as sb:
            return _run(sa, str(a), str(b), "store", _store_side(sb, ids_a), max_offset)


def _is_store_dir(path: Path) -> bool:
    return (path / "zarr.json").exists() or path.suffix in (".zarr", ".zip", ".h5", ".hdf5")


def _run(sa, a: str, b: str, kind: str, side: _Side, max_offset: int) -> Comparison:
    ids_a = sa.video_ids()
    meta = sa.meta
    dim_a = meta.dim or int(sa.features(ids_a[0]).shape[1])
    result = Comparison(a, b, kind, dim_a, side.dim, max_offset, meta.dtype, side.dtype,
                        meta.producer.get("precision"), side.precision)  # fmt: skip
    result.only_a = [vid for vid in ids_a if vid not in side.ids]
    result.only_b = side.unmatched
    if result.dim_a != result.dim_b:
        return result  # rows of different widths: nothing to align (the verdict says why)
    roundings = (result.dtype_a == "float16") + (result.dtype_b == "float16")
    for vid in ids_a:
        if vid in side.ids:
            video = align(sa.features(vid), side.rows(vid), max_offset, roundings)
            video.video = vid
            result.videos.append(video)
    return result


def verdict(result: Comparison) -> dict:
    """``same`` (bool), ``cause`` and the one-line ``line``, by these rules, in order:

    1. widths differ: a different backbone;
    2. no video in both: nothing compared;
    3. row counts differ in most videos by more than ``max_offset`` and 2 %: the sampling;
    4. most videos align best at a non-zero offset, and the rows are not unrelated (rule 5's
       backbone band): a frame offset (and what the distance at that offset says of the rest);
    5. the row-weighted content distance ``d``: the same pipeline when ``d`` <= :data:`SAME`
       or <= 1.5 x what float16 storage explains (``rounding_floor``: half a float16 step per
       element, either way, for each side stored in float16); else <= :data:`RESIZE` a resize
       difference (kernel or rounding); <= :data:`JPEG` the JPEG step (one side's frames went
       through a JPEG, as the authors' did); above (farther apart than two frames of the video
       are), another backbone.

    A side whose tower ran in bf16 or fp16 is named: with random weights its rounding alone
    reaches the JPEG band; the bands come from fp32 features (module docstring).
    """
    s = result.summary()
    if result.dim_a != result.dim_b:
        return _said(False, "backbone", f"rows are {result.dim_a}-d in A, {result.dim_b}-d in B")
    if not result.videos:
        return _said(False, None, "no video is in both")
    n = len(result.videos)
    if s["videos_rows_differ"] * 2 > n:
        return _said(False, "sampling", f"row counts differ in {s['videos_rows_differ']} of "
                     f"{n} videos (another sampling or frame rate)")  # fmt: skip
    d, floor = s["distance"], 1.5 * s["rounding_floor"]
    if not np.isfinite(d):
        return _said(False, None, "no video has two distinct rows in A to measure against")
    dist = f"content distance {d:.2f} %"
    if d <= max(SAME, floor):
        cause = ("same", f"{dist} (<= {SAME} %)" if d <= SAME else
                 f"{dist}, within float16 storage rounding ({floor:.2f} %)")  # fmt: skip
    elif d <= RESIZE:
        cause = ("resize", "resize kernel or rounding")
    elif d <= JPEG:
        cause = ("jpeg", "JPEG step (one side's frames went through a JPEG)")
    else:
        cause = ("backbone", "backbone (another CLIP or weights)")
    note = _precision_note(result) if cause[0] != "same" else ""
    if s["videos_shifted"] * 2 > n and cause[0] != "backbone":  # unrelated rows: no offset
        why = f"B is {s['offset']:+d} frames from A in {s['videos_shifted']} of {n} videos"
        rest = "" if cause[0] == "same" else f"; beyond that: {cause[1]}"
        return _said(False, "offset", f"{why} ({dist} at that offset){rest}{note}")
    if cause[0] == "same":
        return _said(True, None, cause[1])
    return _said(False, cause[0], f"{dist}: most likely the {cause[1]}{note}")


def _precision_note(result: Comparison) -> str:
    low = [f"{side}'s tower ran in {p}" for side, p in (("A", result.precision_a),
           ("B", result.precision_b)) if p not in (None, "fp32")]  # fmt: skip
    return f" ({', '.join(low)}: its rounding alone can reach the JPEG band)" if low else ""


def _said(same: bool, cause: str | None, detail: str) -> dict:
    head = "same pipeline" if same else "differs"
    return {"same": same, "cause": cause, "line": f"{head}: {detail}"}


def format_comparison(result: Comparison, limit: int = 20) -> str:
    """The text report: per video (the ``limit`` farthest when there are more), summary,
    verdict."""
    s = result.summary()
    lines = [f"A {result.a}", f"B {result.b} ({result.b_kind})"]
    videos = sorted(result.videos, key=lambda x: -np.nan_to_num(x.distance, nan=-1))
    if videos:
        lines.append(f"{'video':<32} {'rows A':>7} {'rows B':>7} {'offset':>6} "
                     f"{'cos mean':>9} {'cos min':>8} {'distance':>9}")  # fmt: skip
        for x in videos[:limit]:
            lines.append(f"{x.video[-32:]:<32} {x.rows_a:>7} {x.rows_b:>7} {x.offset:>+6d} "
                         f"{x.cos_mean:>9.6f} {x.cos_min:>8.5f} {x.distance:>8.2f}%")  # fmt: skip
        if len(videos) > limit:
            lines.append(f"... {len(videos) - limit} more videos, closer (--json lists all)")
    lines.append(
        f"{s['videos']} videos, {s['frames']:,} frames compared; content distance "
        f"{s['distance']:.2f} % (median video {s['median_distance']:.2f} %, farthest "
        f"{s['max_distance']:.2f} %); cosine mean {s['cos_mean']:.6f}, min {s['cos_min']:.5f}"
    )
    if result.only_a or result.only_b:
        lines.append(f"only in A: {len(result.only_a)} videos; only in B: {len(result.only_b)}")
    lines.append(verdict(result)["line"])
    return "\n".join(lines)
