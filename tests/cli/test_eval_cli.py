"""``anomaly eval``: outputs, and ground truth taken from an annotation file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helper import call_cli
from metrics_reference import eval_auc, eval_frames
from synthetic_stores import quick_run

from anomalyclip.evaluate.report import read_video_csv
from anomalyclip.store import open_store


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_clip):
    return quick_run(tmp_path_factory.mktemp("evalcli"), tiny_clip, epochs=2, n_each=6)


def evaluate(run, out, *extra):
    done = call_cli("eval", "--checkpoint", run, "--out", out, *extra)
    assert done.code == 0, done.err
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.slow
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
    # the AUC is the Mann-Whitney statistic of the per-frame CSVs (6 decimals written)
    assert base["auc"] == pytest.approx(eval_auc(tmp_path / "a", "Normal"), abs=1e-4)
    assert evaluate(run, tmp_path / "b", "--annotations", str(same))["auc"] == base["auc"]
    shifted = evaluate(run, tmp_path / "c", "--annotations", str(moved))
    assert shifted["abnormal_frames"] == base["abnormal_frames"]
    # the same scores against the moved truth: the first n frames of each listed video
    lengths = {r.video_id: r.intervals[0][1] - r.intervals[0][0] for r in records}
    expected = eval_auc(tmp_path / "a", "Normal", truth=lengths)
    assert shifted["auc"] == pytest.approx(expected, abs=1e-4)
    assert abs(expected - base["auc"]) > 0.01  # the truth moved far enough to tell apart


def test_annotation_file_naming_no_test_video_is_refused(tmp_path, trained):
    _, run = trained
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("test/Explosion/nothing 1 5\n")
    done = call_cli("eval", "--checkpoint", run, "--out", tmp_path, "--annotations", wrong)
    assert done.code == 2
    assert "names none of the store's test videos" in done.error_line


@pytest.mark.slow
def test_eval_decides_at_the_runs_threshold_and_writes_events(tmp_path, trained):
    """The decision threshold is the run's (held-out normal videos), recorded with its rule
    and source; the CSVs and events follow it; a labelled rule needs --calibrate-on."""
    store, run = trained
    config = json.loads((run / "config.json").read_text())
    metrics = evaluate(run, tmp_path / "a")
    decision = metrics["decision"]
    assert decision["threshold"] == config["threshold"]
    assert decision["threshold"]["rule"] == "far@1"
    assert "held-out normal training videos" in decision["threshold"]["source"]
    events = json.loads((tmp_path / "a" / "events.json").read_text())
    assert len(events) == decision["events"]["count"]
    assert (tmp_path / "a" / "events.csv").read_text().splitlines()[0].startswith("source,")
    # the frame decisions, counted from the per-frame CSVs alone
    videos = eval_frames(tmp_path / "a").values()
    called = np.concatenate([v["called"] for v in videos])
    truth = np.concatenate([v["label"] != "Normal" for v in videos])
    normal_videos = np.concatenate([v["called"] for v in videos if (v["label"] == "Normal").all()])
    tp = (called & truth).sum()
    assert tp > 0 and truth.sum() > 0  # not the trivial 0/0 cases
    assert decision["frames"] == pytest.approx({
        "precision": tp / called.sum(), "recall": tp / truth.sum(),
        "f1": 2 * tp / (called.sum() + truth.sum()),
        "alarm_rate_normal_frames": called[~truth].mean(),
        "alarm_rate_normal_videos": normal_videos.mean(),
    })  # fmt: skip
    assert set(decision["events"]["detection"]) == {"0.1", "0.3", "0.5"}
    assert set(decision["events"]["map"]["map"]) == {"0.1", "0.2", "0.3", "0.4", "0.5"}

    # every frame of every CSV is called abnormal exactly when p(A) >= the threshold
    t = decision["threshold"]["value"]
    for csv_path in (tmp_path / "a" / "videos").glob("*.csv"):
        back = read_video_csv(csv_path)
        np.testing.assert_array_equal(back["abnormal"], (back["p_abnormal"] >= t - 5e-7) * 1)

    fixed = evaluate(run, tmp_path / "b", "--threshold-rule", "fixed@0.3")
    assert fixed["decision"]["threshold"] == {
        "value": 0.3, "rule": "fixed@0.3", "source": "fixed by the user"
    }  # fmt: skip
    done = call_cli("eval", "--checkpoint", run, "--out", tmp_path / "c", "--threshold-rule",
                    "youden")  # fmt: skip
    assert done.code == 2 and "--calibrate-on" in done.error_line
    chosen = evaluate(run, tmp_path / "d", "--threshold-rule", "best-f1", "--calibrate-on",
                      str(store))  # fmt: skip
    assert chosen["decision"]["threshold"]["rule"] == "best-f1"
    assert str(store) in chosen["decision"]["threshold"]["source"]
