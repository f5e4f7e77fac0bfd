"""The pipeline as a new user drives it, with relative paths from a project folder: real
videos generated and encoded (the demo's world), real extraction with a tiny random CLIP,
training, prediction, and the mistakes and moves a user makes along the way.

What a moved store or run must still find, the options the hints name, predict's inputs
and outputs, and what the logs show (stderr is a pipe here, as in CI).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from cli_helper import call_cli, run_cli

from anomalyclip.demo import DemoScale, generate_demo_videos
from anomalyclip.store import open_store

TRAIN = ["--epochs", "3", "--warmup-epochs", "1", "--batch-size", "2", "--workers", "1",
         "--eval-every", "0"]  # fmt: skip


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_clip) -> Path:
    """``proj/`` with clip/ (a copy of the tiny CLIP), videos/ (10 demo-world H.264 videos of
    40-48 frames), store.zarr extracted from inside proj/ with ``--model clip``, and
    runs/demo trained from inside proj/."""
    proj = tmp_path_factory.mktemp("proj")
    shutil.copytree(tiny_clip, proj / "clip")
    generate_demo_videos(proj / "videos", 0, DemoScale(n_train_normal=3,
                         n_train_abnormal_per_class=1, n_test_normal=1,
                         n_test_abnormal_per_class=1, frames=(40, 48), size=(64, 48)))  # fmt: skip
    done = call_cli("features", "--dataset", "demo", "--videos", "videos", "--out", "store.zarr",
                    "--model", "clip", "--precision", "fp32", cwd=proj)  # fmt: skip
    assert done.code == 0, done.err
    done = call_cli("train", "--features", "store.zarr", "--clip", "clip", "--out", "runs/demo",
                    *TRAIN, cwd=proj)  # fmt: skip
    assert done.code == 0, done.err
    return proj


def config_of(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


# -- a store records its CLIP as a run does ---------------------------------------------------
@pytest.mark.slow
def test_a_store_made_in_one_folder_trains_from_another(project, tmp_path):
    """The store was made with ``--model clip`` inside proj/; trained from elsewhere, it
    finds that CLIP (relative to the store, then absolute), never asking the hub."""
    with open_store(project / "store.zarr") as st:
        record = st.meta.inputs["clip"]
    assert record["given"] == "clip" and record["relative"] == "../clip"
    assert record["absolute"] == str(project / "clip") and len(record["weights_sha256"]) == 64

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = call_cli("train", "--features", project / "store.zarr", "--out", "r", *TRAIN,
                    cwd=elsewhere)  # fmt: skip
    assert done.code == 0, done.err
    recorded = config_of(elsewhere / "r")["inputs"]["clip"]
    assert recorded["absolute"] == str(project / "clip")
    assert recorded["weights_sha256"] == record["weights_sha256"]  # the store's, not rehashed


@pytest.mark.slow
def test_a_store_moved_with_its_clip_or_alone_still_finds_it(project, tmp_path):
    together = tmp_path / "together"
    shutil.copytree(project / "clip", together / "clip")
    shutil.copytree(project / "store.zarr", together / "store.zarr")
    (project / "clip").rename(project / "clip.away")  # the recorded absolute path is gone
    try:
        done = call_cli("train", "-f", together / "store.zarr", "-o", tmp_path / "r1", *TRAIN)
        assert done.code == 0, done.err
        assert config_of(tmp_path / "r1")["inputs"]["clip"]["absolute"] == str(together / "clip")
        shutil.rmtree(together / "clip")
        done = call_cli("train", "-f", together / "store.zarr", "-o", tmp_path / "r2", *TRAIN)
        assert done.code == 2 and "huggingface" not in done.err.lower()
        assert done.error_line == (
            f"error: {together / 'store.zarr'}: its CLIP is not at {together / 'clip'} or "
            f"{project / 'clip'}; pass --clip to give its place"
        )
        assert not (tmp_path / "r2").exists()
    finally:
        (project / "clip.away").rename(project / "clip")
    alone = tmp_path / "alone" / "store.zarr"  # the store alone, copied away: absolute path
    shutil.copytree(project / "store.zarr", alone)
    done = call_cli("train", "-f", alone, "-o", tmp_path / "r3", *TRAIN)
    assert done.code == 0, done.err


def test_a_store_copied_beside_another_clip_keeps_its_own(project, tmp_path):
    """A store exported next to a different CLIP folder (where its relative path points):
    the recorded weight hash picks the CLIP it was made with."""
    from anomalyclip.backbone import build_clip

    other = tmp_path / "other"
    shutil.copytree(project / "store.zarr", other / "store.zarr")
    build_clip(other / "clip", "tiny", seed=1)  # random weights of another seed
    done = call_cli("train", "-f", other / "store.zarr", "-o", tmp_path / "r", *TRAIN)
    assert done.code == 0, done.err
    assert config_of(tmp_path / "r")["inputs"]["clip"]["absolute"] == str(project / "clip")


# -- predict and watch: --clip rescues a moved run ---------------------------------------------
@pytest.fixture
def moved_run(project, tmp_path) -> Path:
    """A run whose recorded CLIP is gone (both its paths), and that CLIP copied to
    tmp/clipcopy: what a user has after moving the run to another machine."""
    shutil.copytree(project / "clip", tmp_path / "c1")
    done = call_cli("train", "-f", project / "store.zarr", "--clip", tmp_path / "c1", "-o",
                    tmp_path / "run", *TRAIN)  # fmt: skip
    assert done.code == 0, done.err
    (tmp_path / "c1").rename(tmp_path / "clipcopy")
    return tmp_path / "run"


def test_predict_clip_rescues_a_moved_run(project, moved_run, tmp_path):
    video = project / "videos" / "test" / "Explosion" / "Explosion_test_000.mp4"
    done = call_cli("predict", video, "-c", moved_run, "-o", tmp_path / "p")
    assert done.code == 2 and "pass --clip to give its place" in done.error_line
    done = call_cli("predict", video, "-c", moved_run, "-o", tmp_path / "p", "--clip",
                    tmp_path / "clipcopy")  # fmt: skip
    assert done.code == 0, done.err
    assert (tmp_path / "p" / "Explosion_test_000.csv").is_file()


@pytest.mark.slow
def test_watch_clip_rescues_a_moved_run(project, moved_run, tmp_path):
    video = project / "videos" / "test" / "Explosion" / "Explosion_test_000.mp4"
    done = run_cli("watch", video, "-c", moved_run, "--clip", tmp_path / "clipcopy", "--out",
                   tmp_path / "w", "--status-every", "0", "--threshold", "0")  # fmt: skip
    assert done.code == 0, done.err[-3000:]
    lines = [json.loads(line) for line in done.out.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["kind"] == "closed"  # p(A) >= 0 everywhere: one event, closed


# -- hints name options the command has ---------------------------------------------------------
def options_of(*words: str) -> set[str]:
    import typer.main

    from anomalyclip.cli import app

    cmd = typer.main.get_command(app)
    for word in words:
        cmd = cmd.commands[word]
    return {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts)}


@pytest.mark.slow
def test_a_run_without_a_threshold_names_options_that_predict_and_watch_have(project, tmp_path):
    run = tmp_path / "run"  # a labelled rule: the threshold is chosen later, on a store
    done = call_cli("train", "-f", project / "store.zarr", "-o", run, "--threshold-rule",
                    "youden", *TRAIN)  # fmt: skip
    assert done.code == 0 and config_of(run)["threshold"] is None, done.err
    video = project / "videos" / "test" / "Normal" / "Normal_test_000.mp4"
    done = call_cli("predict", video, "-c", run, "-o", tmp_path / "p")
    assert done.code == 2 and "no decision threshold" in done.error_line
    named = set(re.findall(r"--[a-z][a-z-]+", done.error_line))
    assert named and named <= options_of("predict") and named <= options_of("watch")
    assert not (tmp_path / "p").exists()  # nothing written, no empty folder
    done = call_cli("predict", video, "-c", run, "-o", tmp_path / "p", "--threshold-rule",
                    "youden", "--calibrate-on", project / "store.zarr")  # fmt: skip
    assert done.code == 0, done.err


def test_features_names_the_clip_option_it_has(project, tmp_path):
    done = call_cli("features", "--dataset", "demo", "--videos", project / "videos", "--clip",
                    "./none", "--out", tmp_path / "s.zarr", cwd=tmp_path)  # fmt: skip
    assert done.code == 2 and done.error_line.startswith("error: ./none: no such CLIP folder")
    assert set(re.findall(r"--[a-z][a-z-]+", done.error_line)) <= options_of("features")


# -- predict's inputs and outputs ---------------------------------------------------------------
@pytest.mark.slow
def test_predict_takes_globs_folders_and_lists(project, tmp_path):
    tests = sorted((project / "videos" / "test").rglob("*.mp4"))
    listed = tmp_path / "videos.txt"
    listed.write_text("\n".join(str(p) for p in tests[:2]) + "\n")
    for name, inputs, expected in [
        ("glob", [str(project / "videos" / "test" / "*" / "*.mp4")], tests),
        ("folder", [project / "videos" / "test"], tests),
        ("list", [listed], tests[:2]),
    ]:
        done = call_cli("predict", *inputs, "-c", project / "runs" / "demo", "-o", tmp_path / name)
        assert done.code == 0, (name, done.err)
        written = (tmp_path / name).glob("*.png")  # one curve plot per video
        assert sorted(p.stem for p in written) == sorted(p.stem for p in expected)


def test_predict_never_overwrites_earlier_outputs(project, tmp_path):
    """As ``train`` does with runs: a taken --out gives the next free OUT-2, OUT-3...;
    --exist-ok writes into --out itself."""
    video = project / "videos" / "test" / "Intruder" / "Intruder_test_000.mp4"
    run = project / "runs" / "demo"
    first = call_cli("predict", video, "-c", run, "--threshold", "0.9", cwd=tmp_path)
    assert first.code == 0, first.err
    kept = (tmp_path / "predictions" / "Intruder_test_000.csv").read_text()
    second = call_cli("predict", video, "-c", run, "--threshold", "0.1", cwd=tmp_path)
    assert second.code == 0, second.err
    assert second.out.strip().endswith("outputs in predictions-2")
    assert (tmp_path / "predictions" / "Intruder_test_000.csv").read_text() == kept
    assert (tmp_path / "predictions-2" / "Intruder_test_000.csv").read_text() != kept
    again = call_cli("predict", video, "-c", run, "--threshold", "0.1", "--exist-ok",
                     cwd=tmp_path)  # fmt: skip
    assert again.code == 0 and again.out.strip().endswith("outputs in predictions")
    assert (tmp_path / "predictions" / "Intruder_test_000.csv").read_text() != kept
    assert not (tmp_path / "predictions-3").exists()


@pytest.mark.parametrize(("option", "value"), [("--fps", "0"), ("--fps", "-2"), ("--stride", "0")])
def test_predict_refuses_a_sampling_that_keeps_nothing(project, tmp_path, option, value):
    done = call_cli("predict", project / "videos", "-c", project / "runs" / "demo", option,
                    value, "-o", tmp_path / "p")  # fmt: skip
    assert done.code == 2 and f"Invalid value for '{option}'" in done.err
    assert not (tmp_path / "p").exists()


@pytest.mark.slow
def test_predict_output_and_logs_read_well(project, tmp_path):
    """One process as a user runs it, stderr a pipe: no carriage returns, no internal lines
    (the in-memory store), a warning that a random CLIP's scores mean nothing, 1 event."""
    video = project / "videos" / "test" / "Tampering" / "Tampering_test_000.mp4"
    done = run_cli("predict", video, "-c", project / "runs" / "demo", "-o", tmp_path / "p",
                   "--threshold", "0")  # fmt: skip
    assert done.code == 0, done.err
    assert "\r" not in done.err and "memory://" not in done.err + done.out
    assert "root attributes" not in done.err
    warnings = [line for line in done.err.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        f"warning: {project / 'clip'} is a CLIP of random weights (the demo's stand-in): its "
        "scores mean nothing outside the demo's generated videos"
    ]
    assert re.search(r": \d+ frames, mean p\(A\) [.0-9]+, 1 event -> ", done.out), done.out
    assert done.out.strip().endswith(f"outputs in {tmp_path / 'p'}")


@pytest.mark.slow
def test_extraction_logs_a_total_and_no_carriage_returns(project, tmp_path):
    done = run_cli("features", "--dataset", "demo", "--videos", project / "videos", "--out",
                   tmp_path / "s.zarr", "--clip", project / "clip")  # fmt: skip
    assert done.code == 0, done.err
    assert "\r" not in done.err and "root attributes" not in done.err
    last = [line for line in done.err.splitlines() if line.startswith("extract:")][-1]
    assert "10/10" in last and "frames/s" in last, done.err


def test_store_export_prints_its_result_once(project, tmp_path):
    done = run_cli("store", "export", project / "store.zarr", tmp_path / "s.h5")
    assert done.code == 0, done.err
    assert (done.out + done.err).count("exported 10 videos") == 1


def test_a_status_line_without_scored_rows_says_so():
    from anomalyclip.live.stats import LagHistogram
    from anomalyclip.live.stats import lag_text as _lag

    assert _lag(LagHistogram(), 50) == "-"
