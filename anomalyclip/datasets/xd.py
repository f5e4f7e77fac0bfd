"""XD-Violence (Wu et al. 2020): labels from file names, test ``annotations.txt``.

- The labels are in the name: ``<source>_label_<codes>.mp4`` with codes joined by ``-`` and
  padded with ``0`` (``label_A``, ``label_B2-0-0``, ``label_B1-B2-0``, ``label_G-B2-B6``);
  A is Normal, B1 Fighting, B2 Shooting, B4 Riot, B5 Abuse, B6 Car_accident, G Explosion. The
  first code is the video's class. Names contain dots and ``#``, so only a known video
  extension is ever stripped; the video id is the file name without it.
- Split: from optional lists ``XD_Train.txt`` / ``XD_Test.txt`` (one video name per line, any
  folder or extension ignored); without them, from the folders: a video below a folder whose
  name starts with "test" is a test video, every other one a training video (the release puts
  training videos in ``1-1004``, ``1005-2004``, ... and test videos in a test folder).
- ``annotations.txt``: ``name s1 e1 [s2 e2 ...]`` for each anomalous test video (a few names
  carry ``.mp4``), frame numbers from 0. The file does not say whether an end is included;
  the AnomalyCLIP evaluation counts frame f as abnormal when ``s <= f <= e``, so ends are read
  as inclusive here too and stored half-open, ``[s, e + 1)``. (Some older evaluation scripts
  for this dataset slice ``gt[s:e]`` and so drop each interval's last frame.)
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath

from anomalyclip.datasets.registry import (
    XD,
    FileIndex,
    Interval,
    VideoEntry,
    find_list_file,
    find_split_lists,
    iter_fields,
    parse_pairs,
    read_video_list,
    strip_video_extension,
)
from anomalyclip.errors import AnomalyError

log = logging.getLogger(__name__)

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


def video_name(entry: str) -> str:
    """The bare video name of a path, list entry or annotation name."""
    return strip_video_extension(PurePosixPath(entry.replace("\\", "/")).name)


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


def _split_from_folders(relpath: str) -> str:
    folders = PurePosixPath(relpath).parts[:-1]
    return "test" if any(f.casefold().startswith("test") for f in folders) else "train"


def discover(
    root: Path, lists: Path | None = None, *, allow_missing: bool = False
) -> list[VideoEntry]:
    """Every XD-Violence video under ``root``, with class, split and test intervals."""
    root = Path(root)
    index = FileIndex(root)
    if not len(index):
        raise AnomalyError(f"{root}: no video files found")

    list_files = find_split_lists(root, lists, TRAIN_LIST, TEST_LIST, required=False)
    if any(list_files.values()):
        wanted = [
            (split, video_name(entry))
            for split, list_file in list_files.items()
            if list_file is not None
            for entry in read_video_list(list_file)
        ]
    else:
        wanted = [(_split_from_folders(rel), video_name(rel)) for rel in sorted(index.by_rel)]

    ann_file = find_list_file(ANNOTATIONS, root, lists)
    annotations = read_xd_annotations(ann_file) if ann_file else {}
    if ann_file is None and any(split == "test" for split, _ in wanted):
        raise AnomalyError(f"{root}: {ANNOTATIONS} not found (needed for the test videos)")

    entries: list[VideoEntry] = []
    missing: list[str] = []
    for split, name in wanted:
        path = index.locate_stem(name)
        if path is None:
            missing.append(name)
            continue
        label = class_from_path(name)
        intervals: list[Interval] = []
        if split == "test":
            intervals = annotations.get(name, [])
            if label != XD.normal and not intervals:
                log.warning("%s: anomalous test video %r has no annotated interval", ann_file, name)
        entries.append(VideoEntry(name, path, label, split, intervals))
    if missing:
        message = f"{root}: {len(missing)} listed videos not found, e.g. {missing[0]!r}"
        if not allow_missing:
            raise AnomalyError(message)
        log.warning(message)
    return entries
