"""``anomaly store import-npy``: a release of per-video ``.npy`` features into a feature store.

Papers and follow-up projects publish their CLIP features as one float32 ``.npy`` per video,
so people can train without extracting. Reading those files knows no dataset
(:mod:`anomalyclip.store.npy`: layouts, crops, no pickle); what each file is comes from the
dataset's adapter, and this module puts the two together:

- Videos, labels and splits: from the dataset's list files (``--lists``, also searched for in
  the features folder) through its adapter, which for XD-Violence and the demo may read them
  off the files found instead; or from the AnomalyCLIP authors' ``path first_frame
  last_frame label [label ...]`` lists, whose split is in their file name
  (``Anomaly_Train_Abnormal.txt``, ``Anomaly_Test.txt``) or given as ``test=FILE``.
- Test ground truth: the dataset's own file (UCF-Crime temporal annotations, XD-Violence
  ``annotations.txt``, ShanghaiTech ``test_frame_mask/``, a custom dataset's CSV) or, failing
  that, the authors' ``Temporal_Anomaly_Annotation_for_Testing_Videos.txt`` (UCF-Crime's
  format, for every dataset).

Each video's fingerprint is a SHA-256 of its source bytes (and of the crop choice), so
re-running skips what is done and redoes what changed. A bad file is recorded as a failure
with its reason; the rest goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

import numpy as np

from anomalyclip.datasets import DatasetAdapter, Interval, get_adapter, read_authors_list
from anomalyclip.datasets.core import SPLITS
from anomalyclip.datasets.files import MissingLists, find_path, strip_video_extension
from anomalyclip.datasets.ucf import read_ucf_temporal_annotations
from anomalyclip.errors import AnomalyError
from anomalyclip.progress import bar
from anomalyclip.store import DEFAULT_DIM, FeatureStore, VideoRecord, open_store, provenance
from anomalyclip.store.npy import FeatureFiles, NpyIndex, features_of, read_sources

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "openai/clip-vit-base-patch16"
# The authors' ground-truth file, in UCF-Crime's `name class s1 e1 ...` format for every dataset.
AUTHORS_TEMPORAL = "Temporal_Anomaly_Annotation_for_Testing_Videos.txt"

# Test intervals of a video id; None: the ground truth does not name it.
GroundTruth = Callable[[str], list[Interval] | None]


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


def _ground_truth(adapter: DatasetAdapter, folders: list[Path | None]) -> GroundTruth | None:
    """Test intervals by video id, from the first source found in ``folders``."""
    path = adapter.find_annotations(folders)
    if path is not None:
        table = adapter.read_annotations(path)
        return lambda video_id: table.get(adapter.annotation_key(video_id))
    path = find_path(AUTHORS_TEMPORAL, folders)
    if path is None:
        return None
    annotations = read_ucf_temporal_annotations(path, adapter.spec)

    def authors(video_id: str) -> list[Interval] | None:
        found = annotations.get(PurePosixPath(video_id).name)
        return found.intervals if found is not None else None

    return authors


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
    adapter: DatasetAdapter, lists: list[str | Path], gt_dirs: list[Path | None]
) -> list[PlannedVideo]:
    """Videos of the AnomalyCLIP authors' ``path first last label`` lists."""
    spec = adapter.spec
    planned: list[PlannedVideo] = []
    seen: dict[str, Path] = {}
    gt = None
    for arg in lists:
        split, path = _split_of_list(str(arg))
        if split == "test" and gt is None:
            gt = _ground_truth(adapter, [*gt_dirs, path.parent])
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
    _attach_ground_truth(adapter, planned, gt)
    return planned


def plan_from_official_lists(
    adapter: DatasetAdapter, npy_root: Path, lists: Path | None, index: NpyIndex
) -> list[PlannedVideo]:
    """Videos of the dataset's own lists (XD-Violence and demo: of the files found)."""
    try:
        listed = adapter.list_videos(npy_root, lists, sorted(index.groups), strict=False)
    except MissingLists as e:
        raise AnomalyError(f"{e} (give --lists DIR or --authors-list FILE)") from None
    except AnomalyError as e:
        if "expected one video path" in str(e):
            raise AnomalyError(
                f"{e} (a 'path start end label' list is the authors' format: pass it with "
                "--authors-list)"
            ) from None
        raise
    planned = [PlannedVideo(item.video_id, item.label, item.split) for item in listed]
    seen: dict[str, str] = {}
    for video in planned:
        if video.video_id in seen:
            raise AnomalyError(f"{lists or npy_root}: video {video.video_id!r} is listed twice")
        seen[video.video_id] = video.split
    tests = any(v.split == "test" for v in planned)
    gt = _ground_truth(adapter, [lists, npy_root]) if tests else None
    if gt is None and any(v.split == "test" and v.label != adapter.spec.normal for v in planned):
        raise AnomalyError(
            f"{lists or npy_root}: no ground truth file for the test videos "
            f"(the dataset's annotation file or {AUTHORS_TEMPORAL})"
        )
    _attach_ground_truth(adapter, planned, gt)
    return planned


def _attach_ground_truth(
    adapter: DatasetAdapter, planned: list[PlannedVideo], gt: GroundTruth | None
) -> None:
    """Intervals of the test videos; training videos never get any (weak supervision)."""
    unannotated = []
    for video in planned:
        if video.split != "test" or gt is None:
            continue
        intervals = gt(video.video_id)
        if intervals is None and video.label != adapter.spec.normal:
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


@dataclass
class NpyImportConfig:
    """How a release is read and stored: ``anomaly store import-npy``'s options.

    Labels, splits and test intervals come from ``lists`` (the official list files; also
    searched for in the features folder) or from ``authors_lists``. Row ``i`` of a video is
    frame ``first_frame + i * stride`` (``first_frame`` is 0 unless an authors' list says
    otherwise); with ``fps`` its time is that frame over ``fps``, otherwise NaN.
    ``dtype="float32"`` keeps float32 sources bit-exact.
    """

    lists: str | Path | None = None
    authors_lists: list[str | Path] | None = None
    dtype: str = "float16"
    ncrops: int = 1
    crop: int | str = 0  # a crop index, or "mean"
    backbone: str = DEFAULT_BACKBONE
    dim: int | None = None  # None: the store's, else 512
    fps: float | None = None
    stride: int = 1
    preprocessing: dict | None = None  # the store's record of how the frames were made

    def checked(self) -> NpyImportConfig:
        """This config with ``lists`` a Path and ``crop`` an index or ``mean``; a one-line
        error for a missing list folder or a value out of range."""
        lists = Path(self.lists) if self.lists is not None else None
        if lists is not None and not lists.is_dir():
            raise AnomalyError(f"{lists}: no such list folder")
        if self.ncrops < 1:
            raise AnomalyError(f"--ncrops must be at least 1, not {self.ncrops}")
        crop = self.crop
        if crop != "mean":
            crop = int(crop)
            if crop < 0 or (self.ncrops > 1 and crop >= self.ncrops):
                raise AnomalyError(f"--crop {crop} out of range for --ncrops {self.ncrops}")
        if self.stride < 1:
            raise AnomalyError(f"--stride must be at least 1, not {self.stride}")
        if self.fps is not None and not self.fps > 0:
            raise AnomalyError(f"--fps must be positive, not {self.fps}")
        return replace(self, lists=lists, crop=crop)


def import_npy(
    npy_dir: str | Path,
    dataset: str,
    out: str | Path,
    cfg: NpyImportConfig | None = None,
    *,
    progress: bool = False,
) -> ImportSummary:
    """Bring a release of per-video ``.npy`` features into the store at ``out``, as ``cfg``
    says (:class:`NpyImportConfig`). Re-running skips videos whose source bytes are
    unchanged."""
    adapter = get_adapter(dataset)
    npy_dir = Path(npy_dir)
    cfg = (cfg or NpyImportConfig()).checked()

    index = NpyIndex(npy_dir, adapter.ignored_folders)
    if cfg.authors_lists:
        planned = plan_from_authors_lists(adapter, list(cfg.authors_lists), [cfg.lists, npy_dir])
    else:
        planned = plan_from_official_lists(adapter, npy_dir, cfg.lists, index)

    summary = ImportSummary()
    with open_store(out, "a") as st:
        existing_dim = st.meta.dim if st.meta.is_store else None
        cfg = replace(cfg, dim=cfg.dim or existing_dim or DEFAULT_DIM)
        st.init(_store_provenance(adapter.spec, cfg))
        work = _find_files(planned, index, st, summary)
        for video, files in bar(work, desc="import-npy", unit="video", enabled=progress):
            _import_video(st, video, files, npy_dir, cfg, summary)
    _warn_left_out(summary, npy_dir)
    return summary


def _store_provenance(spec, cfg: NpyImportConfig) -> dict:  # noqa: ANN001 - a DatasetSpec
    """The root metadata of a store of imported features (``cfg.dim`` resolved)."""
    return provenance(
        dataset=spec.name,
        classes=spec.classes,
        backbone={
            "model": cfg.backbone,
            "dim": int(cfg.dim),
            "output": "image_embeds (as published)",
            "source": "imported .npy",
        },
        preprocessing=cfg.preprocessing or {"source": "unknown (imported)"},
        sampling={"mode": "all", "value": None}
        if cfg.stride == 1
        else {"mode": "stride", "value": int(cfg.stride)},
        dtype=cfg.dtype,
    )


def _find_files(
    planned: list[PlannedVideo], index: NpyIndex, st: FeatureStore, summary: ImportSummary
) -> list[tuple[PlannedVideo, FeatureFiles]]:
    """Each listed video with its files; the listed ones without files and the files in no
    list go to ``summary`` (an ambiguous match is recorded as the video's failure)."""
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
    return work


def _import_video(
    st: FeatureStore,
    video: PlannedVideo,
    files: FeatureFiles,
    npy_dir: Path,
    cfg: NpyImportConfig,
    summary: ImportSummary,
) -> None:
    """One video's rows into the store, unless the store has them from the same bytes; a bad
    file is recorded as its failure."""
    source = next(iter(files.files.values()))
    rel_source = source.relative_to(npy_dir).as_posix()
    try:
        sources, fingerprint = read_sources(files, cfg.crop, cfg.ncrops)
        if st.is_complete(video.video_id, fingerprint):
            summary.skipped.append(video.video_id)
            return
        per_crop = None not in files.files
        feats = features_of(sources, per_crop, cfg.crop, cfg.ncrops, cfg.dim)  # (T, D)
        st.check_rows(str(sources[0][0]), feats)  # e.g. beyond float16's range
    except AnomalyError as e:
        summary.failed[video.video_id] = str(e)
        st.record_failure(video.video_id, rel_source, str(e))
        return
    if video.listed_frames is not None and feats.shape[0] * cfg.stride != video.listed_frames:
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
    frames = video.first_frame + np.arange(feats.shape[0], dtype=np.int64) * cfg.stride
    record = VideoRecord(
        video_id=video.video_id,
        source=rel_source,
        label=video.label,
        split=video.split,
        fps=float(cfg.fps or 0.0),
        source_size=sum(len(data) for _, data in sources),
        fingerprint=fingerprint,
        intervals=[[int(s), int(e)] for s, e in video.intervals],
    )
    st.write_video(record, feats, frames)
    summary.imported.append(video.video_id)
    summary.frames += int(feats.shape[0])


def _warn_left_out(summary: ImportSummary, npy_dir: Path) -> None:
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
