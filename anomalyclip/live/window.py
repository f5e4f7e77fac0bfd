"""Causal scoring of a stream: a ring of the newest frame embeddings, scored every hop.

The model only sees (N, L) grids. Offline, a whole video is wrapped to a multiple of N*L rows
(:mod:`anomalyclip.model.inference`), so every score depends on frames before *and after*
it. Live, only the past exists. :class:`CausalWindow` keeps the newest ``capacity`` = N*L
rows of one stream; every ``hop`` new rows it hands out the window that ends at the newest
row (all rows so far while fewer than N*L have arrived), and :func:`score_windows` scores
each window exactly as offline scoring scores a video of that many rows (it calls the
offline :func:`~anomalyclip.model.inference.score_videos`: a short window is wrapped
around to N*L rows, a full one is one sequence). The newest hop's rows take their p(A) and
class probabilities from their window, and are final: a row is scored once, with the
context of the (up to) N*L - 1 rows before it.

So a live score equals the offline score of the same frame when the video is at most N*L
rows long *and* the frame is in the last hop (the window then is the whole video); earlier
frames are scored with less (future-free) context. How far that moves the curve on a
trained model is measured by ``anomaly bench watch --agreement`` (demo test videos played
as live against their offline scores) and reported in the README.

Nothing here does I/O or knows about time: rows go in, windows come out, which keeps the
arrangement testable on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from anomalyclip.extract.decode import Sampling
from anomalyclip.model.inference import ScoreFn, score_fn, score_videos

if TYPE_CHECKING:
    from anomalyclip.export.backends import ExportedScorer


@dataclass
class Window:
    """The rows of one stream to score: ``features`` (T, D), the newest T rows so far; the
    last ``len(frames)`` of them are the new rows this window decides."""

    features: torch.Tensor  # (T, D) float32
    frames: np.ndarray  # (k,) decoded frame numbers of the new rows
    times: np.ndarray  # (k,) seconds
    arrivals: np.ndarray  # (k,) monotonic seconds at which each new row's frame arrived


class CausalWindow:
    """Ring buffer of the newest ``capacity`` rows of one stream, cut into hops of ``hop``
    rows. :meth:`push` returns one :class:`Window` per completed hop; :meth:`flush` the last,
    partial one (end of stream or a break in it)."""

    def __init__(self, dim: int, capacity: int, hop: int) -> None:
        if not 1 <= hop <= capacity:
            raise ValueError(f"hop must be 1..{capacity} rows, got {hop}")
        self.dim, self.capacity, self.hop = dim, capacity, hop
        # (2 * capacity, D) storage: rows are appended until it is full, then the newest
        # capacity rows are moved to the front (one copy per capacity rows appended)
        self._feats = np.zeros((2 * capacity, dim), np.float32)
        self._end = 0  # rows [0, _end) of the storage are the newest rows, oldest first
        self._new: list[tuple[int, float, float]] = []  # (frame, time, arrival) of this hop
        self.rows = 0  # rows pushed since the last reset

    def reset(self) -> None:
        """Forget every row (a stream that broke off starts a new context)."""
        self._end, self._new, self.rows = 0, [], 0

    def push(
        self,
        features: np.ndarray,
        frames: np.ndarray,
        times: np.ndarray,
        arrivals: np.ndarray | None = None,
    ) -> list[Window]:
        """Append rows (n, D), (n,), (n,) [, (n,)] in time order; one window per hop completed."""
        features = np.asarray(features, np.float32).reshape(-1, self.dim)
        n = len(features)
        arrivals = np.zeros(n) if arrivals is None else np.asarray(arrivals, np.float64)
        windows: list[Window] = []
        for i in range(n):
            if self._end == len(self._feats):
                self._feats[: self.capacity - 1] = self._feats[self._end - self.capacity + 1 :]
                self._end = self.capacity - 1
            self._feats[self._end] = features[i]
            self._end += 1
            self.rows += 1
            self._new.append((int(frames[i]), float(times[i]), float(arrivals[i])))
            if len(self._new) == self.hop:
                windows.append(self._window())
        return windows

    def flush(self) -> Window | None:
        """The window of the rows not yet handed out (None when there are none)."""
        return self._window() if self._new else None

    @property
    def pending(self) -> int:
        """Rows pushed but not yet handed out in a window."""
        return len(self._new)

    def _window(self) -> Window:
        start = max(0, self._end - self.capacity)
        frames, times, arrivals = (np.asarray(c) for c in zip(*self._new, strict=True))
        self._new = []
        feats = torch.from_numpy(self._feats[start : self._end].copy())  # (T, D)
        return Window(feats, frames.astype(np.int64), times.astype(np.float64), arrivals)


def score_windows(
    windows: Sequence[Window],
    score_fn: ScoreFn,
    num_segments: int,
    seg_length: int,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """p(A) (k,) and class probabilities (k, C) of each window's new rows, every window
    scored as offline scoring scores a video of its rows; all windows (of any streams) share
    batched forward passes."""
    if not windows:
        return []
    p, probs = score_videos(
        [w.features for w in windows], score_fn, num_segments, seg_length, batch_size, device
    )
    out = []
    for w, pw, cw in zip(windows, p, probs, strict=True):
        k = len(w.frames)
        out.append((pw[-k:].float().numpy(), cw[-k:].float().numpy()))
    return out


def live_score_fn(model: torch.nn.Module | ExportedScorer) -> ScoreFn:
    """What scores the windows: the network's ``score_fn`` (its class prompts' text
    features computed once while its weights stay the same: recomputing them, a pass
    through the CLIP text tower, on every hop would cost more than the temporal model), or
    an exported scorer's own ``score`` (it holds them as constants)."""
    if not isinstance(model, torch.nn.Module):
        return model.score
    return score_fn(model)


def rows_per_second(sampling: Sampling, fps: float) -> float:
    """Rows a ``fps`` stream gives under ``sampling``."""
    if sampling.mode == "fps":
        return min(float(sampling.value), fps)
    if sampling.mode == "stride":
        return fps / float(sampling.value)
    return fps
