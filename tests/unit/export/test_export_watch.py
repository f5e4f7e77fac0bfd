"""``watch --backend onnxruntime|openvino`` end to end: the same events as the torch watch.

A trained run (tiny CLIP, demo preset) is exported, then watches two real files: the demo
world's explosion scene as a camera sends it (H.264 in MPEG-TS) and tree.avi (real footage,
320x240). Its events.jsonl must equal the torch watch's of the same files: the same events
(kinds, frames, times, classes), their p(A) and class probabilities within 1e-4.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helper import call_cli, run_cli
from synthetic_stores import quick_run
from watch_helpers import closed, event_video, read_events

from anomalyclip.export.exporter import ExportConfig, export_run

# each test exports a trained run and watches real files with it: slow
pytestmark = pytest.mark.slow

P_TOL = 1e-4  # p(A) and class probabilities of the events: exported against torch
NUMBERS = ("peak", "mean", "class_probability")


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_clip):
    return quick_run(tmp_path_factory.mktemp("export_watch"), tiny_clip, epochs=1, n_each=4)[1]


@pytest.fixture(scope="module")
def sources(tmp_path_factory, shared_videos) -> list[Path]:
    return [event_video(tmp_path_factory.mktemp("video")), shared_videos / "tree.avi"]


@pytest.fixture(scope="module")
def threshold(run, sources, tmp_path_factory) -> float:
    """A threshold some rows of the explosion scene cross and others do not: halfway
    between the mean and the peak p(A) of its event in a torch watch at threshold 0 (one
    event over the whole file)."""
    out = tmp_path_factory.mktemp("probe")
    assert _watch(run, sources, out, "torch", 0.0).code == 0
    (whole,) = closed(read_events(out / "events.jsonl"), str(sources[0]))
    assert (whole["start_frame"], whole["end_frame"]) == (0, 90)
    return (whole["mean"] + whole["peak"]) / 2


@pytest.fixture(scope="module")
def torch_events(run, sources, threshold, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("torch")
    done = _watch(run, sources, out, "torch", threshold)
    assert done.code == 0, done.err
    return read_events(out / "events.jsonl")


@pytest.fixture(scope="module")
def exported(run) -> Path:
    """The run with both of its fp32 exports (RUN/export/onnx, RUN/export/openvino)."""
    for fmt in ("onnx", "openvino"):
        export_run(run, ExportConfig(fmt))
    return run


def _args(run: Path, sources: list[Path], out: Path, backend: str, threshold: float) -> list:
    """Every frame of the files scored (no drops), every event kept, no status lines; the
    torch image tower in fp32, what the fp32 exports equal (``auto`` is bf16 on a CPU with
    bf16 units, 1e-3 away in class probability)."""
    return ["watch", *sources, "-c", run, "-o", out, "--backend", backend, "--precision", "fp32",
            "--threshold", f"{threshold:.6f}", "--drop", "none", "--status-every", "0",
            "--min-duration", "0", "--merge-gap", "0"]  # fmt: skip


def _watch(run: Path, sources: list[Path], out: Path, backend: str, threshold: float):
    return call_cli(*_args(run, sources, out, backend, threshold))


def _same_events(got: list[dict], want: list[dict]) -> None:
    """Line by line per source (the sources' lines interleave as their threads go), all
    but the wall-clock ``reported_at`` equal, the probabilities within ``P_TOL``."""
    assert len(got) == len(want)
    for source in {w["source"] for w in want}:
        mine = [g for g in got if g["source"] == source]
        theirs = [w for w in want if w["source"] == source]
        assert len(mine) == len(theirs)
        for g, w in zip(mine, theirs, strict=True):
            exact = {k: v for k, v in w.items() if k not in (*NUMBERS, "top3", "reported_at")}
            assert {k: g[k] for k in exact} == exact
            assert all(abs(g[k] - w[k]) <= P_TOL for k in NUMBERS)
            assert [name for name, _ in g["top3"]] == [name for name, _ in w["top3"]]
            assert all(abs(a[1] - b[1]) <= P_TOL
                       for a, b in zip(g["top3"], w["top3"], strict=True))  # fmt: skip


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_an_exported_watch_writes_the_torch_watchs_events(
    backend, exported, sources, threshold, torch_events, tmp_path
):
    """Measured: 14 lines, 7 events closed (both files), the same; p(A) and class
    probabilities at most 1.6e-7 apart (ONNX Runtime), 1.2e-7 (OpenVINO)."""
    # the torch watch found events in the explosion scene that do not cover all of it
    ended = closed(torch_events, str(sources[0]))
    assert ended and sum(e["end_frame"] - e["start_frame"] for e in ended) < 90
    done = _watch(exported, sources, tmp_path, backend, threshold)
    assert done.code == 0, done.err
    _same_events(read_events(tmp_path / "events.jsonl"), torch_events)
    provenance = json.loads((tmp_path / "provenance.json").read_text())
    assert provenance["backend"] == provenance["image_tower"]["export"]["backend"] == backend
    assert provenance["image_tower"]["export"]["precision"] == "fp32"


def test_the_exported_watch_is_a_new_process_too(
    exported, sources, threshold, torch_events, tmp_path
):
    """The console script in a fresh Python (what a CPU box runs): the same events."""
    done = run_cli(*_args(exported, sources, tmp_path, "onnxruntime", threshold))
    assert done.code == 0, done.err
    _same_events(read_events(tmp_path / "events.jsonl"), torch_events)
