"""Copying videos between stores: format conversion (export) and merging.

Both are the same operation — copy every complete video row-for-row in its stored dtype —
with different rules for the destination: export writes a new store (atomically, through a
temporary name), merge adds to an existing one after checking that the stores mix.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from anomalyclip.errors import AnomalyError
from anomalyclip.progress import bar
from anomalyclip.store import integrity
from anomalyclip.store.backend import (
    bounded_retries,
    is_url,
    remote_error,
    store_format,
    url_options,
)
from anomalyclip.store.meta import COMPATIBILITY_FIELDS, first_difference
from anomalyclip.store.store import FeatureStore, open_store

log = logging.getLogger(__name__)


class DamagedVideo(Exception):
    """A source video that ``verify`` would reject: args are (video id, reason)."""


def _copy_videos(
    src: FeatureStore, dst: FeatureStore, video_ids: list[str], desc: str,
    damaged: dict[str, str] | None = None,
) -> list[str]:  # fmt: skip
    """Copy videos row for row, each checked as ``verify`` checks it on the very rows read
    (a copy of a damaged video would otherwise get a new, valid checksum). A damaged video
    is recorded in ``damaged`` (id -> why) and skipped, or without it raises
    :class:`DamagedVideo`. Returns the ids copied."""
    copied = []
    for vid in bar(video_ids, desc=desc, unit="video", leave=False):
        key = src.key_for(vid)
        parts, problem = integrity.read_video(src, key)
        if problem and damaged is None:
            raise DamagedVideo(vid, problem)
        if problem:
            damaged[vid] = f"in {src.location}: {problem}"
            continue
        dst.write_video(src.load_record(key), parts["videos"], parts["frames"], parts["times"])
        copied.append(vid)
    return copied


def export_store(
    src_path: str | Path,
    dst_path: str | Path,
    overwrite: bool = False,
    storage_options: dict | None = None,
) -> int:
    """Write every complete video of ``src`` into a new store at ``dst`` (format by suffix).

    An existing destination, local or URL, is refused unless ``overwrite``. Local destinations
    are written under a temporary name and renamed at the end (the old store is only removed
    once the new one is complete), so an interrupted export never leaves something that looks
    like a finished store. A URL destination is written in place (object stores have no
    atomic rename): with ``overwrite`` the old store is removed first. Returns the number of
    videos copied.
    """
    dst = str(dst_path)
    if _exists(dst, storage_options) and not overwrite:
        raise AnomalyError(
            f"{dst}: already exists; remove it, choose another name or pass --overwrite"
        )
    if is_url(dst):
        tmp = dst
        if overwrite:
            _remove(dst, storage_options)
    else:
        tmp = _temporary_sibling(dst)
    try:
        count = _export(str(src_path), tmp, storage_options, store_format(dst))
    except BaseException:
        if tmp != dst:  # a failed export leaves nothing beside the destination
            _remove(tmp, None)
        raise
    if tmp != dst:
        old = None
        if Path(dst).exists():  # overwrite: move the old store aside, then drop it
            old = _temporary_sibling(dst, "old")
            os.replace(dst, old)
        os.replace(tmp, dst)
        if old is not None:
            _remove(old, None)
    log.debug("exported %d videos to %s", count, dst)
    return count


def _export(src_path: str, tmp: str, storage_options: dict | None, fmt: str) -> int:
    with open_store(src_path) as src:
        ids = src.video_ids()
        with open_store(tmp, "w", storage_options) as out:
            out.init(src.attrs)
            try:
                _copy_videos(src, out, ids, f"export -> {fmt}")
            except DamagedVideo as exc:
                vid, why = exc.args
                raise AnomalyError(
                    f"{src_path}: video {vid!r}: {why}; nothing exported (`anomaly store "
                    "verify` lists every damaged video)"
                ) from None
            for vid, failure in src.failures().items():
                out.record_failure(vid, failure.get("source", ""), failure.get("error", ""))
    return len(ids)


def _exists(location: str, storage_options: dict | None) -> bool:
    """Whether anything is stored at a local path or URL."""
    if not is_url(location):
        return Path(location).exists()
    fs, path = _url_fs(location, storage_options)
    try:
        return bool(fs.exists(path))
    except Exception as exc:
        reason = remote_error(exc)
        if reason:
            raise AnomalyError(f"{location}: {reason}") from exc
        raise


def _url_fs(location: str, storage_options: dict | None):
    import fsspec

    fs, path = fsspec.core.url_to_fs(location, **url_options(location, storage_options))
    bounded_retries(fs)
    return fs, path


def _remove(location: str, storage_options: dict | None) -> None:
    if is_url(location):
        fs, path = _url_fs(location, storage_options)
        if fs.exists(path):
            fs.rm(path, recursive=True)
    elif Path(location).is_dir():
        shutil.rmtree(location)
    elif Path(location).exists():
        Path(location).unlink()


def _temporary_sibling(path: str, kind: str = "partial") -> str:
    p = Path(path)
    tmp = str(p.with_name(f".{p.name}.{kind}{p.suffix}"))
    _remove(tmp, None)
    return tmp


@dataclass
class MergeReport:
    added: list[str] = field(default_factory=list)
    identical: list[str] = field(default_factory=list)
    conflicts: dict[str, str] = field(default_factory=dict)  # video id -> why
    damaged: dict[str, str] = field(default_factory=dict)  # video id -> why, not copied
    failures: list[str] = field(default_factory=list)  # failure records carried over


def merge_stores(dst_path: str | Path, sources: list[str | Path]) -> MergeReport:
    """Add the videos of ``sources`` to ``dst`` (created from the first source if absent).

    Stores mix only when dataset, backbone, preprocessing and sampling agree (the error names
    the first field that differs). A video already present with the same content checksum is
    kept once; a different copy is a conflict, reported and never overwritten. A source
    video that ``verify`` would reject is reported as damaged and not copied. A source's
    failure records come along for the videos ``dst`` has no complete copy of.
    """
    report = MergeReport()
    with open_store(dst_path, "a") as dst:
        for src_path in sources:
            with open_store(src_path) as src:
                if dst.meta.schema:
                    diff = first_difference(dst.attrs, src.attrs, COMPATIBILITY_FIELDS)
                    if diff:
                        raise AnomalyError(f"{src_path}: cannot merge into {dst_path}: {diff}")
                else:
                    dst.init(src.attrs)
                _merge_one(dst, src, report)
    return report


def _merge_one(dst: FeatureStore, src: FeatureStore, report: MergeReport) -> None:
    todo = []
    for vid in src.video_ids():
        if not dst.is_complete(vid):
            todo.append(vid)
            continue
        theirs, ours = src.record(vid), dst.record(vid)
        same_rows = theirs.sha256 == ours.sha256 or (
            theirs.num_frames == ours.num_frames
            and (src.features(vid).astype(dst.dtype) == dst.features(vid)).all()
        )
        if same_rows:
            report.identical.append(vid)
        else:
            report.conflicts[vid] = f"differs between {dst.location} and {src.location}"
    desc = f"merge {Path(src.location).name}"
    report.added += _copy_videos(src, dst, todo, desc, report.damaged)
    carried = set(dst.failures())
    for vid, failure in src.failures().items():
        if vid not in carried and not dst.is_complete(vid):
            dst.record_failure(vid, failure.get("source", ""), failure.get("error", ""))
            report.failures.append(vid)
