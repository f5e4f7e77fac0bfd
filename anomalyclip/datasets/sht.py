"""ShanghaiTech Campus in the weakly supervised split of Zhong et al. 2019 (238 train / 199 test).

That split reshuffles the original one, so a video (``01_001`` or ``01_0014``) may be an
``.avi`` file (original training set) or a folder of frames (original test set); when both
exist the frame folder wins, since it is what the frame masks count. Files, looked up in
``lists``, then the root, then anywhere below the root:

- ``SH_Train.txt`` / ``SH_Test.txt``: one video per line; any folder or extension is ignored.
- ``test_frame_mask/<id>.npy``: a 1-D 0/1 array, one value per frame in sorted frame order,
  for every video of the original test set (loaded with ``allow_pickle=False``). A mask has
  no interval ends to interpret: its runs of 1 become half-open ``[first, last + 1)``
  intervals, the frames the mask marks and no other. (The authors' own ShanghaiTech
  ground truth, a ``name class s e ...`` file with inclusive ends, is read by
  :func:`anomalyclip.datasets.ucf.read_ucf_temporal_annotations`.)
- ``SH_Classes.txt`` (the project's own format, since the masks carry no class):
  ``<video id> <class name>`` per line, the class being the rest of the line so that
  ``throwing object`` needs no quoting (``throwing_object`` is accepted too). Videos not listed
  are normal; listing normal ones (``01_001 normal``) is allowed. It can be written from the
  AnomalyCLIP authors' ``path start end label`` lists with :func:`classes_from_authors_list`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from anomalyclip.datasets.base import DatasetAdapter, Listed, Truth
from anomalyclip.datasets.core import DatasetSpec, Interval, mask_to_intervals
from anomalyclip.datasets.files import (
    AuthorsEntry,
    FileIndex,
    find_list_file,
    find_path,
    find_split_lists,
    iter_fields,
    read_split_lists,
    video_name,
)
from anomalyclip.errors import AnomalyError

if TYPE_CHECKING:
    import numpy as np

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

TRAIN_LIST = "SH_Train.txt"
TEST_LIST = "SH_Test.txt"
CLASS_LIST = "SH_Classes.txt"
MASK_DIR = "test_frame_mask"


def read_frame_mask(path: Path) -> np.ndarray:
    """A per-frame anomaly mask as a boolean vector; pickles and non-0/1 values are refused."""
    import numpy as np

    path = Path(path)
    try:
        mask = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise AnomalyError(f"{path}: no such frame mask") from None
    except (ValueError, OSError, EOFError) as e:
        raise AnomalyError(
            f"{path}: not a plain .npy array (pickled data is refused): {e}".replace("\n", " ")
        ) from None
    if not isinstance(mask, np.ndarray):
        mask.close()
        raise AnomalyError(f"{path}: expected one .npy array, got an .npz archive")
    if mask.ndim != 1:
        raise AnomalyError(f"{path}: expected a 1-D per-frame mask, got shape {mask.shape}")
    if mask.dtype == bool:
        return mask
    if mask.dtype.kind not in "iuf" or not np.isin(mask, (0, 1)).all():
        raise AnomalyError(f"{path}: frame mask values must be 0 or 1 (dtype {mask.dtype})")
    return mask.astype(bool)


def read_sht_classes(path: Path) -> dict[str, str]:
    """``SH_Classes.txt`` as video id -> class name."""
    path = Path(path)
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for lineno, fields in iter_fields(path):
        if len(fields) < 2:
            raise AnomalyError(
                f"{path}:{lineno}: expected 'video_id class', got {len(fields)} field"
            )
        name = video_name(fields[0])
        try:
            label = SHT.canonical(" ".join(fields[1:]))
        except AnomalyError as e:
            raise AnomalyError(f"{path}:{lineno}: {e}") from None
        if name in out:
            raise AnomalyError(
                f"{path}:{lineno}: duplicate video {name!r} (first on line {first_line[name]})"
            )
        out[name] = label
        first_line[name] = lineno
    return out


def classes_from_authors_list(entries: list[AuthorsEntry]) -> dict[str, str]:
    """Video id -> class name from the authors' ``path start end label`` lists."""
    return {video_name(e.path): SHT.classes[e.label] for e in entries}


def class_from_path(relpath: str, classes: Mapping[str, str] | None = None) -> str:
    """ShanghaiTech names carry no class: it comes from ``classes`` (``SH_Classes.txt``)."""
    if classes is None:
        raise AnomalyError(
            f"the ShanghaiTech class of {relpath!r} is not in its name; pass the mapping read "
            f"from {CLASS_LIST} (read_sht_classes)"
        )
    return classes.get(video_name(relpath), SHT.normal)


def read_frame_masks(folder: Path) -> dict[str, list[Interval]]:
    """A ``test_frame_mask`` folder as video id -> anomalous ``[start, end)`` intervals."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AnomalyError(f"{folder}: ShanghaiTech ground truth is a folder of frame masks")
    return {f.stem: mask_to_intervals(read_frame_mask(f)) for f in sorted(folder.glob("*.npy"))}


class ShanghaiTech(DatasetAdapter):
    """ShanghaiTech: the split lists, ``SH_Classes.txt``, per-frame masks; a video may be a
    folder of frames."""

    spec = SHT
    annotations = MASK_DIR
    frame_folders = True
    ignored_folders = (MASK_DIR,)

    def class_of(self, relpath: str, classes: Mapping[str, str] | None = None) -> str:
        return class_from_path(relpath, classes)

    def list_videos(
        self, root: Path, lists: Path | None, found: Sequence[str], *, strict: bool = True
    ) -> list[Listed]:
        list_files = find_split_lists(root, lists, TRAIN_LIST, TEST_LIST)
        class_file = find_list_file(CLASS_LIST, root, lists)
        classes = read_sht_classes(class_file) if class_file else {}
        named = [(split, video_name(e)) for split, e in read_split_lists(root, list_files)]
        return [Listed(name, class_from_path(name, classes), split, name) for split, name in named]

    def find_annotations(
        self, folders: Sequence[Path | None], below: Path | None = None
    ) -> Path | None:
        return find_path(MASK_DIR, folders, below, folder=True)

    def read_annotations(self, path: Path) -> dict[str, list[Interval]]:
        return read_frame_masks(path)

    def test_truth(self, root: Path, lists: Path | None, listed: list[Listed]) -> Truth:
        """A video's mask, where there is one, must agree with its class (training videos
        too); an anomalous test video must have one."""
        mask_dir = self.find_annotations([lists, root], below=root)
        class_file = find_list_file(CLASS_LIST, root, lists) or CLASS_LIST

        def truth(item: Listed) -> list[Interval]:
            name, label = item.video_id, item.label
            mask_path = mask_dir / f"{name}.npy" if mask_dir else None
            mask = read_frame_mask(mask_path) if mask_path and mask_path.is_file() else None
            if mask is not None and mask.any() and label == SHT.normal:
                raise AnomalyError(
                    f"{mask_path}: video {name!r} has anomalous frames but no anomaly class "
                    f"in {class_file}"
                )
            if mask is not None and not mask.any() and label != SHT.normal:
                raise AnomalyError(
                    f"{mask_path}: video {name!r} is of class {label!r} but its mask has "
                    "no anomalous frame"
                )
            if item.split == "test" and label != SHT.normal and mask is None:
                raise AnomalyError(f"{root}: no {MASK_DIR}/{name}.npy for anomalous test video")
            if item.split == "test" and mask is not None:
                return mask_to_intervals(mask)
            return []

        return truth

    def locate(self, index: FileIndex, item: Listed) -> Path | None:
        """The frame folder when there are both (it is what the masks count)."""
        candidates = index.by_stem.get(item.name, [])
        folders = [p for p in candidates if p.is_dir()]
        return index.unique(folders or candidates, repr(item.name))
