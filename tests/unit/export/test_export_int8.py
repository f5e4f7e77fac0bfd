"""int8 image towers that are hard to quantise: the sensitivity pass keeps float what it must.

The CLIP: the tiny random CLIP with its two projections fitted on the demo world, as
``anomaly demo`` fits its own (:mod:`anomalyclip.demo_pretrain`). Its visual projection
reads the features off a small component of the pooled state (a ridge fit on a random
tower), so rounding that a random CLIP shrugs off turns its features elsewhere: with every
matrix multiply int8 (the recipe before the pass) the smallest per-frame cosine to fp32 on
the held-out demo frames below was 0.40 (ONNX Runtime) and 0.25 (OpenVINO). Real CLIP is not known
to be this fragile; this is the worst case the demo shows, and why the quantiser measures.

Frames judged: demo-world scenes of every class rendered from seeds the calibration does
not use (it renders its own), 48 of them, through the torch fp32 tower and the int8 export.
"""

from __future__ import annotations

import numpy as np
import onnx
import openvino as ov
import pytest
import torch
from synthetic_stores import quick_run

from anomalyclip.backbone import build_clip, load_vision
from anomalyclip.datasets.registry import DEMO
from anomalyclip.demo_pretrain import pretrain_projections
from anomalyclip.export.backends import Export
from anomalyclip.export.exporter import ExportConfig, export_run
from anomalyclip.export.graphs import IMAGE_INPUT, IMAGE_OUTPUT, ImageTower
from anomalyclip.export.manifest import MIN_COSINE
from anomalyclip.export.onnx import export_onnx
from anomalyclip.export.quantize import Calibration, calibration_frames, quantize_onnx
from anomalyclip.extract.encoder import ImageEncoder
from anomalyclip.extract.preprocess import resize_crop
from anomalyclip.synthetic import render_scene

MIN_COSINE_INT8 = 0.99  # the target: int8 against the fp32 torch tower, per unseen frame
BACKEND_OF = {"onnx": "onnxruntime", "openvino": "openvino"}


@pytest.fixture(scope="module")
def demo_clip(tmp_path_factory):
    """The tiny CLIP, its projections fitted on the demo world (4 clips a class)."""
    clip = build_clip(tmp_path_factory.mktemp("demo-clip"), "tiny")
    pretrain_projections(clip, seed=0, clips_per_class=4)
    return clip


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory, demo_clip):
    return quick_run(tmp_path_factory.mktemp("int8"), demo_clip, epochs=1, n_each=2)[1]


@pytest.fixture(scope="module")
def held_out() -> torch.Tensor:
    """(48, 3, 224, 224) uint8 crops: 6 frames of 8 demo scenes (2 of each class)."""
    classes = [DEMO.normal, *DEMO.anomaly_classes]
    scenes = [render_scene(classes[k % len(classes)], np.random.default_rng([7, k]), 48,
                           (160, 120))[0] for k in range(2 * len(classes))]  # fmt: skip
    return torch.cat([resize_crop(pixels[::8]) for pixels in scenes])


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1)  # (N,)


def _quantised_ops(folder, fmt) -> set[str]:
    """Names of the ops that compute on int8: every input dequantised (ONNX; a float op may
    read a neighbour's quantised output), a FakeQuantize on an input (IR)."""
    if fmt == "onnx":
        graph = onnx.load(str(folder / "image_tower.onnx")).graph
        dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        return {n.name for n in graph.node if set(n.input) <= dequantized}
    model = ov.Core().read_model(str(folder / "image_tower.xml"))
    return {
        op.get_friendly_name()
        for op in model.get_ordered_ops()
        for i in range(op.get_input_size())
        if op.input_value(i).get_node().get_type_name() == "FakeQuantize"
    }


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_int8_keeps_float_the_matmuls_the_cosine_needs_and_says_which(
    fmt, demo_run, demo_clip, held_out, tmp_path
):
    """Measured (64 calibration frames, the default target 0.998, an AVX-512 host): ONNX
    Runtime 7 of 16 candidates int8, OpenVINO 8 of 14; smallest per-frame cosine on the
    held-out frames 0.9988 and 0.9995."""
    folder = export_run(demo_run, ExportConfig(fmt, int8=True, out=tmp_path / "q"))  # 64 frames
    record = Export(folder, BACKEND_OF[fmt]).manifest["graphs"]["image_tower"]["int8"]
    assert record["min_cosine_target"] == MIN_COSINE >= MIN_COSINE_INT8
    assert record["held_out_cosine"] >= MIN_COSINE
    kept, ranked = record["float_matmuls"], record["sensitivity"]
    # every int8 candidate broke the target: each was ranked, and some, not all, stay float
    assert len(ranked) == len(kept) + record["int8_matmuls"] and set(kept) < set(ranked)
    assert 0 < len(kept) < len(ranked)
    # the most sensitive stay float: none kept float is less sensitive than one made int8
    int8 = set(ranked) - set(kept)
    assert max(ranked[k] for k in kept) <= min(ranked[k] for k in int8)
    # and the graph is what the manifest says: kept ones float, the others int8
    quantised = _quantised_ops(folder, fmt)
    assert not quantised & set(kept) and int8 <= quantised
    ref = ImageEncoder(demo_clip, "cpu", "fp32")(held_out)
    cos = _cosine(Export(folder, BACKEND_OF[fmt]).image_encoder()(held_out), ref)
    assert cos.min() >= MIN_COSINE_INT8, float(cos.min())


@pytest.mark.slow
def test_a_tower_that_int8_does_not_hurt_stays_int8_everywhere(tiny_clip, tmp_path):
    """The random tiny CLIP: every matrix multiply int8 meets the target at the first
    trial, so nothing is ranked and nothing is kept float."""
    tower = ImageTower(load_vision(tiny_clip, "sdpa")).eval()
    path = export_onnx(tower, torch.zeros(2, 3, 224, 224), tmp_path / "t.onnx", IMAGE_INPUT,
                       [IMAGE_OUTPUT])  # fmt: skip
    frames = calibration_frames(Calibration(frames=16), DEMO.name)
    choice = quantize_onnx(path, frames, tmp_path / "q.onnx", IMAGE_INPUT)
    assert choice.float_layers == [] and choice.sensitivity == {}
    assert choice.int8_layers == len(choice.candidates) >= 8
    assert choice.cosine >= MIN_COSINE


@pytest.mark.slow
def test_int8_min_cosine_zero_makes_every_candidate_int8(demo_run, tmp_path):
    """``anomaly export --int8 --int8-min-cosine 0``: the fastest int8, every candidate
    matrix multiply int8 even on the fragile demo CLIP (where 0.99 keeps some float), the
    first trial's cosine still recorded; a cosine outside [0, 1] is one line, nothing made."""
    from cli_helper import call_cli

    out = tmp_path / "all-int8"
    done = call_cli("export", demo_run, "--int8", "--int8-min-cosine", "0", "--out", out)
    assert done.code == 0, done.err
    record = Export(out, "onnxruntime").manifest["graphs"]["image_tower"]["int8"]
    assert record["min_cosine_target"] == 0.0 and record["float_matmuls"] == []
    assert record["sensitivity"] == {} and record["int8_matmuls"] >= 8
    assert record["held_out_cosine"] < MIN_COSINE_INT8  # what the pass would have mended
    bad = call_cli(
        "export", demo_run, "--int8", "--int8-min-cosine", "1.5", "--out", tmp_path / "b"
    )
    assert bad.code == 2 and bad.error_line == "error: --int8-min-cosine 1.5: a cosine in [0, 1]"
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_the_quantisers_progress_stays_off_stdout(demo_run, tmp_path):
    """NNCF draws progress bars on stdout; stdout is the command's output (``bench export
    --json`` printed them before its JSON): the export's stdout holds its own lines only."""
    from cli_helper import call_cli

    out = tmp_path / "ov-int8"
    done = call_cli("export", demo_run, "--format", "openvino", "--int8",
                    "--int8-min-cosine", "0", "--out", out)  # fmt: skip
    assert done.code == 0, done.err
    listed = [line.split("  ")[0] for line in done.out.splitlines()]  # "PATH  SIZE MB" each
    assert listed == sorted(str(p) for p in out.iterdir()), done.out
