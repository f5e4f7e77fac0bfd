"""The dataset adapter: what the package asks of a dataset, and the discovery all of them share.

A dataset is a :class:`DatasetAdapter` subclass in a module of its own, registered by name in
:mod:`anomalyclip.datasets.registry`. Nothing outside this package knows a dataset by name;
everything goes through these questions:

- :meth:`~DatasetAdapter.list_videos`: the dataset's videos (id, class, split, and the name
  their file is found by), from its list files or from the files present under a folder:
  video files for ``anomaly features``, ``.npy`` files for ``anomaly store import-npy``;
- :meth:`~DatasetAdapter.class_of`, :meth:`~DatasetAdapter.split_of`: what a path alone says;
- :meth:`~DatasetAdapter.find_annotations`, :meth:`~DatasetAdapter.read_annotations`,
  :meth:`~DatasetAdapter.annotation_key`: the test ground truth, as video name -> anomalous
  ``[start, end)`` frame intervals (what ``anomaly eval --annotations`` reads);
- :meth:`~DatasetAdapter.discover`: the videos of a dataset folder with their files and test
  intervals. It is written once, here: list the videos, locate each file, attach the test
  truth through :meth:`~DatasetAdapter.test_truth` (where a dataset checks its own rules),
  report the missing files, refuse a video id used twice;
- ``ignored_folders``: folders whose ``.npy`` files are ground truth, not features.

The smallest complete adapter is :mod:`anomalyclip.datasets.custom` (a CSV file).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from anomalyclip.datasets.core import DatasetSpec, Interval, VideoEntry
from anomalyclip.datasets.files import FileIndex, find_path, report_missing
from anomalyclip.errors import AnomalyError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listed:
    """A video a dataset names: its store key, class and split, and what its file is found
    by (a path relative to the dataset folder, or a bare name)."""

    video_id: str
    label: str
    split: str
    name: str


# The test intervals of a listed video ([] for training and normal videos).
Truth = Callable[[Listed], list[Interval]]


class DatasetAdapter:
    """One dataset: subclasses set ``spec`` (and ``annotations``, the name of the test
    ground-truth file or folder) and implement :meth:`class_of`, :meth:`list_videos` and
    :meth:`read_annotations`; the rest has defaults that suit most datasets."""

    spec: DatasetSpec
    annotations: str = ""  # ground-truth file (or folder) name, looked up beside the lists
    frame_folders: bool = False  # videos may be folders of frames
    ignored_folders: tuple[str, ...] = ()  # folders of .npy files that are not features

    @property
    def folder_name(self) -> str:
        """A file-name-safe name for default outputs (``store/<folder_name>.zarr``)."""
        return self.spec.name

    # -- what a path says ---------------------------------------------------------------------
    def class_of(self, relpath: str, classes: Mapping[str, str] | None = None) -> str:
        """The class of a video from its dataset-relative path; ``classes`` (video name ->
        class) is for datasets whose names carry no class (ShanghaiTech)."""
        raise NotImplementedError

    def split_of(self, relpath: str) -> str | None:
        """The split a path alone says; None where only the dataset's lists say."""
        return None

    # -- the videos ---------------------------------------------------------------------------
    def list_videos(
        self, root: Path, lists: Path | None, found: Sequence[str], *, strict: bool = True
    ) -> list[Listed]:
        """Every video of the dataset, from its list files (in ``lists``, in ``root`` or below
        it) or, for datasets without lists, from ``found``: the paths relative to ``root``
        present there (video files, or ``.npy`` files without their suffix). With ``strict``
        every found path must be one of the dataset's; without, others are left out (a folder
        of features may hold other arrays)."""
        raise NotImplementedError

    # -- the test ground truth ----------------------------------------------------------------
    def find_annotations(
        self, folders: Sequence[Path | None], below: Path | None = None
    ) -> Path | None:
        """The dataset's ground-truth file (or folder) in ``folders``, else below ``below``."""
        return find_path(self.annotations, folders, below) if self.annotations else None

    def read_annotations(self, path: Path) -> dict[str, list[Interval]]:
        """The ground-truth file (or folder) as video name -> anomalous ``[start, end)``."""
        raise NotImplementedError

    def annotation_key(self, video_id: str) -> str:
        """The name a video has in the ground-truth file: by default its bare name."""
        return PurePosixPath(video_id).name

    def test_truth(self, root: Path, lists: Path | None, listed: list[Listed]) -> Truth:
        """The test intervals of each listed video, from the ground-truth file: required when
        there are test videos; a test video it does not name has no anomalous frame (with a
        warning when its class is anomalous)."""
        if not any(item.split == "test" for item in listed):
            return lambda item: []
        path = self.find_annotations([lists, root], below=root)
        if path is None:
            raise AnomalyError(f"{root}: {self.annotations} not found (needed for the test videos)")
        table = self.read_annotations(path)

        def truth(item: Listed) -> list[Interval]:
            if item.split != "test":
                return []
            intervals = table.get(self.annotation_key(item.video_id), [])
            if item.label != self.spec.normal and not intervals:
                log.warning(
                    "%s: anomalous test video %r has no annotated interval", path, item.name
                )
            return intervals

        return truth

    # -- discovery ----------------------------------------------------------------------------
    def locate(self, index: FileIndex, item: Listed) -> Path | None:
        """The file (or frame folder) of a listed video, None when it is not on disk."""
        return index.locate(item.name)

    def discover(
        self, root: Path, lists: Path | None = None, *, allow_missing: bool = False
    ) -> list[VideoEntry]:
        """Every video of the dataset under ``root`` with its file, class, split and test
        intervals. ``lists`` is where the list and ground-truth files are when they are not in
        the dataset folder. A listed video absent from disk is an error unless
        ``allow_missing`` (then it is skipped with a warning). Video ids are unique."""
        root = Path(root)
        index = FileIndex(root, frame_folders=self.frame_folders)
        listed = self.list_videos(root, lists, sorted(index.by_rel))
        truth = self.test_truth(root, lists, listed)
        entries: list[VideoEntry] = []
        missing: list[str] = []
        for item in listed:
            path = self.locate(index, item)
            if path is None:
                missing.append(item.name)
                continue
            entries.append(VideoEntry(item.video_id, path, item.label, item.split, truth(item)))
        report_missing(root, missing, allow_missing)
        seen: dict[str, str] = {}
        for entry in entries:
            if entry.video_id in seen:
                raise AnomalyError(
                    f"{root}: video {entry.video_id!r} is in both the {seen[entry.video_id]} "
                    f"and the {entry.split} split"
                )
            seen[entry.video_id] = entry.split
        return entries
