"""The command line as a user meets it: usage errors, one-line errors, fast failures.

Every command here runs through the console script's entry point in a new process, so exit
codes and stderr are what a shell sees.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helper import cli_env, run_cli

import anomalyclip
from anomalyclip.errors import AnomalyError
from anomalyclip.runs import default_device
from anomalyclip.store import SCHEMA, VideoRecord, open_store
from anomalyclip.store.backend import store_format
from anomalyclip.train import resolve_config


def assert_usage_error(done, *expected: str) -> None:
    assert done.code == 2, (done.code, done.err)
    assert "Traceback" not in done.err and "Traceback" not in done.out
    for text in expected:
        assert text in done.err, done.err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["eval"], ["Missing option '--checkpoint'", "Try 'anomaly eval --help' for help."]),
        (
            ["train", "--features", "s.zarr", "--epoch", "3"],
            ["No such option: --epoch", "Try 'anomaly train --help' for help."],
        ),
        (["train", "--features", "s.zarr", "--epochs", "three"], ["Invalid value for '--epochs'"]),
        (["evl"], ["No such command 'evl'", "Try 'anomaly --help' for help."]),
        (["store", "info"], ["Missing argument 'STORE'", "Try 'anomaly store info --help'"]),
        (["--nonsense"], ["No such option: --nonsense"]),
    ],
)
def test_usage_errors_are_one_message_and_exit_2(args, expected):
    assert_usage_error(run_cli(*args), *expected)


@pytest.mark.parametrize("args", [[], ["store"], ["bench"]])
def test_a_bare_group_shows_its_help(args):
    done = run_cli(*args)  # click's way: the help (typer draws it on stdout), exit 2
    assert done.code == 2 and "Traceback" not in done.out + done.err
    assert f"Usage: anomaly {' '.join(args)}".rstrip() in done.out and "Commands" in done.out


def test_version():
    done = run_cli("--version")
    assert done.code == 0, done.err
    assert done.out.strip() == f"anomaly {anomalyclip.__version__}"


# -- one-line errors naming the value ----------------------------------------------------------
@pytest.fixture
def demo_store(tmp_path) -> Path:
    """A small 'demo' store whose backbone is absent: anything that loads CLIP fails loudly, so
    an error raised before that point is the one under test."""
    path = tmp_path / "s.zarr"
    backbone = {"model": str(tmp_path / "no-clip"), "dim": 512}
    with open_store(path, "w") as st:
        st.init(dict(ATTRS, dataset="demo", backbone=backbone))
        rng = np.random.default_rng(0)
        for i, (label, split) in enumerate([("Explosion", "train"), ("Normal", "train")]):
            rec = VideoRecord(f"v{i}", label=label, split=split, fps=15.0)
            st.write_video(rec, rng.standard_normal((40, 512)).astype(np.float32))
    return path


ATTRS = {
    "schema": SCHEMA,
    "schema_version": 1,
    "preprocessing": {"size": 224},
    "sampling": {"mode": "all", "value": None},
    "dtype": "float32",
    "producer": {"package": "anomalyclip test"},
}


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('lr = "fast"', 'lr = "fast": expected a number'),
        ("epochs = 1.5", "epochs = 1.5: expected an integer"),
        ("epochs = true", "epochs = true: expected an integer"),
        ('concat_similarity = "yes"', 'concat_similarity = "yes": expected true or false'),
        ("device = 0", "device = 0: expected a string"),
        ('[train.lr_ratios]\nprompt = "x"', 'lr_ratios.prompt = "x": expected a number'),
        ('[train.loss_weights]\nsmooth = "x"', 'loss_weights.smooth = "x": expected a number'),
        ("[train.loss_weights]\nbce = 1", "unknown loss weight(s): bce"),
        ("heads = 8\nepochs = [3]", "epochs = [3]: expected an integer"),
    ],
)
def test_config_value_of_the_wrong_type_is_refused(tmp_path, toml, expected):
    path = tmp_path / "bad.toml"
    path.write_text(toml if toml.startswith("[") else f"[train]\n{toml}\n")
    with pytest.raises(AnomalyError) as exc:
        resolve_config("demo", path)
    assert str(exc.value) == f"{path}: {expected}"


def test_config_numbers_keep_their_meaning(tmp_path):
    path = tmp_path / "ok.toml"
    path.write_text("[train]\nlr = 1\nepochs = 3\n[train.loss_weights]\nsmooth = 2\n")
    cfg = resolve_config("demo", path)
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float) and cfg.epochs == 3
    assert cfg.model.loss_weights.smooth == 2.0 and cfg.model.loss_weights.sparse == 8e-3


def test_train_config_error_through_the_cli(tmp_path, demo_store):
    bad = tmp_path / "bad.toml"
    bad.write_text('[train]\nlr = "fast"\n')
    done = run_cli("train", "--features", demo_store, "--config", bad, "--out", tmp_path / "r")
    assert done.code == 2 and "Traceback" not in done.err
    assert done.error_line == f'error: {bad}: lr = "fast": expected a number'


@pytest.mark.slow
@pytest.mark.parametrize("device", ["nonsense", "cuda:x", "cuda"])
def test_train_device_errors_name_the_device(tmp_path, demo_store, device):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    done = run_cli("train", "--features", demo_store, "--device", device, "--out", tmp_path / "r")
    assert done.code == 2 and "Traceback" not in done.err, done.err
    assert done.error_line.startswith(f"error: --device {device}: "), done.err
    run = tmp_path / "r"
    assert not run.exists() or not any(run.iterdir())  # nothing written


def test_default_device_checks_what_it_is_given():
    assert default_device("cpu") == torch.device("cpu")
    with pytest.raises(AnomalyError, match="--device gpu: expected cpu, cuda, cuda:N"):
        default_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(AnomalyError, match="--device cuda:1: CUDA is not available"):
            default_device("cuda:1")


def test_predict_threshold_outside_0_1_is_a_usage_error(tmp_path):
    done = run_cli("predict", tmp_path / "v.mp4", "--checkpoint", tmp_path, "--threshold", "2")
    assert done.code == 2 and "Traceback" not in done.err
    assert "Invalid value for '--threshold': 2 is not a probability in [0, 1]" in done.err


@pytest.mark.parametrize("name", ["x.parquet", "x.npy", "x.h5.tmp"])
def test_export_to_an_unknown_suffix_is_refused(tmp_path, demo_store, name):
    dst = tmp_path / name
    done = run_cli("store", "export", demo_store, dst)
    assert done.code == 2 and "Traceback" not in done.err
    assert done.error_line == (
        f"error: {dst}: unknown store format {Path(name).suffix!r}; use a Zarr directory "
        "(no suffix or .zarr), a Zarr zip (.zip) or HDF5 (.h5, .hdf5)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.zarr"]  # nothing written


@pytest.mark.parametrize(
    ("location", "fmt"),
    [("a/s.zarr", "zarr"), ("a/s", "zarr"), ("s.ZIP", "zip"), ("x.zarr.zip", "zip"),
     ("s.h5", "hdf5"), ("s.hdf5", "hdf5"), ("s3://bucket/x.zarr/", "zarr"),
     ("memory://predict-0a1b", "zarr")],
)  # fmt: skip
def test_store_format_by_suffix(location, fmt):
    assert store_format(location) == fmt


def test_store_format_takes_an_existing_directory_as_zarr(tmp_path):
    (tmp_path / "feats-0.5fps").mkdir()
    assert store_format(tmp_path / "feats-0.5fps") == "zarr"
    with pytest.raises(AnomalyError, match="unknown store format '.5fps'"):
        store_format(tmp_path / "other-0.5fps")


# -- fast failures: help and path errors before the numerical stack is imported ---------------
HEAVY = ("torch", "transformers", "zarr", "h5py", "av", "numpy")
# runs the entry point, then reports which heavy modules the process had imported
PROBE = (
    "import sys\nfrom anomalyclip.cli import main\ntry:\n    main()\nfinally:\n"
    f"    print('heavy:', [m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)\n"
)


def probe(*args, cwd=None):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *map(str, args)],
        cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    lines = done.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("heavy: "), done.stderr
    return done.returncode, done.stdout, lines[:-1], lines[-1]


@pytest.mark.parametrize(
    "args",
    [["--help"], ["train", "--help"], ["eval", "--help"], ["predict", "--help"],
     ["features", "--help"], ["store", "--help"], ["store", "export", "--help"]],
)  # fmt: skip
def test_help_imports_nothing_heavy(args):
    code, out, _, heavy = probe(*args)
    assert code == 0 and "Usage: anomaly" in out
    assert heavy == "heavy: []"


@pytest.fixture
def run_config(tmp_path) -> Path:
    """A run's config.json naming a CLIP and a store that exist (empty folders)."""
    run = tmp_path / "run"
    for folder in (run, tmp_path / "clip", tmp_path / "s.zarr"):
        folder.mkdir()
    config = {"format": "anomalyclip.run", "dataset": "demo", "clip": str(tmp_path / "clip")}
    config["model"] = {"classes": ["Explosion", "Intruder", "Normal", "Tampering"], "normal_id": 2}
    config["store"] = {"location": str(tmp_path / "s.zarr")}
    (run / "config.json").write_text(json.dumps(config))
    return run


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["train", "--features", "{t}/none.zarr"], "{t}/none.zarr: no feature store here"),
        (["train", "--features", "{t}/none.h5", "--config", "x.toml"],
         "{t}/none.h5: no feature store here"),
        (["train", "--features", "{t}/run", "--config", "{t}/none.toml"],
         "{t}/none.toml: no such config file"),
        (["eval", "--checkpoint", "{t}/none"], "{t}/none: no such run directory"),
        (["eval", "--checkpoint", "{t}"], "{t}: not a run directory (no config.json)"),
        (["eval", "--checkpoint", "{t}/run", "--features", "{t}/none.zarr"],
         "{t}/none.zarr: no feature store here"),
        (["eval", "--checkpoint", "{t}/run", "--annotations", "{t}/none.txt"],
         "{t}/none.txt: no such annotation file"),
        (["predict", "{t}/none.mp4", "--checkpoint", "{t}/run"],
         "{t}/none.mp4: no such video file or frame folder"),
        (["predict", "{t}/run", "--checkpoint", "{t}/none"], "{t}/none: no such run directory"),
        (["features", "--dataset", "demo", "--videos", "{t}/none"],
         "{t}/none: no such folder of videos"),
        (["features", "--dataset", "demo", "--videos", "{t}", "--lists", "{t}/none"],
         "{t}/none: no such folder of list files"),
        (["store", "info", "{t}/none.zarr"], "{t}/none.zarr: no feature store here"),
        (["store", "ls", "{t}/none.zip"], "{t}/none.zip: no feature store here"),
        (["store", "verify", "{t}/none"], "{t}/none: no feature store here"),
        (["store", "export", "{t}/none.zarr", "{t}/x.h5"], "{t}/none.zarr: no feature store here"),
        (["store", "merge", "{t}/new.zarr", "{t}/none.zarr"],
         "{t}/none.zarr: no feature store here"),
        (["store", "import-npy", "{t}/none", "-d", "ucf", "-o", "{t}/s.zarr"],
         "{t}/none: no such folder of .npy features"),
        (["import-checkpoint", "{t}/none.ckpt", "-d", "ucf", "-o", "{t}/r"],
         "{t}/none.ckpt: no such checkpoint file"),
        (["export-checkpoint", "{t}/none", "{t}/x.ckpt"], "{t}/none: no such run directory"),
        (["eval", "--checkpoint", "{t}/run", "--clip", "{t}/none"],
         "{t}/none: no such CLIP folder; pass --clip with a local Hugging Face CLIP folder or "
         "a hub id"),
        (["train", "--features", "{t}/s.zarr", "--clip", "./none"],
         "./none: no such CLIP folder; pass --clip with a local Hugging Face CLIP folder or "
         "a hub id"),
    ],
)  # fmt: skip
def test_a_bad_path_fails_before_heavy_imports(tmp_path, run_config, args, error):
    code, _, err, heavy = probe(*(a.format(t=tmp_path) for a in args))
    assert code == 2 and err[-1] == "error: " + error.format(t=tmp_path), err
    assert heavy == "heavy: []"
