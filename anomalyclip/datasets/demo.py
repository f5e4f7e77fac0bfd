"""The built-in demo dataset: small synthetic surveillance clips generated on the machine.

It exists so that the whole pipeline (extract, train, evaluate) runs on a fresh machine with no
download. The generator writes, and this module reads, exactly this layout::

    <root>/
      train/<Class>/<id>.mp4       training videos (weak labels: the folder is the class)
      test/<Class>/<id>.mp4        test videos
      annotations.txt              exact frame-level truth

- ``<Class>`` is one of ``Explosion``, ``Intruder``, ``Normal``, ``Tampering`` (ids 0..3 in
  that order; Normal is id 2). ``<id>`` is any file name without spaces, e.g.
  ``explosion_003``; the other extensions in ``registry.VIDEO_EXTENSIONS`` are accepted too.
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

import logging
from collections import Counter
from pathlib import Path, PurePosixPath

from anomalyclip.datasets.registry import (
    DEMO,
    SPLITS,
    FileIndex,
    Interval,
    VideoEntry,
    check_relative,
    iter_fields,
    parse_pairs,
    strip_video_extension,
)
from anomalyclip.errors import AnomalyError

log = logging.getLogger(__name__)

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
        if "/" in video_id:  # a bare file name is accepted too, and resolved by discover()
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


def discover(root: Path, lists: Path | None = None) -> list[VideoEntry]:
    """Every demo video under ``root`` (``lists`` may hold ``annotations.txt`` instead)."""
    root = Path(root)
    index = FileIndex(root)
    rels = sorted(rel for rel in index.by_rel if PurePosixPath(rel).parts[0] in SPLITS)
    if not rels:
        raise AnomalyError(f"{root}: no demo videos under train/ or test/")
    ann_file = next(
        (Path(d) / ANNOTATIONS for d in (lists, root) if d and (Path(d) / ANNOTATIONS).is_file()),
        None,
    )
    annotations = read_demo_annotations(ann_file) if ann_file else {}

    stem_counts = Counter(PurePosixPath(strip_video_extension(rel)).name for rel in rels)
    entries = []
    for rel in rels:
        video_id = strip_video_extension(rel)
        label = class_from_path(rel)
        split = PurePosixPath(rel).parts[0]
        intervals: list[Interval] = []
        if split == "test":
            stem = PurePosixPath(video_id).name
            if stem in annotations and stem_counts[stem] > 1:
                raise AnomalyError(f"{ann_file}: bare name {stem!r} matches several videos")
            intervals = annotations.get(video_id, annotations.get(stem, []))
            if label != DEMO.normal and not intervals:
                where = ann_file or root / ANNOTATIONS
                raise AnomalyError(f"{where}: no anomalous interval for test video {video_id!r}")
        entries.append(VideoEntry(video_id, index.by_rel[rel], label, split, intervals))
    return entries
