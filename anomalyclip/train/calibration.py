"""Held-out normal videos: frames training never sees, used to set the decision threshold.

Weak supervision gives frame labels for free only in normal videos: every frame of one is
normal. Training therefore sets aside a share of its normal training videos (chosen by the
seed, never trained on, left out of the normal centroid too), and once the model is trained
scores them exactly as a test video is scored. The quantiles of those p(A) values go into the
run, and a rule such as ``far@1`` turns them into a threshold that raises an alarm on about
1 % of the frames of new normal video (:mod:`anomalyclip.thresholds`).
"""

from __future__ import annotations

import numpy as np
import torch

from anomalyclip.events import video_seconds
from anomalyclip.model.inference import score_fn, score_videos
from anomalyclip.store import FeatureStore, VideoRecord
from anomalyclip.thresholds import normal_quantiles

SOURCE = "held-out normal training videos"
# when no normal video could be held out (too few, or a share of 0): the threshold comes from
# the videos trained on, which the model scores lower than new normal video
SEEN_SOURCE = "normal training videos, trained on (none could be held out)"


def split_held_out(
    normal: list[VideoRecord], share: float, seed: int
) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """(trained on, held out): ``round(share * n)`` of the normal videos, at least one when
    ``share`` > 0 and at least one left to train on. The choice depends only on the seed and
    the set of video ids, not on the order the store lists them in."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"calibration share must lie in [0, 1), got {share}")
    ordered = sorted(normal, key=lambda r: r.video_id)
    n = len(ordered)
    k = min(max(round(share * n), 1 if share > 0 else 0), n - 1) if n else 0
    chosen = set(np.random.default_rng([seed, 0xCA1]).permutation(n)[:k].tolist())
    held = [r for i, r in enumerate(ordered) if i in chosen]
    kept = [r for i, r in enumerate(ordered) if i not in chosen]
    return kept, held


def calibrate(
    model: torch.nn.Module,
    store: FeatureStore,
    records: list[VideoRecord],
    device: torch.device | str | None = None,
    batch_size: int = 64,
) -> dict:
    """p(A) quantiles of the model on ``records`` (normal videos), as the run keeps them."""
    feats = [torch.from_numpy(store.features(r.video_id).astype(np.float32)) for r in records]
    was_training = model.training
    model.eval()
    try:
        p, _ = score_videos(
            feats,
            score_fn(model),
            model.cfg.num_segments,
            model.cfg.seg_length,
            batch_size,
            device,
        )
    finally:
        model.train(was_training)
    seconds = sum(video_seconds(store.times(r.video_id)) for r in records)
    scores = [s.float().numpy() for s in p]
    return {"source": SOURCE, **normal_quantiles(scores, seconds, [r.video_id for r in records])}
