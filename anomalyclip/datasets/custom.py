"""Your own videos as a dataset: one CSV file gives each video's class, split and test truth.

    anomaly features --dataset csv:my_videos.csv --videos /data/my_videos --out store/mine.zarr
    anomaly train --features store/mine.zarr --out runs/mine
    anomaly eval --checkpoint runs/mine --out eval/mine

The file (UTF-8, comma-separated, quoted the way spreadsheets write it) has a row per video::

    path,label,split,start,end
    shop/cam1_0001.mp4,Normal,train
    shop/cam2_0042.mp4,Shoplifting,train
    yard/cam3_0007.mp4,Fight,test,120,245,600,710
    yard/cam3_0008.mp4,Normal,test

- ``path``: the video file or folder of frames, relative to ``--videos`` (``/`` or ``\\``);
  the video id, the store's key, is this path without its extension.
- ``label``: the video's class. One class must be called Normal (any case): the videos with
  nothing anomalous in them. Spellings that differ only in case or ``_`` are one class and
  must be written one way.
- ``split``: ``train`` or ``test``.
- ``start,end`` pairs: a test video's anomalous spans in decoded frame numbers from 0, the end
  excluded (``120,245`` is frames 120 to 244). An anomalous test video needs at least one, a
  normal video has none; on training videos they are allowed and ignored (training is weakly
  supervised: it only ever sees the video's class).
- A first row ``path,label,split...`` is a header; blank rows and rows whose first cell starts
  with ``#`` are skipped.

**The class order.** A class id is the class's place among the labels sorted alphabetically,
case ignored (the order of the built-in datasets' class lists): the order of the rows never
matters. The dataset's name spells that list out, ``custom:Fight,Normal,Shoplifting``; it is
what a store and a run record, so ``train``, ``eval`` and ``predict`` know the classes without
the CSV, and a CSV with another set of classes is another dataset whose stores and runs are
never mixed with this one's (``store merge`` and ``eval`` refuse them, naming both).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from anomalyclip.datasets.base import DatasetAdapter, Listed, Truth
from anomalyclip.datasets.core import SPLITS, DatasetSpec, Interval, normalise_label
from anomalyclip.datasets.files import (
    FileIndex,
    check_relative,
    parse_pairs,
    read_text,
    strip_video_extension,
)
from anomalyclip.errors import AnomalyError

FILE_PREFIX = "csv"  # --dataset csv:FILE
NAME_PREFIX = "custom"  # the recorded name: custom:CLASS,CLASS,...
HEADER = ("path", "label", "split")


@dataclass(frozen=True)
class CsvVideo:
    """One row: a video's dataset-relative path, class, split and ``[start, end)`` spans."""

    path: str
    label: str
    split: str
    intervals: list[Interval] = field(default_factory=list)
    lineno: int = 0

    @property
    def video_id(self) -> str:
        return strip_video_extension(self.path)


def read_video_csv(path: Path) -> list[CsvVideo]:
    """The rows of a ``path,label,split[,start,end...]`` file, checked line by line."""
    path = Path(path)
    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    videos: list[CsvVideo] = []
    first_line: dict[str, int] = {}
    try:
        for row in reader:
            lineno = reader.line_num
            cells = [cell.strip() for cell in row]
            while cells and not cells[-1]:  # spreadsheets pad short rows with empty cells
                cells.pop()
            if not cells or cells[0].startswith("#"):
                continue
            if not videos and not first_line and tuple(c.casefold() for c in cells[:3]) == HEADER:
                continue
            video = _row(path, lineno, cells)
            if video.video_id in first_line:
                raise AnomalyError(
                    f"{path}:{lineno}: duplicate video {video.video_id!r} "
                    f"(first on line {first_line[video.video_id]})"
                )
            first_line[video.video_id] = lineno
            videos.append(video)
    except csv.Error as e:
        raise AnomalyError(f"{path}:{reader.line_num}: not CSV ({e})") from None
    if not videos:
        raise AnomalyError(
            f"{path}: no videos (expected rows of 'path,label,split[,start,end...]')"
        )
    return videos


def _row(path: Path, lineno: int, cells: list[str]) -> CsvVideo:
    if len(cells) < 3:
        raise AnomalyError(
            f"{path}:{lineno}: expected 'path,label,split[,start,end...]', got {len(cells)} fields"
        )
    rel = check_relative(path, lineno, cells[0])
    label, split = cells[1], cells[2].casefold()
    if not label or "," in label:
        raise AnomalyError(f"{path}:{lineno}: class {label!r} must be non-empty, without ','")
    if split not in SPLITS:
        raise AnomalyError(f"{path}:{lineno}: split {cells[2]!r} is neither train nor test")
    intervals = parse_pairs(path, lineno, cells[3:], end_inclusive=False, allow_none=False)
    normal = normalise_label(label) == "normal"
    if normal and intervals:
        raise AnomalyError(f"{path}:{lineno}: normal video {rel!r} has anomalous intervals")
    if split == "test" and not normal and not intervals:
        raise AnomalyError(
            f"{path}:{lineno}: anomalous test video {rel!r} needs its anomalous frames "
            "as start,end pairs"
        )
    return CsvVideo(rel, label, split, intervals, lineno)


def custom_spec(labels: Iterable[str], where: str) -> DatasetSpec:
    """The spec of a set of class names: sorted, case ignored; Normal required."""
    classes = sorted(set(labels), key=lambda c: (c.casefold(), c))
    spelled: dict[str, str] = {}
    for label in classes:
        other = spelled.setdefault(normalise_label(label), label)
        if other != label:
            raise AnomalyError(f"{where}: classes {other!r} and {label!r} differ only in spelling")
    normal = [i for i, c in enumerate(classes) if normalise_label(c) == "normal"]
    if not normal or len(classes) < 2:
        raise AnomalyError(
            f"{where}: needs a Normal class and at least one anomaly class, "
            f"got {', '.join(classes) or 'none'}"
        )
    name = f"{NAME_PREFIX}:{','.join(classes)}"
    return DatasetSpec(name=name, title="custom", classes=tuple(classes), normal_id=normal[0])


class CsvDataset(DatasetAdapter):
    """A dataset described by a CSV file (``csv:FILE``), or only its classes (``custom:...``,
    the recorded name: enough to train, evaluate and read a CSV given as ground truth)."""

    def __init__(
        self, spec: DatasetSpec, videos: list[CsvVideo] | None = None, source: Path | None = None
    ):
        self.spec = spec
        self.videos = videos
        self.source: Path | None = source
        self._by_id = {v.video_id: v for v in videos or []}

    @classmethod
    def from_file(cls, path: str) -> CsvDataset:
        """``csv:FILE``: the videos and classes of the CSV file."""
        source = Path(path)
        videos = read_video_csv(source)
        return cls(custom_spec((v.label for v in videos), str(source)), videos, source)

    @classmethod
    def from_name(cls, classes: str) -> CsvDataset:
        """``custom:A,B,Normal``: a dataset known by its classes (as a store records it)."""
        name = f"{NAME_PREFIX}:{classes}"
        spec = custom_spec(classes.split(","), f"dataset {name!r}")
        if spec.name != name:
            raise AnomalyError(f"dataset {name!r}: classes must be sorted as {spec.name!r}")
        return cls(spec)

    @property
    def folder_name(self) -> str:
        return self.source.stem if self.source is not None else NAME_PREFIX

    def _video(self, relpath: str) -> CsvVideo:
        found = self._by_id.get(strip_video_extension(relpath.replace("\\", "/")))
        if found is None:
            where = self.source or f"dataset {self.spec.name!r}"
            raise AnomalyError(f"{where}: no video {relpath!r} in the CSV")
        return found

    def class_of(self, relpath: str, classes: Mapping[str, str] | None = None) -> str:
        return self._video(relpath).label

    def split_of(self, relpath: str) -> str | None:
        return self._video(relpath).split

    def list_videos(
        self, root: Path, lists: Path | None, found: Sequence[str], *, strict: bool = True
    ) -> list[Listed]:
        if self.videos is None:
            raise AnomalyError(
                f"dataset {self.spec.name!r}: its videos are listed in a CSV file; "
                "pass it as --dataset csv:FILE"
            )
        return [Listed(v.video_id, v.label, v.split, v.path) for v in self.videos]

    def find_annotations(
        self, folders: Sequence[Path | None], below: Path | None = None
    ) -> Path | None:
        return self.source  # the CSV holds the test truth

    def read_annotations(self, path: Path) -> dict[str, list[Interval]]:
        """A CSV as test video id -> intervals; its classes must be this dataset's."""
        table = {}
        for video in read_video_csv(path):
            try:
                self.spec.class_id(video.label)
            except AnomalyError as e:
                raise AnomalyError(f"{path}:{video.lineno}: {e}") from None
            if video.split == "test":
                table[video.video_id] = video.intervals
        return table

    def annotation_key(self, video_id: str) -> str:
        return video_id

    def test_truth(self, root: Path, lists: Path | None, listed: list[Listed]) -> Truth:
        return lambda item: self._by_id[item.video_id].intervals if item.split == "test" else []

    def locate(self, index: FileIndex, item: Listed) -> Path | None:
        path = index.root / item.name
        return path if path.exists() else None
