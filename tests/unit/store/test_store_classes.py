"""A store checks its videos' labels against the class list its root records, so a store is
read without the dataset registry: a dataset the registry does not know still reads, and the
store layer imports no dataset code. A store written before stores recorded their classes
reads as before; ``anomaly store verify`` checks its labels against its dataset's classes."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from cli_helper import anomaly

from anomalyclip.datasets import DEMO
from anomalyclip.errors import AnomalyError
from anomalyclip.store import VideoRecord, open_store, provenance, video_key

DIM = 8
CLASSES = ("Normal", "Forest Fire", "Flood")


def attrs(dataset: str = "watershed", classes=CLASSES) -> dict:
    return provenance(dataset=dataset, classes=classes, backbone={"model": "tiny", "dim": DIM},
                      preprocessing={"size": 224},
                      sampling={"mode": "all", "value": None})  # fmt: skip


def write(path, root: dict, labels: dict[str, str]) -> None:
    rng = np.random.default_rng(0)
    with open_store(path, "w") as st:
        st.init(root)
        for i, (vid, label) in enumerate(labels.items()):
            rec = VideoRecord(video_id=vid, source=f"{vid}.mp4", label=label, split="test",
                              fps=25.0, source_size=100, fingerprint=f"fp{i}")  # fmt: skip
            n = 5 + i
            st.write_video(rec, rng.standard_normal((n, DIM)).astype(np.float32),
                           np.arange(n), np.arange(n) / 25.0)  # fmt: skip


def test_labels_are_checked_against_the_classes_the_store_records(tmp_path):
    """'watershed' is no dataset of the registry: its store still reads, and a label is a
    class when it is one of the recorded classes, spelled as the datasets forgive
    (case, underscores)."""
    path = tmp_path / "s.zarr"
    write(path, attrs(), {"a": "Forest Fire", "b": "forest_fire", "c": "Normal"})
    with open_store(path) as st:
        assert st.meta.classes == CLASSES and st.attrs["classes"] == list(CLASSES)
        assert st.root_problem() is None and st.verify() == {}
        assert [r.video_id for r in st.records()] == ["a", "b", "c"]
    with open_store(path, "a") as st:
        st.backend.set_attrs(f"videos/{video_key('b')}", {"label": "Landslide"})
    with open_store(path) as st:
        assert st.verify() == {"b": "label 'Landslide' is not a class of dataset 'watershed'"}
        with pytest.raises(AnomalyError, match="video 'b': label 'Landslide' is not a class"):
            st.records()


@pytest.mark.parametrize(
    "classes", [["Normal", 3], "Normal,Fire", [], ["Normal", "normal"], ["Normal", ""]]
)
def test_a_class_list_that_is_not_one_is_a_root_problem(tmp_path, classes):
    path = tmp_path / "s.zarr"
    write(path, attrs(), {"a": "Normal"})
    with open_store(path, "a") as st:
        st.backend.set_attrs("", {"classes": classes})
    with open_store(path) as st:
        assert st.meta.classes is None
        assert st.verify() == {
            "/": f"root attributes: classes {json.dumps(classes)} is not a list of distinct "
            "class names"
        }


def test_the_store_layer_reads_and_verifies_without_dataset_code(tmp_path):
    path = tmp_path / "s.zarr"
    write(path, attrs(), {"a": "Flood"})
    code = (
        "import sys\n"
        "from anomalyclip.store import open_store\n"
        f"with open_store({str(path)!r}) as st:\n"
        "    assert st.verify() == {} and len(st.records()) == 1 and st.summary()\n"
        "print(sorted(m for m in sys.modules if m.startswith('anomalyclip.datasets')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["[]"]


def test_an_older_store_without_classes_reads_and_verify_uses_its_dataset(
    tmp_path, monkeypatch, capsys
):
    """Stores written before the root recorded ``classes``: they read as before; the store
    alone cannot tell a wrong label; ``anomaly store verify`` checks it against the classes
    of the dataset the store names."""
    path = tmp_path / "old.zarr"
    root = attrs("demo", DEMO.classes)
    del root["classes"]
    write(path, root, {"test/a": "Explosion", "test/b": "Normal"})
    with open_store(path) as st:
        assert st.meta.classes is None and "classes" not in st.attrs
        assert st.verify() == {} and len(st.records()) == 2
    with open_store(path, "a") as st:
        st.backend.set_attrs(f"videos/{video_key('test/a')}", {"label": "Picnic"})
    with open_store(path) as st:
        assert st.verify() == {}  # nothing in the store says what its classes are
        assert st.verify(classes=DEMO.classes) == {
            "test/a": "label 'Picnic' is not a class of dataset 'demo'"
        }
    code, out, _ = anomaly(monkeypatch, capsys, "store", "verify", path)
    assert code == 1 and out.splitlines() == [
        "test/a: label 'Picnic' is not a class of dataset 'demo'"
    ]
