"""Whole-video inference: how AnomalyCLIP scores a video of any length.

The model only sees fixed (N, L) grids (N segments of L consecutive frames). A test video of any
length T is therefore wrapped around to T' = the next multiple of N*L frames and cut into
S = T' / (N*L) sequences. Laid out as an (N, S, L) grid of the padded frames, sequence j takes
sub-block j of every one of the N equal chunks, so each sequence still spans the whole video (as
in training) while every frame is scored exactly once. Scores are put back in frame order and
cut to T: padded position p < T holds frame p itself, so a frame that the wrap-around repeats
keeps the score of its first (real) occurrence.

Everything here is model-agnostic: the model enters as ``score_fn``, a callable mapping a batch
of sequences (B, N, L, D) to (p_abnormal (B, N, L), probs (B, N, L, C)).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from anomalyclip.errors import AnomalyError

log = logging.getLogger(__name__)

ScoreFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _padded_positions(T: int, num_segments: int, seg_length: int) -> torch.Tensor:
    """Positions in the wrapped video (0..T'-1) of every frame of every sequence: (S, N, L)."""
    if T < 1:
        raise AnomalyError(f"cannot score a video of {T} frames: it needs at least one frame")
    if num_segments < 1 or seg_length < 1:
        raise AnomalyError(
            f"num_segments ({num_segments}) and seg_length ({seg_length}) must be positive"
        )
    block = num_segments * seg_length
    S = -(-T // block)  # ceil(T / block)
    pos = torch.arange(S * block).view(num_segments, S, seg_length)  # (N, S, L)
    return pos.permute(1, 0, 2)  # (S, N, L)


def _plan_batches(counts: Sequence[int], batch_size: int) -> list[list[tuple[int, int, int]]]:
    """Cut the sequences of consecutive videos into batches of ``batch_size`` sequences.

    ``counts[v]`` is the number of sequences of video v. A batch is a list of (video, start, end)
    ranges of sequences; only the last batch may be smaller.
    """
    batches, current, filled = [], [], 0
    for v, count in enumerate(counts):
        s = 0
        while s < count:
            take = min(count - s, batch_size - filled)
            current.append((v, s, s + take))
            s += take
            filled += take
            if filled == batch_size:
                batches.append(current)
                current, filled = [], 0
    if current:
        batches.append(current)
    return batches


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
    on CPU, in the dtype ``score_fn`` returns.
    """
    if batch_size < 1:
        raise AnomalyError(f"batch_size must be positive, got {batch_size}")
    positions = []
    for i, x in enumerate(videos):
        if x.ndim != 2:
            raise AnomalyError(f"video {i}: features must be (frames, dim), got {tuple(x.shape)}")
        positions.append(_padded_positions(x.shape[0], num_segments, seg_length))

    batches = _plan_batches([len(pos) for pos in positions], batch_size)
    p_out: list[list[torch.Tensor]] = [[] for _ in videos]
    probs_out: list[list[torch.Tensor]] = [[] for _ in videos]
    with torch.inference_mode():
        for batch in tqdm(batches, desc="scoring", unit="batch", disable=not progress):
            x = torch.cat(
                [videos[v][positions[v][s0:s1] % videos[v].shape[0]] for v, s0, s1 in batch]
            )  # (B, N, L, D)
            if device is not None:
                x = x.to(device, non_blocking=True)
            p, probs = score_fn(x)  # (B, N, L), (B, N, L, C)
            p, probs = p.cpu(), probs.cpu()
            i = 0
            for v, s0, s1 in batch:
                p_out[v].append(p[i : i + s1 - s0])
                probs_out[v].append(probs[i : i + s1 - s0])
                i += s1 - s0

    scores, class_probs = [], []
    for v, pos in enumerate(positions):
        T = videos[v].shape[0]
        order = pos.reshape(-1)  # padded position of each scored slot
        p = torch.cat(p_out[v]).reshape(-1)  # (S*N*L,)
        probs = torch.cat(probs_out[v])
        probs = probs.reshape(-1, probs.shape[-1])  # (S*N*L, C)
        # Invert the arrangement: slot k holds padded position order[k].
        p_frame = torch.empty_like(p)
        p_frame[order] = p
        probs_frame = torch.empty_like(probs)
        probs_frame[order] = probs
        scores.append(p_frame[:T])
        class_probs.append(probs_frame[:T])
    return scores, class_probs
