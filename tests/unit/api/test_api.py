"""The Python API (``from anomalyclip import Run``), called only through what it documents,
against what the commands write: ``run.predict`` equals ``anomaly predict``'s CSV and events,
``run.score`` on a store's features equals ``anomaly eval``'s per-video CSV and events, and the
example of docs/api.md runs as printed there.

The run is trained on a planted store (tests/support/synthetic_stores.py: class directions as
CLIP's text gives them, one shifted interval per abnormal video) with the tiny random CLIP; the
videos are the real test videos, tree.avi among them (variable frame rate, 68 frames over
29.6 s).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest
from cli_helper import cli_env, run_cli
from paths import ROOT
from synthetic_stores import quick_run

COLUMNS = ("frame", "time", "p_abnormal", "probs", "abnormal", "predicted")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_clip):
    """(store, run directory) of a short run (the same recipe as the predict tests')."""
    return quick_run(tmp_path_factory.mktemp("api"), tiny_clip, epochs=2, n_each=4)


@pytest.fixture(scope="module")
def run(trained):
    from anomalyclip import Run

    return Run.load(trained[1])


def read_csv(path):
    from anomalyclip.evaluate.report import read_video_csv

    return read_video_csv(path)


def assert_same_rows(pred, table, atol=1e-6):
    """A prediction's arrays against a CSV written by a command (6 decimals)."""
    np.testing.assert_array_equal(pred.frames, table["frame"])
    np.testing.assert_allclose(pred.times, table["time"], atol=5e-5)  # written with 4 decimals
    np.testing.assert_allclose(pred.p_abnormal, table["p_abnormal"], atol=atol)
    np.testing.assert_allclose(pred.probs, table["probs"], atol=atol)
    assert list(pred.classes) == table["class_names"]
    np.testing.assert_array_equal(pred.abnormal.astype(int), table["abnormal"])


def assert_same_events(pred, written: list[dict]):
    mine = [e.to_dict() for e in pred.events]
    assert len(mine) == len(written)
    for a, b in zip(mine, written, strict=True):
        assert {k: a[k] for k in ("start_frame", "end_frame", "class")} == {
            k: b[k] for k in ("start_frame", "end_frame", "class")
        }
        for key in ("start_time", "end_time", "peak", "mean", "class_probability"):
            assert a[key] == pytest.approx(b[key], abs=1e-6), key


@pytest.mark.slow
def test_predict_equals_what_anomaly_predict_writes(tmp_path, run, trained, shared_videos):
    videos = [shared_videos / "tree.avi", shared_videos / "Megamind.avi"]
    first = run.predict(videos[0])
    assert first.threshold == run.threshold
    # a threshold inside the scores' range, so both sides find events to compare
    threshold = round(float(np.quantile(first.p_abnormal, 0.6)), 4)
    out = tmp_path / "cli"
    done = run_cli("predict", *videos, "-c", trained[1], "--out", out,
                   "--threshold", threshold)  # fmt: skip
    assert done.code == 0, done.err[-2000:]
    events_seen = 0
    for video in videos:
        pred = run.predict(video, threshold=threshold)
        assert pred.source == str(video) and len(pred) == {"tree": 68, "Megamind": 270}[video.stem]
        assert_same_rows(pred, read_csv(out / f"{video.stem}.csv"))
        assert_same_events(pred, json.loads((out / f"{video.stem}.events.json").read_text()))
        events_seen += len(pred.events)
        mine = pred.to_csv(tmp_path / "api" / f"{video.stem}.csv")
        assert mine.read_text() == (out / f"{video.stem}.csv").read_text()
    assert events_seen > 0


@pytest.mark.slow
def test_score_on_store_features_equals_what_anomaly_eval_writes(tmp_path, run, trained):
    from anomalyclip import open_store
    from anomalyclip.names import safe_name

    store, run_dir = trained
    done = run_cli("eval", "-c", run_dir, "--out", tmp_path / "eval")
    assert done.code == 0, done.err[-2000:]
    written = json.loads((tmp_path / "eval" / "events.json").read_text())
    events_seen = 0
    with open_store(store) as st:
        test = st.video_ids(split="test")
        assert len(test) == 12
        for vid in test:
            feats = st.features(vid)
            pred = run.score(feats, times=st.times(vid), frames=st.frames(vid),
                             fps=st.record(vid).fps, name=vid)  # fmt: skip
            table = read_csv(tmp_path / "eval" / "videos" / f"{safe_name(vid)}.csv")
            assert_same_rows(pred, table)
            assert_same_events(pred, [e for e in written if e["source"] == vid])
            events_seen += len(pred.events)
            import torch  # the same features as a torch tensor score the same

            again = run.score(torch.from_numpy(feats), st.times(vid), st.frames(vid), name=vid)
            np.testing.assert_array_equal(again.p_abnormal, pred.p_abnormal)
    assert events_seen > 0


def test_feature_store_open_lists_and_reads_videos(trained, tmp_path):
    """``FeatureStore.open(path)`` is ``open_store(path)`` as a class method: the same videos
    and rows, a context manager, the same one-line error for a folder that is no store."""
    from anomalyclip import FeatureStore, open_store
    from anomalyclip.errors import AnomalyError

    store, _ = trained
    with FeatureStore.open(store) as st:
        assert isinstance(st, FeatureStore)
        test, every = st.video_ids(split="test"), st.video_ids()
        vid = test[0]
        feats, times, record = st.features(vid), st.times(vid), st.record(vid)
    with open_store(store) as ref:
        assert (test, every) == (ref.video_ids(split="test"), ref.video_ids())
        np.testing.assert_array_equal(feats, ref.features(vid))
        np.testing.assert_array_equal(times, ref.times(vid))
    assert len(test) == 12 and len(every) > len(test) and record.split == "test"
    assert feats.shape == (len(times), 512)
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnomalyError, match="empty: no feature store here"):
        FeatureStore.open(tmp_path / "empty")


def decode_rgb(path) -> tuple[np.ndarray, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, float(stream.average_rate)


@pytest.mark.slow
def test_frames_in_memory_score_as_their_video_file(run, shared_videos):
    """Megamind.avi decoded to a (T, H, W, 3) array scores as the file: the same pixels reach
    the same preprocessing and model."""
    path = shared_videos / "Megamind.avi"
    frames, fps = decode_rgb(path)
    from_file = run.predict(path)
    from_array = run.predict(frames, fps=fps)
    assert len(from_array) == len(from_file) == 270 and from_array.source == "frames"
    np.testing.assert_array_equal(from_array.p_abnormal, from_file.p_abnormal)
    np.testing.assert_array_equal(from_array.probs, from_file.probs)
    np.testing.assert_allclose(from_array.times, np.arange(270) / fps)


@contextlib.contextmanager
def http_folder(folder: Path):
    """A real HTTP server on 127.0.0.1 (a free port) serving ``folder``."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.slow
def test_a_video_url_scores_as_the_file(run, shared_videos):
    with http_folder(shared_videos) as base:
        remote = run.predict(f"{base}/tree.avi")
    local = run.predict(shared_videos / "tree.avi")
    assert remote.source == f"{base}/tree.avi" and len(remote) == len(local) == 68
    np.testing.assert_array_equal(remote.p_abnormal, local.p_abnormal)
    np.testing.assert_array_equal(remote.times, local.times)


def test_run_tells_its_classes_and_threshold(run, trained):
    config = json.loads((trained[1] / "config.json").read_text())
    assert run.classes == ("Explosion", "Intruder", "Normal", "Tampering")
    assert run.normal_class == "Normal"
    assert run.threshold == config["threshold"]["value"]
    with pytest.raises(Exception, match=r"features must be \(frames, 512\)"):
        run.score(np.zeros((10, 64), np.float32))


def test_import_anomalyclip_stays_light():
    code = "import sys, anomalyclip; print(sorted({'torch', 'anomalyclip.api'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    assert out.strip() == "[]"


def doc_blocks(kind: str) -> list[str]:
    text = (ROOT / "docs" / "api.md").read_text()
    return re.findall(rf"```{kind}\n(.*?)```", text, re.S)


@pytest.mark.slow
def test_the_documented_example_runs_as_printed(tmp_path, tiny_clip, monkeypatch):
    """docs/api.md's example, executed as written in a folder laid out as ``anomaly demo``'s
    (a run, its store and a demo-world video at the paths the page names); what it prints
    has the shape of the output the page shows (that output is the real demo's)."""
    from anomalyclip.synthetic import encode_video, render_scene

    store, _ = quick_run(tmp_path / "demo", tiny_clip, epochs=2, n_each=4)
    store.rename(tmp_path / "demo" / "store.zarr")
    pixels, _ = render_scene("Explosion", np.random.default_rng(7), 150, (160, 120))
    encode_video(tmp_path / "demo/videos/test/Explosion/Explosion_test_000.mp4", pixels, 15)
    monkeypatch.chdir(tmp_path)
    (code,) = doc_blocks("python")
    (shown,) = doc_blocks("text")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "docs/api.md", "exec"), {})  # noqa: S102
    lines, expected = printed.getvalue().splitlines(), shown.splitlines()

    def words(line: str) -> list[str]:  # the line without its numbers, names and timings
        return re.sub(r"[-+]?\d[\d.,:]*|'[^']*'", "#", line).split()[:3]

    got = [words(x) for x in lines if not x.startswith("  ")]  # event lines vary in number
    assert got == [words(x) for x in expected if not x.startswith("  ")]
    table = read_csv(tmp_path / "explosion.csv")
    assert len(table["frame"]) == 150 and table["abnormal"] is not None
