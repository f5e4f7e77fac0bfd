"""``anomaly predict``: videos in, per-frame anomaly scores and classes out, no store needed.

The videos go through the very same extraction pipeline as a dataset (into an in-memory
store), so a prediction sees exactly the features training saw.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from anomalyclip.datasets.registry import VideoEntry
from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.decisions import run_threshold, video_events
from anomalyclip.evaluate.report import write_events, write_video_csv
from anomalyclip.evaluate.run import safe_name, score_fn
from anomalyclip.events import Event, EventConfig
from anomalyclip.extract.decode import Sampling
from anomalyclip.extract.pipeline import extract
from anomalyclip.model.inference import score_video
from anomalyclip.store import open_store
from anomalyclip.train.build import default_device, load_model, run_clip

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
    events: list[Event] = field(default_factory=list)
    events_file: Path | None = None


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
    events: EventConfig | None = None,
) -> tuple[list[Prediction], dict[str, str]]:
    """Score each video; returns the predictions and the videos that failed (id -> reason).

    Frames are called abnormal at ``threshold`` (default: the run's own, chosen without test
    labels when it was trained) and grouped into events by ``events``' other settings."""
    from anomalyclip.evaluate import plots
    from anomalyclip.evaluate.render import Scores, render_video

    dev = default_device(device)
    model, config = load_model(checkpoint)
    model.to(dev)
    names, normal_id = model.cfg.classes, model.cfg.normal_id
    if threshold is None:
        threshold = run_threshold(config).value
    events = replace(events or EventConfig(threshold), threshold=threshold)
    image_model = clip or run_clip(checkpoint, config)
    paths = [Path(v) for v in videos]
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
            csv = write_video_csv(
                out / f"{stem}.csv", frames, times, p, probs, names,
                threshold=threshold, normal_id=normal_id,
            )  # fmt: skip
            curve = {"frames": frames, "times": times, "p": p, "probs": probs}
            found = video_events(str(path), curve, (names, normal_id), events, st.record(vid).fps)
            events_file = write_events(out / f"{stem}.events", found)[0]
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
                scores = Scores(frames, times, p, probs, names, normal_id)
                movie = render_video(path, out / f"{stem}.mp4", scores, threshold, found)
            abnormal = p >= threshold
            if abnormal.any():
                ranked = np.delete(probs[abnormal].sum(0), normal_id)
                top = [n for i, n in enumerate(names) if i != normal_id][int(ranked.argmax())]
            else:
                top = names[normal_id]
            results.append(
                Prediction(
                    path, csv, plot, movie, len(frames), float(p.mean()), top, found, events_file
                )  # fmt: skip
            )
    failed = {str(paths[ids.index(vid)]): reason for vid, reason in summary.failed.items()}
    return results, failed
