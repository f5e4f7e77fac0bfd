"""XD-Violence (Wu et al. 2020): labels from file names, test ``annotations.txt``.

- The labels are in the name: ``<source>_label_<codes>.mp4`` with codes joined by ``-`` and
  padded with ``0`` (``label_A``, ``label_B2-0-0``, ``label_B1-B2-0``, ``label_G-B2-B6``);
  A is Normal, B1 Fighting, B2 Shooting, B4 Riot, B5 Abuse, B6 Car_accident, G Explosion. The
  first code is the video's class. Names contain dots and ``#``, so only a known video
  extension is ever stripped; the video id is the file name without it.
- Split: from optional lists ``XD_Train.txt`` / ``XD_Test.txt`` (one video name per line, any
  folder or extension ignored); without them, from the folders (:func:`split_from_folders`,
  the one rule for videos and for ``.npy`` feature releases alike): a video below a folder
  with a word starting with "test" in its name is a test video, every other one a training
  video. The release puts training videos in ``1-1004``, ``1005-2004``, ... and the test
  videos in a test folder; feature releases name theirs ``XDTestClipFeatures``, ``RGBTest``.
- ``annotations.txt``: ``name s1 e1 [s2 e2 ...]`` for each anomalous test video (a few names
  carry ``.mp4``), frame numbers from 0. The file does not say whether an end is included;
  the AnomalyCLIP evaluation counts frame f as abnormal when ``s <= f <= e``, so ends are read
  as inclusive here too and stored half-open, ``[s, e + 1)``. (Some older evaluation scripts
  for this dataset slice ``gt[s:e]`` and so drop each interval's last frame.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from anomalyclip.datasets.base import DatasetAdapter, Listed
from anomalyclip.datasets.core import DatasetSpec, Interval
from anomalyclip.datasets.files import (
    FileIndex,
    find_split_lists,
    iter_fields,
    parse_pairs,
    read_split_lists,
    video_name,
)
from anomalyclip.errors import AnomalyError

XD = DatasetSpec(
    name="xd",
    title="XD-Violence",
    classes=("Abuse", "Car_accident", "Explosion", "Fighting", "Normal", "Riot", "Shooting"),
    normal_id=4,
    primary_metric="ap",
)

ANNOTATIONS = "annotations.txt"
TRAIN_LIST = "XD_Train.txt"
TEST_LIST = "XD_Test.txt"

LABEL_CODES = {
    "A": "Normal",
    "B1": "Fighting",
    "B2": "Shooting",
    "B4": "Riot",
    "B5": "Abuse",
    "B6": "Car_accident",
    "G": "Explosion",
}
_LABEL = re.compile(r"_label_([A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)$")


def labels_from_name(name: str) -> list[str]:
    """Every class in a video's name, in order; the first is the video's class."""
    stem = video_name(name)
    match = _LABEL.search(stem)
    if match is None:
        raise AnomalyError(f"XD-Violence name {name!r} has no '_label_<codes>' suffix")
    codes = [code for code in match.group(1).split("-") if code != "0"]
    unknown = [code for code in codes if code not in LABEL_CODES]
    if unknown or not codes:
        valid = ", ".join(f"{k}={v}" for k, v in LABEL_CODES.items())
        raise AnomalyError(
            f"XD-Violence name {name!r} has unknown label code(s) {unknown or codes}; "
            f"valid codes: {valid}"
        )
    labels = [LABEL_CODES[code] for code in codes]
    if "Normal" in labels and len(labels) > 1:
        raise AnomalyError(f"XD-Violence name {name!r} is labelled both normal and anomalous")
    return labels


def class_from_path(relpath: str) -> str:
    return labels_from_name(relpath)[0]


def read_xd_annotations(path: Path) -> dict[str, list[Interval]]:
    """``annotations.txt`` as video name -> anomalous ``[start, end)`` intervals.

    The file's ends are inclusive (``0 120`` is frames 0 to 120, stored as ``(0, 121)``).
    """
    path = Path(path)
    out: dict[str, list[Interval]] = {}
    first_line: dict[str, int] = {}
    for lineno, fields in iter_fields(path):
        if len(fields) < 3:
            raise AnomalyError(
                f"{path}:{lineno}: expected 'name start end [start end ...]', "
                f"got {len(fields)} fields"
            )
        name = video_name(fields[0])
        try:
            labels = labels_from_name(name)
        except AnomalyError as e:
            raise AnomalyError(f"{path}:{lineno}: {e}") from None
        if labels == ["Normal"]:
            raise AnomalyError(f"{path}:{lineno}: normal video {name!r} has anomalous intervals")
        intervals = parse_pairs(path, lineno, fields[1:], end_inclusive=True, allow_none=False)
        if name in out:
            raise AnomalyError(
                f"{path}:{lineno}: duplicate video {name!r} (first on line {first_line[name]})"
            )
        out[name] = intervals
        first_line[name] = lineno
    return out


# Words of a folder name: split at separators, digits and lower-to-upper case changes
# ("XDTestClipFeatures" -> XD, Test, Clip, Features; "test_videos" -> test, videos).
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")


def split_from_folders(relpath: str) -> str:
    """The split the folders say: test when one has a word starting with "test" in its name.

    ``Test/``, ``test_videos/``, ``XDTestClipFeatures/``, ``RGBTest/`` hold test videos;
    ``1-1004/``, ``XDTrainClipFeatures/`` and also ``latest/`` or ``contest/`` (where "test"
    is inside a word) hold training videos.
    """
    for folder in PurePosixPath(relpath.replace("\\", "/")).parts[:-1]:
        if any(word.casefold().startswith("test") for word in _WORDS.findall(folder)):
            return "test"
    return "train"


class XdViolence(DatasetAdapter):
    """XD-Violence: labels from the names, split from lists or folders, ``annotations.txt``."""

    spec = XD
    annotations = ANNOTATIONS

    def class_of(self, relpath: str, classes: Mapping[str, str] | None = None) -> str:
        return class_from_path(relpath)

    def split_of(self, relpath: str) -> str | None:
        return split_from_folders(relpath)

    def list_videos(
        self, root: Path, lists: Path | None, found: Sequence[str], *, strict: bool = True
    ) -> list[Listed]:
        if strict and not found:
            raise AnomalyError(f"{root}: no video files found")
        list_files = find_split_lists(root, lists, TRAIN_LIST, TEST_LIST, required=False)
        if any(list_files.values()):
            named = [(split, video_name(e)) for split, e in read_split_lists(root, list_files)]
        else:  # files with no label in their name are a mistake among videos, not among arrays
            named = [
                (split_from_folders(rel), video_name(rel))
                for rel in found
                if strict or "_label_" in rel
            ]
        return [Listed(name, class_from_path(name), split, name) for split, name in named]

    def read_annotations(self, path: Path) -> dict[str, list[Interval]]:
        return read_xd_annotations(path)

    def locate(self, index: FileIndex, item: Listed) -> Path | None:
        return index.locate_stem(item.name)
