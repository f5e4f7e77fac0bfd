"""The built-in demo dataset: small synthetic surveillance clips generated on the machine.

It exists so that the whole pipeline (extract, train, evaluate) runs on a fresh machine with no
download. The generator writes, and this module reads, exactly this layout::

    <root>/
      train/<Class>/<id>.mp4       training videos (weak labels: the folder is the class)
      test/<Class>/<id>.mp4        test videos
      annotations.txt              exact frame-level truth

- ``<Class>`` is one of ``Explosion``, ``Intruder``, ``Normal``, ``Tampering`` (ids 0..3 in
  that order; Normal is id 2). ``<id>`` is any file name without spaces, e.g.
  ``explosion_003``; the other extensions in ``inputs.VIDEO_EXTENSIONS`` are accepted too.
- ``annotations.txt``: one line per video, ``video_id s1 e1 [s2 e2 ...]``, where ``video_id``
  is the path relative to the root without extension (``test/Explosion/explosion_003``) and
  each ``[s, e)`` is an anomalous span of decoded frame numbers, end *exclusive*, counting
  from 0. A line with no pairs (``test/Normal/normal_001``) states that the video has no
  anomalous frame. A bare ``<id>`` instead of the relative path is accepted when no other
  video has that file name. Every anomalous test video must have a line with at least one pair;
  normal test videos may be omitted; lines for training videos are allowed and ignored
  (training is weakly supervised).

The video id of each entry is its relative path without extension.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

from anomalyclip.datasets.base import DatasetAdapter, Listed, Truth
from anomalyclip.datasets.core import SPLITS, DatasetSpec, Interval
from anomalyclip.datasets.files import (
    check_relative,
    find_path,
    iter_fields,
    parse_pairs,
    strip_video_extension,
)
from anomalyclip.errors import AnomalyError

DEMO = DatasetSpec(
    name="demo",
    title="demo",
    classes=("Explosion", "Intruder", "Normal", "Tampering"),
    normal_id=2,
)

ANNOTATIONS = "annotations.txt"


def read_demo_annotations(path: Path) -> dict[str, list[Interval]]:
    """``annotations.txt`` as video id -> anomalous ``[start, end)`` intervals.

    This file's ends are exclusive (the generator writes them so): ``10 20`` is frames 10 to
    19, stored as they are; unlike UCF-Crime's and XD-Violence's files, no ``+ 1``.
    """
    path = Path(path)
    out: dict[str, list[Interval]] = {}
    first_line: dict[str, int] = {}
    for lineno, fields in iter_fields(path):
        video_id = strip_video_extension(check_relative(path, lineno, fields[0]))
        label = None
        if "/" in video_id:  # a bare file name is accepted too, resolved in Demo.test_truth
            try:
                label = class_from_path(video_id)
            except AnomalyError as e:
                raise AnomalyError(f"{path}:{lineno}: {e}") from None
        intervals = parse_pairs(path, lineno, fields[1:], end_inclusive=False, allow_none=False)
        if label == DEMO.normal and intervals:
            raise AnomalyError(
                f"{path}:{lineno}: normal video {video_id!r} has anomalous intervals"
            )
        if video_id in out:
            raise AnomalyError(
                f"{path}:{lineno}: duplicate video {video_id!r} "
                f"(first on line {first_line[video_id]})"
            )
        out[video_id] = intervals
        first_line[video_id] = lineno
    return out


def class_from_path(relpath: str) -> str:
    """``<split>/<Class>/<id>``: the class is the folder holding the file."""
    parts = PurePosixPath(relpath.replace("\\", "/")).parts
    if len(parts) < 3 or parts[-3] not in SPLITS:
        raise AnomalyError(f"demo video {relpath!r} is not laid out as '<train|test>/<Class>/<id>'")
    return DEMO.canonical(parts[-2])


class Demo(DatasetAdapter):
    """The generated demo dataset: ``<split>/<Class>/<id>`` and an exact ``annotations.txt``."""

    spec = DEMO
    annotations = ANNOTATIONS

    def class_of(self, relpath: str, classes: Mapping[str, str] | None = None) -> str:
        return class_from_path(relpath)

    def split_of(self, relpath: str) -> str | None:
        top = PurePosixPath(relpath.replace("\\", "/")).parts[:1]
        return top[0] if top and top[0] in SPLITS else None

    def list_videos(
        self, root: Path, lists: Path | None, found: Sequence[str], *, strict: bool = True
    ) -> list[Listed]:
        rels = [rel for rel in found if self.split_of(rel)]
        if strict and not rels:
            raise AnomalyError(f"{root}: no demo videos under train/ or test/")
        return [
            Listed(strip_video_extension(rel), class_from_path(rel), self.split_of(rel), rel)
            for rel in rels
        ]

    def read_annotations(self, path: Path) -> dict[str, list[Interval]]:
        return read_demo_annotations(path)

    def annotation_key(self, video_id: str) -> str:
        return video_id

    def test_truth(self, root: Path, lists: Path | None, listed: list[Listed]) -> Truth:
        """``annotations.txt`` beside the videos (or in ``lists``); every anomalous test video
        must have an interval; a bare name must name one video only."""
        ann_file = find_path(ANNOTATIONS, [lists, root])
        annotations = read_demo_annotations(ann_file) if ann_file else {}
        stem_counts = Counter(PurePosixPath(item.video_id).name for item in listed)

        def truth(item: Listed) -> list[Interval]:
            if item.split != "test":
                return []
            stem = PurePosixPath(item.video_id).name
            if stem in annotations and stem_counts[stem] > 1:
                raise AnomalyError(f"{ann_file}: bare name {stem!r} matches several videos")
            intervals = annotations.get(item.video_id, annotations.get(stem, []))
            if item.label != DEMO.normal and not intervals:
                where = ann_file or root / ANNOTATIONS
                raise AnomalyError(
                    f"{where}: no anomalous interval for test video {item.video_id!r}"
                )
            return intervals

        return truth
