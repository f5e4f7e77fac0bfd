"""``anomaly predict`` on real videos: one row per decoded frame, a playable rendered MP4."""

from __future__ import annotations

import csv

import av
import numpy as np
import pytest
from cli_helper import run_cli
from synthetic_stores import quick_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_clip):
    return quick_run(tmp_path_factory.mktemp("predict"), tiny_clip, epochs=1, n_each=4)[1]


def decoded_frames(path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.slow
def test_predict_real_videos_with_render(tmp_path, run_dir, shared_videos):
    videos = [shared_videos / "tree.avi", shared_videos / "Megamind.avi"]
    out = tmp_path / "pred"
    done = run_cli("predict", *videos, "--checkpoint", run_dir, "--out", out, "--render")
    assert done.code == 0, done.err[-2000:]
    for video, expected in zip(videos, (68, 270), strict=True):
        with open(out / f"{video.stem}.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == expected  # tree.avi's header promises 444 frames: decoding says 68
        assert [int(r["frame"]) for r in rows] == list(range(expected))
        times = np.array([float(r["time"]) for r in rows])
        assert (np.diff(times) > 0).all()
        probs = np.array([[float(v) for k, v in r.items() if k.startswith("p_")] for r in rows])
        p_abnormal, classes = probs[:, 0], probs[:, 1:]
        np.testing.assert_allclose(classes.sum(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(classes[:, 2], 1 - p_abnormal, atol=1e-5)  # the Normal column
        assert (out / f"{video.stem}.png").stat().st_size > 10_000
        assert decoded_frames(out / f"{video.stem}.mp4") == decoded_frames(video) == expected


def test_predict_names_a_missing_video(tmp_path, run_dir):
    done = run_cli("predict", tmp_path / "nope.mp4", "--checkpoint", run_dir, "--out", tmp_path)
    assert done.code == 2
    assert done.error_line == f"error: {tmp_path / 'nope.mp4'}: no such video file or frame folder"


@pytest.mark.slow
def test_predict_in_bf16_stays_close_to_the_fp32_reference(tmp_path, run_dir):
    """``precision`` reaches the image tower: bf16 scores are not fp32's bit for bit, but
    within the tolerance stated here of them (p(A) and class probabilities, every frame).

    The video is the demo world's (a panning scene with moving blobs and sensor noise, encoded
    as H.264), so the features vary from frame to frame as a camera's do."""
    from anomalyclip.evaluate.predict import PredictConfig, predict
    from anomalyclip.evaluate.report import read_video_csv
    from anomalyclip.synthetic import encode_video, render_scene

    pixels, _ = render_scene("Explosion", np.random.default_rng(3), 120, (160, 120))
    video = tmp_path / "cam.mp4"
    encode_video(video, pixels)
    scored = {}
    for precision in ("fp32", "bf16"):
        config = PredictConfig(precision=precision)
        results, failed = predict([video], run_dir, tmp_path / precision, config)
        assert failed == {} and results[0].frames == 120
        scored[precision] = read_video_csv(results[0].csv)
    ref, low = scored["fp32"], scored["bf16"]
    for column in ("p_abnormal", "probs"):
        gap = np.abs(low[column] - ref[column]).max()
        assert 0 < gap < 0.005, (column, gap)  # measured: 5e-4 (p(A)), 1.5e-3 (classes)


def test_predict_names_an_unknown_precision_before_loading_anything(tmp_path, run_dir):
    done = run_cli("predict", tmp_path / "v.mp4", "--checkpoint", run_dir, "--precision", "fp8")
    assert done.code == 2
    assert done.error_line == "error: --precision fp8: expected auto, fp32, bf16 or fp16"


@pytest.mark.slow
def test_bench_predict_times_each_precision_on_the_same_videos(tmp_path, run_dir):
    from anomalyclip.bench.predict import measure, table

    result = measure(run_dir, lengths=(30, 12), size=(96, 64), repeats=2)
    assert [row["precision"] for row in result["rows"]] == ["fp32", "bf16"]
    for row in result["rows"]:
        s = row["seconds"]
        assert row["frames"] == result["frames"] == 42
        # each precision's predict timed once per round, the rounds interleaved; the best kept
        assert len(row["runs"]) == 2 and s["predict"] == min(row["runs"])
        assert min(s["predict"], s["extract"], s["render"]) > 0  # timed separately: on
        # clips this short their sum can exceed predict's time, and the rest is then 0
        assert s["rest"] == pytest.approx(max(0.0, s["predict"] - s["extract"] - s["render"]))
        assert row["frames_per_s"] == pytest.approx(42 / s["predict"])
    assert table(result).count("frames/s") == 2
    assert table(result).count("best of 2") == 2
