"""MIL segment selection and the AnomalyCLIP loss.

Batch layout everywhere: the first half of the batch holds abnormal videos (labels = their
class ids in C-space), the second half normal videos. Only video-level labels exist, so the
loss looks at the segments most (top-k) and least (bottom-k) aligned with the video's
anomaly direction; segment dropout randomises which segments can be picked.

Probabilities are handled as logs in closed form: log P(c) = log_softmax(s)_c + log sigmoid(z)
and log P(Normal) = log sigmoid(-z) for the head logit z, which equal the logs of the
products the paper writes, and are clamped at -100 (as ``torch.nn.BCELoss`` does) so a
saturated score gives a finite loss and finite gradients.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F

from anomalyclip.model.config import LossWeights

DROPPED = 1e6  # selection score of a dropped segment: -1e6 for top-k, +1e6 for bottom-k
LOG_MIN = -100.0


class Selection(NamedTuple):
    """Segment indices picked per video: ``top`` (B, k) for every video (abnormal: along s_y,
    normal: along the sum over classes), ``bottom`` (B/2, k) for the abnormal half."""

    top: torch.Tensor
    bottom: torch.Tensor


def anomaly_index(labels: torch.Tensor, normal_id: int) -> torch.Tensor:
    """Class ids (C-space) -> channel of the similarity (A-space, Normal removed)."""
    return labels - (labels > normal_id).long()


def segment_keep_mask(
    batch: int,
    num_segments: int,
    drop_prob: float,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(B, N) bool: each segment kept independently with probability 1 - drop_prob."""
    keep = torch.full((batch, num_segments), 1.0 - drop_prob, device=device)
    return torch.bernoulli(keep, generator=generator).bool()


def select_segments(
    seg_scores: torch.Tensor,
    labels: torch.Tensor,
    normal_id: int,
    keep: torch.Tensor,
    k: int,
) -> Selection:
    """Top-k / bottom-k segments from per-segment similarity sums.

    seg_scores: (B, N, A) similarity summed over each segment's frames; labels: (B,) class
    ids; keep: (B, N) bool, dropped segments score -1e6 for top-k and +1e6 for bottom-k (one
    mask for both, as the paper's equal dropout rates imply).
    """
    half = seg_scores.shape[0] // 2
    seg_scores = seg_scores.detach()
    y = anomaly_index(labels[:half], normal_id)  # (B/2,)
    abnormal = seg_scores[:half].gather(-1, y.view(-1, 1, 1).expand(-1, seg_scores.shape[1], 1))
    score = torch.cat([abnormal.squeeze(-1), seg_scores[half:].sum(-1)])  # (B, N)
    top = torch.where(keep, score, -DROPPED).topk(k, dim=1).indices  # (B, k)
    bottom = torch.where(keep[:half], score[:half], DROPPED).topk(k, dim=1, largest=False)
    return Selection(top, bottom.indices)


def gather_segments(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x: (B, N, L, ...) and idx: (B, k) -> (B, k, L, ...), the frames of the picked segments."""
    index = idx.view(*idx.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return x.gather(1, index)


def anomalyclip_loss(
    similarity: torch.Tensor,
    logits: torch.Tensor,
    labels: torch.Tensor,
    normal_id: int,
    keep: torch.Tensor,
    k: int = 3,
    weights: LossWeights | None = None,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and its weighted terms (they sum to the total).

    ``gather`` (data-parallel training) maps this process's abnormal-half p(A) (b, N, L) to
    the whole global batch's, in global order, differentiably; the temporal priors are then
    those of the global batch, as in one process (the other terms are means of equal-sized
    shards, which data-parallel gradient averaging already combines exactly).

    similarity: (B, N, L, A) BatchNorm-ed similarities s; logits: (B, N, L) head logits z,
    p(A) = sigmoid(z); labels: (B,) class ids; keep: (B, N) bool segment-dropout mask.
    """
    w = weights or LossWeights()
    half = similarity.shape[0] // 2
    sel = select_segments(similarity.sum(2), labels, normal_id, keep, k)
    y = anomaly_index(labels[:half], normal_id)  # (B/2,)

    # Direction terms act on s directly.
    s_top = gather_segments(similarity[:half], sel.top[:half])  # (B/2, k, L, A)
    y_idx = y.view(-1, 1, 1, 1).expand(*s_top.shape[:3], 1)
    dir_abnormal = -s_top.gather(-1, y_idx).mean()
    dir_normal = similarity[half:].amax(-1).mean()

    # Classification terms: NLL of the C-way probabilities of the picked frames.
    log_p_abn = F.logsigmoid(logits)  # log p(A)
    log_p_nor = F.logsigmoid(-logits).clamp_min(LOG_MIN)  # log P(Normal) = log(1 - p(A))
    log_p_y = F.log_softmax(s_top, dim=-1).gather(-1, y_idx).squeeze(-1)  # (B/2, k, L)
    log_p_y = (log_p_y + gather_segments(log_p_abn[:half], sel.top[:half])).clamp_min(LOG_MIN)
    topk_abnormal = -log_p_y.mean()
    bottomk_abnormal = -gather_segments(log_p_nor[:half], sel.bottom).mean()
    topk_normal = -gather_segments(log_p_nor[half:], sel.top[half:]).mean()

    # Temporal priors on the abnormal half, flattened in frame order across the half as the
    # authors do (so the step from one video's last frame to the next video's first counts).
    p = torch.sigmoid(logits[:half])
    p = (gather(p) if gather is not None else p).reshape(-1)
    smooth = (p[1:] - p[:-1]).square().sum()
    sparse = p.mean()

    terms = {
        "dir_abnormal": w.dir_abnormal * dir_abnormal,
        "dir_normal": w.dir_normal * dir_normal,
        "topk_abnormal": w.topk_abnormal * topk_abnormal,
        "bottomk_abnormal": w.bottomk_abnormal * bottomk_abnormal,
        "topk_normal": w.topk_normal * topk_normal,
        "smooth": w.smooth * smooth,
        "sparse": w.sparse * sparse,
    }
    return sum(terms.values()), terms
