"""``anomaly predict``: videos in, per-frame anomaly scores and classes out, no store needed.

The videos go through the very same extraction pipeline as a dataset (into an in-memory
store), so a prediction sees exactly the features training saw.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from anomalyclip.datasets.registry import VideoEntry
from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.decisions import video_events
from anomalyclip.evaluate.evaluation import decision_threshold, safe_name, score_fn
from anomalyclip.evaluate.report import write_events, write_video_csv
from anomalyclip.events import Event, EventConfig
from anomalyclip.extract.decode import Sampling
from anomalyclip.extract.encoder import Precision
from anomalyclip.extract.pipeline import extract
from anomalyclip.inputs import expand_inputs
from anomalyclip.model.inference import score_video
from anomalyclip.runs import default_device, load_model, run_clip
from anomalyclip.store import open_store

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


def output_names(paths: list[Path]) -> list[str]:
    """Unique output names (relative, without suffix) for the input videos, deterministically.

    A video is named by its stem when no other input shares it; otherwise by as few parent
    folders as tell it apart (``pa/clip.mp4``, ``pb/clip.mp4`` -> ``pa/clip``, ``pb/clip``),
    then with its extension; a name given twice (the same path again) gets ``~2``, ``~3``...
    in input order. Every part goes through :func:`safe_name`, which never writes ``~``.
    """
    full = [Path(os.path.abspath(p)) for p in paths]

    def key(i: int, depth: int, with_suffix: bool) -> tuple[str, ...]:
        folders = full[i].parent.parts[len(full[i].parent.parts) - depth :] if depth else ()
        return (*folders, full[i].name if with_suffix else full[i].stem)

    names: list[str] = []
    seen: dict[str, int] = {}
    for i in range(len(full)):
        others = [j for j in range(len(full)) if full[j] != full[i]]
        chosen = key(i, 0, False)
        for with_suffix in (False, True):
            found = next(
                (
                    key(i, depth, with_suffix)
                    for depth in range(len(full[i].parent.parts))
                    if all(key(j, depth, with_suffix) != key(i, depth, with_suffix) for j in others)
                ),
                None,
            )
            if found:
                chosen = found
                break
        name = "/".join(safe_name(part) for part in chosen)
        seen[name] = seen.get(name, 0) + 1
        names.append(f"{name}~{seen[name]}" if seen[name] > 1 else name)
    return names


@dataclass(frozen=True)
class PredictConfig:
    """How :func:`predict` turns videos into scores, and what it writes besides the CSVs.

    Image side, as in :class:`~anomalyclip.extract.config.ExtractConfig`: ``clip`` (default:
    the run's), ``device`` (default: CUDA when present), ``precision`` (the fp32 reference by
    default; ``auto`` picks the fastest of the device, as ``anomaly predict`` does),
    ``sampling`` and ``batch_size``; ``clip`` also gives the text tower (a run whose CLIP
    moved). Decisions: ``threshold`` (default: the run's own, chosen without test labels when
    it was trained), or ``threshold_rule`` applied now (youden / best-f1 on the store
    ``calibrate_on``), and the other settings of ``events``. Output: ``render`` also writes
    an MP4 of each video with its curves.
    """

    clip: str | None = None
    device: str | None = None
    precision: Precision = "fp32"
    sampling: Sampling = Sampling()
    batch_size: int = 64
    threshold: float | None = None
    threshold_rule: str | None = None
    calibrate_on: str | None = None
    events: EventConfig | None = None
    render: bool = False


def predict(
    videos: list[str | Path],
    checkpoint: str | Path,
    out_dir: str | Path,
    config: PredictConfig = PredictConfig(),
) -> tuple[list[Prediction], dict[str, str]]:
    """Score each video; returns the predictions and the videos that failed (id -> reason).

    Frames are called abnormal at ``config.threshold`` and grouped into events by
    ``config.events``' other settings."""
    from anomalyclip.evaluate import plots
    from anomalyclip.evaluate.render import Scores, render_video

    dev = default_device(config.device)
    model, run_config = load_model(checkpoint, config.clip)
    model.to(dev)
    names, normal_id = model.cfg.classes, model.cfg.normal_id
    threshold = config.threshold
    if threshold is None:
        rule, where = config.threshold_rule, config.calibrate_on
        threshold = decision_threshold(model, run_config, rule, where, dev).value
    events = replace(config.events or EventConfig(threshold), threshold=threshold)
    image_model = config.clip or run_clip(checkpoint, run_config)
    paths = [Path(v) for v in expand_inputs(videos)]  # folders, globs, list files
    for p in paths:
        if not p.exists():
            raise AnomalyError(f"{p}: no such video file or frame folder")
    ids = [f"{i:04d}_{safe_name(p.stem)}" for i, p in enumerate(paths)]
    stems = dict(zip(ids, output_names(paths), strict=True))
    entries = [VideoEntry(vid, p, "", "predict", []) for vid, p in zip(ids, paths, strict=True)]
    store_url = f"memory://anomalyclip-predict-{uuid.uuid4().hex}"
    summary = extract(
        entries,
        store_url,
        image_model,
        device=str(dev),
        precision=config.precision,
        sampling=config.sampling,
        batch_size=config.batch_size,
        dtype="float32",
        dataset=run_config["dataset"],
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
                config.batch_size,
                dev,
            )
            p, probs = p.float().numpy(), probs.float().numpy()
            stem = stems[vid]
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
            if config.render:
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
