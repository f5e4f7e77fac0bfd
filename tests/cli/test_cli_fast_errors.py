"""Expected failures come back at once: each is found before torch is imported (importing it
takes seconds), and a failed command leaves no empty output folder behind.

Each command runs in a new process through the console script's entry point; the probe
reports which heavy modules the process had imported when the error was printed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_helper import cli_env

from anomalyclip.store import SCHEMA, VideoRecord, open_store

# runs the entry point, then reports whether torch (or transformers) had been imported
PROBE = (
    "import sys\nfrom anomalyclip.cli import main\ntry:\n    main()\nfinally:\n"
    "    print('torch:', 'torch' in sys.modules or 'transformers' in sys.modules, "
    "file=sys.stderr)\n"
)


def probe(*args, cwd=None) -> tuple[int, list[str], bool]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, args)],
        cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("torch: "), done.stderr
    return done.returncode, lines[:-1], lines[-1] == "torch: True"


@pytest.fixture
def store(tmp_path) -> Path:
    """A small 'demo' store (real Zarr) whose CLIP is a local folder that exists."""
    clip = tmp_path / "clip"
    clip.mkdir()
    path = tmp_path / "s.zarr"
    attrs = {"schema": SCHEMA, "schema_version": 1, "dataset": "demo",
             "backbone": {"model": str(clip), "dim": 512}, "preprocessing": {"size": 224},
             "sampling": {"mode": "all", "value": None}, "dtype": "float32",
             "producer": {"package": "anomalyclip test"}}  # fmt: skip
    with open_store(path, "w") as st:
        st.init(attrs)
        rng = np.random.default_rng(0)
        for i, (label, split) in enumerate([("Explosion", "train"), ("Normal", "train")]):
            rec = VideoRecord(f"v{i}", label=label, split=split, fps=15.0)
            st.write_video(rec, rng.standard_normal((40, 512)).astype(np.float32))
    return path


def test_a_csv_content_error_is_found_before_torch(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    csv = tmp_path / "mine.csv"
    csv.write_text("path,label,split\ncam1.mp4,Normal,val\n")
    code, err, heavy = probe("features", "--dataset", f"csv:{csv}", "--videos", videos)
    assert code == 2 and err[-1] == f"error: {csv}:2: split 'val' is neither train nor test"
    assert not heavy


def test_an_unknown_dataset_is_found_before_torch(tmp_path):
    code, err, heavy = probe("features", "--dataset", "ucfcrime", "--videos", tmp_path)
    assert code == 2 and err[-1].startswith("error: unknown dataset 'ucfcrime'")
    assert not heavy


def test_a_toml_typo_is_found_before_torch_and_leaves_no_run(tmp_path, store):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepoch = 3\n")
    run = tmp_path / "runs" / "r"
    code, err, heavy = probe("train", "--features", store, "--config", bad, "--out", run)
    assert code == 2 and err[-1] == f"error: {bad}: unknown training option(s): epoch"
    assert not heavy
    assert not run.exists()


def test_a_folder_of_videos_given_as_a_store_is_found_before_torch(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    (videos / "cam1.mp4").write_bytes(b"\0" * 64)
    for args in (["train", "--features", videos], ["train", "-f", videos, "-o", tmp_path / "r"]):
        code, err, heavy = probe(*args)
        assert code == 2 and err[-1].startswith(f"error: {videos}: no feature store here")
        assert not heavy
    assert not (tmp_path / "r").exists() and not (tmp_path / "runs").exists()


def test_resume_without_a_run_is_found_before_torch(tmp_path, store):
    code, err, heavy = probe("train", "--features", store, "--resume", cwd=tmp_path)
    assert code == 2 and err[-1] == "error: runs/demo: no such run directory"
    assert not heavy


def test_import_checkpoint_without_a_centroid_is_found_before_torch(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"PK")
    code, err, heavy = probe("import-checkpoint", ckpt, "-d", "ucf", "-o", tmp_path / "r")
    assert code == 2 and err[-1] == (
        f"error: {ckpt}: the normal centroid is needed; pass --centroid ncentroid.pt or "
        "--features STORE (its normal training videos)"
    )
    assert not heavy


def test_a_store_whose_clip_is_gone_is_found_before_torch(tmp_path, store):
    (tmp_path / "clip").rmdir()
    code, err, heavy = probe("train", "--features", store, "--out", tmp_path / "r")
    assert code == 2 and err[-1] == (
        f"error: {store}: its CLIP is not at {tmp_path / 'clip'}; pass --clip to give its place"
    )
    assert not heavy and not (tmp_path / "r").exists()


def test_print_config_needs_no_torch(tmp_path, store):
    """The resolved configuration (preset <- TOML <- flags), read back as the same TOML."""
    toml = tmp_path / "mine.toml"
    toml.write_text("[train]\nlr = 1e-3\nepochs = 7\n")
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "train", "-f", str(store), "--config", str(toml),
         "--epochs", "9", "--print-config"],
        env=cli_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0 and done.stderr.strip().endswith("torch: False"), done.stderr
    import tomllib

    printed = tomllib.loads(done.stdout)["train"]
    assert printed["epochs"] == 9 and printed["lr"] == 1e-3  # flag over TOML over preset
    assert printed["emb_dim"] == 32 and printed["num_segments"] == 16  # the demo preset
    assert done.stdout.startswith(f"# anomaly train: preset demo <- {toml} <- flags")
    assert json.dumps(printed["loss_weights"])  # its tables come along
