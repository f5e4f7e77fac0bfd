"""Dataset specs, the video record every loader returns, and the shared list-file machinery.

Every dataset fixes its class list once, here: a class id is a position in that tuple, and the
same ids are used by the store, the model's prompts and the metrics, so the order is part of
the contract (it follows the AnomalyCLIP authors' label files). Intervals are half-open
``[start, end)`` in decoded frame numbers everywhere inside the package; each parser converts
its file's own convention once, at the border.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from anomalyclip.errors import AnomalyError

Interval = tuple[int, int]

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mkv", ".mov", ".webm", ".mpg", ".mpeg", ".m4v", ".wmv", ".flv"}
    # camera and recorder exports, which FFmpeg recognises by their content
    | {".h264", ".264", ".h265", ".265", ".hevc", ".ts", ".mts", ".m2ts", ".m2t", ".3gp"}
    | {".3g2", ".asf", ".vob", ".dav", ".mjpeg", ".mjpg", ".ogv", ".dv", ".mxf", ".f4v"}
    | {".nut", ".y4m", ".ivf", ".rm", ".rmvb", ".divx", ".xvid", ".m1v", ".m2v", ".m4s"}
)
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
SPLITS = ("train", "test")


def _normalise(label: str) -> str:
    return label.replace("_", " ").casefold().strip()


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's identity: its classes in id order and which one is Normal."""

    name: str
    title: str
    classes: tuple[str, ...]
    normal_id: int

    @property
    def normal(self) -> str:
        return self.classes[self.normal_id]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def anomaly_classes(self) -> tuple[str, ...]:
        return tuple(c for i, c in enumerate(self.classes) if i != self.normal_id)

    def class_id(self, label: str) -> int:
        """Id of a class name; case, underscores and spaces are forgiven ("car accident")."""
        if label in self.classes:
            return self.classes.index(label)
        wanted = _normalise(label)
        for i, name in enumerate(self.classes):
            if _normalise(name) == wanted:
                return i
        valid = ", ".join(self.classes)
        raise AnomalyError(f"unknown {self.title} class {label!r}; valid classes: {valid}")

    def canonical(self, label: str) -> str:
        """The registry's spelling of a class name."""
        return self.classes[self.class_id(label)]


@dataclass
class VideoEntry:
    """One video of a dataset, as found on disk.

    ``video_id`` is the dataset-relative path without extension (the store key); ``path`` is a
    video file or a folder of frames; ``intervals`` are the anomalous ``[start, end)`` frame
    ranges of a test video (empty for normal and for training videos: training is weakly
    supervised and must never see them).
    """

    video_id: str
    path: Path
    label: str
    split: str
    intervals: list[Interval] = field(default_factory=list)


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
XD = DatasetSpec(
    name="xd",
    title="XD-Violence",
    classes=("Abuse", "Car_accident", "Explosion", "Fighting", "Normal", "Riot", "Shooting"),
    normal_id=4,
)
SHT = DatasetSpec(
    name="sht",
    title="ShanghaiTech",
    classes=(
        "car",
        "chasing",
        "circuit",
        "fall",
        "fighting",
        "hurdle",
        "jumping",
        "monocycle",
        "normal",
        "push",
        "robbery",
        "running",
        "skateboard",
        "step",
        "stoop",
        "throwing object",
        "vaudeville",
        "vehicle",
    ),
    normal_id=8,
)
DEMO = DatasetSpec(
    name="demo",
    title="demo",
    classes=("Explosion", "Intruder", "Normal", "Tampering"),
    normal_id=2,
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (UCF, XD, SHT, DEMO)}


def get_dataset(name: str | DatasetSpec) -> DatasetSpec:
    """The registered spec called ``name`` (a spec is passed through)."""
    if isinstance(name, DatasetSpec):
        return name
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(DATASETS)
        raise AnomalyError(f"unknown dataset {name!r}; known datasets: {known}") from None


# --------------------------------------------------------------------------- intervals


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint, non-empty intervals covering the same frames."""
    merged: list[list[int]] = []
    for start, end in sorted((int(s), int(e)) for s, e in intervals if e > s):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def frame_labels(intervals: Sequence[Interval], frames: np.ndarray) -> np.ndarray:
    """Boolean anomaly label of each row whose decoded frame number is ``frames[i]``.

    Works for any sampling (every frame, a stride, an fps) because it looks up frame numbers,
    not row positions.
    """
    frames = np.asarray(frames, dtype=np.int64)
    merged = merge_intervals(intervals)
    if not merged:
        return np.zeros(frames.shape, dtype=bool)
    bounds = np.asarray(merged, dtype=np.int64)  # (K, 2), sorted and disjoint
    k = np.searchsorted(bounds[:, 0], frames, side="right") - 1  # last interval starting <= f
    return (k >= 0) & (frames < bounds[np.maximum(k, 0), 1])


def mask_to_intervals(mask: np.ndarray) -> list[Interval]:
    """Runs of True in a per-frame mask, as ``[start, end)`` intervals."""
    m = np.asarray(mask, dtype=bool).astype(np.int8)
    edges = np.diff(np.concatenate(([0], m, [0])))  # +1 where a run starts, -1 past its end
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def intervals_to_mask(intervals: Sequence[Interval], num_frames: int) -> np.ndarray:
    """Per-frame boolean mask of length ``num_frames``."""
    return frame_labels(intervals, np.arange(num_frames))


# --------------------------------------------------------------------------- line parsing


def iter_fields(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-split fields) of every non-blank line of a text file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AnomalyError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise AnomalyError(f"{path}: not a UTF-8 text file ({e.reason})") from None
    except OSError as e:
        raise AnomalyError(f"{path}: cannot read ({e.strerror})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if fields:
            yield lineno, fields


def parse_int(path: Path, lineno: int, token: str, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise AnomalyError(f"{path}:{lineno}: {what} {token!r} is not an integer") from None


def parse_pairs(
    path: Path, lineno: int, tokens: Sequence[str], *, end_inclusive: bool, allow_none: bool
) -> list[Interval]:
    """``s1 e1 s2 e2 ...`` to half-open intervals; ``-1 -1`` (when allowed) means no interval."""
    if len(tokens) % 2:
        raise AnomalyError(
            f"{path}:{lineno}: expected start/end pairs, got an odd number ({len(tokens)}) "
            "of frame numbers"
        )
    intervals = []
    for i in range(0, len(tokens), 2):
        start = parse_int(path, lineno, tokens[i], "start frame")
        end = parse_int(path, lineno, tokens[i + 1], "end frame")
        if allow_none and start == -1 and end == -1:
            continue
        if start < 0 or end < 0:
            raise AnomalyError(
                f"{path}:{lineno}: negative frame number in interval {start} {end} "
                "(only '-1 -1' means no interval)"
            )
        if start > end:
            raise AnomalyError(f"{path}:{lineno}: interval start {start} > end {end}")
        intervals.append((start, end + 1 if end_inclusive else end))
    return intervals


def check_relative(path: Path, lineno: int, rel: str) -> str:
    """A list entry as a clean POSIX relative path; absolute paths and ``..`` are refused."""
    rel = rel.replace("\\", "/")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or (pure.parts and ":" in pure.parts[0]):
        raise AnomalyError(f"{path}:{lineno}: {rel!r} is not a path relative to the dataset")
    return str(pure)


def strip_video_extension(name: str) -> str:
    """Drop a known video extension only: XD-Violence names contain dots of their own."""
    stem, dot, ext = name.rpartition(".")
    return stem if dot and f".{ext.lower()}" in VIDEO_EXTENSIONS else name


def read_video_list(path: Path) -> list[str]:
    """An official split list (``Abuse/Abuse001_x264.mp4`` per line) as relative paths."""
    path = Path(path)
    seen: dict[str, int] = {}
    entries = []
    for lineno, fields in iter_fields(path):
        if len(fields) != 1:
            raise AnomalyError(
                f"{path}:{lineno}: expected one video path, got {len(fields)} fields"
            )
        rel = check_relative(path, lineno, fields[0])
        if rel in seen:
            raise AnomalyError(
                f"{path}:{lineno}: duplicate video {rel!r} (first on line {seen[rel]})"
            )
        seen[rel] = lineno
        entries.append(rel)
    return entries


@dataclass(frozen=True)
class AuthorsEntry:
    """One line of the AnomalyCLIP authors' lists: ``path first_frame last_frame label [...]``.

    ``first_frame``/``last_frame`` delimit the video itself (inclusive, so a 1412-frame video
    reads ``0 1411``), not its anomaly; labels are class ids, the first one the video's class.
    """

    path: str
    first_frame: int
    last_frame: int
    labels: tuple[int, ...]

    @property
    def label(self) -> int:
        return self.labels[0]

    @property
    def num_frames(self) -> int:
        return self.last_frame - self.first_frame + 1


def read_authors_list(path: Path, spec: DatasetSpec | str | None = None) -> list[AuthorsEntry]:
    """The ``path start end label`` lists that AnomalyCLIP and feature releases ship.

    With ``spec`` the label ids are checked against its class list.
    """
    path = Path(path)
    spec = get_dataset(spec) if spec is not None else None
    seen: dict[str, int] = {}
    entries = []
    for lineno, fields in iter_fields(path):
        if len(fields) < 4:
            raise AnomalyError(
                f"{path}:{lineno}: expected 'path start end label', got {len(fields)} fields"
            )
        rel = check_relative(path, lineno, fields[0])
        first = parse_int(path, lineno, fields[1], "start frame")
        last = parse_int(path, lineno, fields[2], "end frame")
        if first < 0 or first > last:
            raise AnomalyError(f"{path}:{lineno}: bad frame range {first}..{last}")
        labels = tuple(parse_int(path, lineno, tok, "class id") for tok in fields[3:])
        for label in labels:
            if label < 0 or (spec is not None and label >= spec.num_classes):
                bound = f"0..{spec.num_classes - 1} for {spec.title}" if spec else "0 or more"
                raise AnomalyError(f"{path}:{lineno}: class id {label} out of range ({bound})")
        if rel in seen:
            raise AnomalyError(
                f"{path}:{lineno}: duplicate video {rel!r} (first on line {seen[rel]})"
            )
        seen[rel] = lineno
        entries.append(AuthorsEntry(rel, first, last, labels))
    return entries


# --------------------------------------------------------------------------- finding files


def find_list_file(name: str, root: Path, lists: Path | None) -> Path | None:
    """``name`` in ``lists``, else directly in ``root``, else anywhere below ``root``."""
    for folder in (lists, root):
        if folder is not None and (Path(folder) / name).is_file():
            return Path(folder) / name
    found = sorted(p for p in Path(root).rglob(name) if p.is_file())
    return found[0] if found else None


def find_split_lists(
    root: Path, lists: Path | None, train_name: str, test_name: str, *, required: bool = True
) -> dict[str, Path | None]:
    """The train and test list files of a dataset ({"train": path or None, "test": ...}).

    With ``required``, finding neither is an error naming where they were looked for.
    """
    found = {
        split: find_list_file(name, root, lists)
        for split, name in (("train", train_name), ("test", test_name))
    }
    if required and not any(found.values()):
        where = f"{lists} or {root}" if lists else str(root)
        raise AnomalyError(f"{where}: neither {train_name} nor {test_name} found")
    return found


class FileIndex:
    """Every video file (and, on request, frame folder) below a root, by path and by name.

    Official lists name videos relative to an original layout (``Abuse/Abuse001_x264.mp4``)
    while downloads nest them differently (``Anomaly-Videos-Part-1/Abuse/...``), so a video is
    located by its relative path, then by a path ending in it, then by its unique base name.
    """

    def __init__(self, root: Path, frame_folders: bool = False):
        self.root = Path(root)
        if not self.root.is_dir():
            raise AnomalyError(f"{self.root}: no such dataset folder")
        self.by_rel: dict[str, Path] = {}
        self.by_name: dict[str, list[Path]] = defaultdict(list)  # file name or folder name
        self.by_stem: dict[str, list[Path]] = defaultdict(list)  # name without extension
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames.sort()
            folder = Path(dirpath)
            has_images = False
            for name in sorted(filenames):
                ext = os.path.splitext(name)[1].lower()
                if ext in VIDEO_EXTENSIONS:
                    self._add(folder / name, name, strip_video_extension(name))
                elif ext in IMAGE_EXTENSIONS:
                    has_images = True
            if frame_folders and has_images and folder != self.root:
                self._add(folder, folder.name, folder.name)

    def _add(self, path: Path, name: str, stem: str) -> None:
        self.by_rel[path.relative_to(self.root).as_posix()] = path
        self.by_name[name].append(path)
        self.by_stem[stem].append(path)

    def __len__(self) -> int:
        return len(self.by_rel)

    def unique(self, candidates: list[Path], what: str) -> Path | None:
        if len(candidates) > 1:
            shown = ", ".join(str(p) for p in candidates[:3])
            raise AnomalyError(f"{self.root}: {what} is ambiguous, it matches {shown}")
        return candidates[0] if candidates else None

    def locate(self, rel: str) -> Path | None:
        """The file for a list entry, or None when it is not there."""
        if rel in self.by_rel:
            return self.by_rel[rel]
        if (self.root / rel).is_file():  # named explicitly: a video whatever its suffix
            return self.root / rel
        candidates = self.by_name.get(PurePosixPath(rel).name, [])
        suffixed = [
            p for p in candidates if p.relative_to(self.root).as_posix().endswith("/" + rel)
        ]
        return self.unique(suffixed or candidates, repr(rel))

    def locate_stem(self, stem: str) -> Path | None:
        """The file or frame folder whose name without extension is ``stem``."""
        return self.unique(self.by_stem.get(stem, []), repr(stem))
