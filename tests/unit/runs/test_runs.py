"""Run folders as a user handles them: moved or copied, numbered, recorded, readable.

One short training run on a planted store (tests/support/synthetic_stores.py) is made through
the CLI with relative paths, from its project folder, as a user types it; the tests then copy or
move it and check that ``eval`` and ``predict`` give the very same numbers from anywhere.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
import shutil
import stat
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch
from cli_helper import call_cli, cli_env, run_cli
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from synthetic_stores import planted_store

import anomalyclip
from anomalyclip import backbone, environment
from anomalyclip.backbone import build_clip
from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.report import write_metrics_json
from anomalyclip.runs.checkpoint import FILES, read_run_config
from anomalyclip.train import resolve_config, train

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
TRAIN = ["--epochs", "1", "--warmup-epochs", "1", "--workers", "1"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """``proj/`` holding clip/, s.zarr and runs/demo, trained from inside proj/."""
    proj = tmp_path_factory.mktemp("proj")
    clip = build_clip(proj / "clip", "tiny")
    cfg = resolve_config("demo", epochs=1, warmup_epochs=1, workers=1)
    planted_store(proj / "s.zarr", clip, cfg, n_abnormal=4, n_normal=5)
    done = call_cli("train", "--features", "s.zarr", "--clip", "clip", "--out", "runs/demo",
                    *TRAIN, cwd=proj)  # fmt: skip
    assert done.code == 0, done.err
    done = call_cli("eval", "--checkpoint", "runs/demo", "--out", "eval", cwd=proj)
    assert done.code == 0, done.err
    return proj


def metrics(folder: Path) -> dict:
    found = json.loads((folder / "metrics.json").read_text())
    found.pop("provenance", None)  # when and how it ran, not what it found
    return found


@pytest.mark.slow
def test_a_copied_run_evaluates_offline_from_anywhere(project, tmp_path):
    copy = tmp_path / "elsewhere" / "x"
    shutil.copytree(project / "runs" / "demo", copy)
    (tmp_path / "cwd").mkdir()
    done = run_cli("eval", "--checkpoint", copy, "--out", tmp_path / "e", cwd=tmp_path / "cwd",
                   env=OFFLINE)  # fmt: skip
    assert done.code == 0, done.err[-2000:]
    assert metrics(tmp_path / "e") == metrics(project / "eval")


@pytest.mark.slow
def test_a_copied_run_predicts_offline_the_same(project, tmp_path, shared_videos):
    video = shared_videos / "tree.avi"
    done = call_cli("predict", video, "--checkpoint", "runs/demo", "--out", "pred", cwd=project)
    assert done.code == 0, done.err
    copy = tmp_path / "x"
    shutil.copytree(project / "runs" / "demo", copy)
    done = run_cli("predict", video, "--checkpoint", copy, "--out", tmp_path / "p", cwd="/",
                   env=OFFLINE)  # fmt: skip
    assert done.code == 0, done.err[-2000:]
    assert (tmp_path / "p" / "tree.csv").read_text() == (project / "pred" / "tree.csv").read_text()


@pytest.fixture
def moved(project, tmp_path):
    """The whole project moved away (its old place gone for the test's duration)."""
    away = tmp_path / "moved"
    project.rename(away)
    try:
        yield away
    finally:
        away.rename(project)


@pytest.mark.slow
def test_a_project_moved_whole_finds_its_inputs_relative_to_the_run(project, moved, tmp_path):
    done = call_cli("eval", "--checkpoint", moved / "runs" / "demo", "--out", tmp_path / "e",
                    cwd=tmp_path)  # fmt: skip
    assert done.code == 0, done.err
    assert metrics(tmp_path / "e") == metrics(moved / "eval")


@pytest.mark.slow
def test_a_moved_store_is_named_with_the_option_to_pass(project, moved, tmp_path):
    run = moved / "runs" / "demo"
    (moved / "s.zarr").rename(moved / "new.zarr")
    try:
        done = call_cli("eval", "--checkpoint", run, "--out", tmp_path / "e")
        assert done.code == 2
        assert done.error_line == (
            f"error: {run}: its feature store is not at {moved / 's.zarr'} or "
            f"{project / 's.zarr'}; pass --features to give its place"
        )
        done = call_cli("eval", "--checkpoint", run, "--features", moved / "new.zarr", "--out",
                        tmp_path / "e")  # fmt: skip
        assert done.code == 0, done.err
        assert metrics(tmp_path / "e") == metrics(moved / "eval")
    finally:
        (moved / "new.zarr").rename(moved / "s.zarr")


def test_a_missing_clip_is_named_and_never_sent_to_the_hub(project, moved, tmp_path):
    run = moved / "runs" / "demo"
    (moved / "clip").rename(moved / "clip.away")
    try:
        done = call_cli("predict", moved / "runs", "--checkpoint", run, "--out", tmp_path)
        assert done.code == 2
        assert done.error_line == (
            f"error: {run}: its CLIP is not at {moved / 'clip'} or {project / 'clip'}; "
            "pass --clip to give its place"
        )
        done = call_cli("eval", "--checkpoint", run, "--clip", "./clip", "--out", tmp_path)
        assert done.code == 2
        assert done.error_line == (
            "error: ./clip: no such CLIP folder; pass --clip with a local Hugging Face CLIP "
            "folder or a hub id"
        )
    finally:
        (moved / "clip.away").rename(moved / "clip")


def test_a_hub_id_is_looked_up_in_the_local_cache_first(monkeypatch):
    calls = []

    class Model:
        @classmethod
        def from_pretrained(cls, where, **kwargs):
            calls.append((where, kwargs.get("local_files_only", False)))
            if kwargs.get("local_files_only"):
                raise OSError("not in the cache")
            return cls()

    assert isinstance(backbone._load(Model, "org/clip-model"), Model)
    assert calls == [("org/clip-model", True), ("org/clip-model", False)]
    calls.clear()
    for local in ("./clip", "/no/such/clip", "~/no-such-clip"):
        with pytest.raises(AnomalyError, match="no such CLIP folder"):
            backbone._load(Model, local)
    assert calls == []


# -- run numbering: train never overwrites a run -------------------------------------------------
@pytest.mark.slow
def test_new_runs_are_numbered_never_overwritten(project):
    first = (project / "runs" / "demo" / "model.safetensors").read_bytes()
    quick = ["--features", "s.zarr", "--clip", "clip", *TRAIN, "--eval-every", "0"]
    done = call_cli("train", *quick, cwd=project)  # default --out: runs/demo, taken
    assert done.code == 0, done.err
    assert "run written to runs/demo-2" in done.out
    assert (project / "runs" / "demo" / "model.safetensors").read_bytes() == first
    done = call_cli("train", *quick, "--out", "runs/demo", cwd=project)
    assert done.code == 0 and "run written to runs/demo-3" in done.out, done.err
    assert (project / "runs" / "demo-3" / "config.json").is_file()
    before = (project / "runs" / "demo-3" / "config.json").stat().st_mtime_ns
    done = call_cli("train", *quick, "--out", "runs/demo-3", "--exist-ok", cwd=project)
    assert done.code == 0 and "run written to runs/demo-3" in done.out, done.err
    assert (project / "runs" / "demo-3" / "config.json").stat().st_mtime_ns > before
    assert sorted(p.name for p in (project / "runs").iterdir()) == ["demo", "demo-2", "demo-3"]


@pytest.mark.slow
def test_two_trainings_started_together_never_share_a_folder(project, tmp_path):
    """Two `train --out X` started at the same moment: each claims a folder of its own
    before it trains (the claim is one exclusive create, not "exists and is empty")."""
    out = tmp_path / "runs" / "same"
    args = [sys.executable, "-m", "anomalyclip.cli", "train", "--features", "s.zarr", "--clip",
            "clip", *TRAIN, "--eval-every", "0", "--out", out]  # fmt: skip
    procs = [
        subprocess.Popen(
            list(map(str, args)),
            cwd=project,
            env=cli_env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for _ in range(2)
    ]
    done = [(p.wait(timeout=600), *p.communicate()) for p in procs]
    assert [code for code, _, _ in done] == [0, 0], [err[-2000:] for _, _, err in done]
    written = sorted(line for _, stdout, _ in done for line in stdout.splitlines()
                     if line.startswith("run written to"))  # fmt: skip
    assert written == [f"run written to {out}", f"run written to {out}-2"]
    for folder in (out, tmp_path / "runs" / "same-2"):  # each holds one whole run, no claim
        assert sorted(p.name for p in folder.iterdir()) == sorted(FILES + ("checkpoint.json",))
        read_run_config(folder)


def test_a_claimed_empty_folder_is_taken_and_a_failed_claim_released(tmp_path):
    """An empty folder is free until one process claims it; a process that exits without
    writing a run gives the folder back."""
    from anomalyclip.checks import CLAIM, claim_run_dir

    first = claim_run_dir(tmp_path / "x")
    assert first == tmp_path / "x" and (first / CLAIM).is_file()
    assert claim_run_dir(tmp_path / "x") == tmp_path / "x-2"  # claimed: taken though empty
    (tmp_path / "empty").mkdir()
    assert claim_run_dir(tmp_path / "empty") == tmp_path / "empty"
    code = "from anomalyclip.checks import claim_run_dir; import sys; claim_run_dir(sys.argv[1])"
    gone = subprocess.run([sys.executable, "-c", code, tmp_path / "y"], env=cli_env())
    assert gone.returncode == 0 and not (tmp_path / "y").exists()  # created, unused: removed
    (tmp_path / "z").mkdir()
    gone = subprocess.run([sys.executable, "-c", code, tmp_path / "z"], env=cli_env())
    assert gone.returncode == 0 and list((tmp_path / "z").iterdir()) == []  # given back
    assert claim_run_dir(tmp_path / "z") == tmp_path / "z"


def test_out_that_is_a_file_fails_at_once(project, tmp_path):
    (tmp_path / "taken").write_text("not a run")
    done = run_cli("train", "--features", project / "s.zarr", "--out", tmp_path / "taken")
    assert done.code == 2
    assert done.error_line == f"error: {tmp_path / 'taken'}: exists and is a file, not a run folder"


@pytest.fixture
def read_only_dir(tmp_path):
    if os.geteuid() != 0:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o555)
        yield folder, "Permission denied"
        folder.chmod(0o755)
        return
    try:  # root writes anywhere a mode allows; sysfs refuses new folders even to root
        os.mkdir("/sys/anomalyclip-probe")
    except PermissionError:
        yield Path("/sys"), "Operation not permitted"
    else:
        os.rmdir("/sys/anomalyclip-probe")
        pytest.skip("no folder here that refuses writes")


def test_out_in_a_read_only_folder_fails_at_once(project, read_only_dir):
    folder, reason = read_only_dir
    done = run_cli("train", "--features", project / "s.zarr", "--out", folder / "run")
    assert done.code == 2
    assert done.error_line == f"error: {folder / 'run'}: cannot create the run folder ({reason})"


def test_resume_needs_an_existing_run(project, tmp_path):
    done = run_cli("train", "--features", project / "s.zarr", "--out", tmp_path / "no", "--resume")
    assert done.code == 2 and done.error_line == f"error: {tmp_path / 'no'}: no such run directory"


# -- records for reproducibility ----------------------------------------------------------------
def expected_versions() -> dict:
    return {name: metadata.version(name) for name in environment.LIBRARIES}


def check_provenance(record: dict, command: str, cwd: Path) -> None:
    assert record["anomalyclip"] == anomalyclip.__version__
    assert record["versions"] == expected_versions()
    assert record["python"] == platform.python_version()
    assert command in record["command"] and record["cwd"] == str(cwd)
    date = datetime.datetime.fromisoformat(record["date"])
    assert date.utcoffset() == datetime.timedelta(0)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - date).days) < 1
    root = Path(anomalyclip.__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout: its commit is recorded
        assert record["git"]["commit"] == head.stdout.strip()
    else:
        assert record["git"] is None


def test_runs_and_evaluations_record_how_they_were_made(project):
    config = json.loads((project / "runs" / "demo" / "config.json").read_text())
    check_provenance(config["provenance"], "train --features s.zarr --clip clip", project)
    found = json.loads((project / "eval" / "metrics.json").read_text())
    check_provenance(found["provenance"], "eval --checkpoint runs/demo --out eval", project)


def test_no_git_is_no_commit_and_no_error(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert environment.git_commit() is None
    assert environment.provenance()["git"] is None


@pytest.mark.slow
def test_anomaly_env_prints_what_a_bug_report_needs():
    done = run_cli("env", "--json")
    assert done.code == 0, done.err
    info = json.loads(done.out)
    assert info["versions"] == expected_versions() and info["cpus"] == os.cpu_count()
    assert info["torch_threads"] == torch.get_num_threads()
    assert info["cuda_available"] == torch.cuda.is_available()
    assert len(info["cuda_devices"]) == (torch.cuda.device_count() if info["cuda_available"] else 0)
    text = run_cli("env")
    assert text.code == 0
    lines = dict(line.split(None, 1) for line in text.out.splitlines())
    assert lines["anomalyclip"].startswith(anomalyclip.__version__)
    assert lines["torch"] == metadata.version("torch") and lines["cuda"]


# -- outputs readable by the team, like any tool's --------------------------------------------
def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_every_output_file_is_readable_by_others(project, tmp_path):
    # what open() gives under this umask (0644 under the usual 022), never a private 0600
    expected = 0o666 & ~current_umask()
    folders = ("runs/demo", "eval", "clip")  # a run, an evaluation, a CLIP made by build_clip
    files = [p for folder in folders for p in (project / folder).rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.json", "model.safetensors", "metrics.json", "roc.png", "vocab.json"} <= names
    modes = {str(p.relative_to(project)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert modes == {name: oct(expected) for name in modes}


def test_metrics_json_is_0644_under_umask_022(tmp_path):
    mask = os.umask(0o022)
    try:
        path = write_metrics_json(tmp_path / "metrics.json", {"auc": 0.5, "nan": float("nan")})
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert json.loads(path.read_text()) == {"auc": 0.5, "nan": None}


# -- epochs count from 1 everywhere ----------------------------------------------------------
def set_epoch_format(run: Path, version: int, epoch: int) -> None:
    """Rewrite a run's bookkeeping as a version-``version`` run at ``epoch`` (its tensors kept),
    as the runs written before epochs counted from 1 (version 1) look."""
    for name in ("model", "optimizer", "rng"):
        path = run / f"{name}.safetensors"
        with safe_open(str(path), "pt") as fh:
            meta = {**fh.metadata(), "epoch": str(epoch)}
        save_file(load_file(path), str(path), meta)
    layout = json.loads((run / "optimizer.json").read_text())
    (run / "optimizer.json").write_text(json.dumps({**layout, "epoch": epoch}))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "version": version, "epoch": epoch}))
    (run / "checkpoint.json").unlink()  # version-1 runs had no manifest


@pytest.mark.slow
def test_epochs_count_from_one_and_resume_is_exact(project, tmp_path, caplog):
    cfg = resolve_config("demo", epochs=2, warmup_epochs=1, workers=1, eval_every=0)
    store, clip = project / "s.zarr", project / "clip"
    train(store, tmp_path / "straight", cfg, clip=clip, progress=False)
    for name in ("new", "old"):
        train(store, tmp_path / name, cfg, clip=clip, progress=False, stop_after=1)
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["epoch"] == 1 and [h["epoch"] for h in config["history"]] == [1]
    set_epoch_format(tmp_path / "old", version=1, epoch=0)  # then: the 0-based last epoch
    for name in ("new", "old"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="anomalyclip.train.loop"):
            train(store, tmp_path / name, cfg, clip=clip, progress=False, resume=True)
        assert f"resuming {tmp_path / name} at epoch 2" in caplog.text
        config = json.loads((tmp_path / name / "config.json").read_text())
        assert config["epoch"] == 2 and [h["epoch"] for h in config["history"]] == [1, 2]
        resumed = load_file(tmp_path / name / "model.safetensors")
        straight = load_file(tmp_path / "straight" / "model.safetensors")
        assert all(torch.equal(resumed[k], straight[k]) for k in straight)
