"""``anomaly predict``: videos in, per-frame anomaly scores and classes out, no store needed.

The videos go through the very same extraction pipeline as a dataset (into an in-memory
store), so a prediction sees exactly the features training saw.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anomalyclip.datasets.registry import VideoEntry
from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.inference import score_video
from anomalyclip.evaluate.report import write_video_csv
from anomalyclip.evaluate.run import safe_name, score_fn
from anomalyclip.extract.decode import Sampling
from anomalyclip.extract.pipeline import extract
from anomalyclip.inputs import expand_inputs
from anomalyclip.store import open_store
from anomalyclip.train.build import default_device, load_model

log = logging.getLogger(__name__)


@dataclass
class Prediction:
    source: Path
    csv: Path
    plot: Path
    video: Path | None
    frames: int  # rows scored
    mean_p_abnormal: float
    top_class: str  # the most probable class over the frames called abnormal (or Normal)


def predict(
    videos: list[str | Path],
    checkpoint: str | Path,
    out_dir: str | Path,
    clip: str | None = None,
    render: bool = False,
    device: str | None = None,
    sampling: Sampling = Sampling(),
    batch_size: int = 64,
    threshold: float | None = None,
) -> tuple[list[Prediction], dict[str, str]]:
    """Score each video; returns the predictions and the videos that failed (id -> reason)."""
    from anomalyclip.evaluate import plots
    from anomalyclip.evaluate.render import render_video

    dev = default_device(device)
    model, config = load_model(checkpoint)
    model.to(dev)
    names, normal_id = model.cfg.classes, model.cfg.normal_id
    if threshold is None:
        threshold = float((config.get("metrics") or {}).get("threshold") or 0.5)
    image_model = clip or config["clip"]
    paths = [Path(v) for v in expand_inputs(videos)]  # folders, globs, list files
    for p in paths:
        if not p.exists():
            raise AnomalyError(f"{p}: no such video file or frame folder")
    ids = [f"{i:04d}_{safe_name(p.stem)}" for i, p in enumerate(paths)]
    entries = [VideoEntry(vid, p, "", "predict", []) for vid, p in zip(ids, paths, strict=True)]
    store_url = f"memory://anomalyclip-predict-{uuid.uuid4().hex}"
    summary = extract(
        entries,
        store_url,
        image_model,
        device=str(dev),
        sampling=sampling,
        batch_size=batch_size,
        dtype="float32",
        dataset=config["dataset"],
        progress=True,
    )
    out = Path(out_dir)
    results = []
    with open_store(store_url) as st:
        for vid, path in zip(ids, paths, strict=True):
            if vid in summary.failed:
                continue
            feats = torch.from_numpy(st.features(vid))
            frames, times = st.frames(vid), st.times(vid)
            p, probs = score_video(
                feats,
                score_fn(model),
                model.cfg.num_segments,
                model.cfg.seg_length,
                batch_size,
                dev,
            )
            p, probs = p.float().numpy(), probs.float().numpy()
            stem = safe_name(path.stem)
            csv = write_video_csv(out / f"{stem}.csv", frames, times, p, probs, names)
            plot = plots.plot_video(
                times,
                p,
                probs,
                names,
                normal_id,
                [],
                path.name,
                out / f"{stem}.png",
                threshold=threshold,
            )
            movie = None
            if render:
                movie = render_video(
                    path, out / f"{stem}.mp4", frames, times, p, probs, names, threshold
                )
            abnormal = p >= threshold
            if abnormal.any():
                ranked = np.delete(probs[abnormal].sum(0), normal_id)
                top = [n for i, n in enumerate(names) if i != normal_id][int(ranked.argmax())]
            else:
                top = names[normal_id]
            results.append(Prediction(path, csv, plot, movie, len(frames), float(p.mean()), top))
    failed = {str(paths[ids.index(vid)]): reason for vid, reason in summary.failed.items()}
    return results, failed
