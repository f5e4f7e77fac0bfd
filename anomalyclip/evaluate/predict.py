"""``anomaly predict``: videos in, per-frame anomaly scores and classes out, no store needed.

The videos go through the very same extraction pipeline as a dataset (into an in-memory
store), so a prediction sees exactly the features training saw. A :class:`Predictor` is a run
loaded for that (its network on its device, its image tower loaded once for every call);
:func:`predict_files` writes what ``anomaly predict`` leaves behind, and
:class:`anomalyclip.Run` (the Python API) holds a :class:`Predictor` too, so the command and
the API run the same code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import fsspec
import numpy as np
import torch

from anomalyclip.datasets.registry import VideoEntry
from anomalyclip.environment import provenance
from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.decisions import run_threshold_record
from anomalyclip.evaluate.evaluation import decision_threshold
from anomalyclip.evaluate.prediction import Prediction, printable  # noqa: F401 (re-exported)
from anomalyclip.evaluate.report import write_metrics_json
from anomalyclip.events import Event, EventConfig
from anomalyclip.export.backends import ExportedImageEncoder, run_export
from anomalyclip.extract.decode import Sampling
from anomalyclip.extract.encoder import ImageEncoder, Precision
from anomalyclip.extract.pipeline import extract
from anomalyclip.extract.zone import Zone
from anomalyclip.inputs import expand_inputs
from anomalyclip.model.inference import score_fn, score_video
from anomalyclip.names import safe_name
from anomalyclip.runs import default_device, load_model, read_run_config, run_clip
from anomalyclip.runs.load import preprocessing_for
from anomalyclip.store import open_store

log = logging.getLogger(__name__)


@dataclass
class Written:
    """What :func:`predict_files` wrote for one video, and its :class:`Prediction`."""

    source: Path
    csv: Path
    plot: Path
    video: Path | None
    frames: int  # rows scored
    mean_p_abnormal: float
    top_class: str  # the most probable class over the frames called abnormal (or Normal)
    events: list[Event] = field(default_factory=list)
    events_file: Path | None = None
    prediction: Prediction | None = None


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

    How the run is loaded (:class:`Predictor`): ``clip`` (default: the run's), ``device``
    (default: CUDA when present), ``precision`` of the image tower (the fp32 reference by
    default; ``auto`` picks the fastest of the device, as ``anomaly predict`` does). How each
    call scores: ``sampling``, ``batch_size`` and ``preprocess`` (the frame path; default:
    the one the run's training features were made with,
    :func:`~anomalyclip.runs.load.preprocessing_for`); decisions at ``threshold`` (default: the
    run's own, chosen without test labels when it was trained), or ``threshold_rule`` applied
    now (youden / best-f1 on the store ``calibrate_on``), with the other settings of
    ``events``. Output: ``render`` also writes an MP4 of each video with its curves.
    ``zone``: only that polygon of each frame is shown to CLIP (:mod:`anomalyclip.extract.zone`).
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
    zone: Zone | None = None  # only this part of each frame is shown to CLIP
    preprocess: str | None = None  # native | authors (default: the run's)
    backend: str = "torch"  # or onnxruntime | openvino: the run's export (anomaly export)


class Predictor:
    """A run loaded to score videos and features: its network on ``device``, its decision
    threshold and its image tower (``clip``, default the run's; loaded at the first video
    and kept, in ``precision``). With a ``backend`` other than ``torch`` (``onnxruntime``,
    ``openvino``) the run's export (``anomaly export``) runs instead: its image tower in
    place of the CLIP forward and its scorer in place of the network, on the CPU; ``clip``
    then names the export folder (default: the run's ``export/<format>``)."""

    def __init__(
        self,
        checkpoint: str | Path,
        clip: str | Path | None = None,
        device: str | None = None,
        precision: Precision = "fp32",
        backend: str = "torch",
    ) -> None:
        self.checkpoint = Path(checkpoint)
        self.precision = precision
        self.backend = backend
        self._encoder: ImageEncoder | ExportedImageEncoder | None = None
        if backend == "torch":
            self.device = default_device(device)
            self.model, self.config = load_model(checkpoint, clip)
            self.model.to(self.device)
            self.clip = str(clip or run_clip(checkpoint, self.config))
            self._score_fn, self.cfg = score_fn(self.model), self.model.cfg
            return
        export = run_export(checkpoint, backend, clip)
        self.model = export.scorer()  # the exported scorer stands in for the network
        self.config = read_run_config(checkpoint)
        self.device, self.clip = torch.device("cpu"), str(export.folder)
        self._score_fn, self.cfg = self.model.score, self.model.cfg
        self._encoder = export.image_encoder()

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.cfg.classes)

    @property
    def normal_id(self) -> int:
        return self.cfg.normal_id

    @property
    def threshold(self) -> float:
        """The run's decision threshold (AnomalyError when it has none)."""
        return run_threshold_record(self.config).value

    def decisions(
        self,
        threshold: float | None,
        events: EventConfig | None,
        rule: str | None = None,
        calibrate_on: str | None = None,
    ) -> EventConfig:
        """The event settings with the threshold to decide at: ``threshold``, else ``rule``
        applied now (a labelled one on the store ``calibrate_on``), else the run's."""
        if threshold is None:
            chosen = decision_threshold(self.model, self.config, rule, calibrate_on, self.device)
            threshold = chosen.value
        return replace(events or EventConfig(threshold), threshold=threshold)

    def score(
        self,
        features: np.ndarray | torch.Tensor,
        frames: np.ndarray | None = None,
        times: np.ndarray | None = None,
        source: str = "features",
        fps: float = 0.0,
        events: EventConfig | None = None,
        batch_size: int = 64,
    ) -> Prediction:
        """Score one video's features (T, D); ``frames`` default to 0..T-1 and ``times`` to
        ``frames / fps`` (frame numbers without a rate); ``events`` as from :meth:`decisions`."""
        feats, cfg = torch.as_tensor(features), self.cfg
        if feats.ndim != 2 or feats.shape[1] != cfg.feature_dim:
            raise AnomalyError(
                f"{source}: features must be (frames, {cfg.feature_dim}), got {tuple(feats.shape)}"
            )
        p, probs = score_video(feats.float(), self._score_fn, cfg.num_segments,
                               cfg.seg_length, batch_size, self.device)  # fmt: skip
        frames = np.arange(len(feats)) if frames is None else np.asarray(frames)
        if times is None:
            times = frames / fps if fps and fps > 0 else frames.astype(np.float64)
        curve = {"frames": frames, "times": times, "p": p.float().numpy(),
                 "probs": probs.float().numpy()}  # fmt: skip
        decide = events or self.decisions(None, None)
        run = self.config.threshold
        rule = run.rule if run and run.value == decide.threshold else "given"
        labels = (self.classes, self.normal_id)
        return Prediction.decide(source, curve, labels, decide, fps, rule)

    def encoder(self) -> ImageEncoder | ExportedImageEncoder:
        if self._encoder is None:
            self._encoder = ImageEncoder(self.clip, str(self.device), self.precision)
        return self._encoder

    def predict(
        self,
        paths: list[Path],
        config: PredictConfig = PredictConfig(),
        names: list[str] | None = None,
        folder_fps: float | None = None,
        progress: bool = True,
    ) -> tuple[list[Prediction], dict[str, str]]:
        """Extract and score each video (file or folder of frames) at ``config``'s sampling
        and decisions; returns the predictions (their sources named by ``names``, default
        the paths) and the videos that failed (path -> reason)."""
        events = self.decisions(config.threshold, config.events, config.threshold_rule,
                                config.calibrate_on)  # fmt: skip
        names = names or [str(p) for p in paths]
        ids = [f"{i:04d}_{safe_name(p.stem)}" for i, p in enumerate(paths)]
        entries = [VideoEntry(vid, p, "", "predict", []) for vid, p in zip(ids, paths, strict=True)]
        store_url = f"memory://anomalyclip-predict-{uuid.uuid4().hex}"
        mode = preprocessing_for(self.checkpoint, self.config, config.preprocess)
        summary = extract(
            entries, store_url, self.encoder(), sampling=config.sampling,
            batch_size=config.batch_size, dtype="float32", dataset=self.config.dataset,
            folder_fps=folder_fps, progress=progress, zone=config.zone, preprocess=mode,
        )  # fmt: skip
        results = []
        try:
            with open_store(store_url) as st:
                for vid, name in zip(ids, names, strict=True):
                    if vid in summary.failed:
                        continue
                    rows = (st.features(vid), st.frames(vid), st.times(vid))
                    fps = st.record(vid).fps
                    results.append(self.score(*rows, name, fps, events, config.batch_size))
        finally:
            with contextlib.suppress(OSError, ValueError):  # the rows are read: free the memory
                fsspec.filesystem("memory").rm(store_url.split("://", 1)[1], recursive=True)
        failed = {str(paths[ids.index(vid)]): reason for vid, reason in summary.failed.items()}
        return results, failed


def write_prediction(pred: Prediction, stem: Path, render: bool) -> Written:
    """``<stem>.csv``, ``<stem>.events.json`` / ``.csv``, ``<stem>.png`` and (``render``)
    ``<stem>.mp4`` of one prediction."""
    csv = pred.to_csv(stem.with_name(stem.name + ".csv"))
    events_file = pred.write_events(stem.with_name(stem.name + ".events"))[0]
    plot = pred.plot(stem.with_name(stem.name + ".png"))
    movie = pred.render(stem.with_name(stem.name + ".mp4")) if render else None
    mean = float(pred.p_abnormal.mean())
    return Written(Path(pred.source), csv, plot, movie, len(pred), mean, pred.top_class,
                   pred.events, events_file, pred)  # fmt: skip


def predict_files(
    predictor: Predictor,
    videos: list[str | Path],
    out_dir: str | Path,
    config: PredictConfig = PredictConfig(),
) -> tuple[list[Written], dict[str, str]]:
    """What ``anomaly predict`` does: every video named by ``videos`` (files, folders,
    globs, list files) scored, and per video a CSV, its events, a plot and (``render``) an
    MP4 written under ``out_dir`` (named by :func:`output_names`); returns them and the
    videos that failed (path -> reason)."""
    paths = [Path(v) for v in expand_inputs(videos)]
    for p in paths:
        if not p.exists():
            raise AnomalyError(f"{p}: no such video file or frame folder")
    decide = predictor.decisions(
        config.threshold, config.events, config.threshold_rule, config.calibrate_on
    )  # no threshold: fail before decoding
    config = replace(config, threshold=decide.threshold, events=decide)
    stems = dict(zip(map(str, paths), output_names(paths), strict=True))
    predictions, failed = predictor.predict(paths, config)
    out = Path(out_dir)
    write_provenance(out, predictor.checkpoint, predictor.encoder())
    written = [write_prediction(p, out / stems[p.source], config.render) for p in predictions]
    return written, failed


def write_provenance(out_dir: str | Path, checkpoint: str | Path, encoder) -> Path:  # noqa: ANN001
    """``OUT/provenance.json``: the command, versions and run, and what ran the image tower
    and the model (``backend``, and the backbone the features came from)."""
    record = {**provenance(), "run": str(checkpoint), "backend": encoder.backend,
              "image_tower": encoder.describe()}  # fmt: skip
    return write_metrics_json(Path(out_dir) / "provenance.json", record)


def predict(
    videos: list[str | Path],
    checkpoint: str | Path,
    out_dir: str | Path,
    config: PredictConfig = PredictConfig(),
) -> tuple[list[Written], dict[str, str]]:
    """:func:`predict_files` with the run at ``checkpoint`` loaded by ``config``'s ``clip``,
    ``device`` and ``precision``."""
    predictor = Predictor(checkpoint, config.clip, config.device, config.precision, config.backend)
    return predict_files(predictor, videos, out_dir, config)
