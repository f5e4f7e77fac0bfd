"""``anomaly eval``: outputs, and ground truth taken from an annotation file."""

from __future__ import annotations

import json

import pytest
from cli_helper import call_cli
from synthetic import quick_run

from anomalyclip.store import open_store


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_clip):
    return quick_run(tmp_path_factory.mktemp("evalcli"), tiny_clip, epochs=2, n_each=6)


def evaluate(run, out, *extra):
    done = call_cli("eval", "--checkpoint", run, "--out", out, *extra)
    assert done.code == 0, done.err
    return json.loads((out / "metrics.json").read_text())


def test_annotation_file_replaces_the_stores_ground_truth(tmp_path, trained):
    store, run = trained
    with open_store(store) as st:
        records = [r for r in st.records("test") if r.intervals]
    same = tmp_path / "same.txt"
    same.write_text(
        "".join(f"{r.video_id} {r.intervals[0][0]} {r.intervals[0][1]}\n" for r in records)
    )
    moved = tmp_path / "moved.txt"  # the same videos, every interval moved to the start
    moved.write_text(
        "".join(f"{r.video_id} 0 {r.intervals[0][1] - r.intervals[0][0]}\n" for r in records)
    )

    base = evaluate(run, tmp_path / "a")
    assert base["videos"] == 12 and (tmp_path / "a" / "roc.png").is_file()
    assert evaluate(run, tmp_path / "b", "--annotations", str(same))["auc"] == base["auc"]
    shifted = evaluate(run, tmp_path / "c", "--annotations", str(moved))
    assert shifted["abnormal_frames"] == base["abnormal_frames"]
    assert shifted["auc"] != base["auc"]


def test_annotation_file_naming_no_test_video_is_refused(tmp_path, trained):
    _, run = trained
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("test/Explosion/nothing 1 5\n")
    done = call_cli("eval", "--checkpoint", run, "--out", tmp_path, "--annotations", wrong)
    assert done.code == 2
    assert "names none of the store's test videos" in done.error_line
