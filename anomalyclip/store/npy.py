"""Per-video ``.npy`` feature files, as papers and follow-up projects publish them.

A release is a folder of float32 ``(T, D)`` arrays, one per video (or per crop of a video).
This module reads such a folder without knowing any dataset; which file is which dataset
video, with what label, is the dataset adapter's business (``anomaly store import-npy`` puts
the two together in :mod:`anomalyclip.interop.npy_import`). Releases differ in two ways that
are absorbed here:

- Layout. AnomalyCLIP reads ``<root>/<list path>.npy`` (``Abuse/Abuse028_x264.npy``); others
  are flat (``Abuse028_x264.npy``) or nested one level deeper (``UCFClipFeatures/Abuse/...``).
  :meth:`NpyIndex.find` matches a video id by relative path, then by a path ending in it, then
  by its unique name.
- Crops. Either one file per crop with a ``__<k>`` suffix (VadCLIP: ``Abuse028_x264__0.npy`` to
  ``__9`` for UCF-Crime's ten crops, ``..._label_A__0.npy`` to ``__4`` for XD-Violence's five),
  or one ``(T * ncrops, D)`` array whose rows are time-major (row ``t * ncrops + k`` is crop
  ``k`` of step ``t``, the AnomalyCLIP loader's ``view(-1, ncrops, D)``). ``crop`` picks one
  crop or their mean. Feature-type tags before ``.npy`` (``_i3d``, ``_clip``...) are ignored.

No pickle is ever loaded: files are read with ``allow_pickle=False``. A video's fingerprint
is a SHA-256 of its source bytes (and of the crop choice).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from anomalyclip.errors import AnomalyError, one_line
from anomalyclip.store.meta import DEFAULT_DIM

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
        raise AnomalyError(f"{name}: unreadable .npy ({one_line(e)})") from None
    except (OSError, EOFError) as e:
        raise AnomalyError(f"{name}: unreadable .npy ({one_line(e)})") from None
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

    Folders named in ``ignored`` are skipped: their ``.npy`` files are not features (a
    dataset's ground truth, such as ShanghaiTech's ``test_frame_mask/``).
    """

    def __init__(self, root: Path, ignored: Iterable[str] = ()):
        self.root = Path(root)
        if not self.root.is_dir():
            raise AnomalyError(f"{self.root}: no such folder of .npy features")
        ignored = frozenset(ignored)
        self.groups: dict[str, FeatureFiles] = {}
        self.by_name: dict[str, list[str]] = defaultdict(list)
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if d not in ignored)
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


# --------------------------------------------------------------------------- one video


def read_sources(
    files: FeatureFiles, crop: int | str, ncrops: int
) -> tuple[list[tuple[Path, bytes]], str]:
    """The bytes of the files a video is made of, and the fingerprint they give."""
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


def features_of(
    sources: list[tuple[Path, bytes]], per_crop: bool, crop: int | str, ncrops: int, dim: int
) -> np.ndarray:
    """The ``(T, dim)`` features of a video from its source bytes (per-crop files or one)."""
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
