"""Whole-video inference: how AnomalyCLIP scores a video of any length.

The model only sees fixed (N, L) grids (N segments of L consecutive frames). A test video of any
length T is therefore wrapped around to T' = the next multiple of N*L frames and cut into
S = T' / (N*L) sequences. Laid out as an (N, S, L) grid of the padded frames, sequence j takes
sub-block j of every one of the N equal chunks, so each sequence still spans the whole video (as
in training) while every frame is scored exactly once. Scores are put back in frame order and
cut to T: padded position p < T holds frame p itself, so a frame that the wrap-around repeats
keeps the score of its first (real) occurrence.

Everything here is model-agnostic: the model enters as ``score_fn``, a callable mapping a batch
of sequences (B, N, L, D) to (p_abnormal (B, N, L), probs (B, N, L, C)). The arrangement is
computed for a whole batch at once (a table of the sequences of every video, positions by
broadcasting), features are gathered straight into the batch tensor, and scores are
scattered straight into preallocated outputs, so the time outside the model does not grow
with the number of videos beyond one gather per video piece of a batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch

from anomalyclip.errors import AnomalyError
from anomalyclip.progress import bar

log = logging.getLogger(__name__)

ScoreFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def score_fn(model: torch.nn.Module) -> ScoreFn:
    """The network as a ``score_fn``: (B, N, L, D) -> its (p_abnormal, probs). Its class
    prompts' text features are computed once while its weights stay the same
    (:meth:`~anomalyclip.model.AnomalyCLIP.text_features`, :mod:`anomalyclip.model.memo`)."""

    def score(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(x)
        return out.p_abnormal, out.probs

    return score


def _positions(j: torch.Tensor, S: torch.Tensor, N: int, L: int) -> torch.Tensor:
    """Padded positions (k, N, L) of sequences j (k,) of videos cut into S (k,) sequences.

    Slot (n, l) of sequence j is position (n * S + j) * L + l of the wrapped video.
    """
    n = torch.arange(N).view(1, N, 1)
    l_ = torch.arange(L).view(1, 1, L)
    return (n * S.view(-1, 1, 1) + j.view(-1, 1, 1)) * L + l_


def _sequence_table(lengths: torch.Tensor, block: int) -> dict[str, torch.Tensor]:
    """One row per sequence of every video, in order: its video, its number j within the
    video, the video's sequence count S, frame count T and offset in the concatenated
    frames."""
    S = -(-lengths // block)  # ceil(T / block)
    video = torch.repeat_interleave(torch.arange(len(lengths)), S)
    first = torch.cumsum(S, 0) - S  # row of each video's first sequence
    offset = torch.cumsum(lengths, 0) - lengths
    return {
        "video": video,
        "j": torch.arange(len(video)) - first[video],
        "S": S[video],
        "T": lengths[video],
        "offset": offset[video],
    }


def score_video(
    features: torch.Tensor,
    score_fn: ScoreFn,
    num_segments: int = 32,
    seg_length: int = 16,
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score one video's frame features (T, D): returns p_abnormal (T,) and probs (T, C) on CPU."""
    (p,), (probs,) = score_videos(
        [features], score_fn, num_segments, seg_length, batch_size, device, progress=False
    )
    return p, probs


def score_videos(
    videos: Sequence[torch.Tensor],
    score_fn: ScoreFn,
    num_segments: int = 32,
    seg_length: int = 16,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Score several videos, packing the sequences of consecutive videos into shared batches.

    Short test videos have a single sequence each; packing them keeps every call to the model
    ``batch_size`` sequences wide instead of one. Each sequence is scored independently (the
    model is in eval mode, BatchNorm uses running statistics), so the result equals scoring the
    videos one at a time. Features are gathered one batch at a time, so the whole test set is
    never materialised as padded sequences. Returns, per video, p_abnormal (T,) and probs (T, C),
    on CPU, in the dtype ``score_fn`` returns (views into one buffer for all videos).
    """
    _check_inputs(videos, batch_size, num_segments, seg_length)
    if not videos:
        return [], []
    N, L = num_segments, seg_length
    lengths = torch.tensor([x.shape[0] for x in videos])
    table = _sequence_table(lengths, N * L)
    total = len(table["video"])
    p_all = probs_all = None  # (sum T,), (sum T, C): allocated at the first batch's dtype
    with torch.inference_mode():
        starts = range(0, total, batch_size)
        for b0 in bar(starts, desc="scoring", unit="batch", enabled=progress):
            rows = {k: v[b0 : b0 + batch_size] for k, v in table.items()}
            pos = _positions(rows["j"], rows["S"], N, L)  # (B, N, L) padded positions
            frame = pos % rows["T"].view(-1, 1, 1)  # the real frame each slot holds
            first = videos[int(rows["video"][0])]
            x = first.new_empty(len(pos), N, L, first.shape[1])  # (B, N, L, D)
            ids, counts = torch.unique_consecutive(rows["video"], return_counts=True)
            i = 0
            for v, k in zip(ids.tolist(), counts.tolist(), strict=True):  # gather per piece
                torch.index_select(
                    videos[v], 0, frame[i : i + k].view(-1), out=x[i : i + k].view(-1, x.shape[-1])
                )
                i += k
            if device is not None:
                x = x.to(device, non_blocking=True)
            p, probs = score_fn(x)  # (B, N, L), (B, N, L, C)
            p, probs = p.cpu().reshape(-1), probs.cpu().reshape(-1, probs.shape[-1])
            if p_all is None:
                p_all = p.new_empty(int(lengths.sum()))
                probs_all = probs.new_empty(int(lengths.sum()), probs.shape[-1])
            # padded position q < T holds frame q itself: the first occurrence keeps the score
            real = (pos < rows["T"].view(-1, 1, 1)).view(-1)
            dest = (pos + rows["offset"].view(-1, 1, 1)).view(-1)[real]
            p_all[dest] = p[real]
            probs_all[dest] = probs[real]
    _refuse_non_finite(p_all, probs_all, lengths)
    split = lengths.tolist()
    return list(p_all.split(split)), list(probs_all.split(split))


def _check_inputs(videos: Sequence[torch.Tensor], batch_size: int, N: int, L: int) -> None:
    if batch_size < 1:
        raise AnomalyError(f"batch_size must be positive, got {batch_size}")
    if N < 1 or L < 1:
        raise AnomalyError(f"num_segments ({N}) and seg_length ({L}) must be positive")
    for i, x in enumerate(videos):
        if x.ndim != 2:
            raise AnomalyError(f"video {i}: features must be (frames, dim), got {tuple(x.shape)}")
        if x.shape[0] < 1:
            raise AnomalyError(
                f"cannot score a video of {x.shape[0]} frames: it needs at least one frame"
            )


def _refuse_non_finite(p: torch.Tensor, probs: torch.Tensor, lengths: torch.Tensor) -> None:
    """Scores with NaN or inf (weights or features that overflow) must never reach metrics,
    events or alarms: the one check, for every caller (eval, predict, watch, calibration)."""
    bad = ~(torch.isfinite(p) & torch.isfinite(probs).all(dim=1))  # (sum T,)
    if bad.any():
        first = int(bad.nonzero()[0])
        video = int(torch.searchsorted(lengths.cumsum(0), first, right=True))
        frame = first - int(lengths[:video].sum())
        raise AnomalyError(
            f"the model gave NaN or infinite scores for {int(bad.sum())} of {len(p)} frames "
            f"(first: video {video}, frame {frame})"
        )
