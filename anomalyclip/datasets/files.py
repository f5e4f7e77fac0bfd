"""Reading a dataset's files: whitespace-separated lines, split lists, and where files are.

Every parser names the file and line of a problem (``path:line: what``) and converts its
file's interval convention to half-open ``[start, end)`` once, here or in the dataset module.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from anomalyclip.datasets.core import SPLITS, DatasetSpec, Interval
from anomalyclip.errors import AnomalyError
from anomalyclip.inputs import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

MAX_FRAME = 2**31  # frame numbers from it up are refused (a year at 30 fps is under 2**30)


# --------------------------------------------------------------------------- line parsing


def read_text(path: Path) -> str:
    """A UTF-8 text file (a byte-order mark is dropped); a one-line error naming it if not."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise AnomalyError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise AnomalyError(f"{path}: not a UTF-8 text file ({e.reason})") from None
    except OSError as e:
        raise AnomalyError(f"{path}: cannot read ({e.strerror})") from None


def iter_fields(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-split fields) of every non-blank line of a text file."""
    text = read_text(path)
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
        if start == end and not end_inclusive:
            raise AnomalyError(f"{path}:{lineno}: interval {start} {end} is empty (end excluded)")
        if end >= MAX_FRAME:
            raise AnomalyError(f"{path}:{lineno}: frame number {end} is beyond any video")
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


def video_name(entry: str) -> str:
    """The bare video name of a path, list entry or annotation name (no folder, no extension)."""
    return strip_video_extension(PurePosixPath(entry.replace("\\", "/")).name)


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
    if isinstance(spec, str):  # a name: the registry sits above this module
        from anomalyclip.datasets.registry import get_dataset

        spec = get_dataset(spec)
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


class MissingLists(AnomalyError):
    """Neither split list of a dataset was found."""


def find_path(
    name: str, folders: Sequence[Path | None], below: Path | None = None, *, folder: bool = False
) -> Path | None:
    """``name`` in the first of ``folders`` that has it, else anywhere below ``below``.

    ``folder`` looks for a directory (ShanghaiTech's ``test_frame_mask``) instead of a file.
    """
    exists = Path.is_dir if folder else Path.is_file
    for where in folders:
        if where is not None and exists(Path(where) / name):
            return Path(where) / name
    if below is None:
        return None
    found = sorted(p for p in Path(below).rglob(name) if exists(p))
    return found[0] if found else None


def find_list_file(name: str, root: Path, lists: Path | None) -> Path | None:
    """``name`` in ``lists``, else directly in ``root``, else anywhere below ``root``."""
    return find_path(name, [lists, root], below=root)


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
        raise MissingLists(f"{where}: neither {train_name} nor {test_name} found")
    return found


def read_split_lists(root: Path, list_files: dict[str, Path | None]) -> list[tuple[str, str]]:
    """(split, entry) of every line of the found split lists; a missing one is an empty split."""
    listed = []
    for split in SPLITS:
        path = list_files.get(split)
        if path is None:
            log.warning("%s: no %s list, the %s split is empty", root, split, split)
            continue
        listed += [(split, entry) for entry in read_video_list(path)]
    return listed


def report_missing(root: Path, missing: list[str], allow_missing: bool) -> None:
    """Listed videos absent from disk: an error, or (``allow_missing``) a warning."""
    if not missing:
        return
    message = f"{root}: {len(missing)} listed videos not found, e.g. {missing[0]!r}"
    if not allow_missing:
        raise AnomalyError(message)
    log.warning(message)


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
