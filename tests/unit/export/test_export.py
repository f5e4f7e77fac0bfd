"""Exports for CPU boxes: ONNX and OpenVINO graphs against the torch path they replace.

Real frames: every 10th frame of the four real test videos (141 frames: street, trees and
film scenes at 768x576, 320x240 and 720x528), decoded and cropped by the package. The
models are random weights of real architectures (the tiny CLIP, ViT-B/16's shape, the demo
preset's temporal model and, imported, the authors' UCF-Crime one): real CLIP weights cannot
be downloaded here. The bounds asserted are the targets (fp32: p(A) within 1e-5, features
within cosine 0.99999; int8: per-frame cosine >= 0.99), each next to the value measured.
"""

from __future__ import annotations

import shutil

import numpy as np
import onnx
import openvino as ov
import pytest
import torch
from cli_helper import SOURCE_ROOT, run_cli
from synthetic_stores import quick_run

from anomalyclip.backbone import build_clip, load_vision
from anomalyclip.evaluate.predict import PredictConfig, predict
from anomalyclip.evaluate.report import read_video_csv
from anomalyclip.export.backends import Export, runner
from anomalyclip.export.exporter import ExportConfig, export_run
from anomalyclip.export.graphs import IMAGE_INPUT, IMAGE_OUTPUT, ImageTower
from anomalyclip.export.manifest import FORMAT_OF
from anomalyclip.export.onnx import export_onnx
from anomalyclip.export.openvino import onnx_to_ir
from anomalyclip.export.quantize import Calibration
from anomalyclip.extract.decode import Sampling, VideoSource
from anomalyclip.extract.encoder import ImageEncoder
from anomalyclip.extract.preprocess import normalize, resize_crop
from anomalyclip.model.inference import score_fn, score_video
from anomalyclip.runs import load_model

VIDEOS = ("vtest.avi", "tree.avi", "Megamind.avi", "Megamind_bugy.avi")
BACKEND_OF = {fmt: backend for backend, fmt in FORMAT_OF.items()}
P_TOL = 1e-5  # fp32 scorer: |p(A) - torch| and |class probabilities - torch|
MIN_COSINE_FP32 = 0.99999  # fp32 image tower against torch, per frame
MIN_COSINE_INT8 = 0.99  # int8 image tower against the fp32 torch tower, per frame
CSV_TOL = 1e-4  # predict's CSVs, exported against torch


@pytest.fixture(scope="module")
def real_crops(shared_videos) -> torch.Tensor:
    """(141, 3, 224, 224) uint8 crops of real frames."""
    sources = (VideoSource(shared_videos / n, Sampling("stride", 10)) for n in VIDEOS)
    return torch.cat([resize_crop(np.stack([f.image for f in s])) for s in sources])


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_clip):
    """A short demo-preset run (E = 32, 16 x 8 windows, similarities fed to the model)."""
    return quick_run(tmp_path_factory.mktemp("export"), tiny_clip, epochs=1, n_each=4)[1]


@pytest.fixture(scope="module", params=["onnx", "openvino"])
def fp32_export(request, run) -> Export:
    folder = export_run(run, ExportConfig(request.param))
    return Export(folder, BACKEND_OF[request.param], run)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1)  # (N,)


@pytest.mark.slow
def test_fp32_image_tower_equals_torch_on_real_frames(fp32_export, tiny_clip, real_crops):
    """Measured: cosine min 0.9999999 (ONNX Runtime and OpenVINO)."""
    ref = ImageEncoder(tiny_clip, "cpu", "fp32")(real_crops)
    got = fp32_export.image_encoder()(real_crops)
    assert got.shape == ref.shape == (141, 512) and got.dtype == torch.float32
    assert _cosine(got, ref).min() >= MIN_COSINE_FP32


@pytest.mark.slow
def test_fp32_scorer_equals_torch_on_real_frame_features(fp32_export, run, tiny_clip, real_crops):
    """Whole-video scoring of the real frames' features (141 rows: two wrapped 16 x 8
    windows) and of a 40-row piece, the scorer's p(A) and class probabilities against the
    model's. Measured: 1.2e-7 at most."""
    model, _ = load_model(run)
    feats = ImageEncoder(tiny_clip, "cpu", "fp32")(real_crops)
    scorer = fp32_export.scorer()
    for x in (feats, feats[50:90]):
        p, probs = score_video(x, score_fn(model), 16, 8)
        gp, gprobs = score_video(x, scorer.score, 16, 8)
        assert (gp - p).abs().max() <= P_TOL and (gprobs - probs).abs().max() <= P_TOL
        assert p.std() > 0.01  # the scores move from frame to frame: the check has teeth
    assert scorer.cfg == model.cfg


def test_the_manifest_describes_the_folder(fp32_export, run):
    m = fp32_export.manifest
    tower, scorer = m["graphs"]["image_tower"], m["graphs"]["scorer"]
    assert m["format"] == FORMAT_OF[fp32_export.backend]
    assert tower["inputs"][0]["name"] == "frames" and tower["outputs"][0]["shape"] == ["batch", 512]
    assert scorer["inputs"][0]["shape"] == ["batch", 16, 8, 512]
    assert scorer["outputs"][1]["shape"] == ["batch", 16, 8, 4]
    assert m["classes"] == ["Explosion", "Intruder", "Normal", "Tampering"] and m["normal_id"] == 2
    assert m["threshold"]["value"] == load_model(run)[1].threshold.value
    assert m["clip"]["weights_sha256"] and m["package"].startswith("anomalyclip ")
    for name, entry in m["files"].items():  # every file listed, with its hash
        assert (fp32_export.folder / name).stat().st_size == entry["bytes"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_predict_with_a_backend_writes_the_csvs_of_torch(backend, run, shared_videos, tmp_path):
    video = shared_videos / "tree.avi"  # 68 real frames
    export_run(run, ExportConfig(FORMAT_OF[backend]))
    ref, _ = predict([video], run, tmp_path / "torch", PredictConfig(precision="fp32"))
    got, _ = predict([video], run, tmp_path / backend, PredictConfig(backend=backend))
    a, b = read_video_csv(ref[0].csv), read_video_csv(got[0].csv)
    assert len(b["p_abnormal"]) == 68 and np.array_equal(a["frame"], b["frame"])
    assert np.abs(a["p_abnormal"] - b["p_abnormal"]).max() <= CSV_TOL
    assert np.abs(a["probs"] - b["probs"]).max() <= CSV_TOL
    record = (tmp_path / backend / "provenance.json").read_text()
    assert f'"backend": "{backend}"' in record and '"precision": "fp32"' in record


def _int8_layers(folder, fmt) -> int:
    """Quantised layers in the graph: QuantizeLinear nodes (ONNX), FakeQuantize ops (IR)."""
    if fmt == "onnx":
        graph = onnx.load(str(folder / "image_tower.onnx")).graph
        return sum(n.op_type == "QuantizeLinear" for n in graph.node)
    model = ov.Core().read_model(str(folder / "image_tower.xml"))
    return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_int8_image_tower_stays_within_tolerance_on_real_frames(
    fmt, run, tiny_clip, real_crops, tmp_path
):
    """Calibrated on demo-world frames (the run is a demo run), judged on real ones.
    Measured per-frame cosine to fp32: min 0.9973 (both formats), mean 0.999."""
    cal = Calibration(frames=32)
    folder = export_run(run, ExportConfig(fmt, int8=True, calibration=cal, out=tmp_path / "q"))
    export = Export(folder, BACKEND_OF[fmt])
    assert export.manifest["graphs"]["image_tower"]["precision"] == "int8"
    assert export.manifest["graphs"]["image_tower"]["calibration"]["frames"] == 32
    assert _int8_layers(folder, fmt) >= 8  # the matrix multiplies really are int8
    ref = ImageEncoder(tiny_clip, "cpu", "fp32")(real_crops)
    cos = _cosine(export.image_encoder()(real_crops), ref)
    assert cos.min() >= MIN_COSINE_INT8, float(cos.min())
    assert cos.min() < 0.9999  # and the rounding of int8 shows


@pytest.fixture(scope="module")
def vit_b16_onnx(tmp_path_factory, real_crops):
    """A ViT-B/16-shaped image tower (random weights): its ONNX graph, 8 real frames (two
    of each video) and the torch tower's features of them."""
    folder = tmp_path_factory.mktemp("vitb")
    tower = ImageTower(load_vision(build_clip(folder / "clip", "vit-b-16"), "sdpa")).eval()
    frames = torch.zeros(2, 3, 224, 224)
    path = export_onnx(tower, frames, folder / "tower.onnx", IMAGE_INPUT, [IMAGE_OUTPUT])
    x = normalize(real_crops[::18])  # (8, 3, 224, 224)
    with torch.inference_mode():
        return path, x, tower(x)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_vit_b16_shaped_fp32_tower_equals_torch(backend, vit_b16_onnx):
    """Measured: cosine min 0.99999994 (both)."""
    path, x, ref = vit_b16_onnx
    if backend == "openvino":
        path = onnx_to_ir(path, path.with_suffix(".xml"))
    (got,) = runner(path, backend)(x.numpy())
    assert got.shape == (8, 512)
    assert _cosine(torch.from_numpy(got), ref).min() >= MIN_COSINE_FP32


def test_a_missing_export_names_the_command_that_makes_it(run, tmp_path):
    fresh = tmp_path / "run"
    shutil.copytree(run, fresh, ignore=shutil.ignore_patterns("export"))
    done = run_cli("predict", tmp_path / "v.mp4", "-c", fresh, "--backend", "openvino")
    assert done.code == 2
    assert done.error_line == (
        f"error: {fresh}/export/openvino: no openvino export here; make it with "
        f"`anomaly export {fresh} --format openvino`"
    )
    done = run_cli("watch", tmp_path / "v.mp4", "-c", fresh, "--backend", "onnxruntime")
    assert done.error_line.endswith(f"make it with `anomaly export {fresh} --format onnx`")
    done = run_cli("predict", tmp_path / "v.mp4", "-c", fresh, "--backend", "tensorrt")
    assert done.code == 2 and "choose one of torch, onnxruntime, openvino" in done.err


@pytest.mark.slow
def test_a_missing_runtime_names_the_extra(run, tmp_path, shared_videos):
    """ONNX Runtime made unimportable (a package of that name that fails to import, first
    on the path): one line naming the extra that installs it."""
    export_run(run, ExportConfig("onnx"))
    blocked = tmp_path / "blocked" / "onnxruntime"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('blocked by the test')\n")
    env = {"PYTHONPATH": f"{tmp_path / 'blocked'}:{SOURCE_ROOT}"}
    video = shared_videos / "tree.avi"
    done = run_cli("predict", video, "-c", run, "--backend", "onnxruntime", "--out", tmp_path,
                   env=env)  # fmt: skip
    assert done.code == 2
    assert done.error_line == (
        "error: onnxruntime is not installed (blocked by the test); "
        "pip install 'anomalyclip[export]'"
    )
