"""The store's root attributes as one typed object (anomalyclip.store.meta.StoreMeta): read
from what plain zarr / h5py see on disk, written back unchanged."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import zarr

from anomalyclip.datasets import UCF
from anomalyclip.store import DEFAULT_DIM, SCHEMA, StoreMeta, VideoRecord, open_store, provenance

BACKBONE = {"model": "openai/clip-vit-base-patch16", "dim": 384, "weights_sha256": "ab" * 32}


def new_attrs(dtype: str = "float32") -> dict:
    return provenance(dataset="ucf", classes=UCF.classes, backbone=BACKBONE,
                      preprocessing={"size": 224},
                      sampling={"mode": "fps", "value": 4.0}, dtype=dtype)  # fmt: skip


def raw_root(path) -> dict:
    """The root attributes as a reader without this package sees them."""
    if str(path).endswith(".h5"):
        with h5py.File(path, "r") as f:
            return {k: json.loads(v) for k, v in f.attrs.items()}
    return dict(zarr.open_group(str(path), mode="r").attrs)


@pytest.mark.parametrize("name", ["s.zarr", "s.h5"])
def test_fields_are_the_on_disk_attributes(tmp_path, name):
    attrs = new_attrs()
    with open_store(tmp_path / name, "w") as st:
        st.init(attrs)
        st.write_video(VideoRecord("a", label="Normal", split="test"), np.zeros((3, 384)))
    on_disk = raw_root(tmp_path / name)
    with open_store(tmp_path / name) as st:
        meta = st.meta
    assert (meta.dataset, meta.dtype, meta.sampling) == ("ucf", "float32", attrs["sampling"])
    assert (meta.dim, meta.model, meta.schema) == (384, BACKBONE["model"], SCHEMA)
    assert meta.backbone == BACKBONE and meta.producer == attrs["producer"]
    assert meta.classes == UCF.classes
    # nothing lost or added between the file and the object, in either direction (classes:
    # written only by stores that record them)
    assert StoreMeta.from_attrs(on_disk).to_attrs() == {
        k: on_disk[k] for k in StoreMeta(classes=UCF.classes).to_attrs()
    }
    assert StoreMeta.from_attrs(attrs).to_attrs() == attrs


def test_wrong_types_read_as_missing():
    """A hand-edited root: the object never hands out a value of the wrong type."""
    meta = StoreMeta.from_attrs({"backbone": {"dim": "512"}, "sampling": [1], "dtype": 16})
    assert meta.dim is None and meta.sampling is None and meta.dtype == "float16"
    assert StoreMeta.from_attrs({"backbone": {"dim": True}}).dim is None
    assert StoreMeta.from_attrs({"backbone": "clip"}).backbone is None
    assert (StoreMeta.from_attrs({}).dim or DEFAULT_DIM) == 512
