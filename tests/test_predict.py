"""``anomaly predict`` on real videos: one row per decoded frame, a playable rendered MP4."""

from __future__ import annotations

import csv

import av
import numpy as np
import pytest
from cli_helper import run_cli
from synthetic import quick_run


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
