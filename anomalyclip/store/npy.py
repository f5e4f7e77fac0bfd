"""Import published per-video ``.npy`` features into a feature store (``anomaly store import-npy``).

Papers and follow-up projects release their CLIP features as one float32 ``.npy`` per video,
so people can train without extracting. Those releases differ in three ways this module
absorbs:

- Layout. AnomalyCLIP reads ``<root>/<list path>.npy`` (``Abuse/Abuse028_x264.npy``); others
  are flat (``Abuse028_x264.npy``) or nested one level deeper (``UCFClipFeatures/Abuse/...``).
  A file is matched to a list entry by relative path, then by a path ending in it, then by its
  unique name.
- Crops. Either one file per crop with a ``__<k>`` suffix (VadCLIP: ``Abuse028_x264__0.npy`` to
  ``__9`` for UCF-Crime's ten crops, ``..._label_A__0.npy`` to ``__4`` for XD-Violence's five),
  or one ``(T * ncrops, D)`` array whose rows are time-major (row ``t * ncrops + k`` is crop
  ``k`` of step ``t``, the AnomalyCLIP loader's ``view(-1, ncrops, D)``). ``crop`` picks one
  crop or their mean. Feature-type tags before ``.npy`` (``_i3d``, ``_clip``...) are ignored.
- Labels. From the dataset's official list files (``--lists``), or from the AnomalyCLIP authors'
  ``path first_frame last_frame label [label ...]`` lists, whose split is in their file name
  (``Anomaly_Train_Abnormal.txt``, ``Anomaly_Test.txt``) or given as ``test=FILE``.

Test ground truth comes from the dataset's own file (UCF-Crime temporal annotations,
XD-Violence ``annotations.txt``, ShanghaiTech ``test_frame_mask/``) or, failing that, from the
authors' ``Temporal_Anomaly_Annotation_for_Testing_Videos.txt`` (same format for every dataset).

No pickle is ever loaded: files are read with ``allow_pickle=False``. Each video's fingerprint
is a SHA-256 of the source bytes (and of the crop choice), so re-running skips what is done
and redoes what changed. A bad file is recorded as a failure with its reason; the rest goes on.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from tqdm import tqdm

from anomalyclip.datasets import demo as demo_ds
from anomalyclip.datasets import get_dataset
from anomalyclip.datasets import sht as sht_ds
from anomalyclip.datasets import ucf as ucf_ds
from anomalyclip.datasets import xd as xd_ds
from anomalyclip.datasets.registry import (
    SPLITS,
    DatasetSpec,
    Interval,
    find_list_file,
    mask_to_intervals,
    read_authors_list,
    read_video_list,
    strip_video_extension,
)
from anomalyclip.errors import AnomalyError
from anomalyclip.store.store import VideoRecord, open_store, provenance

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "openai/clip-vit-base-patch16"
DEFAULT_DIM = 512
# The authors' ground-truth file, in UCF-Crime's `name class s1 e1 ...` format for every dataset.
AUTHORS_TEMPORAL = "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"
_CROP_SUFFIX = re.compile(r"__(\d+)$")
_FEATURE_TAGS = ("_i3d", "_clip", "_videomae", "_languagebind")


# --------------------------------------------------------------------------- reading one file


def load_npy_features(data: bytes | Path, name: str | Path, dim: int = DEFAULT_DIM) -> np.ndarray:
    """A ``(T, dim)`` float array from ``.npy`` bytes (or a path); anything else is refused.

    ``name`` is the file named in errors. Pickled (object) arrays, ``.npz`` archives, non-2-D
    or wrongly sized arrays, non-float dtypes, empty arrays and non-finite rows all raise
    :class:`AnomalyError` with a one-line reason.
    """
    try:
        raw = Path(data).read_bytes() if isinstance(data, Path) else data
        _check_npy_size(raw, name)
        arr = np.load(io.BytesIO(raw), allow_pickle=False)
    except MemoryError:
        raise AnomalyError(f"{name}: too large to load into memory") from None
    except ValueError as e:
        if "allow_pickle" in str(e) or "pickle" in str(e).lower():
            raise AnomalyError(
                f"{name}: pickled .npy (object array) refused; only plain numeric arrays are "
                "read (allow_pickle=False)"
            ) from None
        raise AnomalyError(f"{name}: unreadable .npy ({_one_line(e)})") from None
    except (OSError, EOFError) as e:
        raise AnomalyError(f"{name}: unreadable .npy ({_one_line(e)})") from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        arr.close()
        raise AnomalyError(f"{name}: expected one .npy array, got an .npz archive")
    if arr.ndim != 2:
        raise AnomalyError(f"{name}: expected a 2-D (frames, {dim}) array, got shape {arr.shape}")
    if arr.shape[1] != dim:
        raise AnomalyError(f"{name}: rows have width {arr.shape[1]}, expected {dim}")
    if arr.dtype.kind != "f":
        raise AnomalyError(f"{name}: expected floating-point features, got dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise AnomalyError(f"{name}: empty array (0 rows)")
    bad = ~np.isfinite(arr).all(axis=1)  # (T,)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise AnomalyError(f"{name}: {int(bad.sum())} row(s) with NaN or inf (first: row {first})")
    return arr


def _check_npy_size(raw: bytes, name: str | Path) -> None:
    """Refuse a ``.npy`` whose header promises more data than the file holds, before numpy
    allocates what the header says (a forged shape of 10^9 rows would be 1.9 TiB)."""
    buf = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(buf)
        read_header = {
            (1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0,
        }.get(version)
        if read_header is None:
            return  # another format version: np.load decides
        shape, _, dtype = read_header(buf)
    except ValueError:
        return  # not a .npy header: np.load reports it
    if dtype.hasobject:
        return  # pickled: refused by np.load(allow_pickle=False)
    needed = int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = len(raw) - buf.tell()
    if needed > held:
        raise AnomalyError(
            f"{name}: unreadable .npy (header says {tuple(shape)} {dtype} = {needed:,} bytes, "
            f"the file holds {held:,}: truncated or forged)"
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def select_crop(features: np.ndarray, ncrops: int, crop: int | str, name: str) -> np.ndarray:
    """One crop (or the mean of all) of a time-major ``(T * ncrops, D)`` array -> ``(T, D)``."""
    if ncrops == 1:
        return features
    if features.shape[0] % ncrops:
        raise AnomalyError(
            f"{name}: {features.shape[0]} rows are not a multiple of --ncrops {ncrops}"
        )
    crops = features.reshape(-1, ncrops, features.shape[1])  # (T, ncrops, D)
    if crop == "mean":
        return crops.mean(axis=1, dtype=np.float64).astype(features.dtype)
    return np.ascontiguousarray(crops[:, int(crop)])


# --------------------------------------------------------------------------- finding files


@dataclass
class FeatureFiles:
    """The ``.npy`` file(s) of one video: a single file, or one per crop index."""

    base: str  # relative path without crop suffix, feature tag and ``.npy``
    files: dict[int | None, Path] = field(default_factory=dict)  # crop index (None: no suffix)


class NpyIndex:
    """Every feature ``.npy`` below a folder, grouped per video, by relative path and by name.

    ShanghaiTech's frame masks are ``.npy`` files too; anything inside ``test_frame_mask/`` is
    skipped.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise AnomalyError(f"{self.root}: no such folder of .npy features")
        self.groups: dict[str, FeatureFiles] = {}
        self.by_name: dict[str, list[str]] = defaultdict(list)
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if d != sht_ds.MASK_DIR)
            for fname in sorted(filenames):
                if not fname.lower().endswith(".npy"):
                    continue
                path = Path(dirpath) / fname
                rel = path.relative_to(self.root).as_posix()[: -len(".npy")]
                base, crop = split_feature_name(rel)
                group = self.groups.get(base)
                if group is None:
                    group = self.groups[base] = FeatureFiles(base)
                    self.by_name[PurePosixPath(base).name].append(base)
                if crop in group.files:
                    raise AnomalyError(
                        f"{path}: same video and crop as {group.files[crop]} (feature tags differ)"
                    )
                group.files[crop] = path

    def __len__(self) -> int:
        return len(self.groups)

    def find(self, video_id: str) -> FeatureFiles | None:
        """The files of a list entry: same relative path, a path ending in it, or its name."""
        if video_id in self.groups:
            return self.groups[video_id]
        name = PurePosixPath(video_id).name
        candidates = self.by_name.get(name, [])
        suffixed = [b for b in candidates if b.endswith("/" + video_id)]
        chosen = suffixed or candidates
        if len(chosen) > 1:
            shown = ", ".join(chosen[:3])
            raise AnomalyError(f"{self.root}: video {video_id!r} matches several files: {shown}")
        return self.groups[chosen[0]] if chosen else None


def split_feature_name(rel: str) -> tuple[str, int | None]:
    """``Abuse/Abuse028_x264_i3d__3`` -> (``Abuse/Abuse028_x264``, 3)."""
    crop = None
    match = _CROP_SUFFIX.search(rel)
    if match:
        crop = int(match.group(1))
        rel = rel[: match.start()]
    for tag in _FEATURE_TAGS:
        if rel.endswith(tag) and len(PurePosixPath(rel).name) > len(tag):
            rel = rel[: -len(tag)]
            break
    return rel, crop


# --------------------------------------------------------------------------- what to import


@dataclass
class PlannedVideo:
    """A listed video: its id, class, split, test intervals and the frame number of row 0."""

    video_id: str
    label: str
    split: str
    intervals: list[Interval] = field(default_factory=list)
    first_frame: int = 0
    listed_frames: int | None = None  # from the authors' lists, to catch crop mix-ups


def _ground_truth(
    spec: DatasetSpec, folders: list[Path | None]
) -> Callable[[str], list[Interval] | None] | None:
    """Test intervals by video name (None: not annotated), from the first source found."""
    dirs = [Path(f) for f in folders if f is not None]

    def find(name: str) -> Path | None:
        return next((d / name for d in dirs if (d / name).is_file()), None)

    if spec.name == "sht":
        mask_dir = next((d / sht_ds.MASK_DIR for d in dirs if (d / sht_ds.MASK_DIR).is_dir()), None)
        if mask_dir is not None:

            def from_mask(name: str) -> list[Interval] | None:
                path = mask_dir / f"{name}.npy"
                return mask_to_intervals(sht_ds.read_frame_mask(path)) if path.is_file() else None

            return from_mask
    official = {
        "ucf": ucf_ds.TEMPORAL_ANNOTATIONS,
        "xd": xd_ds.ANNOTATIONS,
        "demo": demo_ds.ANNOTATIONS,
    }
    path = find(official[spec.name]) if spec.name in official else None
    if path is not None and spec.name == "xd":
        table = xd_ds.read_xd_annotations(path)
        return lambda name: table.get(name)
    if path is not None and spec.name == "demo":
        table = demo_ds.read_demo_annotations(path)
        return lambda name: table.get(name)
    path = path or find(AUTHORS_TEMPORAL)
    if path is None:
        return None
    annotations = ucf_ds.read_ucf_temporal_annotations(path, spec)
    return lambda name: annotations[name].intervals if name in annotations else None


def _split_of_list(arg: str) -> tuple[str, Path]:
    """``test=FILE`` or ``FILE`` whose name says train or test."""
    split, sep, rest = arg.partition("=")
    if sep and split in SPLITS:
        return split, Path(rest)
    path = Path(arg)
    name = path.name.casefold()
    found = [s for s in SPLITS if s in name]
    if len(found) != 1:
        raise AnomalyError(
            f"{path}: cannot tell the split from the file name; "
            f"pass it as train={arg} or test={arg}"
        )
    return found[0], path


def plan_from_authors_lists(
    spec: DatasetSpec, lists: list[str | Path], gt_dirs: list[Path | None]
) -> list[PlannedVideo]:
    """Videos of the AnomalyCLIP authors' ``path first last label`` lists."""
    planned: list[PlannedVideo] = []
    seen: dict[str, Path] = {}
    gt = None
    for arg in lists:
        split, path = _split_of_list(str(arg))
        if split == "test" and gt is None:
            gt = _ground_truth(spec, [*gt_dirs, path.parent])
            if gt is None:
                raise AnomalyError(
                    f"{path}: test list given but no ground truth found ({AUTHORS_TEMPORAL} "
                    "or the dataset's own annotation file, in --lists or beside the list)"
                )
        for entry in read_authors_list(path, spec):
            video_id = strip_video_extension(entry.path)
            if video_id in seen:
                raise AnomalyError(f"{path}: video {video_id!r} is also listed in {seen[video_id]}")
            seen[video_id] = path
            planned.append(
                PlannedVideo(
                    video_id,
                    spec.classes[entry.label],
                    split,
                    first_frame=entry.first_frame,
                    listed_frames=entry.num_frames,
                )
            )
    _attach_ground_truth(spec, planned, gt)
    return planned


def _read_official_list(path: Path) -> list[str]:
    try:
        return read_video_list(path)
    except AnomalyError as e:
        if "expected one video path" in str(e):
            raise AnomalyError(
                f"{e} (a 'path start end label' list is the authors' format: pass it with "
                "--authors-list)"
            ) from None
        raise


def plan_from_official_lists(
    spec: DatasetSpec, npy_root: Path, lists: Path | None, index: NpyIndex
) -> list[PlannedVideo]:
    """Videos of the dataset's official split lists (XD-Violence and demo: of the files found)."""
    planned: list[PlannedVideo] = []
    if spec.name == "demo":
        for base in sorted(index.groups):
            parts = PurePosixPath(base).parts
            if parts and parts[0] in SPLITS:
                planned.append(PlannedVideo(base, demo_ds.class_from_path(base), parts[0]))
    elif spec.name == "xd":
        list_files = {
            split: find_list_file(name, npy_root, lists)
            for split, name in (("train", xd_ds.TRAIN_LIST), ("test", xd_ds.TEST_LIST))
        }
        if any(list_files.values()):
            pairs = [
                (split, xd_ds.video_name(entry))
                for split, path in list_files.items()
                if path is not None
                for entry in _read_official_list(path)
            ]
        else:  # the folders say it (XDTestClipFeatures/, test/); files with no label are left out
            pairs = [
                (_xd_split_from_folders(base), PurePosixPath(base).name)
                for base in sorted(index.groups)
                if "_label_" in base
            ]
        planned = [PlannedVideo(name, xd_ds.class_from_path(name), split) for split, name in pairs]
    else:
        module = {"ucf": ucf_ds, "sht": sht_ds}[spec.name]
        list_files = {
            split: find_list_file(name, npy_root, lists)
            for split, name in (("train", module.TRAIN_LIST), ("test", module.TEST_LIST))
        }
        if not any(list_files.values()):
            where = f"{lists} or {npy_root}" if lists else str(npy_root)
            raise AnomalyError(
                f"{where}: neither {module.TRAIN_LIST} nor {module.TEST_LIST} found "
                "(give --lists DIR or --authors-list FILE)"
            )
        classes = None
        if spec.name == "sht":
            class_file = find_list_file(sht_ds.CLASS_LIST, npy_root, lists)
            classes = sht_ds.read_sht_classes(class_file) if class_file else {}
        for split, path in list_files.items():
            for rel in _read_official_list(path) if path else []:
                if spec.name == "ucf":
                    planned.append(
                        PlannedVideo(strip_video_extension(rel), ucf_ds.class_from_path(rel), split)
                    )
                else:
                    name = sht_ds.video_name(rel)
                    planned.append(PlannedVideo(name, sht_ds.class_from_path(name, classes), split))
    seen: dict[str, str] = {}
    for video in planned:
        if video.video_id in seen:
            raise AnomalyError(f"{lists or npy_root}: video {video.video_id!r} is listed twice")
        seen[video.video_id] = video.split
    gt = _ground_truth(spec, [lists, npy_root]) if any(v.split == "test" for v in planned) else None
    if gt is None and any(v.split == "test" and v.label != spec.normal for v in planned):
        raise AnomalyError(
            f"{lists or npy_root}: no ground truth file for the test videos "
            f"(the dataset's annotation file or {AUTHORS_TEMPORAL})"
        )
    _attach_ground_truth(spec, planned, gt)
    return planned


def _xd_split_from_folders(base: str) -> str:
    folders = PurePosixPath(base).parts[:-1]
    return "test" if any("test" in f.casefold() for f in folders) else "train"


def _attach_ground_truth(
    spec: DatasetSpec,
    planned: list[PlannedVideo],
    gt: Callable[[str], list[Interval] | None] | None,
) -> None:
    """Intervals of the test videos; training videos never get any (weak supervision)."""
    unannotated = []
    for video in planned:
        if video.split != "test" or gt is None:
            continue
        key = video.video_id if spec.name == "demo" else PurePosixPath(video.video_id).name
        intervals = gt(key)
        if intervals is None and video.label != spec.normal:
            unannotated.append(video.video_id)
        video.intervals = list(intervals or [])
    if unannotated:
        log.warning(
            "%d anomalous test videos have no annotated interval, e.g. %r",
            len(unannotated),
            unannotated[0],
        )


# --------------------------------------------------------------------------- the import


@dataclass
class ImportSummary:
    imported: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already complete, same source bytes
    failed: dict[str, str] = field(default_factory=dict)  # video id -> reason
    missing: list[str] = field(default_factory=list)  # listed, no .npy found
    unlisted: list[str] = field(default_factory=list)  # .npy found, in no list
    frames: int = 0


def _read_sources(
    files: FeatureFiles, crop: int | str, ncrops: int
) -> tuple[list[tuple[Path, bytes]], str]:
    """The bytes of the files this video is made of, and the fingerprint they give."""
    per_crop = sorted(k for k in files.files if k is not None)
    if per_crop and None in files.files:
        raise AnomalyError(
            f"{files.files[None]}: the same video also has per-crop files (__{per_crop[0]}.npy ...)"
        )
    if per_crop:
        if ncrops > 1 and len(per_crop) != ncrops:
            raise AnomalyError(
                f"{files.files[per_crop[0]]}: {len(per_crop)} crop files, --ncrops says {ncrops}"
            )
        if crop == "mean":
            paths = [files.files[k] for k in per_crop]
        elif int(crop) in files.files:
            paths = [files.files[int(crop)]]
        else:
            raise AnomalyError(f"{files.files[per_crop[0]]}: no crop {crop} (crops {per_crop})")
        choice = f"crop={crop}"
    else:
        paths = [files.files[None]]
        choice = f"ncrops={ncrops};crop={crop}" if ncrops > 1 else ""
    out, digests = [], []
    for path in paths:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise AnomalyError(f"{path}: cannot read ({e.strerror})") from None
        digests.append(hashlib.sha256(data).hexdigest())
        out.append((path, data))
    # one file: the SHA-256 of its bytes; several: of their digests, in crop order
    digest = (
        digests[0] if len(digests) == 1 else hashlib.sha256("".join(digests).encode()).hexdigest()
    )
    return out, f"npy-sha256:{digest}" + (f";{choice}" if choice else "")


def _features_of(
    sources: list[tuple[Path, bytes]], per_crop: bool, crop: int | str, ncrops: int, dim: int
) -> np.ndarray:
    arrays = [load_npy_features(data, path, dim) for path, data in sources]
    if per_crop:
        if len({a.shape for a in arrays}) > 1:
            shapes = ", ".join(
                f"{p.name} {a.shape}" for (p, _), a in zip(sources, arrays, strict=True)
            )
            raise AnomalyError(f"{sources[0][0].parent}: crop files differ in shape ({shapes})")
        if len(arrays) == 1:
            return arrays[0]
        return np.stack(arrays, axis=1).mean(axis=1, dtype=np.float64).astype(arrays[0].dtype)
    return select_crop(arrays[0], ncrops, crop, str(sources[0][0]))


def import_npy(
    npy_dir: str | Path,
    dataset: str,
    out: str | Path,
    *,
    lists: str | Path | None = None,
    authors_lists: list[str | Path] | None = None,
    dtype: str = "float16",
    ncrops: int = 1,
    crop: int | str = 0,
    backbone: str = DEFAULT_BACKBONE,
    dim: int | None = None,
    fps: float | None = None,
    stride: int = 1,
    preprocessing: dict | None = None,
    progress: bool = False,
) -> ImportSummary:
    """Bring a release of per-video ``.npy`` features into the store at ``out``.

    Labels, splits and test intervals come from ``lists`` (the official list files; also
    searched for in ``npy_dir``) or from ``authors_lists``. Row ``i`` of a video is frame
    ``first_frame + i * stride`` (``first_frame`` is 0 unless an authors' list says otherwise);
    with ``fps`` its time is that frame over ``fps``, otherwise NaN. ``dtype="float32"`` keeps
    float32 sources bit-exact. Re-running skips videos whose source bytes are unchanged.
    """
    spec = get_dataset(dataset)
    npy_dir = Path(npy_dir)
    lists = Path(lists) if lists is not None else None
    if lists is not None and not lists.is_dir():
        raise AnomalyError(f"{lists}: no such list folder")
    if ncrops < 1:
        raise AnomalyError(f"--ncrops must be at least 1, not {ncrops}")
    if crop != "mean":
        crop = int(crop)
        if crop < 0 or (ncrops > 1 and crop >= ncrops):
            raise AnomalyError(f"--crop {crop} out of range for --ncrops {ncrops}")
    if stride < 1:
        raise AnomalyError(f"--stride must be at least 1, not {stride}")
    if fps is not None and not fps > 0:
        raise AnomalyError(f"--fps must be positive, not {fps}")

    index = NpyIndex(npy_dir)
    if authors_lists:
        planned = plan_from_authors_lists(spec, list(authors_lists), [lists, npy_dir])
    else:
        planned = plan_from_official_lists(spec, npy_dir, lists, index)

    summary = ImportSummary()
    with open_store(out, "a") as st:
        existing_dim = st.attrs.get("backbone", {}).get("dim") if st.attrs.get("schema") else None
        dim = dim or existing_dim or DEFAULT_DIM
        st.init(
            provenance(
                dataset=spec.name,
                backbone={
                    "model": backbone,
                    "dim": int(dim),
                    "output": "image_embeds (as published)",
                    "source": "imported .npy",
                },
                preprocessing=preprocessing or {"source": "unknown (imported)"},
                sampling={"mode": "all", "value": None}
                if stride == 1
                else {"mode": "stride", "value": int(stride)},
                dtype=dtype,
            )
        )
        used: set[str] = set()
        work = []
        for video in planned:
            try:
                files = index.find(video.video_id)
            except AnomalyError as e:
                summary.failed[video.video_id] = str(e)
                st.record_failure(video.video_id, "", str(e))
                continue
            if files is None:
                summary.missing.append(video.video_id)
                continue
            used.add(files.base)
            work.append((video, files))
        summary.unlisted = sorted(set(index.groups) - used)

        for video, files in tqdm(work, desc="import-npy", unit="video", disable=not progress):
            source = next(iter(files.files.values()))
            rel_source = source.relative_to(npy_dir).as_posix()
            try:
                sources, fingerprint = _read_sources(files, crop, ncrops)
                if st.is_complete(video.video_id, fingerprint):
                    summary.skipped.append(video.video_id)
                    continue
                per_crop = None not in files.files
                feats = _features_of(sources, per_crop, crop, ncrops, dim)  # (T, D)
                st.check_rows(str(sources[0][0]), feats)  # e.g. beyond float16's range
            except AnomalyError as e:
                summary.failed[video.video_id] = str(e)
                st.record_failure(video.video_id, rel_source, str(e))
                continue
            if video.listed_frames is not None and feats.shape[0] * stride != video.listed_frames:
                log.warning(
                    "%s: %d rows but the list says %d frames (wrong --ncrops or --stride?)",
                    rel_source,
                    feats.shape[0],
                    video.listed_frames,
                )
            rel_source = (
                sources[0][0].relative_to(npy_dir).as_posix()
                if len(sources) == 1
                else f"{files.base}__*.npy"
            )
            frames = video.first_frame + np.arange(feats.shape[0], dtype=np.int64) * stride
            record = VideoRecord(
                video_id=video.video_id,
                source=rel_source,
                label=video.label,
                split=video.split,
                fps=float(fps or 0.0),
                source_size=sum(len(data) for _, data in sources),
                fingerprint=fingerprint,
                intervals=[[int(s), int(e)] for s, e in video.intervals],
            )
            st.write_video(record, feats, frames)
            summary.imported.append(video.video_id)
            summary.frames += int(feats.shape[0])

    if summary.missing:
        log.warning(
            "%d listed videos have no .npy in %s, e.g. %r",
            len(summary.missing),
            npy_dir,
            summary.missing[0],
        )
    if summary.unlisted:
        log.warning(
            "%d .npy videos are in no list and were left out, e.g. %r",
            len(summary.unlisted),
            summary.unlisted[0],
        )
    return summary
