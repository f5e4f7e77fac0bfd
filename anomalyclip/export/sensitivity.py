"""Which matrix multiplies of an int8 image tower stay float: a sensitivity pass.

Post-training int8 rounds the weights and the inputs of every quantised matrix multiply; how
far that moves the features depends on the tower, not only on the quantiser. A tower whose
last projection reads its output off a small component of the pooled state (the demo's
CLIP: its projection, fitted by ridge regression on a random tower, has a largest singular
value ~250x its gain on the features) turns rounding noise far below 1 % of the pooled
state into a feature that points elsewhere. So the quantiser does not assume; it measures,
on the calibration frames only (never on evaluation data), the per-frame cosine of the
quantised tower's features to the fp32 graph's, and keeps float what it must. Each trial is
calibrated on the first half of the frames and judged on the second (judged on the frames
it was calibrated on, a trial looked better than it was on unseen frames: 0.993 against
0.974 on the tiny demo-pretrained CLIP, 32 frames; calibrated on the even frames and judged
on the odd, the exports reached 0.987 (ONNX Runtime) and 0.861 (OpenVINO) on unseen frames,
where the halves reach 0.999 and 0.994: neighbouring frames are no test); the graph written
last is calibrated on all.

1. every candidate int8: if the smallest per-frame cosine reaches ``target``, that is it;
2. otherwise each candidate alone int8 (the others float): its cosine is its sensitivity.
   Those whose own cosine is below ``target`` stay float (alone they break it); then the
   others, most sensitive first, one more at a time, until the target is met, or until no
   candidate is left int8 (the export then computes in float and says so).

:func:`choose_float` is the pass, for any quantiser given as a function; its :class:`Choice`
goes into the export's manifest (what stayed float, and why). It costs one trial when the
first passes, and n + 2 or more for n candidates when it does not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomalyclip.export.manifest import MIN_COSINE

log = logging.getLogger(__name__)


# (names of the layers kept float, frames to calibrate on, where to write) -> the graph's path
Quantize = Callable[[Sequence[str], np.ndarray, Path], Path]
# a graph's path -> a function of (n, 3, 224, 224) float32 frames to (n, D) features
Run = Callable[[Path], Callable[[np.ndarray], np.ndarray]]


@dataclass
class Choice:
    """The pass's outcome: ``float_layers`` kept float of ``candidates``, ``cosine`` (the
    smallest per-frame cosine to fp32 on the held-out calibration frames) of the choice,
    and ``sensitivity`` (each candidate's cosine when it alone is int8; empty when every
    candidate int8 met the ``target``)."""

    target: float
    candidates: list[str]
    float_layers: list[str] = field(default_factory=list)
    cosine: float = float("nan")
    sensitivity: dict[str, float] = field(default_factory=dict)

    @property
    def int8_layers(self) -> int:
        return len(self.candidates) - len(self.float_layers)

    def describe(self) -> dict:
        """What the manifest records."""
        return {
            "min_cosine_target": self.target,
            "held_out_cosine": round(self.cosine, 6),
            "int8_matmuls": self.int8_layers,
            "float_matmuls": list(self.float_layers),
            "why_float": "kept float by the sensitivity pass: with them int8 the smallest "
            "per-frame cosine to fp32 on held-out calibration frames fell below the target",
            "sensitivity": {k: round(v, 6) for k, v in self.sensitivity.items()},
        }


def min_cosine(features: np.ndarray, reference: np.ndarray) -> float:
    """The smallest per-frame cosine between two (n, D) feature arrays."""
    a, b = features.astype(np.float64), reference.astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)
    return float(cos.min())


@dataclass(frozen=True)
class Pass:
    """A quantiser (``quantize``), how its graphs run (``run``), the calibration ``frames``
    and the fp32 graph's features of them (``reference``), the ``candidates`` the quantiser
    may make int8, a folder to work in. The first half of the frames calibrates the trials,
    the second half judges them (frames come in scenes or videos, so the halves are apart)."""

    quantize: Quantize
    run: Run
    frames: np.ndarray
    reference: np.ndarray
    candidates: list[str]
    work: Path

    def cosine(self, kept: Sequence[str], name: str) -> float:
        """A trial: calibrated on the first half, judged on the second, then deleted (a
        ViT-B/16 graph is ~350 MB, and a pass may try a hundred)."""
        half = len(self.frames) // 2
        path = self.quantize(list(kept), self.frames[:half], self.work / name)
        try:
            return min_cosine(self.run(path)(self.frames[half:]), self.reference[half:])
        finally:
            for file in (path, path.with_suffix(".bin")):
                file.unlink(missing_ok=True)


def choose_float(p: Pass, target: float = MIN_COSINE) -> Choice:
    """The sensitivity pass (module docstring): which candidates stay float."""
    choice = Choice(target, list(p.candidates))
    choice.cosine = p.cosine([], "all-int8")
    if choice.cosine >= target or target <= 0 or not p.candidates:
        return choice  # (a target of 0 or less: every candidate int8, whatever the cosine)
    log.info("int8: cosine %.4f < %.4f with every matrix multiply int8; ranking %d of them",
             choice.cosine, target, len(p.candidates))  # fmt: skip
    for i, name in enumerate(p.candidates):
        choice.sensitivity[name] = p.cosine([c for c in p.candidates if c != name], f"only-{i}")
    ranked = sorted(p.candidates, key=choice.sensitivity.__getitem__)  # most sensitive first
    k = sum(choice.sensitivity[c] < target for c in ranked)
    while True:
        choice.float_layers = ranked[:k]
        choice.cosine = p.cosine(choice.float_layers, f"float-{k}")
        if choice.cosine >= target or k == len(ranked):
            break
        k += 1
    if not choice.int8_layers:
        log.warning("int8: no matrix multiply of this tower can be int8 and keep the per-frame "
                    "cosine to fp32 >= %.3f on held-out calibration frames: the export "
                    "computes in float (see the manifest's sensitivity)", target)  # fmt: skip
    return choice


def quantize_chosen(p: Pass, target: float, out: Path) -> Choice:
    """:func:`choose_float`, then the quantised graph written to ``out`` (calibrated on
    every frame, the chosen layers float)."""
    choice = choose_float(p, target)
    p.quantize(choice.float_layers, p.frames, out)
    return choice
