"""One scored video: what ``anomaly predict`` writes and what :meth:`anomalyclip.Run.predict`
returns are the same object, so the command line and the Python API cannot disagree."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.decisions import video_events
from anomalyclip.evaluate.report import FrameDecision, write_events, write_video_csv
from anomalyclip.events import Event, EventConfig


def printable(path: str | Path) -> str:
    """A file name as text that any output takes: bytes that are not UTF-8 as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@dataclass
class Prediction:
    """Per scored frame of one video: its decoded frame number, its time and the model's
    probabilities; and the events found at ``threshold``.

    ``p_abnormal`` (T,) is p(A); ``probs`` (T, C) the C-way class probabilities, one column
    per name of ``classes`` (the Normal column, ``classes[normal_id]``, is 1 - p(A)). A frame
    is abnormal where p(A) >= ``threshold``. ``fps`` is the source's frame rate.
    """

    source: str
    frames: np.ndarray  # (T,) int64 decoded frame numbers
    times: np.ndarray  # (T,) float64 seconds
    p_abnormal: np.ndarray  # (T,)
    probs: np.ndarray  # (T, C)
    classes: tuple[str, ...]
    normal_id: int
    threshold: float
    events: list[Event] = field(default_factory=list)
    fps: float = 0.0
    threshold_rule: str = ""  # where the threshold came from: the run's rule, or "given"

    @classmethod
    def decide(
        cls,
        source: str,
        curve: dict[str, np.ndarray],
        labels: tuple[Sequence[str], int],
        events: EventConfig,
        fps: float = 0.0,
        rule: str = "",
    ) -> Prediction:
        """The prediction of a scored ``curve`` (``frames``, ``times``, ``p``, ``probs``):
        frames decided and events found with ``events`` (its threshold, from ``rule``,
        included)."""
        names, normal_id = labels
        found = video_events(printable(source), curve, (tuple(names), normal_id), events, fps)
        return cls(
            source, np.asarray(curve["frames"]), np.asarray(curve["times"], np.float64),
            curve["p"], curve["probs"], tuple(names), normal_id, events.threshold, found, fps,
            rule,
        )  # fmt: skip

    @property
    def curve(self) -> dict[str, np.ndarray]:
        """``frames``, ``times``, ``p`` and ``probs``: the scores as the event finder takes them."""
        return {"frames": self.frames, "times": self.times, "p": self.p_abnormal,
                "probs": self.probs}  # fmt: skip

    def __len__(self) -> int:
        return len(self.frames)

    def __repr__(self) -> str:
        seconds = f", {self.times[-1]:.2f} s" if len(self) and np.isfinite(self.times[-1]) else ""
        return (
            f"Prediction({self.source!r}: {len(self)} frames{seconds}, threshold "
            f"{self.threshold:.4f}, {len(self.events)} event{'s' * (len(self.events) != 1)})"
        )

    @property
    def abnormal(self) -> np.ndarray:
        """(T,) bool: the frames called abnormal (p(A) >= threshold)."""
        return self.p_abnormal >= self.threshold

    def class_probabilities(self) -> dict[str, np.ndarray]:
        """Class name -> its (T,) probability column."""
        return {name: self.probs[:, c] for c, name in enumerate(self.classes)}

    @property
    def top_class(self) -> str:
        """The likeliest anomaly class over the frames called abnormal (Normal without any)."""
        called = self.abnormal
        if not called.any():
            return self.classes[self.normal_id]
        ranked = np.delete(self.probs[called].sum(0), self.normal_id)
        others = [n for c, n in enumerate(self.classes) if c != self.normal_id]
        return others[int(ranked.argmax())]

    def to_csv(self, path: str | Path) -> Path:
        """One row per frame: ``frame, time, p_abnormal, p_<class>..., abnormal,
        predicted_class, gt_label`` (:func:`~anomalyclip.evaluate.report.write_video_csv`)."""
        return write_video_csv(
            path, self.frames, self.times, self.p_abnormal, self.probs, self.classes,
            decision=FrameDecision(self.threshold, self.normal_id),
        )  # fmt: skip

    def write_events(self, stem: str | Path) -> tuple[Path, Path]:
        """``<stem>.json`` and ``<stem>.csv``: the events, as ``anomaly predict`` writes them."""
        return write_events(stem, self.events)

    def plot(self, path: str | Path, title: str | None = None) -> Path:
        """p(A) over time with the threshold and the events, and the likeliest classes."""
        from anomalyclip.evaluate import plots

        label = f"{self.threshold_rule} threshold" if self.threshold_rule else "threshold"
        video = plots.VideoPlot(
            self.times, self.p_abnormal, self.probs, self.classes, self.normal_id,
            title or printable(Path(self.source).name), (), self.events, self.threshold, label,
        )  # fmt: skip
        return plots.plot_video(video, path)

    def render(self, path: str | Path, video: str | Path | None = None) -> Path:
        """An MP4 of the video (default: the scored file or folder of frames) beside its
        curves and classes."""
        from anomalyclip.evaluate.render import Scores, render_video

        video = Path(video or self.source)
        if not video.exists():
            raise AnomalyError(f"{video}: no such video to render (give the video's path)")
        scores = Scores(self.frames, self.times, self.p_abnormal, self.probs, self.classes,
                        self.normal_id)  # fmt: skip
        return render_video(video, path, scores, self.threshold, self.events)
