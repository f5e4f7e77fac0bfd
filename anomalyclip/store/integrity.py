"""Checking a store: what ``anomaly store verify`` reports, and what every read relies on.

A video is trusted when its record reads, it is flagged complete, its three arrays are all
there with the record's length (:func:`structure_problem`), its rows match their SHA-256, its
values are possible and its record fits the store (:func:`check_video`, what ``verify`` runs
on every video). Every read runs the part of these checks that is cheap before a video's
first rows are used (:func:`read_problem`): all but the checksum and the features' values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from anomalyclip.errors import one_line, shorten
from anomalyclip.names import normalise_label
from anomalyclip.store.meta import DTYPES, SCHEMA, StoreMeta, class_names, shown
from anomalyclip.store.records import (
    VideoRecord,
    content_sha256,
    intervals_problem,
    order_problem,
    values_problem,
)

if TYPE_CHECKING:
    from anomalyclip.store.store import FeatureStore

Classes = Sequence[str] | None  # class names in id order


def structure_problem(store: FeatureStore, key: str) -> str | None:
    """Why a video's record or arrays cannot be read as a whole (None: all there)."""
    for group in ("videos", "frames", "times"):  # before anything is read or followed
        problem = store.backend.storage_problem(f"{group}/{key}")
        if problem:
            return f"unusable array {group}/ ({problem}; refused)"
    try:
        rec = store.load_record(key)
    except ValueError as exc:
        return str(exc)
    if not rec.complete:
        return "incomplete (no completeness flag)"
    if store.key_for(rec.video_id) != key:
        return f"its record names another video ({shorten(rec.video_id, 80)!r})"
    for group in ("videos", "frames", "times"):
        try:
            state = store.backend.array_state(f"{group}/{key}")
        except Exception as exc:  # an unreadable array header is damage too
            return f"unreadable array {group}/ ({type(exc).__name__}: {one_line(exc)})"
        if state is None:
            return f"missing array {group}/"
        rows, missing = state
        if missing:
            return f"{missing} missing chunk(s) in {group}/"
        if rows != rec.num_frames:
            return f"has {rows} rows in {group}/, its record says {rec.num_frames}"
    return None


def check_video(store: FeatureStore, key: str, classes: Classes = None) -> str | None:
    """Why a stored video cannot be trusted, or None when its rows match its checksum."""
    return read_video(store, key, classes)[1]


def read_video(
    store: FeatureStore, key: str, classes: Classes = None
) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """A video's three arrays as stored (``videos``, ``frames``, ``times``; None when they
    cannot be read) and why they cannot be trusted (None: they match their record's SHA-256,
    their values are possible and the record fits the store). What ``verify`` checks, and
    what a copy checks on the very rows it writes. ``classes``: what labels are checked
    against when the store records none (:func:`store_classes`)."""
    problem = structure_problem(store, key)
    if problem:
        return None, problem
    rec = store.load_record(key)
    parts = {}
    for group in ("videos", "frames", "times"):
        try:
            parts[group] = store.backend.array(f"{group}/{key}")[...]
        except Exception as exc:  # codec / checksum / I/O errors all mean damage here
            return None, f"damaged data in {group}/ ({type(exc).__name__}: {one_line(exc)})"
    if content_sha256(parts["videos"], parts["frames"], parts["times"]) != rec.sha256:
        return parts, "checksum mismatch (content changed since it was written)"
    rows = parts["videos"]
    problem = values_problem(parts) or record_problem(store, rec, rows, parts["frames"], classes)
    return parts, problem


def read_problem(store: FeatureStore, key: str) -> str | None:
    """What a read checks before a video's first rows are used: :func:`structure_problem`,
    the rows' dtype and width (from the array's metadata), increasing frame numbers and
    times, intervals inside the video. Reads the frame numbers and times, not the features
    (1/64 of a float16 video's bytes). Split and label are checked on every listing of the
    complete videos (:func:`fields_problem`), which is how training and evaluation find them."""
    problem = structure_problem(store, key)
    if problem:
        return problem
    parts = {}
    for group in ("frames", "times"):
        try:
            parts[group] = store.backend.array(f"{group}/{key}")[...]
        except Exception as exc:  # codec / checksum / I/O errors all mean damage here
            return f"damaged data in {group}/ ({type(exc).__name__}: {one_line(exc)})"
    rows = store.backend.array(f"videos/{key}")
    rec = store.load_record(key)
    problem = order_problem(parts["frames"], parts["times"])
    return (
        problem or layout_problem(store, rows) or intervals_problem(rec.intervals, parts["frames"])
    )


def record_problem(
    store: FeatureStore, rec: VideoRecord, rows, frames: np.ndarray, classes: Classes = None
) -> str | None:
    """What in a readable record contradicts the store: the rows' width and dtype, split,
    label, intervals inside the video's ``frames``."""
    return (
        layout_problem(store, rows)
        or fields_problem(rec, store_classes(store, classes), store.meta.dataset)
        or intervals_problem(rec.intervals, frames)
    )


def layout_problem(store: FeatureStore, rows) -> str | None:
    """Rows (the array, or only its metadata) of another shape or dtype than the store's."""
    meta = store.meta  # compared only where valid: root_problem reports the rest
    if len(rows.shape) != 2:
        return f"rows have shape {tuple(rows.shape)}, not (frames, width)"
    if meta.dim is not None and rows.shape[1] != meta.dim:
        return f"rows have width {rows.shape[1]}, the store's backbone {meta.dim}"
    if meta.dtype in DTYPES and str(rows.dtype) != meta.dtype:
        return f"rows are {rows.dtype}, the store holds {meta.dtype}"
    return None


def store_classes(store: FeatureStore, given: Classes = None) -> tuple[str, ...] | None:
    """The class names the store's labels are checked against: those its root records;
    ``given`` (its dataset's, from whoever knows the dataset) for a store written before
    stores recorded them; None: labels are not checked."""
    recorded = store.meta.classes
    return recorded if recorded is not None else (tuple(given) if given is not None else None)


def fields_problem(rec: VideoRecord, classes: Classes, dataset: str) -> str | None:
    """A record's split and label (one of ``classes``, as class names compare, unless
    None): checked on every listing of the complete videos, so no video is dropped or
    relabelled silently."""
    if rec.split not in ("train", "test"):
        return f"split {shorten(rec.split, 40)!r} is not train or test"
    if classes is not None:
        wanted = normalise_label(rec.label) if isinstance(rec.label, str) else None
        if rec.label not in classes and wanted not in map(normalise_label, classes):
            return f"label {shorten(rec.label, 40)!r} is not a class of dataset {dataset!r}"
    return None


def root_problem(attrs: dict) -> str | None:
    """What is missing or invalid in the root attributes (None: all there)."""
    found = []
    if attrs.get("schema") != SCHEMA:
        found.append(f"schema is {shorten(attrs.get('schema'), 40)!r}")
    dataset = attrs.get("dataset")
    if not isinstance(dataset, str) or not dataset.strip():
        found.append(f"dataset {shown(dataset)} is unknown")
    if "classes" in attrs and class_names(attrs["classes"]) is None:
        found.append(f"classes {shown(attrs['classes'])} is not a list of distinct class names")
    if StoreMeta.from_attrs(attrs).dim is None:
        found.append("backbone has no dim")
    for name in ("preprocessing", "sampling"):
        if not isinstance(attrs.get(name), dict):
            found.append(f"no {name}")
    if attrs.get("dtype") not in DTYPES:
        found.append(f"dtype {shorten(attrs.get('dtype'), 20)!r} is not float16 or float32")
    return "root attributes: " + "; ".join(found) if found else None


def verify(store: FeatureStore, progress: bool = False, classes: Classes = None) -> dict[str, str]:
    """Every damaged, missing or incomplete video, with the reason (empty dict: intact).

    Besides each video's arrays and checksum, its values (finite features, increasing
    frame numbers and times), its record (label one of the store's classes, split,
    intervals, width and dtype) and the root attributes (under the key ``/``) are checked.
    ``classes``: the dataset's, for a store that records none (:func:`store_classes`).
    """
    from anomalyclip.progress import bar

    problems = {}
    root = root_problem(store.attrs)
    if root:
        problems["/"] = root
    for key in bar(store.keys(), desc="verify", unit="video", enabled=progress):
        reason = check_video(store, key, classes)
        if reason:
            problems[store.id_of(key)] = reason
    return problems
