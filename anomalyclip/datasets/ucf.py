"""UCF-Crime (Sultani et al. 2018): official split lists and temporal test annotations.

Files (looked up in ``lists``, then in the dataset root, then anywhere below it):

- ``Anomaly_Train.txt`` / ``Anomaly_Test.txt``: one video per line, relative to the original
  layout (``Abuse/Abuse001_x264.mp4``, ``Training_Normal_Videos_Anomaly/Normal_Videos001_x264
  .mp4``, ``Testing_Normal_Videos_Anomaly/Normal_Videos_003_x264.mp4``). Downloads nest the
  files differently (``Anomaly-Videos-Part-1/Abuse/...``, ``Testing_Normal_Videos/...``), so a
  video is located by relative path first and by base name second.
- ``Temporal_Anomaly_Annotation_for_Testing_Videos.txt``: ``name class s1 e1 s2 e2`` with
  frame numbers, ``-1 -1`` for no second (or, for Normal videos, no) interval, columns
  separated by runs of spaces, frame numbers from 0. The file does not say whether an end is
  included; the AnomalyCLIP evaluation counts frame f as abnormal when ``s <= f <= e``, so
  ends are read as inclusive and stored half-open, ``[s, e + 1)``. The authors' ShanghaiTech
  file in the same format is read the same way.

The video id is the list entry without extension (``Abuse/Abuse028_x264``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from anomalyclip.datasets.base import DatasetAdapter, Listed, Truth
from anomalyclip.datasets.core import DatasetSpec, Interval
from anomalyclip.datasets.files import (
    find_list_file,
    find_split_lists,
    iter_fields,
    parse_pairs,
    read_split_lists,
    strip_video_extension,
)
from anomalyclip.errors import AnomalyError

UCF = DatasetSpec(
    name="ucf",
    title="UCF-Crime",
    classes=(
        "Abuse",
        "Arrest",
        "Arson",
        "Assault",
        "Burglary",
        "Explosion",
        "Fighting",
        "Normal",
        "RoadAccidents",
        "Robbery",
        "Shooting",
        "Shoplifting",
        "Stealing",
        "Vandalism",
    ),
    normal_id=7,
)

TRAIN_LIST = "Anomaly_Train.txt"
TEST_LIST = "Anomaly_Test.txt"
TEMPORAL_ANNOTATIONS = "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"

_CLASS_PREFIX = re.compile(r"^([A-Za-z]+?)_?\d")


@dataclass(frozen=True)
class TemporalAnnotation:
    """One annotated test video: its class and anomalous ``[start, end)`` intervals."""

    label: str
    intervals: list[Interval] = field(default_factory=list)
    lineno: int = 0


def read_ucf_temporal_annotations(
    path: Path, spec: DatasetSpec = UCF
) -> dict[str, TemporalAnnotation]:
    """``name class s1 e1 [s2 e2 ...]`` lines, keyed by the name without extension.

    The class may be several words (the authors' ShanghaiTech file uses this format too): it
    is every token between the name and the first frame number. Ends are inclusive in the file
    (``165 240`` is stored as ``(165, 241)``); ``-1 -1`` is no interval.
    """
    path = Path(path)
    out: dict[str, TemporalAnnotation] = {}
    for lineno, fields in iter_fields(path):
        if len(fields) < 4:
            raise AnomalyError(
                f"{path}:{lineno}: expected 'name class start end [start end ...]', "
                f"got {len(fields)} fields"
            )
        n_words = 1
        while 1 + n_words < len(fields) and not fields[1 + n_words].lstrip("-").isdigit():
            n_words += 1
        label_text = " ".join(fields[1 : 1 + n_words])
        numbers = fields[1 + n_words :]
        if not numbers:
            raise AnomalyError(f"{path}:{lineno}: no frame numbers after the class")
        try:
            label = spec.canonical(label_text)
        except AnomalyError as e:
            raise AnomalyError(f"{path}:{lineno}: {e}") from None
        intervals = parse_pairs(path, lineno, numbers, end_inclusive=True, allow_none=True)
        name = PurePosixPath(strip_video_extension(fields[0].replace("\\", "/"))).name
        if name in out:
            raise AnomalyError(
                f"{path}:{lineno}: duplicate video {name!r} (first on line {out[name].lineno})"
            )
        out[name] = TemporalAnnotation(label, intervals, lineno)
    return out


def class_from_path(relpath: str) -> str:
    """The class of a UCF-Crime video from its file name (``Abuse028_x264``) or folder."""
    pure = PurePosixPath(relpath.replace("\\", "/"))
    stem = strip_video_extension(pure.name)
    if stem.startswith("Normal"):
        return UCF.normal
    match = _CLASS_PREFIX.match(stem)
    if match and match.group(1) in UCF.classes:
        return match.group(1)
    for part in reversed(pure.parts[:-1]):
        if part in UCF.classes:
            return part
        if "normal" in part.casefold():
            return UCF.normal
    raise AnomalyError(
        f"cannot tell the UCF-Crime class of {relpath!r}: expected a name like "
        "'Abuse028_x264' or 'Normal_Videos_003_x264'"
    )


class UcfCrime(DatasetAdapter):
    """UCF-Crime: the official lists, classes from the names, the temporal annotations."""

    spec = UCF
    annotations = TEMPORAL_ANNOTATIONS

    def class_of(self, relpath: str, classes: Mapping[str, str] | None = None) -> str:
        return class_from_path(relpath)

    def list_videos(
        self, root: Path, lists: Path | None, found: Sequence[str], *, strict: bool = True
    ) -> list[Listed]:
        list_files = find_split_lists(root, lists, TRAIN_LIST, TEST_LIST)
        return [
            Listed(strip_video_extension(rel), class_from_path(rel), split, rel)
            for split, rel in read_split_lists(root, list_files)
        ]

    def read_annotations(self, path: Path) -> dict[str, list[Interval]]:
        return {k: a.intervals for k, a in read_ucf_temporal_annotations(path).items()}

    def test_truth(self, root: Path, lists: Path | None, listed: list[Listed]) -> Truth:
        """Every test video must be annotated, with the class its path says."""
        if not any(item.split == "test" for item in listed):
            return lambda item: []
        ann_file = find_list_file(TEMPORAL_ANNOTATIONS, root, lists)
        if ann_file is None:
            raise AnomalyError(
                f"{root}: {TEMPORAL_ANNOTATIONS} not found (needed for the test list)"
            )
        annotations = read_ucf_temporal_annotations(ann_file)

        def truth(item: Listed) -> list[Interval]:
            if item.split != "test":
                return []
            ann = annotations.get(self.annotation_key(item.video_id))
            if ann is None:
                raise AnomalyError(f"{ann_file}: no annotation for test video {item.name!r}")
            if ann.label != item.label:
                raise AnomalyError(
                    f"{ann_file}:{ann.lineno}: class {ann.label!r} disagrees with "
                    f"{item.label!r} from the path {item.name!r}"
                )
            return ann.intervals

        return truth
