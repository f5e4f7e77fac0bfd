"""Your own videos from a CSV file (``--dataset csv:FILE``): the file's rules, the class order,
and the whole pipeline, ``features`` -> ``train`` -> ``eval``, on real encoded videos.

The videos are the demo's renderer's (a fixed camera scene, an event drawn into a span of
frames), encoded to MP4 and decoded back by PyAV like any user's video; their classes carry
the user's own names (Fire, Trespass), not the demo's, and they sit in the user's own layout
(camera folders, a space and a comma in names), so nothing of the demo dataset's layout,
class names or annotation file is used.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helper import call_cli
from metrics_reference import eval_auc

from anomalyclip.datasets import discover, get_adapter, get_dataset, read_video_csv
from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.evaluation import read_annotations
from anomalyclip.interop.npy_import import NpyImportConfig, import_npy
from anomalyclip.store import open_store
from anomalyclip.synthetic import encode_video, render_scene

NAME = "custom:Fire,Normal,Trespass"


def write_csv(path: Path, rows: list[list]) -> Path:
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return path


# --------------------------------------------------------------------------- the file


def test_rows_classes_and_class_order(tmp_path):
    rows = [
        ["path", "label", "split", "start", "end"],
        ["yard/cam3 0007.mp4", "Trespass", "test", 12, 30, 40, 44],
        ["shop/cam1_0001.mp4", "normal", "train"],
        ["# a comment row"],
        [],
        ["shop/cam2_0042.mp4", "Fire", "train", 3, 9, "", ""],  # ignored on training videos
        ["yard\\cam3_0008.avi", "normal", "test"],
    ]
    videos = read_video_csv(write_csv(tmp_path / "a.csv", rows))
    assert [(v.video_id, v.label, v.split, v.intervals, v.lineno) for v in videos] == [
        ("yard/cam3 0007", "Trespass", "test", [(12, 30), (40, 44)], 2),  # end excluded
        ("shop/cam1_0001", "normal", "train", [], 3),
        ("shop/cam2_0042", "Fire", "train", [(3, 9)], 6),
        ("yard/cam3_0008", "normal", "test", [], 7),
    ]
    spec = get_dataset(f"csv:{tmp_path / 'a.csv'}")
    assert spec.classes == ("Fire", "normal", "Trespass") and spec.normal_id == 1
    assert spec.name == "custom:Fire,normal,Trespass" and spec.normal == "normal"
    # the recorded name alone gives the same classes (train and eval have no CSV)
    again = get_dataset(spec.name)
    assert (again.classes, again.normal_id) == (spec.classes, spec.normal_id)

    # the order of the rows never matters; a new class is a new dataset
    shuffled = write_csv(tmp_path / "b.csv", [rows[6], rows[5], rows[1], rows[2]])
    assert get_dataset(f"csv:{shuffled}") == spec
    more = write_csv(tmp_path / "c.csv", [*rows, ["x/arson_1.mp4", "Arson", "train"]])
    grown = get_dataset(f"csv:{more}")
    assert grown.classes == ("Arson", "Fire", "normal", "Trespass") and grown.normal_id == 2
    assert grown.name != spec.name


@pytest.mark.parametrize(
    ("rows", "line", "problem"),
    [
        ([["a.mp4", "Normal"]], 1, "expected 'path,label,split[,start,end...]', got 2 fields"),
        ([["a.mp4", "Normal", "val"]], 1, "split 'val' is neither train nor test"),
        ([["a.mp4", "Normal", "train"], ["b.mp4", "Fire", "test", 4]], 2, "odd number (1)"),
        ([["a.mp4", "Fire", "test"]], 1, "anomalous test video 'a.mp4' needs its anomalous"),
        ([["a.mp4", "Normal", "test", 1, 5]], 1, "normal video 'a.mp4' has anomalous intervals"),
        ([["a.mp4", "Normal", "train"], ["a.avi", "Fire", "train"]], 2, "duplicate video 'a'"),
        ([["../a.mp4", "Normal", "train"]], 1, "is not a path relative to the dataset"),
        ([["a.mp4", "Fire", "test", 9, 3]], 1, "interval start 9 > end 3"),
        ([["a.mp4", "Fire", "test", 4, 4]], 1, "interval 4 4 is empty (end excluded)"),
        ([["a.mp4", "Fire", "test", 1, 10**23]], 1, f"frame number {10**23} is beyond any video"),
        ([["a.mp4", "Fire", "test", "1s", 3]], 1, "start frame '1s' is not an integer"),
        ([["a.mp4", "Fi,re", "train"]], 1, "class 'Fi,re' must be non-empty, without ','"),
    ],
)
def test_malformed_rows_name_the_file_and_line(tmp_path, rows, line, problem):
    path = write_csv(tmp_path / "v.csv", rows)
    with pytest.raises(AnomalyError) as err:
        read_video_csv(path)
    assert str(err.value).startswith(f"{path}:{line}: ") and problem in str(err.value)


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ([["a.mp4", "Fire", "train"], ["b.mp4", "Smoke", "train"]], "needs a Normal class"),
        ([["a.mp4", "Normal", "train"]], "at least one anomaly class, got Normal"),
        (
            [["a.mp4", "Normal", "train"], ["b.mp4", "car_crash", "train"],
             ["c.mp4", "Car crash", "train"]],
            "classes 'Car crash' and 'car_crash' differ only in spelling",
        ),
    ],
)  # fmt: skip
def test_class_set_problems(tmp_path, rows, problem):
    path = write_csv(tmp_path / "v.csv", rows)
    with pytest.raises(AnomalyError, match=problem) as err:
        get_dataset(f"csv:{path}")
    assert str(err.value).startswith(str(path))


def test_recorded_names_and_what_they_cannot_do(tmp_path):
    with pytest.raises(AnomalyError, match="must be sorted as 'custom:Fire,Normal'"):
        get_dataset("custom:Normal,Fire")
    with pytest.raises(AnomalyError, match="needs a Normal class"):
        get_dataset("custom:Fire,Smoke")
    with pytest.raises(AnomalyError, match="listed in a CSV file; pass it as --dataset csv:FILE"):
        discover(NAME, tmp_path)
    with pytest.raises(AnomalyError, match=r"missing\.csv: no such file"):
        get_dataset(f"csv:{tmp_path / 'missing.csv'}")
    truth = write_csv(
        tmp_path / "t.csv",
        [["a.mp4", "Fire", "test", 3, 8], ["b.mp4", "Normal", "test"], ["c.mp4", "Fire", "train"]],
    )
    assert read_annotations(NAME, truth) == {"a": [[3, 8]], "b": []}
    smoke = write_csv(tmp_path / "s.csv", [["a.mp4", "Smoke", "test", 3, 8]])
    with pytest.raises(AnomalyError, match=r"s\.csv:1: unknown custom class 'Smoke'"):
        read_annotations(NAME, smoke)


# --------------------------------------------------------------------------- end to end

# (path, class, split, frames, rendered as): the user's classes drawn by the demo's events
VIDEOS = [
    ("shop/cam1 0001.mp4", "Normal", "train", 36, "Normal"),
    ("shop/cam1 0002.mp4", "Normal", "train", 40, "Normal"),
    ("shop/cam2_0001.mp4", "Normal", "train", 32, "Normal"),
    ("yard,east/cam3_0001.mp4", "Normal", "train", 44, "Normal"),
    ("yard,east/cam3_0002.mp4", "Normal", "train", 36, "Normal"),
    ("shop/cam2_0003.mp4", "Fire", "train", 40, "Explosion"),
    ("yard,east/cam3_0004.mp4", "Fire", "train", 36, "Explosion"),
    ("shop/cam1_0005.mp4", "Trespass", "train", 44, "Intruder"),
    ("yard,east/cam3_0006.mp4", "Trespass", "train", 40, "Intruder"),
    ("test/cam1_0101.mp4", "Normal", "test", 36, "Normal"),
    ("test/cam2_0102.mp4", "Normal", "test", 40, "Normal"),
    ("test/cam2_0103.mp4", "Fire", "test", 44, "Explosion"),
    ("test/cam3_0104.mp4", "Trespass", "test", 40, "Intruder"),
]


def video_id(rel: str) -> str:
    return rel.rsplit(".", 1)[0]


@pytest.fixture(scope="module")
def my_videos(tmp_path_factory) -> tuple[Path, Path, dict]:
    """Thirteen short MP4s in a user's layout and their CSV (test rows with their spans)."""
    root = tmp_path_factory.mktemp("my_videos")
    truth, rows = {}, [["path", "label", "split", "start", "end"]]
    for k, (rel, label, split, frames, drawn) in enumerate(VIDEOS):
        pixels, intervals = render_scene(drawn, np.random.default_rng([7, k]), frames, (64, 48))
        encode_video(root / "videos" / rel, pixels, fps=10)
        spans = [int(x) for span in intervals for x in span] if split == "test" else []
        rows.append([rel, label, split, *spans])
        truth[video_id(rel)] = [list(span) for span in intervals] if split == "test" else []
    return root / "videos", write_csv(root / "my_videos.csv", rows), truth


@pytest.mark.slow
def test_features_train_eval_on_my_videos(tmp_path, my_videos, tiny_clip):
    videos, table, truth = my_videos
    store, run = tmp_path / "mine.zarr", tmp_path / "run"
    done = call_cli(
        "features", "--dataset", f"csv:{table}", "--videos", videos, "--model", tiny_clip,
        "--out", store, "--batch-size", 32, "--workers", 1, "--device", "cpu",
    )  # fmt: skip
    assert done.code == 0, done.err
    with open_store(store) as st:
        assert st.dataset == NAME and st.verify() == {}
        records = {r.video_id: r for r in st.records()}
        assert set(records) == set(truth)
        for rel, label, split, frames, _ in VIDEOS:
            rec = records[video_id(rel)]
            assert (rec.label, rec.split, rec.intervals) == (label, split, truth[rec.video_id])
            np.testing.assert_array_equal(st.frames(rec.video_id), np.arange(frames))

    done = call_cli(
        "train", "--features", store, "--out", run, "--epochs", 2, "--warmup-epochs", 1,
        "--batch-size", 4, "--emb-dim", 32, "--depth", 1, "--workers", 1, "--device", "cpu",
    )  # fmt: skip
    assert done.code == 0, done.err
    config = json.loads((run / "config.json").read_text())
    assert config["dataset"] == NAME
    assert config["model"]["classes"] == ["Fire", "Normal", "Trespass"]
    assert config["model"]["normal_id"] == 1

    done = call_cli("eval", "--checkpoint", run, "--out", tmp_path / "eval")
    assert done.code == 0, done.err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    tests = [v for v in VIDEOS if v[2] == "test"]
    spans = [span for v in tests for span in truth[video_id(v[0])]]
    assert metrics["dataset"] == NAME and metrics["videos"] == len(tests) == 4
    assert metrics["class_names"] == ["Fire", "Normal", "Trespass"]
    assert metrics["frames"] == sum(v[3] for v in tests)
    assert metrics["abnormal_frames"] == sum(e - s for s, e in spans) > 0
    assert np.asarray(metrics["confusion"]).shape == (3, 3)
    # the AUC is the Mann-Whitney statistic of the per-frame CSVs (6 decimals written)
    assert metrics["auc"] == pytest.approx(eval_auc(tmp_path / "eval", "Normal"), abs=1e-4)

    # the CSV is also the ground truth eval can be given: the same, then moved
    done = call_cli(
        "eval", "--checkpoint", run, "--out", tmp_path / "again", "--annotations", table
    )
    assert done.code == 0, done.err
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert (again["auc"], again["abnormal_frames"]) == (metrics["auc"], metrics["abnormal_frames"])
    moved = []  # every span moved to the start of its video, its length kept
    for rel, label, split, *_ in tests:
        length = sum(e - s for s, e in truth[video_id(rel)])
        moved.append([rel, label, split, *([0, length] if length else [])])
    done = call_cli(
        "eval", "--checkpoint", run, "--out", tmp_path / "moved",
        "--annotations", write_csv(tmp_path / "moved.csv", moved),
    )  # fmt: skip
    assert done.code == 0, done.err
    shifted = json.loads((tmp_path / "moved" / "metrics.json").read_text())
    assert shifted["abnormal_frames"] == metrics["abnormal_frames"]
    # the same scores against the moved truth: the first n frames of each anomalous video
    lengths = {video_id(rel): sum(e - s for s, e in truth[video_id(rel)]) for rel, *_ in tests}
    expected = eval_auc(tmp_path / "eval", "Normal", truth=lengths)
    assert shifted["auc"] == pytest.approx(expected, abs=1e-4)
    assert abs(expected - metrics["auc"]) > 0.01  # the truth moved far enough to tell apart
    # ground truth past a video's end would count it as normal: refused, naming it
    late = [[rel, label, split, *([0, n + 1] if label != "Normal" else [])]
            for rel, label, split, n, _ in tests]  # fmt: skip
    late_csv = write_csv(tmp_path / "late.csv", late)
    done = call_cli(
        "eval", "--checkpoint", run, "--out", tmp_path / "late", "--annotations", late_csv
    )
    assert done.code == 2 and done.error_line == (
        f"error: {late_csv}: video 'test/cam2_0103': interval [0, 45) is not inside the "
        "video's frames [0, 44)"
    )


@pytest.mark.slow
def test_ground_truth_past_the_end_fails_that_video_alone(tmp_path, my_videos, tiny_clip):
    """A span beyond the video's last frame would make an anomalous video count as all
    normal: that video is recorded as failed, with why, and the others are extracted."""
    videos, _, truth = my_videos
    rows = [
        ["test/cam2_0103.mp4", "Fire", "test", 40, 50],  # the video has 44 frames
        ["test/cam1_0101.mp4", "Normal", "test"],
        ["shop/cam1 0001.mp4", "Normal", "train"],
    ]
    table = write_csv(tmp_path / "late.csv", rows)
    done = call_cli(
        "features", "--dataset", f"csv:{table}", "--videos", videos, "--model", tiny_clip,
        "--out", tmp_path / "s.zarr", "--batch-size", 32, "--workers", 1, "--device", "cpu",
    )  # fmt: skip
    assert done.code == 1, done.err
    with open_store(tmp_path / "s.zarr") as st:
        assert st.video_ids() == ["shop/cam1 0001", "test/cam1_0101"]
        assert st.failures()["test/cam2_0103"]["error"] == (
            "test/cam2_0103: interval [40, 50) is not inside the video's frames [0, 44)"
        )


def test_a_long_cjk_name_deep_in_folders_is_extracted(tmp_path, my_videos, tiny_clip):
    """35 CJK characters six folders deep: 441 bytes once the id is percent-encoded, beyond
    the 255 a file name may hold; the store's key is bounded, the id kept whole."""
    videos, _, _ = my_videos
    name = "北京市朝阳区监控摄像头录像二〇二四年十二月三十一日晚上十一点五十九分五十九秒"[:35]
    rel = "现场/" * 6 + f"{name}.mp4"
    (tmp_path / "v" / rel).parent.mkdir(parents=True)
    shutil.copy(videos / "shop/cam2_0003.mp4", tmp_path / "v" / rel)
    shutil.copy(videos / "shop/cam1 0001.mp4", tmp_path / "v" / "n.mp4")
    table = write_csv(tmp_path / "long.csv", [[rel, "Fire", "train"], ["n.mp4", "Normal", "train"]])
    args = ["features", "--dataset", f"csv:{table}", "--videos", tmp_path / "v", "--model",
            tiny_clip, "--out", tmp_path / "s.zarr", "--workers", 1, "--device", "cpu"]  # fmt: skip
    done = call_cli(*args)
    assert done.code == 0, done.err
    assert done.out.startswith("2 videos: 2 extracted, 0 already done, 0 failed; 76 frames")
    with open_store(tmp_path / "s.zarr") as st:
        assert sorted(st.video_ids()) == sorted([video_id(rel), "n"]) and st.verify() == {}
        assert st.frames(video_id(rel)).tolist() == list(range(40))
    done = call_cli(*args)  # found again by its id: nothing to redo
    assert done.code == 0 and done.out.startswith("2 videos: 0 extracted, 2 already done"), done.err


def test_import_npy_of_my_videos(tmp_path, my_videos):
    """Features extracted elsewhere, one .npy per video in the CSV's layout (flat for some)."""
    _, table, truth = my_videos
    rng = np.random.default_rng(3)
    feats = {}
    frames = {video_id(rel): n for rel, _, _, n, _ in VIDEOS}
    for k, vid in enumerate(truth):  # one row per frame, as `features` extracts them
        feats[vid] = rng.standard_normal((frames[vid], 512)).astype(np.float32)
        rel = vid.rsplit("/", 1)[-1] if k % 2 else vid
        (tmp_path / "npy" / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(tmp_path / "npy" / f"{rel}.npy", feats[vid])
    summary = import_npy(
        tmp_path / "npy", f"csv:{table}", tmp_path / "s.zarr", NpyImportConfig(dtype="float32")
    )
    assert sorted(summary.imported) == sorted(truth) and not summary.failed
    with open_store(tmp_path / "s.zarr") as st:
        assert st.dataset == NAME
        for vid, intervals in truth.items():
            assert st.record(vid).intervals == intervals
            assert st.features(vid).tobytes() == feats[vid].tobytes()
    assert get_adapter(f"csv:{table}").folder_name == "my_videos"
