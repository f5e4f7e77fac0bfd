"""Datasets: each one an adapter (its classes, how its videos are listed, its ground truth),
registered by name in :mod:`anomalyclip.datasets.registry`.

>>> spec = get_dataset("ucf")
>>> spec.class_id("Abuse"), spec.normal
(0, 'Normal')
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from anomalyclip.datasets.base import DatasetAdapter, Listed
from anomalyclip.datasets.core import (
    DatasetSpec,
    Interval,
    VideoEntry,
    frame_labels,
    intervals_to_mask,
    mask_to_intervals,
    merge_intervals,
)
from anomalyclip.datasets.custom import read_video_csv
from anomalyclip.datasets.demo import DEMO, read_demo_annotations
from anomalyclip.datasets.files import AuthorsEntry, read_authors_list, read_video_list
from anomalyclip.datasets.registry import DATASETS, get_adapter, get_dataset
from anomalyclip.datasets.sht import SHT, read_frame_mask, read_sht_classes
from anomalyclip.datasets.ucf import UCF, read_ucf_temporal_annotations
from anomalyclip.datasets.xd import XD, read_xd_annotations

__all__ = [
    "DATASETS",
    "DEMO",
    "SHT",
    "UCF",
    "XD",
    "AuthorsEntry",
    "DatasetAdapter",
    "DatasetSpec",
    "Interval",
    "Listed",
    "VideoEntry",
    "discover",
    "frame_labels",
    "get_adapter",
    "get_dataset",
    "intervals_to_mask",
    "mask_to_intervals",
    "merge_intervals",
    "read_authors_list",
    "read_demo_annotations",
    "read_frame_mask",
    "read_sht_classes",
    "read_ucf_temporal_annotations",
    "read_video_csv",
    "read_video_list",
    "read_xd_annotations",
    "video_class_from_path",
]


def discover(
    dataset: str | DatasetSpec | DatasetAdapter,
    root: Path,
    lists: Path | None = None,
    *,
    allow_missing: bool = False,
) -> list[VideoEntry]:
    """Every video of a dataset under ``root`` (see :meth:`DatasetAdapter.discover`)."""
    return get_adapter(dataset).discover(Path(root), lists, allow_missing=allow_missing)


def video_class_from_path(
    dataset: str | DatasetSpec, relpath: str, classes: Mapping[str, str] | None = None
) -> str:
    """A video's class from its dataset-relative path (ShanghaiTech also needs ``classes``)."""
    return get_adapter(dataset).class_of(relpath, classes)
