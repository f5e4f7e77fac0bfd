"""The registry: dataset name -> adapter. The only place that knows the datasets by name.

Adding a dataset is a module with a :class:`~anomalyclip.datasets.base.DatasetAdapter`
subclass (:mod:`anomalyclip.datasets.custom` is the smallest) and one line in ``DATASETS``;
``anomaly features``, ``store import-npy``, ``train`` and ``eval`` then take ``--dataset NAME``.
"""

from __future__ import annotations

from collections.abc import Callable

from anomalyclip.datasets import custom, demo, sht, ucf, xd
from anomalyclip.datasets.base import DatasetAdapter
from anomalyclip.datasets.core import DatasetSpec, VideoEntry
from anomalyclip.datasets.demo import DEMO
from anomalyclip.datasets.sht import SHT
from anomalyclip.datasets.ucf import UCF
from anomalyclip.datasets.xd import XD
from anomalyclip.errors import AnomalyError

DATASETS: dict[str, DatasetAdapter] = {
    "ucf": ucf.UcfCrime(),
    "xd": xd.XdViolence(),
    "sht": sht.ShanghaiTech(),
    "demo": demo.Demo(),
}

# Datasets named with an argument, FAMILY:ARG: your own videos from a CSV file, and the name
# a store of them records (their classes).
FAMILIES: dict[str, Callable[[str], DatasetAdapter]] = {
    custom.FILE_PREFIX: custom.CsvDataset.from_file,  # csv:FILE
    custom.NAME_PREFIX: custom.CsvDataset.from_name,  # custom:CLASS,CLASS,...
}

__all__ = ["DATASETS", "DEMO", "FAMILIES", "SHT", "UCF", "XD", "DatasetSpec", "VideoEntry",
           "get_adapter", "get_dataset"]  # fmt: skip


def get_adapter(name: str | DatasetSpec | DatasetAdapter) -> DatasetAdapter:
    """The adapter of a dataset name (``ucf``, ``csv:my_videos.csv``...), spec or adapter."""
    if isinstance(name, DatasetAdapter):
        return name
    if isinstance(name, DatasetSpec):
        name = name.name
    if name in DATASETS:
        return DATASETS[name]
    family, sep, arg = name.partition(":")
    if sep and family in FAMILIES:
        return FAMILIES[family](arg)
    known = ", ".join([*DATASETS, f"{custom.FILE_PREFIX}:FILE"])
    raise AnomalyError(f"unknown dataset {name!r}; known datasets: {known}")


def get_dataset(name: str | DatasetSpec) -> DatasetSpec:
    """The spec (classes, Normal's id) of a dataset name; a spec is passed through."""
    if isinstance(name, DatasetSpec):
        return name
    return get_adapter(name).spec
