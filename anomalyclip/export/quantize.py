"""Post-training int8 quantisation of the image tower, calibrated on real frames.

Calibration frames (normalised (n, 3, 224, 224) float32, as the graph takes them) come from:

- **videos** (``--calibrate-on`` files, folders, globs or list files): one frame a second of
  each, then evenly spaced frames of all of them;
- **a feature store** (``--calibrate-on STORE``): the store keeps its rows, not its pixels,
  so the frames are decoded again from its source videos, which it records relative to the
  folder ``anomaly features --videos`` was given; that folder is passed as ``--videos``. Its
  training videos are used (all videos when it has none), spread over its classes;
- **the demo world** (runs of the ``demo`` dataset, when nothing is given): scenes of every
  demo class rendered afresh by :func:`anomalyclip.synthetic.render_scene` (not the
  demo's own videos). Any other run needs ``--calibrate-on``.

Quantisers. OpenVINO: NNCF's post-training quantisation (``model_type=TRANSFORMER``: int8
weights and activations on the matrix multiplies and the attention, soft-max, layer norms
and GELUs kept in float, SmoothQuant and its fast bias correction). ONNX: ONNX Runtime's
static QDQ quantisation with MinMax calibration, int8 weights per channel and uint8
activations, on every MatMul (the attention's two included: the QDQ quantiser has no
"constant B only" mode). In both, the first and the last layer stay float32: the patch
embedding (its input is the image itself) and the visual projection (its output is the
feature).

Which of the other matrix multiplies are int8 is measured, not assumed
(:mod:`anomalyclip.export.sensitivity`): those whose rounding would bring the smallest
per-frame cosine to fp32 on held-out calibration frames under ``min_cosine`` (0.998) stay
float, and the manifest says which and why. ONNX Runtime keeps every one of a random
tower int8 at the first trial (tiny CLIP, ViT-B/16's shape); OpenVINO's first trial on the
ViT-B/16-shaped one falls short (0.978 on the unseen half of 32 frames). The demo's CLIP:
its projection, fitted on the demo world, reads the features off a small component of the
pooled state, and with every matrix multiply int8 the demo's frame AUC fell from 0.964 to
0.892 (ONNX Runtime) and 0.798 (OpenVINO); at the default target the pass keeps 6 of 16
(ONNX Runtime) and 6 of 14 (OpenVINO) int8, the query, key and attention-score products,
and the AUC stays within 0.002 with every planted event found (``python
tools/int8_tradeoff.py accuracy DEMO``).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from anomalyclip.datasets.registry import DEMO
from anomalyclip.errors import AnomalyError
from anomalyclip.export.manifest import MIN_COSINE, require
from anomalyclip.export.sensitivity import Choice, Pass, quantize_chosen
from anomalyclip.extract.decode import Sampling, VideoSource
from anomalyclip.extract.preprocess import normalize, resize_crop

log = logging.getLogger(__name__)

CALIBRATION_FRAMES = 64
STORE_SUFFIXES = (".zarr", ".zip", ".h5", ".hdf5")


@dataclass(frozen=True)
class Calibration:
    """Where calibration frames come from: ``source`` (a store, or video inputs; None: the
    demo world), ``videos`` (the folder a store's sources are relative to), ``frames``."""

    source: tuple[str, ...] | None = None
    videos: str | None = None
    frames: int = CALIBRATION_FRAMES

    def describe(self) -> dict:
        kind = "demo world" if not self.source else "store" if self.is_store else "videos"
        return {"from": kind, "inputs": list(self.source or ()), "frames": self.frames}

    @property
    def is_store(self) -> bool:
        if not self.source or len(self.source) != 1:
            return False
        path = Path(self.source[0])
        return path.suffix.lower() in STORE_SUFFIXES or (path / "zarr.json").is_file()


def _evenly(items: list, count: int) -> list:
    if len(items) <= count:
        return items
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, count).round()]


def _video_frames(paths: list[Path], count: int) -> np.ndarray:
    """(<= count, 3, 224, 224) uint8 crops: one frame a second of each video, evenly kept."""
    crops = []
    per_video = max(1, -(-count // max(1, len(paths))))
    for path in paths:
        try:
            images = [f.image for f in VideoSource(path, Sampling("fps", 1.0))]
        except AnomalyError as exc:
            raise AnomalyError(f"--calibrate-on: {exc}") from exc
        if images:
            crops.append(resize_crop(np.stack(_evenly(images, per_video))))
    if not crops:
        raise AnomalyError("--calibrate-on: no frame could be decoded from the given videos")
    return torch.cat(crops).numpy()


def _store_videos(store: str, root: str | None) -> list[Path]:
    from anomalyclip.store import open_store

    with open_store(store) as st:
        records = st.records(split="train") or st.records()
    if not records:
        raise AnomalyError(f"{store}: no complete video to calibrate on")
    if root is None:
        raise AnomalyError(
            f"{store}: a store keeps features, not frames; pass the folder its videos came "
            "from (the --videos of `anomaly features`) as --videos, or videos to --calibrate-on"
        )
    by_class: dict[str, list] = {}
    for rec in records:
        by_class.setdefault(rec.label, []).append(rec)
    picked = [r for recs in by_class.values() for r in _evenly(recs, 4)]  # each class
    paths = [Path(root) / r.source for r in picked]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise AnomalyError(f"{missing[0]}: a video of {store} is not there (--videos {root}?)")
    return paths


def _demo_frames(count: int) -> np.ndarray:
    from anomalyclip.synthetic import render_scene

    crops = []
    classes = [DEMO.normal, *DEMO.anomaly_classes]
    per = max(1, -(-count // (2 * len(classes))))
    for k in range(2 * len(classes)):
        pixels, _ = render_scene(classes[k % len(classes)], np.random.default_rng([2024, k]), 96,
                                 (160, 120))  # fmt: skip
        crops.append(resize_crop(pixels[:: max(1, 96 // per)][:per]))
    return torch.cat(crops).numpy()


def calibration_frames(cal: Calibration, dataset: str) -> np.ndarray:
    """(n, 3, 224, 224) normalised float32 frames to calibrate on (module docstring)."""
    if not cal.source:
        if dataset != DEMO.name:
            raise AnomalyError(
                f"--int8 needs frames like the run's to calibrate on (its dataset is {dataset}): "
                "pass --calibrate-on with videos, or its store and --videos"
            )
        crops = _demo_frames(cal.frames)
    elif cal.is_store:
        crops = _video_frames(_store_videos(cal.source[0], cal.videos), cal.frames)
    else:
        from anomalyclip.inputs import expand_inputs

        paths = [Path(p) for p in expand_inputs(list(cal.source))]
        crops = _video_frames(paths, cal.frames)
    crops = _evenly(list(crops), cal.frames)
    log.info("calibrating on %d frames (%s)", len(crops), cal.describe()["from"])
    return normalize(torch.from_numpy(np.stack(crops))).numpy()


def _openvino_candidates(model) -> tuple[list[str], str]:  # noqa: ANN001 - an ov.Model
    """(names of what NNCF may quantise but the last layer: matrix multiplies by weights and
    the attentions, the last's name)."""
    projection = model.output(0).get_node().input_value(0).get_node()  # the last MatMul
    names = [op.get_friendly_name() for op in model.get_ordered_ops()
             if op.get_type_name() == "ScaledDotProductAttention"
             or (op.get_type_name() == "MatMul"
                 and op.input_value(1).get_node().get_type_name() == "Constant")]  # fmt: skip
    last = projection.get_friendly_name()
    return [n for n in names if n != last], last


def quantize_openvino(xml_path: Path, frames: np.ndarray, out_xml: Path,
                      target: float = MIN_COSINE) -> Choice:  # fmt: skip
    """NNCF post-training quantisation of an IR image tower (module docstring)."""
    ov, nncf = require("openvino"), require("nncf")
    from anomalyclip.export.backends import runner
    from anomalyclip.export.openvino import save_ir

    nncf.set_log_level(logging.WARNING)  # its INFO lines list every layer it leaves alone
    model = ov.Core().read_model(str(xml_path))
    candidates, projection = _openvino_candidates(model)

    def quantize(kept: list[str], x: np.ndarray, out: Path) -> Path:
        ignored = nncf.IgnoredScope(names=[projection, *kept], types=["Convolution"])
        with contextlib.redirect_stdout(sys.stderr):  # its progress bars: stdout is output
            quantized = nncf.quantize(
                model, nncf.Dataset([x[i : i + 1] for i in range(len(x))]), subset_size=len(x),
                model_type=nncf.ModelType.TRANSFORMER, ignored_scope=ignored,
            )  # fmt: skip
        return save_ir(quantized, out.with_suffix(".xml"))

    def run(path: Path):  # noqa: ANN202 - a function of frames
        compiled = runner(path, "openvino", "int8")  # int8 hints f32, as fp32 does
        return lambda x: compiled(x)[0]

    with tempfile.TemporaryDirectory(prefix="anomaly-quantize-") as tmp:
        trials = Pass(quantize, run, frames, run(xml_path)(frames), candidates, Path(tmp))
        return quantize_chosen(trials, target, out_xml)


class _Frames:
    """ONNX Runtime's calibration reader: one frame per call."""

    def __init__(self, name: str, frames: np.ndarray) -> None:
        self.items = iter([{name: frames[i : i + 1]} for i in range(len(frames))])

    def get_next(self) -> dict | None:
        return next(self.items, None)


def _onnx_candidates(graph) -> tuple[list[str], list[str]]:  # noqa: ANN001 - an onnx GraphProto
    """(names of the matrix multiplies but the last: by weights, and the attentions' (the QDQ
    quantiser quantises those too), names of the last)."""
    outputs = {o.name for o in graph.output}
    last = [n.name for n in graph.node if outputs & set(n.output)]
    names = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm")]
    return [n for n in names if n not in last], last


def quantize_onnx(onnx_path: Path, frames: np.ndarray, out_path: Path, input_name: str,
                  target: float = MIN_COSINE) -> Choice:  # fmt: skip
    """ONNX Runtime static QDQ quantisation of an ONNX image tower (module docstring)."""
    onnx, q = require("onnx"), require("onnxruntime.quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from anomalyclip.export.backends import runner

    def quantize(kept: list[str], x: np.ndarray, out: Path) -> Path:
        q.quantize_static(
            str(prepared),
            str(out.with_suffix(".onnx")),
            _Frames(input_name, x),
            quant_format=q.QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_exclude=[*projection, *kept],
            per_channel=True,
            activation_type=q.QuantType.QUInt8,
            weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
        )
        return out.with_suffix(".onnx")

    def run(path: Path):  # noqa: ANN202 - a function of frames
        sess = runner(path, "onnxruntime")
        return lambda x: sess(x)[0]

    with tempfile.TemporaryDirectory(prefix="anomaly-quantize-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared), load_external_data=False).graph
        candidates, projection = _onnx_candidates(graph)
        trials = Pass(quantize, run, frames, run(onnx_path)(frames), candidates, Path(tmp))
        return quantize_chosen(trials, target, out_path)
