"""The dataset registry: class lists, how videos are found, and each dataset's ground truth.

>>> spec = get_dataset("ucf")
>>> spec.class_id("Abuse"), spec.normal
(0, 'Normal')
"""

from __future__ import annotations

from pathlib import Path

from anomalyclip.datasets import demo, sht, ucf, xd
from anomalyclip.datasets.demo import read_demo_annotations
from anomalyclip.datasets.registry import (
    DATASETS,
    DEMO,
    SHT,
    UCF,
    XD,
    AuthorsEntry,
    DatasetSpec,
    Interval,
    VideoEntry,
    frame_labels,
    get_dataset,
    intervals_to_mask,
    mask_to_intervals,
    merge_intervals,
    read_authors_list,
    read_video_list,
)
from anomalyclip.datasets.sht import read_frame_mask, read_sht_classes
from anomalyclip.datasets.ucf import read_ucf_temporal_annotations
from anomalyclip.datasets.xd import read_xd_annotations
from anomalyclip.errors import AnomalyError

_MODULES = {"ucf": ucf, "xd": xd, "sht": sht, "demo": demo}

__all__ = [
    "DATASETS",
    "DEMO",
    "SHT",
    "UCF",
    "XD",
    "AuthorsEntry",
    "DatasetSpec",
    "Interval",
    "VideoEntry",
    "discover",
    "frame_labels",
    "get_dataset",
    "intervals_to_mask",
    "mask_to_intervals",
    "merge_intervals",
    "read_authors_list",
    "read_demo_annotations",
    "read_frame_mask",
    "read_sht_classes",
    "read_ucf_temporal_annotations",
    "read_video_list",
    "read_xd_annotations",
    "video_class_from_path",
]


def discover(
    spec_or_name: DatasetSpec | str,
    root: Path,
    lists: Path | None = None,
    *,
    allow_missing: bool = False,
) -> list[VideoEntry]:
    """Every video of a dataset under ``root``, from its official list and ground-truth files.

    ``lists`` is where those files are when they are not in the dataset folder. A video named
    by a list but absent from disk is an error unless ``allow_missing`` (then it is skipped
    with a warning). Video ids are unique across splits.
    """
    spec = get_dataset(spec_or_name)
    module = _MODULES[spec.name]
    if spec.name == "demo":
        entries = module.discover(Path(root), lists)
    else:
        entries = module.discover(Path(root), lists, allow_missing=allow_missing)
    seen: dict[str, str] = {}
    for entry in entries:
        if entry.video_id in seen:
            raise AnomalyError(
                f"{root}: video {entry.video_id!r} is in both the {seen[entry.video_id]} "
                f"and the {entry.split} split"
            )
        seen[entry.video_id] = entry.split
    return entries


def video_class_from_path(
    spec: DatasetSpec | str, relpath: str, classes: dict[str, str] | None = None
) -> str:
    """A video's class from its dataset-relative path (ShanghaiTech also needs ``classes``)."""
    spec = get_dataset(spec)
    if spec.name == "sht":
        return sht.class_from_path(relpath, classes)
    return _MODULES[spec.name].class_from_path(relpath)
