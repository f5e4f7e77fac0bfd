"""The dataset adapters: one protocol, one registry, one rule per question.

A toy dataset registered with one line goes through discovery, ``store import-npy`` and
``eval --annotations`` with no other change; XD-Violence's split is one rule for video folders
and ``.npy`` releases alike; no module outside ``anomalyclip.datasets`` tells datasets apart by
comparing their names.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
from cli_helper import call_cli
from paths import TESTS

import anomalyclip
from anomalyclip.datasets import (
    DATASETS,
    DatasetAdapter,
    DatasetSpec,
    Listed,
    discover,
    get_adapter,
    get_dataset,
    video_class_from_path,
)
from anomalyclip.datasets.files import iter_fields, parse_pairs, video_name
from anomalyclip.datasets.xd import split_from_folders
from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.evaluation import read_annotations
from anomalyclip.interop.npy_import import NpyImportConfig, import_npy
from anomalyclip.store import open_store

FIXTURES = TESTS / "fixtures" / "datasets"
D = 512


def touch(root: Path, *rels: str) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).touch()


# --------------------------------------------------------------------------- the registry


def test_every_registered_dataset_is_an_adapter_of_its_spec():
    for name, adapter in DATASETS.items():
        assert isinstance(adapter, DatasetAdapter)
        assert get_adapter(name) is adapter and adapter.spec is get_dataset(name)
        assert adapter.spec.name == name and get_adapter(adapter.spec) is adapter
        assert adapter.spec.classes[adapter.spec.normal_id].casefold() == "normal"
    assert get_dataset("xd").primary_metric == "ap" and get_dataset("ucf").primary_metric == "auc"
    with pytest.raises(AnomalyError, match="unknown dataset 'ucf2'.*ucf, xd, sht, demo, csv:FILE"):
        get_adapter("ucf2")


def test_class_and_split_of_a_path():
    ucf, xd, demo = get_adapter("ucf"), get_adapter("xd"), get_adapter("demo")
    assert ucf.class_of("Anomaly-Videos-Part-1/Abuse/Abuse028_x264.mp4") == "Abuse"
    assert ucf.split_of("Abuse/Abuse028_x264.mp4") is None  # only UCF-Crime's lists say
    assert xd.class_of("Test/v__#1_label_B6-0-0.mp4") == "Car_accident"
    assert demo.class_of("test/Intruder/a.mp4") == "Intruder"
    assert demo.split_of("test/Intruder/a.mp4") == "test" and demo.split_of("x/a.mp4") is None
    classes = {"01_0015": "throwing object"}
    assert get_adapter("sht").class_of("frames/01_0015", classes) == "throwing object"


@pytest.mark.parametrize(
    ("dataset", "source", "key", "want"),
    [
        ("ucf", "ucf/Temporal_Anomaly_Annotation_for_Testing_Videos.txt", "Abuse028_x264",
         [[165, 241]]),
        ("xd", "xd/annotations.txt", "v=8cTqh9tMz_I__#1_label_B1-0-0", [[16, 65]]),
    ],
)  # fmt: skip
def test_eval_reads_ground_truth_through_the_adapter(dataset, source, key, want):
    truth = read_annotations(dataset, FIXTURES / source)
    assert truth[key] == want


def test_sht_ground_truth_is_a_folder_of_masks(tmp_path):
    np.save(tmp_path / "01_0014.npy", np.array([0, 1, 1, 0, 1], np.uint8))
    assert read_annotations("sht", tmp_path) == {"01_0014": [[1, 3], [4, 5]]}
    with pytest.raises(AnomalyError, match="ShanghaiTech ground truth is a folder"):
        read_annotations("sht", tmp_path / "01_0014.npy")


# --------------------------------------------------------------------------- XD-Violence's split


@pytest.mark.parametrize(
    ("relpath", "split"),
    [
        ("Test/videos/v__#1_label_A.mp4", "test"),  # the release's test folder
        ("test/v__#1_label_A.mp4", "test"),
        ("XDTestClipFeatures/v__#1_label_A__0", "test"),  # VadCLIP's features
        ("RGBTest/v__#1_label_A_i3d", "test"),  # I3D feature releases
        ("xd_testing/v__#1_label_A.mp4", "test"),
        ("1-1004/v__#1_label_A.mp4", "train"),  # the release's training folders
        ("XDTrainClipFeatures/v__#1_label_A__0", "train"),
        ("latest/v__#1_label_A.mp4", "train"),  # "test" inside a word is not a test folder
        ("contest/v__#1_label_A.mp4", "train"),
        ("v__#1_label_A_test.mp4", "train"),  # only folders say it, never the file name
    ],
)
def test_xd_split_rule(relpath, split):
    assert split_from_folders(relpath) == split
    assert get_adapter("xd").split_of(relpath) == split


def test_xd_videos_and_feature_release_are_split_alike(tmp_path):
    """The same folders give the same splits whether they hold videos (``features``) or .npy
    files (``store import-npy``); the two used to follow different rules."""
    layout = {
        "RGBTest/a__#1_label_B1-0-0": "test",
        "XDTestClipFeatures/b__#1_label_A": "test",
        "Test/videos/c__#1_label_B2-0-0": "test",
        "latest/d__#1_label_A": "train",
        "1-1004/e__#1_label_B4-0-0": "train",
    }
    truth = "a__#1_label_B1-0-0 2 5\nc__#1_label_B2-0-0 0 3\n"
    videos, npy = tmp_path / "videos", tmp_path / "npy"
    touch(videos, *(f"{rel}.mp4" for rel in layout))
    (videos / "annotations.txt").write_text(truth)
    for rel in layout:
        (npy / rel).parent.mkdir(parents=True, exist_ok=True)
        np.save(npy / f"{rel}.npy", np.ones((8, D), np.float32))
    (npy / "annotations.txt").write_text(truth)

    found = {e.video_id: e.split for e in discover("xd", videos)}
    done = call_cli("store", "import-npy", npy, "-d", "xd", "-o", tmp_path / "s.zarr")
    assert done.code == 0, done.err
    with open_store(tmp_path / "s.zarr") as st:
        imported = {r.video_id: r.split for r in st.records()}
        assert st.record("a__#1_label_B1-0-0").intervals == [[2, 6]]  # inclusive 5 -> 6
    want = {PurePosixPath(rel).name: split for rel, split in layout.items()}
    assert found == want and imported == want


# --------------------------------------------------------------------------- a new dataset


TOY = DatasetSpec(name="toy", title="Toy", classes=("Normal", "Smoke"), normal_id=0)


class Toy(DatasetAdapter):
    """The README's example, as a user adds a dataset: ``<camera>/<class>_<n>.mp4``, the
    split in ``split.txt`` (``name train|test``), the truth in ``truth.txt`` (``name s e``,
    ends included)."""

    spec = TOY
    annotations = "truth.txt"  # found beside the lists, in the dataset folder or below it

    def class_of(self, relpath, classes=None):
        return TOY.canonical(video_name(relpath).split("_")[0])

    def list_videos(self, root, lists, found, *, strict=True):
        """Every video: found holds the paths under root (videos, or .npy files)."""
        splits = {f[0]: f[1] for _, f in iter_fields((lists or root) / "split.txt")}
        paths = {video_name(rel): rel for rel in found}
        return [Listed(name, self.class_of(name), split, paths.get(name, name))
                for name, split in splits.items()]  # fmt: skip

    def read_annotations(self, path):
        return {f[0]: parse_pairs(path, n, f[1:], end_inclusive=True, allow_none=False)
                for n, f in iter_fields(path)}  # fmt: skip


def test_a_dataset_added_with_one_registry_line(tmp_path, monkeypatch):
    """Registering an adapter is all it takes: discovery, the .npy import and eval's ground
    truth then work for it, with no other module edited."""
    monkeypatch.setitem(DATASETS, "toy", Toy())
    videos = tmp_path / "toy"
    touch(videos, "cam1/normal_1.mp4", "cam1/smoke_1.mp4", "cam2/normal_2.mp4", "cam2/smoke_2.mp4")
    (videos / "split.txt").write_text(
        "normal_1 train\nsmoke_1 train\nnormal_2 test\nsmoke_2 test\n"
    )
    (videos / "truth.txt").write_text("smoke_2 3 6\n")

    entries = {e.video_id: (e.label, e.split, e.intervals, e.path) for e in discover("toy", videos)}
    assert entries == {
        "normal_1": ("Normal", "train", [], videos / "cam1/normal_1.mp4"),
        "smoke_1": ("Smoke", "train", [], videos / "cam1/smoke_1.mp4"),
        "normal_2": ("Normal", "test", [], videos / "cam2/normal_2.mp4"),
        "smoke_2": ("Smoke", "test", [(3, 7)], videos / "cam2/smoke_2.mp4"),
    }
    assert video_class_from_path("toy", "cam9/smoke_7.mp4") == "Smoke"
    assert read_annotations("toy", videos / "truth.txt") == {"smoke_2": [[3, 7]]}

    npy = tmp_path / "npy"
    for k, name in enumerate(entries):
        (npy / "feats").mkdir(parents=True, exist_ok=True)
        np.save(npy / "feats" / f"{name}.npy", np.full((10, D), k, np.float32))
    summary = import_npy(
        npy, "toy", tmp_path / "s.zarr", NpyImportConfig(lists=videos, dtype="float32")
    )
    assert sorted(summary.imported) == sorted(entries) and not summary.failed
    with open_store(tmp_path / "s.zarr") as st:
        assert st.dataset == "toy"
        assert {r.video_id: (r.label, r.split, r.intervals) for r in st.records()} == {
            "normal_1": ("Normal", "train", []),
            "smoke_1": ("Smoke", "train", []),
            "normal_2": ("Normal", "test", []),
            "smoke_2": ("Smoke", "test", [[3, 7]]),
        }
        assert (st.features("smoke_1") == 1).all()


# --------------------------------------------------------------------------- no name branches

# `x == "ucf"`, `"xd" != x`, `x in ("ucf", "xd")`: what a dataset-specific branch looks like
NAMES = "|".join(sorted(DATASETS))
BRANCH = re.compile(
    rf"""[=!]=\s*["']({NAMES})["']|["']({NAMES})["']\s*[=!]=|\bin\s*[(\[{{]\s*["']({NAMES})["']"""
)


def test_no_module_tells_datasets_apart_by_name():
    package = Path(anomalyclip.__file__).parent
    found = [
        f"{path.relative_to(package)}:{n}: {line.strip()}"
        for path in sorted(package.rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), start=1)
        if BRANCH.search(line)
    ]
    assert found == []
    assert BRANCH.search('if spec.name == "sht":') and BRANCH.search('elif dataset == "xd":')
