"""The Python API: a trained run as an object that scores videos, frames and features.

::

    from anomalyclip import Run

    run = Run.load("demo/run")                 # the run folder `anomaly train` wrote
    pred = run.predict("clip.mp4")             # a file, a folder of frames, an http(s) URL
    pred.times, pred.p_abnormal, pred.probs    # per decoded frame; probs' columns: run.classes
    pred.events                                # as `anomaly predict` finds and writes them
    pred.to_csv("clip.csv")                    # the very CSV `anomaly predict` writes

``anomaly predict`` itself goes through :meth:`Run.predict_files`, and :meth:`Run.predict`
through the same :class:`~anomalyclip.evaluate.predict.Predictor`: the extraction pipeline
of ``anomaly features`` (into an in-memory store), whole-video inference, the run's
threshold and events. :meth:`Run.score` scores features already extracted, such as a feature
store's (:func:`anomalyclip.open_store`), as ``anomaly eval`` does.
"""

from __future__ import annotations

import shutil
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import torch

from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.predict import PredictConfig, Predictor, Written, predict_files
from anomalyclip.evaluate.prediction import Prediction
from anomalyclip.events import EventConfig
from anomalyclip.extract.decode import Sampling
from anomalyclip.inputs import expand_inputs
from anomalyclip.runs.config import RunConfig

__all__ = ["PredictConfig", "Prediction", "Run"]

_DOWNLOADS = ("http", "https", "ftp", "file")  # URLs of whole files: fetched, then scored


class Run:
    """A trained (or imported) run folder, loaded for scoring; see :meth:`load`."""

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor

    @classmethod
    def load(
        cls,
        path: str | Path,
        clip: str | Path | None = None,
        device: str | None = None,
        precision: str = "auto",
        backend: str = "torch",
    ) -> Run:
        """The run at ``path``. ``clip`` replaces the run's recorded CLIP (a moved run);
        ``device``: ``cpu``, ``cuda``, ``cuda:1`` (default: CUDA when present); ``precision``
        of the image tower, as ``anomaly predict --precision`` (``auto``: bf16 on CPUs with
        bf16 units, fp16 on CUDA, else the fp32 reference). ``backend``: ``onnxruntime`` or
        ``openvino`` run the run's export instead (``anomaly export``; ``clip`` then names
        an export folder), as ``anomaly predict --backend``."""
        return cls(Predictor(path, clip, device, precision, backend))

    @property
    def path(self) -> Path:
        return self._predictor.checkpoint

    @property
    def config(self) -> RunConfig:
        """The run's ``config.json``, read and checked (:class:`anomalyclip.runs.RunConfig`:
        ``dataset``, ``epoch``, ``model``, ``threshold``, ``store``, ...; ``to_dict()``: the
        whole file)."""
        return self._predictor.config

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names, in the order of a prediction's ``probs`` columns."""
        return self._predictor.classes

    @property
    def normal_class(self) -> str:
        return self.classes[self._predictor.normal_id]

    @property
    def threshold(self) -> float:
        """p(A) from which a frame is abnormal: the run's, chosen when it was trained
        (on held-out normal videos; never on test labels)."""
        return self._predictor.threshold

    @property
    def device(self) -> torch.device:
        return self._predictor.device

    def predict(
        self,
        video: str | Path | np.ndarray,
        fps: float | None = None,
        *,
        sample_fps: float | None = None,
        stride: int | None = None,
        threshold: float | None = None,
        events: EventConfig | None = None,
        batch_size: int = 64,
    ) -> Prediction:
        """Score one video: a file, a folder of frames, an http(s) URL of a file, or frames
        as a uint8 array (T, H, W, 3) RGB with their rate ``fps`` (a folder's rate too,
        default 30). Every decoded frame is scored, or ``sample_fps`` frames a second, or
        every ``stride``-th. Decisions at ``threshold`` (default the run's) with the other
        settings of ``events`` (default :class:`~anomalyclip.events.EventConfig`'s)."""
        if sample_fps and stride:
            raise AnomalyError("give sample_fps or stride, not both")
        sampling = Sampling("fps", sample_fps) if sample_fps else Sampling()
        sampling = Sampling("stride", stride) if stride else sampling
        config = PredictConfig(sampling=sampling, batch_size=batch_size, threshold=threshold,
                               events=events)  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="anomalyclip-") as tmp:
            path, name = _local(video, fps, Path(tmp))
            found, failed = self._predictor.predict([path], config, [name], fps, progress=False)
        if failed:
            raise AnomalyError(next(iter(failed.values())))
        return found[0]

    def score(
        self,
        features: np.ndarray | torch.Tensor,
        times: np.ndarray | None = None,
        frames: np.ndarray | None = None,
        *,
        fps: float = 0.0,
        name: str = "features",
        threshold: float | None = None,
        events: EventConfig | None = None,
    ) -> Prediction:
        """Score one video's CLIP features (T, 512), numpy or torch (a store's rows: give
        its ``times`` and ``frames`` too; without them rows are frames 0..T-1 at ``fps``).
        ``name`` names the video in the events; decisions as in :meth:`predict`."""
        decide = self._predictor.decisions(threshold, events)
        return self._predictor.score(features, frames, times, name, fps, decide)

    def predict_files(
        self, videos: list[str | Path], out: str | Path, config: PredictConfig = PredictConfig()
    ) -> tuple[list[Written], dict[str, str]]:
        """What ``anomaly predict`` does: every video named by ``videos`` (files, folders,
        globs, list files) scored in one extraction, and per video a CSV, its events, a plot
        and (``config.render``) an MP4 written under ``out``; returns what was written and
        the videos that failed (path -> reason)."""
        return predict_files(self._predictor, videos, out, config)


def _local(video: str | Path | np.ndarray, fps: float | None, tmp: Path) -> tuple[Path, str]:
    """(a local file or frame folder holding ``video``, the name its events carry)."""
    if isinstance(video, np.ndarray | torch.Tensor):
        return _frame_folder(np.asarray(video), fps, tmp / "frames"), "frames"
    text = str(video)
    scheme = urllib.parse.urlsplit(text).scheme
    if "://" in text and scheme in _DOWNLOADS:
        suffix = Path(urllib.parse.urlsplit(text).path).suffix
        target = tmp / f"video{suffix}"
        with urllib.request.urlopen(text, timeout=60) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        return target, text
    if "://" in text:
        raise AnomalyError(f"{text}: a live stream; score it with `anomaly watch`")
    sources = expand_inputs([text])
    if len(sources) != 1:
        raise AnomalyError(f"{text}: holds {len(sources)} videos; use Run.predict_files")
    return Path(sources[0]), text


def _frame_folder(frames: np.ndarray, fps: float | None, folder: Path) -> Path:
    """(T, H, W, 3) uint8 RGB frames as a folder of lossless BMP frames, read back by the
    decoder exactly as given."""
    from PIL import Image

    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or not len(frames):
        raise AnomalyError(
            f"frames: expected a (T, H, W, 3) uint8 RGB array, got {frames.shape} {frames.dtype}"
        )
    if not fps or fps <= 0:
        raise AnomalyError("frames: give their rate, fps=...")
    folder.mkdir(parents=True)
    for i, image in enumerate(frames):
        Image.fromarray(image).save(folder / f"{i:08d}.bmp")
    return folder
