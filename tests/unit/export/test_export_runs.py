"""Exported runs in use: stores extracted by another backend, int8 calibration on a store's
videos, a run imported from the authors' checkpoint, and a run copied to another folder
whose CLIP is gone, scored by ``predict --backend onnxruntime`` from a third."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from authors_fixtures import (
    CUDA_PICKLE,
    REFERENCE,
    build_state_dict,
    openai_text_clip,
    save_lightning,
    text_tower_tensors,
)
from cli_helper import call_cli, run_cli
from synthetic_stores import quick_run
from transformers import CLIPTokenizer

from anomalyclip.backbone import build_clip
from anomalyclip.evaluate.report import read_video_csv
from anomalyclip.export.backends import Export
from anomalyclip.export.quantize import Calibration, calibration_frames
from anomalyclip.extract.decode import Sampling, VideoSource
from anomalyclip.extract.encoder import ImageEncoder
from anomalyclip.extract.preprocess import normalize, resize_crop
from anomalyclip.model.inference import score_fn, score_video
from anomalyclip.runs import check_backbone, load_model, read_run_config
from anomalyclip.store import open_store

P_TOL, CSV_TOL, MIN_COSINE_FP32 = 1e-5, 1e-4, 0.99999


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_clip):
    return quick_run(tmp_path_factory.mktemp("export_runs"), tiny_clip, epochs=1, n_each=4)[1]


@pytest.fixture(scope="module")
def real_dataset(tmp_path_factory, shared_videos):
    """Two real videos in the demo dataset's layout (train/<Class>/<name>)."""
    root = tmp_path_factory.mktemp("real") / "videos"
    for cls, name in (("Normal", "tree.avi"), ("Explosion", "Megamind.avi")):
        (root / "train" / cls).mkdir(parents=True)
        shutil.copy(shared_videos / name, root / "train" / cls / name)
    return root


@pytest.mark.slow
def test_features_with_onnxruntime_fill_a_store_that_fits_the_run(run, real_dataset, tmp_path):
    """``--model RUN``: the run's ONNX export runs the image tower (68 + 270 real frames).
    Measured: cosine to torch's features min 0.9999999."""
    assert call_cli("export", run, "--format", "onnx").code == 0
    store = tmp_path / "ort.zarr"
    done = call_cli("features", "--dataset", "demo", "--videos", real_dataset, "--backend",
                    "onnxruntime", "--model", run, "--out", store, "--dtype", "float32",
                    "--workers", "1")  # fmt: skip
    assert done.code == 0, done.err
    clip = read_run_config(run).get("clip")
    with open_store(store) as st:
        producer, backbone = st.attrs["producer"], st.meta.backbone
        check_backbone(read_run_config(run), st, run)  # the run takes these features
        for vid, n in (("train/Normal/tree", 68), ("train/Explosion/Megamind", 270)):
            feats = torch.from_numpy(st.features(vid))
            frames = [f.image for f in VideoSource(real_dataset / st.record(vid).source)]
            ref = ImageEncoder(clip)(resize_crop(np.stack(frames)))
            cos = torch.nn.functional.cosine_similarity(feats.double(), ref.double())
            assert len(cos) == n and cos.min() >= MIN_COSINE_FP32
    assert producer["backend"] == "onnxruntime" and producer["precision"] == "fp32"
    assert backbone["export"]["backend"] == "onnxruntime" and backbone["dim"] == 512


@pytest.mark.slow
def test_int8_calibration_frames_come_from_a_store_s_videos(run, real_dataset, tmp_path, tiny_clip):
    """The store keeps rows, not pixels: its videos are found under --videos, and the frames
    calibrated on are theirs (one a second, evenly kept)."""
    store = tmp_path / "s.zarr"
    done = call_cli("features", "--dataset", "demo", "--videos", real_dataset, "--model",
                    tiny_clip, "--out", store, "--workers", "1")  # fmt: skip
    assert done.code == 0, done.err
    no_videos = call_cli("export", run, "--int8", "--calibrate-on", store)
    assert no_videos.code == 2 and "pass the folder its videos came from" in no_videos.error_line
    frames = calibration_frames(Calibration((str(store),), str(real_dataset), frames=12), "demo")
    tree = real_dataset / "train/Normal/tree.avi"
    second = resize_crop(np.stack([f.image for f in VideoSource(tree, Sampling("fps", 1.0))]))
    ref = normalize(second).numpy()  # tree.avi's one-a-second frames
    assert frames.shape == (12, 3, 224, 224)
    matched = [any(np.array_equal(f, r) for r in ref) for f in frames]
    assert 1 <= sum(matched) < 12  # frames of tree.avi, and of the other video


def test_export_options_are_checked_before_anything_loads(run, tmp_path):
    done = run_cli("export", run, "--calibrate-on", tmp_path)
    assert done.code == 2 and done.error_line.endswith("add --int8")
    done = run_cli("export", run, "--format", "tflite")
    assert done.error_line == "error: --format tflite: expected onnx or openvino"
    done = run_cli("export", run, "--int8", "--calibrate-on", tmp_path / "none.mp4")
    assert done.error_line == (
        f"error: --calibrate-on {tmp_path / 'none.mp4'}: no such store, video, folder or list"
    )


@pytest.mark.slow
@pytest.mark.skipif(not REFERENCE.is_dir(), reason="reference tables not found")
def test_a_run_imported_from_the_authors_checkpoint_exports(tmp_path):
    """The authors' UCF-Crime model (E = 256, 32 x 16; OpenAI's text tower, its own prompts)
    imported, exported to ONNX, and scored against the torch path, which computes its
    convolutions by Winograd where the graph computes them directly. Measured: 5e-7."""
    clip = openai_text_clip(tmp_path / "clip")
    sd = build_state_dict("ucf", text_tower_tensors(seed=3), CLIPTokenizer.from_pretrained(clip), 4)
    save_lightning(tmp_path / "last.ckpt", sd)
    centroid = torch.randn(512, generator=torch.Generator().manual_seed(5))
    torch.save(centroid, tmp_path / "ncentroid.pt", pickle_module=CUDA_PICKLE)
    run = tmp_path / "run"
    done = call_cli("import-checkpoint", tmp_path / "last.ckpt", "--dataset", "ucf", "--centroid",
                    tmp_path / "ncentroid.pt", "--clip", clip, "--out", run)  # fmt: skip
    assert done.code == 0, done.err
    no_frames = call_cli("export", run, "--int8")  # not a demo run: frames must be given
    assert no_frames.code == 2 and "pass --calibrate-on" in no_frames.error_line
    assert call_cli("export", run, "--format", "onnx").code == 0
    model, _ = load_model(run)
    scorer = Export(run / "export" / "onnx", "onnxruntime", run).scorer()
    gen = torch.Generator().manual_seed(6)
    for t in (37, 700):  # one wrapped window; two windows
        x = centroid + 0.5 * torch.randn(t, 512, generator=gen)  # as the release's features
        p, probs = score_video(x, score_fn(model), 32, 16)
        gp, gprobs = score_video(x, scorer.score, 32, 16)
        assert (gp - p).abs().max() <= P_TOL and (gprobs - probs).abs().max() <= P_TOL
        assert p.std() > 0.01
    assert scorer.cfg.emb_dim == 256 and len(scorer.cfg.classes) == 14


@pytest.mark.slow
def test_a_run_copied_elsewhere_predicts_with_onnxruntime_without_its_clip(tmp_path, shared_videos):
    """Exported in one folder, copied to another, its CLIP removed, and scored from a third
    working directory by relative paths: the CSV equals torch's (made before) within 1e-4."""
    video = shared_videos / "tree.avi"
    clip = build_clip(tmp_path / "site" / "clip", "tiny", seed=1)
    run = quick_run(tmp_path / "site", clip, epochs=1, n_each=2)[1]
    ref = call_cli("predict", video, "-c", run, "--precision", "fp32", "--out", tmp_path / "ref")
    assert ref.code == 0, ref.err
    assert call_cli("export", run, "--format", "onnx").code == 0
    shutil.copytree(run, tmp_path / "box" / "run")
    shutil.rmtree(tmp_path / "site")  # the CLIP, the store and the original run are gone
    (tmp_path / "elsewhere").mkdir()
    os.symlink(video, tmp_path / "elsewhere" / "cam.avi")
    args = ("predict", "cam.avi", "-c", "../box/run", "--out", "out")
    torch_path = run_cli(*args, cwd=tmp_path / "elsewhere")
    assert torch_path.code == 2 and "its CLIP is not at" in torch_path.error_line
    done = run_cli(*args, "--backend", "onnxruntime", cwd=tmp_path / "elsewhere")
    assert done.code == 0, done.err
    a = read_video_csv(tmp_path / "ref" / "tree.csv")
    b = read_video_csv(tmp_path / "elsewhere" / "out" / "cam.csv")
    assert len(b["p_abnormal"]) == 68
    assert np.abs(a["p_abnormal"] - b["p_abnormal"]).max() <= CSV_TOL
    assert np.abs(a["probs"] - b["probs"]).max() <= CSV_TOL
