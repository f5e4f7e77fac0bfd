"""The dataset registry and the parsers of each dataset's official files."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from paths import TESTS

from anomalyclip.datasets import (
    DATASETS,
    SHT,
    UCF,
    XD,
    discover,
    frame_labels,
    get_dataset,
    intervals_to_mask,
    mask_to_intervals,
    read_authors_list,
    read_demo_annotations,
    read_frame_mask,
    read_sht_classes,
    read_ucf_temporal_annotations,
    read_video_list,
    read_xd_annotations,
    video_class_from_path,
)
from anomalyclip.datasets import sht as sht_module
from anomalyclip.datasets import xd as xd_module
from anomalyclip.errors import AnomalyError

FIXTURES = TESTS / "fixtures" / "datasets"
BAD = FIXTURES / "bad"
TEMPORAL = "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"


def touch(root: Path, *rels: str) -> None:
    for rel in rels:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()


# --------------------------------------------------------------------------- registry


def test_registry_class_orders_and_normal_ids():
    assert set(DATASETS) == {"ucf", "xd", "sht", "demo"}
    assert UCF.classes[UCF.normal_id] == UCF.normal == "Normal" and UCF.normal_id == 7
    assert len(UCF.classes) == 14 and UCF.class_id("Vandalism") == 13
    assert XD.classes == (
        "Abuse",
        "Car_accident",
        "Explosion",
        "Fighting",
        "Normal",
        "Riot",
        "Shooting",
    )
    assert XD.normal_id == 4
    assert SHT.normal == "normal" and SHT.normal_id == 8 and len(SHT.classes) == 18
    assert SHT.class_id("throwing object") == 15
    demo = get_dataset("demo")
    assert demo.classes == ("Explosion", "Intruder", "Normal", "Tampering")
    assert demo.normal == "Normal" and demo.normal_id == 2
    assert len(XD.anomaly_classes) == 6 and "Normal" not in XD.anomaly_classes


def test_class_id_forgives_case_and_underscores_only():
    assert XD.class_id("car accident") == XD.class_id("Car_accident") == 1
    assert SHT.class_id("throwing_object") == 15
    with pytest.raises(AnomalyError, match="unknown UCF-Crime class 'Jaywalking'.*Abuse, Arrest"):
        UCF.class_id("Jaywalking")


def test_get_dataset_unknown_lists_known_names():
    assert get_dataset(XD) is XD
    with pytest.raises(AnomalyError, match="unknown dataset 'kinetics'.*ucf, xd, sht, demo"):
        get_dataset("kinetics")


# --------------------------------------------------------------------------- intervals


def test_frame_labels_with_strided_frames():
    intervals = [(10, 20), (40, 45)]
    frames = np.arange(0, 60, 4)  # a stride-4 sampling: 0, 4, ..., 56
    expected = np.array([(10 <= f < 20) or (40 <= f < 45) for f in frames])
    np.testing.assert_array_equal(frame_labels(intervals, frames), expected)
    assert frame_labels(intervals, frames).sum() == 4  # 12, 16, 40, 44


def test_frame_labels_edges_overlap_and_unsorted_input():
    frames = np.array([4, 5, 9, 10, 11, 14, 15, 100])
    got = frame_labels([(12, 15), (5, 10), (9, 13)], frames)  # unsorted, overlapping
    np.testing.assert_array_equal(got, [False, True, True, True, True, True, False, False])
    assert frame_labels([], frames).dtype == bool and not frame_labels([], frames).any()
    assert frame_labels([(3, 3)], np.array([3])).tolist() == [False]  # empty interval


def test_mask_intervals_round_trip():
    rng = np.random.default_rng(0)
    for _ in range(20):
        mask = rng.random(int(rng.integers(1, 200))) < 0.3
        intervals = mask_to_intervals(mask)
        np.testing.assert_array_equal(intervals_to_mask(intervals, mask.size), mask)
    assert mask_to_intervals(np.array([1, 1, 0, 0, 1, 0, 1, 1])) == [(0, 2), (4, 5), (6, 8)]
    assert mask_to_intervals(np.zeros(5)) == []


# --------------------------------------------------------------------------- UCF-Crime


def test_ucf_temporal_annotations_minus_one_and_double_spaces():
    ann = read_ucf_temporal_annotations(FIXTURES / "ucf" / TEMPORAL)
    assert set(ann) == {"Abuse028_x264", "RoadAccidents002_x264", "Normal_Videos_003_x264"}
    assert ann["Abuse028_x264"].label == "Abuse"
    assert ann["Abuse028_x264"].intervals == [(165, 241)]  # inclusive end 240 -> exclusive 241
    assert ann["RoadAccidents002_x264"].intervals == [(10, 21), (40, 56)]
    assert ann["Normal_Videos_003_x264"].label == "Normal"
    assert ann["Normal_Videos_003_x264"].intervals == []


def test_ucf_video_lists():
    train = read_video_list(FIXTURES / "ucf" / "Anomaly_Train.txt")
    assert train[2] == "Training_Normal_Videos_Anomaly/Normal_Videos001_x264.mp4"
    assert [video_class_from_path("ucf", rel) for rel in train] == ["Abuse", "Arrest", "Normal"]


@pytest.mark.parametrize(
    ("relpath", "label"),
    [
        ("Abuse/Abuse028_x264.mp4", "Abuse"),
        ("Anomaly-Videos-Part-3/RoadAccidents/RoadAccidents133_x264.mp4", "RoadAccidents"),
        ("Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4", "Normal"),
        ("Normal_Videos_event/Normal_Videos_100_x264.mp4", "Normal"),
        ("Shoplifting/Shoplifting039_x264", "Shoplifting"),
    ],
)
def test_ucf_class_from_path(relpath, label):
    assert video_class_from_path(UCF, relpath) == label


def test_ucf_class_from_path_unknown():
    with pytest.raises(AnomalyError, match="cannot tell the UCF-Crime class of 'misc/clip7.mp4'"):
        video_class_from_path("ucf", "misc/clip7.mp4")


UCF_TREE = [
    "Anomaly-Videos-Part-1/Abuse/Abuse001_x264.mp4",
    "Anomaly-Videos-Part-1/Abuse/Abuse028_x264.mp4",
    "Anomaly-Videos-Part-1/Arrest/Arrest002_x264.mp4",
    "Anomaly-Videos-Part-3/RoadAccidents/RoadAccidents002_x264.mp4",
    "Training-Normal-Videos-Part-1/Normal_Videos001_x264.mp4",
    "Testing_Normal_Videos/Normal_Videos_003_x264.mp4",
]


def test_ucf_discover_locates_nested_downloads(tmp_path):
    touch(tmp_path, *UCF_TREE)
    entries = discover("ucf", tmp_path, lists=FIXTURES / "ucf")
    by_id = {e.video_id: e for e in entries}
    assert [e.video_id for e in entries] == [
        "Abuse/Abuse001_x264",
        "Arrest/Arrest002_x264",
        "Training_Normal_Videos_Anomaly/Normal_Videos001_x264",
        "Abuse/Abuse028_x264",
        "RoadAccidents/RoadAccidents002_x264",
        "Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264",
    ]
    assert [e.split for e in entries] == ["train"] * 3 + ["test"] * 3
    abuse = by_id["Abuse/Abuse028_x264"]
    assert abuse.path == tmp_path / UCF_TREE[1] and abuse.label == "Abuse"
    assert abuse.intervals == [(165, 241)]
    assert by_id["Abuse/Abuse001_x264"].intervals == []  # training: weak labels only
    normal = by_id["Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264"]
    assert normal.label == "Normal" and normal.intervals == []
    assert normal.path == tmp_path / UCF_TREE[5]


def test_ucf_discover_missing_video(tmp_path):
    touch(tmp_path, *UCF_TREE[1:])
    with pytest.raises(AnomalyError, match="1 listed videos not found, e.g. 'Abuse/Abuse001_x264"):
        discover("ucf", tmp_path, lists=FIXTURES / "ucf")
    assert len(discover("ucf", tmp_path, lists=FIXTURES / "ucf", allow_missing=True)) == 5


def test_ucf_discover_finds_lists_in_root_and_checks_annotation_class(tmp_path):
    touch(tmp_path, "Abuse/Abuse028_x264.mp4")
    (tmp_path / "Anomaly_Test.txt").write_text("Abuse/Abuse028_x264.mp4\n")
    (tmp_path / TEMPORAL).write_text("Abuse028_x264.mp4  Arson  1  5  -1  -1\n")
    with pytest.raises(AnomalyError, match=rf"{TEMPORAL}:1: class 'Arson' disagrees with 'Abuse'"):
        discover("ucf", tmp_path)
    (tmp_path / TEMPORAL).write_text("Abuse028_x264.mp4  Abuse  1  5  -1  -1\n")
    [entry] = discover("ucf", tmp_path)
    assert entry.intervals == [(1, 6)] and entry.split == "test"


# --------------------------------------------------------------------------- XD-Violence


def test_xd_multi_label_names():
    assert xd_module.labels_from_name("Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6.mp4") == [
        "Explosion",
        "Shooting",
        "Car_accident",
    ]
    assert xd_module.labels_from_name("x__#1_label_B1-B2-0") == ["Fighting", "Shooting"]
    assert xd_module.labels_from_name("x__#1_label_B5-0-0") == ["Abuse"]
    assert (
        video_class_from_path("xd", "1-1004/A.Beautiful.Mind.2001__#1_label_B4-0-0.mp4") == "Riot"
    )
    assert video_class_from_path("xd", "Fast.Five.2011__#00-10-00_00-11-00_label_A.mp4") == "Normal"
    with pytest.raises(AnomalyError, match="no '_label_<codes>' suffix"):
        video_class_from_path("xd", "holiday.mp4")
    with pytest.raises(AnomalyError, match=r"unknown label code\(s\) \['B9'\]"):
        xd_module.labels_from_name("x_label_B9-0-0")


def test_xd_annotations():
    ann = read_xd_annotations(FIXTURES / "xd" / "annotations.txt")
    assert ann == {
        # inclusive ends in the file (0 120 is frames 0..120), half-open here
        "Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6": [(0, 121), (300, 346)],
        "v=8cTqh9tMz_I__#1_label_B1-0-0": [(16, 65)],  # '.mp4' dropped from the name
        "A.Beautiful.Mind.2001__#00-40-52_00-42-01_label_B2-0-0": [(97, 181)],
    }


def test_xd_discover_with_lists(tmp_path):
    names = (FIXTURES / "xd" / "XD_Train.txt").read_text().split()
    names += (FIXTURES / "xd" / "XD_Test.txt").read_text().split()
    touch(tmp_path, *(f"videos/{n}" for n in names))
    entries = discover("xd", tmp_path, lists=FIXTURES / "xd")
    by_id = {e.video_id: e for e in entries}
    assert len(entries) == 6
    assert [e.split for e in entries] == ["train"] * 2 + ["test"] * 4
    bad_boys = by_id["Bad.Boys.1995__#01-11-55_01-12-40_label_G-B2-B6"]
    assert bad_boys.label == "Explosion" and bad_boys.intervals == [(0, 121), (300, 346)]
    assert by_id["Love.Actually.2003__#00-05-00_00-06-00_label_A"].intervals == []
    train_riot = by_id["Bad.Boys.1995__#01-11-55_01-14-10_label_B4-0-0"]
    assert train_riot.label == "Riot" and train_riot.intervals == []


def test_xd_discover_split_from_folders(tmp_path):
    touch(
        tmp_path,
        "1-1004/a__#1_label_B1-0-0.mp4",
        "1005-2004/b__#1_label_A.mp4",
        "Test/videos/c__#1_label_B2-B1-0.mp4",
        "Test/videos/d__#1_label_A.mp4",
    )
    (tmp_path / "annotations.txt").write_text("c__#1_label_B2-B1-0 5 9\n")
    got = {e.video_id: (e.split, e.label, e.intervals) for e in discover("xd", tmp_path)}
    assert got == {
        "a__#1_label_B1-0-0": ("train", "Fighting", []),
        "b__#1_label_A": ("train", "Normal", []),
        "c__#1_label_B2-B1-0": ("test", "Shooting", [(5, 10)]),  # file: 5 9, inclusive
        "d__#1_label_A": ("test", "Normal", []),
    }
    (tmp_path / "annotations.txt").unlink()
    with pytest.raises(AnomalyError, match="annotations.txt not found"):
        discover("xd", tmp_path)


# --------------------------------------------------------------------------- ShanghaiTech


def test_sht_frame_mask_to_intervals_round_trip(tmp_path):
    mask = np.zeros(300, dtype=np.int64)
    mask[50:90] = 1
    mask[200:201] = 1
    np.save(tmp_path / "01_0014.npy", mask)
    loaded = read_frame_mask(tmp_path / "01_0014.npy")
    assert loaded.dtype == bool and loaded.shape == (300,)
    intervals = mask_to_intervals(loaded)
    assert intervals == [(50, 90), (200, 201)]
    np.testing.assert_array_equal(intervals_to_mask(intervals, 300), mask.astype(bool))
    np.testing.assert_array_equal(frame_labels(intervals, np.arange(300)), loaded)


def test_sht_frame_mask_refuses_pickles_and_bad_values(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([1, None, 0], dtype=object))  # pickled: object dtype
    with pytest.raises(AnomalyError, match=r"obj\.npy: not a plain \.npy array"):
        read_frame_mask(tmp_path / "obj.npy")
    (tmp_path / "raw.npy").write_bytes(pickle.dumps([0, 1, 1]))
    with pytest.raises(AnomalyError, match=r"raw\.npy: not a plain \.npy array"):
        read_frame_mask(tmp_path / "raw.npy")
    np.save(tmp_path / "two.npy", np.array([0, 2, 1]))
    with pytest.raises(AnomalyError, match=r"two\.npy: frame mask values must be 0 or 1"):
        read_frame_mask(tmp_path / "two.npy")
    np.save(tmp_path / "square.npy", np.zeros((3, 3)))
    with pytest.raises(AnomalyError, match=r"square\.npy: expected a 1-D per-frame mask"):
        read_frame_mask(tmp_path / "square.npy")
    with pytest.raises(AnomalyError, match=r"gone\.npy: no such frame mask"):
        read_frame_mask(tmp_path / "gone.npy")


def test_sht_classes_file():
    classes = read_sht_classes(FIXTURES / "sht" / "SH_Classes.txt")
    assert classes == {
        "01_0014": "chasing",
        "01_0015": "throwing object",
        "02_0161": "throwing object",
        "05_003": "normal",
    }
    assert video_class_from_path("sht", "frames/01_0015", classes) == "throwing object"
    assert video_class_from_path("sht", "videos/01_001.avi", classes) == "normal"
    with pytest.raises(AnomalyError, match="not in its name"):
        video_class_from_path("sht", "01_0015")


def test_sht_classes_from_authors_list(tmp_path):
    (tmp_path / "test.txt").write_text("01_0015 0 264 15\n01_001 0 100 8\n")
    entries = read_authors_list(tmp_path / "test.txt", SHT)
    assert sht_module.classes_from_authors_list(entries) == {
        "01_0015": "throwing object",
        "01_001": "normal",
    }


def _sht_tree(root: Path) -> None:
    touch(
        root,
        "training/videos/01_001.avi",
        "training/videos/05_003.avi",
        "testing/frames/01_0014/000.jpg",
        "testing/frames/01_0014/001.jpg",
        "testing/frames/01_0015/000.jpg",
        "testing/frames/02_0161/000.jpg",
    )
    masks = root / "testing" / "test_frame_mask"
    masks.mkdir(parents=True)
    for name, mask in {
        "01_0014": [0, 1, 1, 0, 0],
        "01_0015": [0, 0, 1, 1, 0, 1],
        "02_0161": [1, 1, 0],
    }.items():
        np.save(masks / f"{name}.npy", np.array(mask, dtype=np.uint8))


def test_sht_discover(tmp_path):
    _sht_tree(tmp_path)
    entries = discover("sht", tmp_path, lists=FIXTURES / "sht")
    got = {e.video_id: (e.split, e.label, e.intervals, e.path) for e in entries}
    frames = tmp_path / "testing" / "frames"
    videos = tmp_path / "training" / "videos"
    assert got == {
        "01_001": ("train", "normal", [], videos / "01_001.avi"),
        "01_0014": ("train", "chasing", [], frames / "01_0014"),  # no test truth in training
        "01_0015": ("test", "throwing object", [(2, 4), (5, 6)], frames / "01_0015"),
        "02_0161": ("test", "throwing object", [(0, 2)], frames / "02_0161"),
        "05_003": ("test", "normal", [], videos / "05_003.avi"),
    }


def test_sht_discover_rejects_mask_without_class(tmp_path):
    _sht_tree(tmp_path)
    lists = tmp_path / "lists"
    lists.mkdir()
    for name in ("SH_Train.txt", "SH_Test.txt"):
        (lists / name).write_text((FIXTURES / "sht" / name).read_text())
    (lists / "SH_Classes.txt").write_text("01_0014 chasing\n01_0015 robbery\n")
    with pytest.raises(AnomalyError, match=r"02_0161\.npy: video '02_0161' has anomalous frames"):
        discover("sht", tmp_path, lists=lists)


# --------------------------------------------------------------------------- demo


def test_demo_discover_and_annotations(tmp_path):
    touch(
        tmp_path,
        "train/Explosion/explosion_000.mp4",
        "train/Normal/normal_000.mp4",
        "test/Explosion/explosion_003.mp4",
        "test/Tampering/tampering_001.mp4",
        "test/Normal/normal_001.mp4",
    )
    (tmp_path / "annotations.txt").write_text(
        "test/Explosion/explosion_003 10 20 30 35\n"
        "test/Tampering/tampering_001 0 16\n"
        "test/Normal/normal_001\n"
        "train/Explosion/explosion_000 4 8\n"
    )
    got = {e.video_id: (e.split, e.label, e.intervals) for e in discover("demo", tmp_path)}
    assert got == {
        "train/Explosion/explosion_000": ("train", "Explosion", []),
        "train/Normal/normal_000": ("train", "Normal", []),
        "test/Explosion/explosion_003": ("test", "Explosion", [(10, 20), (30, 35)]),
        "test/Tampering/tampering_001": ("test", "Tampering", [(0, 16)]),
        "test/Normal/normal_001": ("test", "Normal", []),
    }
    (tmp_path / "annotations.txt").write_text("test/Explosion/explosion_003 10 20\n")
    with pytest.raises(AnomalyError, match="no anomalous interval for test video 'test/Tampering"):
        discover("demo", tmp_path)


def test_demo_annotations_accept_unique_bare_names(tmp_path):
    touch(tmp_path, "test/Intruder/a.mp4", "test/Explosion/b.mp4", "train/Explosion/b.mp4")
    (tmp_path / "annotations.txt").write_text("a 3 7\ntest/Explosion/b 1 2\n")
    got = {e.video_id: e.intervals for e in discover("demo", tmp_path) if e.split == "test"}
    assert got == {"test/Intruder/a": [(3, 7)], "test/Explosion/b": [(1, 2)]}
    (tmp_path / "annotations.txt").write_text("a 3 7\nb 1 2\n")  # two videos are called b
    with pytest.raises(AnomalyError, match="bare name 'b' matches several videos"):
        discover("demo", tmp_path)


def test_demo_rejects_unknown_class_folder(tmp_path):
    touch(tmp_path, "train/Robbery/robbery_000.mp4")
    with pytest.raises(AnomalyError, match="unknown demo class 'Robbery'"):
        discover("demo", tmp_path)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("test/Intruder/a 1 2\ntest/Intruder/b 4 9 12\n", "odd number"),
        ("test/Intruder/a 1 2\ntest/Normal/b 4 9\n", "normal video 'test/Normal/b' has anomalous"),
        ("test/Intruder/a 1 2\nIntruder/b 4 9\n", "not laid out as '<train|test>/<Class>/<id>'"),
        ("test/Intruder/a 1 2\ntest/Intruder/a 4 9\n", "duplicate video 'test/Intruder/a'"),
        ("test/Intruder/a 1 2\n/abs/test/Intruder/b 4 9\n", "is not a path relative"),
    ],
)
def test_demo_annotations_malformed(tmp_path, text, problem):
    path = tmp_path / "annotations.txt"
    path.write_text(text)
    with pytest.raises(AnomalyError) as err:
        read_demo_annotations(path)
    assert str(err.value).startswith(f"{path}:2: ") and problem in str(err.value)


# --------------------------------------------------------------------------- authors' lists


def test_authors_list():
    entries = read_authors_list(FIXTURES / "authors" / "ucf_test.txt", "ucf")
    assert [e.path for e in entries] == [
        "Abuse/Abuse028_x264",
        "Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264",
        "Explosion/Explosion002_x264",
    ]
    assert entries[0].num_frames == 1412 and entries[0].label == 0
    assert UCF.classes[entries[1].label] == "Normal"
    assert entries[2].labels == (5, 6) and entries[2].first_frame == 10


# --------------------------------------------------------------------------- malformed lines

MALFORMED = [
    (read_ucf_temporal_annotations, "ucf_field_count.txt", 2, "got 3 fields"),
    (read_ucf_temporal_annotations, "ucf_not_int.txt", 2, "end frame '2o' is not an integer"),
    (read_ucf_temporal_annotations, "ucf_start_after_end.txt", 3, "start 300 > end 200"),
    (read_ucf_temporal_annotations, "ucf_unknown_class.txt", 2, "class 'Jaywalking'"),
    (read_ucf_temporal_annotations, "ucf_duplicate.txt", 2, "duplicate video 'Abuse028_x264'"),
    (read_ucf_temporal_annotations, "ucf_half_none.txt", 2, "negative frame number"),
    (read_xd_annotations, "xd_odd.txt", 2, "odd number (3)"),
    (read_xd_annotations, "xd_unknown_code.txt", 2, "unknown label code(s) ['B3']"),
    (read_xd_annotations, "xd_duplicate.txt", 2, "(first on line 1)"),
    (read_xd_annotations, "xd_start_after_end.txt", 2, "start 90 > end 80"),
    (read_xd_annotations, "xd_normal_with_interval.txt", 2, "normal video"),
    (read_video_list, "list_field_count.txt", 2, "expected one video path, got 2 fields"),
    (read_video_list, "list_escape.txt", 2, "is not a path relative to the dataset"),
    (read_video_list, "list_duplicate.txt", 3, "duplicate video 'Abuse/Abuse001_x264.mp4'"),
    (read_authors_list, "authors_field_count.txt", 2, "got 3 fields"),
    (read_authors_list, "authors_not_int.txt", 2, "end frame 'end' is not an integer"),
    (read_authors_list, "authors_range.txt", 2, "bad frame range 50..10"),
    (read_sht_classes, "sht_unknown_class.txt", 2, "unknown ShanghaiTech class 'juggling'"),
    (read_sht_classes, "sht_field_count.txt", 2, "expected 'video_id class'"),
    (read_sht_classes, "sht_duplicate.txt", 2, "duplicate video '01_0014'"),
]


@pytest.mark.parametrize(("reader", "name", "lineno", "problem"), MALFORMED)
def test_malformed_line_names_file_line_and_problem(reader, name, lineno, problem):
    with pytest.raises(AnomalyError) as err:
        reader(BAD / name)
    message = str(err.value)
    assert message.startswith(f"{BAD / name}:{lineno}: "), message
    assert problem in message and "\n" not in message


def test_authors_class_id_checked_against_dataset():
    read_authors_list(BAD / "authors_class_range.txt")  # no dataset: any id >= 0
    with pytest.raises(AnomalyError, match=r"authors_class_range\.txt:2: class id 14 out of range"):
        read_authors_list(BAD / "authors_class_range.txt", UCF)


def test_missing_file_is_named():
    with pytest.raises(AnomalyError, match=r"nowhere\.txt: no such file"):
        read_xd_annotations(FIXTURES / "nowhere.txt")
