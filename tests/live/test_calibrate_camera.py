"""``anomaly calibrate RUN --camera NAME VIDEO...``: a camera's threshold from its own normal
footage, scored as ``predict`` scores it, kept in ``RUN/cameras.json`` and used by ``watch``.

The footage is demo-style video of a background the run never saw (``camera=7``: the demo
films four); a stream is a real one over HTTP from ``tests/support/stream_sender.py``. What the run
detects is beside the point here (``tests/live/test_watch_zones.py`` and ``anomaly bench
calibrate`` look at that): these tests check the numbers are the rule applied to exactly
the frames ``predict`` scores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from synthetic_stores import quick_run
from test_watch_cli import PROBE
from watch_helpers import free_port, offline, sender, watch

from anomalyclip.synthetic import encode_video, render_scene
from anomalyclip.thresholds import far_threshold, normal_quantiles

STARTUP = 180


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_clip):
    return quick_run(tmp_path_factory.mktemp("run"), tiny_clip, epochs=1, n_each=4)[1]


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """Three normal videos of a new camera (background 7), 60 to 90 frames, 160x120."""
    folder = tmp_path_factory.mktemp("gate")
    paths = []
    for k, n in enumerate((60, 75, 90)):
        frames, _ = render_scene("Normal", np.random.default_rng([21, k]), n, (160, 120),
                                 camera=7)  # fmt: skip
        path = folder / f"gate-{k}.mp4"
        encode_video(path, frames)
        paths.append(path)
    return paths


def anomaly(*args) -> tuple[int, list[str], bool]:
    done = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True,
                          text=True, timeout=STARTUP)  # fmt: skip
    return done.returncode, done.stderr.splitlines(), "torch imported: True" in done.stdout


def calibrate(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "anomalyclip.cli", "calibrate", *map(str, args)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_the_threshold_is_the_rule_on_what_predict_scores(run_dir, footage, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    done = calibrate(run, "--camera", "gate", footage[0].parent, "--precision", "fp32")
    assert done.returncode == 0, done.stderr
    record = json.loads((run / "cameras.json").read_text())["cameras"]["gate"]
    p = [offline(run, path, 0.5)["p"] for path in footage]  # what predict computes
    seconds = sum(len(x) for x in p) / 15
    expected = far_threshold(normal_quantiles(p, seconds, []), 0.01)
    assert record["threshold"]["value"] == pytest.approx(expected, abs=1e-6)
    assert record["threshold"]["rule"] == record["rule"] == "far@1"
    assert record["frames"] == 60 + 75 + 90 and record["seconds"] == pytest.approx(seconds)
    assert record["videos"] == [str(p) for p in footage] and record["zone"] is None
    assert record["precision"] == "fp32" and record["anomalyclip"] and record["date"]
    manifest = json.loads((run / "checkpoint.json").read_text())
    assert record["model_sha256"] == manifest["files"]["model.safetensors"]["sha256"]
    line = done.stdout.strip()
    assert line.startswith(f"camera gate: threshold {expected:.4f} (far@1 on 3 video(s), 225 "
                           f"frames, 15 s; the run's ")  # fmt: skip
    # a second camera joins the first; the file is replaced whole, nothing left beside it
    done = calibrate(run, "--camera", "door", footage[0], "--rule", "far@10")
    assert done.returncode == 0, done.stderr
    cameras = json.loads((run / "cameras.json").read_text())["cameras"]
    assert set(cameras) == {"gate", "door"} and cameras["door"]["rule"] == "far@10"
    assert sorted(os.listdir(run)) == sorted(os.listdir(run_dir) + ["cameras.json"])
    # watch takes it for the camera of that name (a file named gate.mp4 is camera "gate")
    video = tmp_path / "gate.mp4"
    video.write_bytes(footage[2].read_bytes())
    proc = watch([str(video)], run, tmp_path / "out", None)
    assert proc.wait(STARTUP) == 0, proc.tail()
    value = cameras["gate"]["threshold"]["value"]
    assert proc.wait_for(rf"camera gate: threshold {value:.4f} \(calibrated far@1 on 3 video", 5)


@pytest.mark.slow
def test_a_zone_from_the_site_file_is_scored_and_kept(run_dir, footage, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    site = tmp_path / "site.toml"
    site.write_text('[[camera]]\nname = "gate"\nsource = "x.mp4"\n'
                    "zone = [[0, 0], [80, 0], [80, 120], [0, 60]]\n")  # fmt: skip
    for args in ((), ("--config", site)):
        done = calibrate(run, "--camera", "gate", footage[0], "--precision", "fp32", *args)
        assert done.returncode == 0, done.stderr
        cameras = json.loads((run / "cameras.json").read_text())["cameras"]
        if not args:
            whole = cameras["gate"]["calibration"]["values"]
    zoned = cameras["gate"]
    assert zoned["zone"] == [[0.0, 0.0], [80.0, 0.0], [80.0, 120.0], [0.0, 60.0]]
    assert zoned["calibration"]["values"] != whole  # the model saw something else


@pytest.mark.slow
def test_a_stream_is_recorded_for_its_seconds(run_dir, footage, tmp_path):
    import shutil

    from stream_sender import encode_ts

    frames, _ = render_scene("Normal", np.random.default_rng(3), 150, (160, 120), camera=7)
    ts = encode_ts(tmp_path / "cam.ts", [frames])
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    port = free_port()
    send = sender("http", ts, port, "--once")
    try:
        url = f"http://viewer:pa55word@127.0.0.1:{port}/cam"
        done = calibrate(run, "--camera", "cam", url, "--seconds", "4")
    finally:
        send.kill()
    assert done.returncode == 0, done.stderr
    record = json.loads((run / "cameras.json").read_text())["cameras"]["cam"]
    assert record["videos"] == [f"http://viewer:***@127.0.0.1:{port}/cam"]
    assert 4 * 15 - 2 <= record["frames"] <= 4 * 15  # 4 s of a 15 fps stream
    assert "pa55word" not in done.stdout + done.stderr + (run / "cameras.json").read_text()


CALIBRATE_MISTAKES = [
    (["--threshold-rule", "youden"], "--threshold-rule youden: needs frames labelled abnormal"),
    (
        ["--threshold-rule", "far@0"],
        "threshold rule 'far@0': the false-alarm rate is a % in (0, 100)",
    ),
    (["--camera", "front door"], "--camera 'front door': use 1 to 80 letters"),
    (["http://127.0.0.1:9/cam"], "a stream is calibrated on a recording: give --seconds N"),
    (["--precision", "fp64"], "--precision fp64: expected auto, fp32, bf16 or fp16"),
]  # fmt: skip


@pytest.mark.parametrize("extra, message", CALIBRATE_MISTAKES,
                         ids=[m[1][:24] for m in CALIBRATE_MISTAKES])  # fmt: skip
def test_mistakes_are_one_line_before_torch(run_dir, footage, extra, message):
    args = ["calibrate", run_dir, footage[0], "--camera", "gate", *extra]
    code, err, torch = anomaly(*args)
    assert code == 2 and not torch and len(err) == 1, err
    assert err[0].startswith("error: ") and message in err[0], err


# -- false alarms from a watch's live page ---------------------------------------------------
@pytest.fixture(scope="module")
def watch_dir(run_dir, tmp_path_factory):
    """A watch's output folder as its live page leaves it: cameras ``gate`` and ``door``
    watched (6 s each of normal demo-world scenes of backgrounds 7 and 8, H.264 in MPEG-TS)
    at threshold 0, so each opens one event whose clip x264 encodes; on the page the gate's
    event is confirmed, then marked a false alarm (the last decision counts), the door's
    confirmed. The gate's clip is normal footage the operator vouched for."""
    from stream_sender import encode_ts
    from test_watch_ui import review, serve, watch_once

    from anomalyclip.live.watch import load_for_watch, run_sampling

    folder = tmp_path_factory.mktemp("watched")
    videos = []
    for camera, background in (("gate", 7), ("door", 8)):
        frames, _ = render_scene("Normal", np.random.default_rng([22, background]), 90,
                                 (160, 120), camera=background)  # fmt: skip
        videos.append(encode_ts(folder / f"{camera}.ts", [frames]))
    model, encoder, config = load_for_watch(run_dir, None, "cpu")
    watcher = watch_once((model, encoder, run_sampling(config, run_dir)), videos, folder / "out")
    page = serve(watcher.ui)
    try:
        for event, decision in (("0:0", "confirm"), ("0:0", "false_alarm"), ("1:0", "confirm")):
            assert review(page, event, decision)[0] == 200
    finally:
        page.stop()
    return folder / "out"


def frame_count(path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.mark.slow
def test_false_alarms_of_the_camera_are_more_normal_footage(run_dir, footage, watch_dir,
                                                           tmp_path):  # fmt: skip
    """--reviews adds the camera's false-alarm clips to its VIDEOs: the threshold is the one
    calibrating on the same files given as VIDEOs gives; with --reviews alone, the clip is
    the footage."""
    import shutil

    (clip,) = sorted((watch_dir / "clips").glob("gate-*.mp4"))
    records = {}
    for name, args in [("reviews", ["--reviews", watch_dir, footage[0]]),
                       ("videos", [footage[0], clip]),
                       ("reviews only", ["--reviews", watch_dir])]:  # fmt: skip
        run = tmp_path / name
        shutil.copytree(run_dir, run)
        done = calibrate(run, "--camera", "gate", *args, "--precision", "fp32")
        assert done.returncode == 0, done.stderr
        records[name] = json.loads((run / "cameras.json").read_text())["cameras"]["gate"]
        if name != "videos":
            assert f" (1 false-alarm clip from {watch_dir})" in done.stdout, done.stdout
    n = frame_count(clip)
    assert n >= 60  # the whole event: 6 s of 15 fps, less what the clip leaves before it
    by_reviews, by_videos, alone = records["reviews"], records["videos"], records["reviews only"]
    assert by_reviews["videos"] == by_videos["videos"] == [str(footage[0]), str(clip)]
    assert by_reviews["frames"] == by_videos["frames"] == 60 + n and alone["frames"] == n
    assert by_reviews["threshold"] == by_videos["threshold"]
    assert by_reviews["calibration"]["values"] == by_videos["calibration"]["values"]
    p = [offline(run_dir, path, 0.5)["p"] for path in (footage[0], clip)]
    seconds = by_reviews["seconds"]
    expected = far_threshold(normal_quantiles(p, seconds, []), 0.01)
    assert by_reviews["threshold"]["value"] == pytest.approx(expected, abs=1e-6)
    assert alone["videos"] == [str(clip)] and alone["threshold"] != by_reviews["threshold"]


@pytest.mark.slow
def test_reviews_without_footage_are_one_line_before_torch(run_dir, footage, watch_dir,
                                                           tmp_path):  # fmt: skip
    cases = [
        (["--camera", "door", "--reviews", watch_dir],
         f"error: --reviews {watch_dir}: no event of camera 'door' marked a false alarm (with "
         "its clip); give the camera's normal footage as VIDEO... too"),
        (["--camera", "gate"],
         "error: no footage: give the camera's normal videos (VIDEO...) or --reviews WATCH_DIR"),
        (["--camera", "gate", "--reviews", tmp_path / "nowhere", footage[0]],
         f"error: {tmp_path / 'nowhere'}: no such watch output folder (--reviews)"),
    ]  # fmt: skip
    for extra, message in cases:
        code, err, torch = anomaly("calibrate", run_dir, *extra)
        assert code == 2 and not torch and err == [message], err
    # the door's events were only confirmed: its videos alone are calibrated on
    code, err, _ = anomaly("calibrate", run_dir, "--camera", "door", "--reviews", watch_dir,
                           tmp_path / "nothing.mp4")  # fmt: skip
    missing = tmp_path / "nothing.mp4"
    assert code == 2 and err == [f"error: {missing}: no such video file, frame folder or URL"]
