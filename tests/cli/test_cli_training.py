"""Training as a user meets it: a schedule that trains nothing is said so, a run without
held-out normal videos still decides, datasets of your own get a preset of their size, and
Ctrl-C in train, features or demo says what was kept and the command that goes on (exit 130).
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helper import call_cli, cli_env, run_cli
from synthetic_stores import planted_store

from anomalyclip.demo import DemoScale, generate_demo_videos
from anomalyclip.store import SCHEMA, VideoRecord, open_store
from anomalyclip.train import resolve_config


@pytest.fixture(scope="module")
def one_normal(tmp_path_factory, tiny_clip) -> Path:
    """A planted store with a single normal training video (and four abnormal ones): too few
    to hold one out for the threshold."""
    cfg = resolve_config("demo")
    path = tmp_path_factory.mktemp("one") / "s.zarr"
    return planted_store(path, tiny_clip, cfg, n_abnormal=4, n_normal=1)


@pytest.mark.slow
def test_a_run_that_trains_nothing_or_holds_out_nothing_says_so_once(one_normal, tmp_path):
    run = tmp_path / "run"
    done = run_cli("train", "-f", one_normal, "-o", run, "--epochs", "1", "--batch-size", "2",
                   "--workers", "1", "--eval-every", "0")  # fmt: skip
    assert done.code == 0, done.err
    warnings = [line for line in done.err.splitlines() if line.startswith("warning: ")]
    assert warnings == [
        "warning: --epochs 1 with 2 warm-up epochs: the only epoch runs at learning rate 0, so "
        "no weight moves; give --epochs 3 or more, or fewer --warmup-epochs",
        "warning: only 1 normal training video: none can be held out, so the far@1 threshold "
        "is set on the normal training videos, which the model has seen (new normal video "
        "will alarm more often than it says); add normal training videos for an unbiased "
        "threshold",
    ]
    assert "--calibration-share 0" not in done.err  # the user never passed it
    from anomalyclip.train.calibration import SEEN_SOURCE

    config = json.loads((run / "config.json").read_text())
    assert config["calibration"]["source"] == SEEN_SOURCE
    assert config["calibration"]["videos"] == ["train/Normal/v004"]
    assert 0.0 < config["threshold"]["value"] < 1.0

    # the run decides: predict scores a video with it
    generate_demo_videos(tmp_path / "v", 0, DemoScale(n_train_normal=0,
                         n_train_abnormal_per_class=0, n_test_normal=1,
                         n_test_abnormal_per_class=0, frames=(24, 24), size=(64, 48)))  # fmt: skip
    done = call_cli("predict", tmp_path / "v", "-c", run, "-o", tmp_path / "p")
    assert done.code == 0, done.err


@pytest.mark.slow
def test_a_schedule_with_a_full_epoch_says_nothing(one_normal, tmp_path):
    done = run_cli("train", "-f", one_normal, "-o", tmp_path / "r", "--epochs", "2",
                   "--warmup-epochs", "1", "--batch-size", "2", "--workers", "1",
                   "--eval-every", "0", "--calibration-share", "0")  # fmt: skip
    assert done.code == 0, done.err
    [warning] = [line for line in done.err.splitlines() if line.startswith("warning: ")]
    assert warning.startswith("warning: --calibration-share 0 holds out no normal video, so ")


def custom_store(path: Path, clip: Path) -> Path:
    attrs = {"schema": SCHEMA, "schema_version": 1, "dataset": "custom:Fight,Normal",
             "backbone": {"model": str(clip), "dim": 512}, "preprocessing": {"size": 224},
             "sampling": {"mode": "all", "value": None}, "dtype": "float32",
             "producer": {"package": "anomalyclip test"}}  # fmt: skip
    with open_store(path, "w") as st:
        st.init(attrs)
        for i, label in enumerate(["Fight", "Normal"]):
            rec = VideoRecord(f"v{i}", label=label, split="train", fps=30.0)
            st.write_video(rec, np.zeros((20, 512), np.float32))
    return path


def test_a_dataset_of_your_own_gets_the_custom_preset(tmp_path, tiny_clip):
    """csv: datasets (recorded as custom:CLASSES) train by default with a preset that four
    abnormal and four normal training videos fill, not UCF-Crime's batch of 64."""
    store = custom_store(tmp_path / "mine.zarr", tiny_clip)
    done = call_cli("train", "-f", store, "--print-config")
    assert done.code == 0, done.err
    assert done.out.startswith("# anomaly train: preset custom <- no TOML <- flags")
    import tomllib

    printed = tomllib.loads(done.out)["train"]
    assert printed == resolve_config("custom:Fight,Normal").to_dict()
    assert (printed["batch_size"], printed["emb_dim"], printed["epochs"]) == (8, 64, 60)
    assert (printed["num_segments"], printed["seg_length"], printed["eval_every"]) == (32, 16, 10)


# -- Ctrl-C -------------------------------------------------------------------------------------
def interrupt_when(
    args: list, ready, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Start ``anomaly ARGS``, send SIGINT (Ctrl-C) once ``ready()`` holds, wait for the end."""
    proc = subprocess.Popen([sys.executable, "-m", "anomalyclip.cli", *map(str, args)], cwd=cwd,
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "never ready"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def epochs_saved(run: Path) -> int:
    try:
        return json.loads((run / "config.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_ctrl_c_in_train_keeps_the_last_epoch_and_prints_the_command_that_resumes(
    tmp_path, tiny_clip
):
    store = planted_store(tmp_path / "s.zarr", tiny_clip, resolve_config("demo"), n_abnormal=4,
                          n_normal=5)  # fmt: skip
    args = ["train", "-f", store, "--epochs", "30", "--warmup-epochs", "1", "--batch-size", "2",
            "--workers", "1", "--eval-every", "0"]  # fmt: skip
    run = tmp_path / "runs" / "demo"
    done = interrupt_when(args, lambda: epochs_saved(run) >= 1, cwd=tmp_path)
    assert done.returncode == 130, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    kept = epochs_saved(run)
    prefix = f"interrupted: runs/demo keeps epoch {kept} of 30; go on with: "
    assert last.startswith(prefix) and "Traceback" not in done.stderr, done.stderr[-2000:]
    command = shlex.split(last.removeprefix(prefix))
    assert command == ["anomaly", *map(str, args), "--out", "runs/demo", "--resume"]
    resumed = call_cli(*command[1:], cwd=tmp_path)
    assert resumed.code == 0, resumed.err
    assert epochs_saved(run) == 30


@pytest.mark.slow
def test_ctrl_c_in_the_first_epoch_keeps_nothing_and_says_so(tmp_path, tiny_clip):
    store = planted_store(tmp_path / "s.zarr", tiny_clip, resolve_config("demo"), n_abnormal=4,
                          n_normal=5)  # fmt: skip
    args = ["train", "-f", store, "-o", tmp_path / "r", "--epochs", "3", "--batch-size", "2",
            "--workers", "1"]  # fmt: skip
    # ready once the run folder is claimed (checks passed, training begins), before an epoch ends
    done = interrupt_when(args, lambda: (tmp_path / "r").is_dir(), cwd=tmp_path)
    assert done.returncode == 130, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    if epochs_saved(tmp_path / "r"):  # a busy machine let an epoch finish first
        assert last.startswith(f"interrupted: {tmp_path / 'r'} keeps epoch ")
    else:
        assert last == (
            "interrupted: no epoch was finished, nothing is kept; start again with: "
            + shlex.join(["anomaly", *map(str, args)])
        )
        assert not (tmp_path / "r").exists()  # no empty run folder left behind


@pytest.mark.slow
def test_ctrl_c_in_features_keeps_finished_videos_and_prints_the_same_command(
    tmp_path, tiny_clip, shared_videos
):
    """Real videos (768x576 and 720p, hundreds of frames each): Ctrl-C once the first is
    stored; the command printed goes on with the others."""
    csv = tmp_path / "mine.csv"
    csv.write_text("path,label,split\ntree.avi,Normal,train\nvtest.avi,Normal,train\n"
                   "Megamind.avi,Fight,train\n")  # fmt: skip
    store = tmp_path / "s.zarr"
    args = ["features", "--dataset", f"csv:{csv}", "--videos", shared_videos, "--out", store,
            "--model", tiny_clip, "--precision", "fp32", "--workers", "1",
            "--batch-size", "8"]  # fmt: skip

    def one_stored() -> bool:
        try:
            with open_store(store) as st:
                return any(st.is_complete(v) for v in ("tree", "vtest", "Megamind"))
        except Exception:  # noqa: BLE001 - not created yet, or caught mid-write: not yet
            return False

    done = interrupt_when(args, one_stored, cwd=tmp_path)
    assert done.returncode == 130, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    with open_store(store) as st:
        kept = sum(st.is_complete(v) for v in ("tree", "vtest", "Megamind"))
    prefix = f"interrupted: {kept} of 3 videos complete in {store} are kept; go on with: "
    assert 1 <= kept < 3 and last.startswith(prefix), done.stderr[-2000:]
    command = shlex.split(last.removeprefix(prefix))
    assert command == ["anomaly", *map(str, args)]
    again = call_cli(*command[1:], cwd=tmp_path)
    assert again.code == 0, again.err
    assert f"{kept} already done" in again.out, again.out
    with open_store(store) as st:
        assert all(st.is_complete(v) for v in ("tree", "vtest", "Megamind"))


@pytest.mark.slow
def test_ctrl_c_in_the_demo_names_what_it_wrote_and_the_command_that_starts_it_again(tmp_path):
    """The real demo (its default size) stopped once its CLIP is built, while it pre-trains
    or extracts: it says which of its outputs the folder keeps and prints the same command,
    which starts over (the demo does not resume)."""
    out = tmp_path / "my demo"
    args = ["demo", "--out", out, "--seed", "3"]
    done = interrupt_when(args, lambda: (out / "clip" / "config.json").is_file(), cwd=tmp_path)
    assert done.returncode == 130, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    kept = [name for name in ("videos", "clip", "store.zarr", "run") if (out / name).exists()]
    assert kept[:2] == ["videos", "clip"] and "run" not in kept, kept
    assert len(list((out / "videos").rglob("*.mp4"))) > 10  # every video was generated
    prefix = (f"interrupted: {out} keeps what the demo wrote ({', '.join(kept)}); it does not "
              "resume: run it again from the start with: ")  # fmt: skip
    assert last.startswith(prefix) and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert shlex.split(last.removeprefix(prefix)) == ["anomaly", *map(str, args)]
