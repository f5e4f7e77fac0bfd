"""The HDF5 format of a feature store: one local file through ``h5py``.

Attributes are JSON text (HDF5 attributes cannot hold nested values); every non-empty array
is chunked with the Fletcher-32 filter, so a flipped byte fails its read. A video's rows must
be stored that way, inside the file: HDF5 can also keep a dataset's bytes in any other file
(external raw storage), assemble it from other files (virtual datasets) or reach it through
soft and external links, which would let a shared ``.h5`` read (and a copy carry) any local
file, or hang on a FIFO. :meth:`HDF5Backend.storage_problem` refuses all of these without
reading or resolving them, and no name is looked up through a link.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from anomalyclip.errors import AnomalyError, one_line
from anomalyclip.store.backend import (
    HDF5_HEADROOM,
    Node,
    _chunks,
    _fsync,
    disk_error,
    is_url,
)

GROUPS = ("videos", "frames", "times", "failures")


class _JsonAttrs:
    """HDF5 attributes holding JSON text, so nested values survive like in Zarr."""

    @staticmethod
    def decode(raw: Any) -> Any:
        if isinstance(raw, bytes):
            raw = raw.decode()
        return json.loads(raw) if isinstance(raw, str) else raw

    @staticmethod
    def encode(value: Any) -> str:
        return json.dumps(value)


class HDF5Backend:
    """One HDF5 file through ``h5py``; flushed after every video so a crash loses at most one."""

    def __init__(self, location: str, mode: str):
        import h5py

        if is_url(location):
            raise AnomalyError(f"{location}: HDF5 stores must be local files; use Zarr for URLs")
        self.location = location
        self.write_once = False
        self._arrays: dict[str, Any] = {}  # path -> dataset found stored as the store writes
        if mode == "r" and not Path(location).is_file():
            raise AnomalyError(f"{location}: no feature store here")
        if mode == "w" or (mode == "a" and not Path(location).exists()):
            try:
                _create_hdf5(Path(location))
            except OSError as exc:
                raise AnomalyError(f"{location}: cannot create ({disk_error(exc)})") from exc
            mode = "a"
        try:
            self._file = h5py.File(location, mode)
        except OSError as exc:
            raise AnomalyError(
                f"{location}: not a readable HDF5 file ({one_line(exc, 200)})"
            ) from exc
        try:  # HDF5 has no journal: a write cut short can leave groups that cannot be listed
            for group in GROUPS:
                problem = self._link_problem(group)
                if problem:
                    raise AnomalyError(f"{location}: group {group}/ is {problem} (refused)")
                if self._has(group):
                    list(self._file[group].keys())
        except (RuntimeError, OSError, KeyError) as exc:
            self._file.close()
            raise AnomalyError(f"{location}: damaged HDF5 file ({one_line(exc, 160)})") from exc
        except AnomalyError:
            self._file.close()
            raise

    def reserve(self, nbytes: int) -> None:
        """Refuse to start a write the disk has no room for: HDF5 cannot survive a flush cut
        short (the file's metadata is left half-written), so the room is checked first."""
        needed = int(nbytes * 1.1) + HDF5_HEADROOM
        free = shutil.disk_usage(Path(self.location).parent).free
        if free < needed:
            raise OSError(
                errno.ENOSPC, f"No space left on device ({needed:,} bytes needed, {free:,} free)"
            )

    def _lookup(self, path: str) -> tuple[Any, str | None]:
        """(the object at ``path`` or None, why it is reached other than through hard links
        or None). Nothing is opened through a soft or external link."""
        from h5py import Group, h5l

        node = self._file["/"]
        for part in path.split("/"):
            if not isinstance(node, Group):
                return None, None
            name = part.encode()
            if not node.id.links.exists(name):  # the link itself, never what it points to
                return None, None
            kind = node.id.links.get_info(name).type
            if kind != h5l.TYPE_HARD:
                links = {h5l.TYPE_SOFT: "a soft link", h5l.TYPE_EXTERNAL: "an external link"}
                return None, f"{links.get(kind, 'a user-defined link')} to data elsewhere"
            node = node[part]
        return node, None

    def _node(self, path: str) -> Any:
        if path == "":
            return self._file
        node, problem = self._lookup(path)
        if problem:
            raise ValueError(f"{path} is {problem} (refused)")
        if node is None:
            raise KeyError(path)
        return node

    def _has(self, path: str) -> bool:
        node, problem = self._lookup(path)
        return node is not None or problem is not None

    def _link_problem(self, path: str) -> str | None:
        return self._lookup(path)[1]

    def storage_problem(self, path: str) -> str | None:
        """Why the array at ``path`` is not stored as the store writes arrays: in this file,
        chunked, with the Fletcher-32 filter (None when it is, or when there is none)."""
        from h5py import Dataset

        node, problem = self._lookup(path)
        if problem or node is None:
            return problem
        if not isinstance(node, Dataset):
            return "not an array"
        if node.is_virtual:
            return "a virtual dataset (rows from other files)"
        if node.external:
            return "external raw storage (rows in another file)"
        if node.size and not (node.chunks and node.fletcher32):
            return "not chunked with Fletcher-32 as the store writes arrays"
        return None

    def get_attrs(self, path: str) -> dict:
        return {k: _JsonAttrs.decode(v) for k, v in self._node(path).attrs.items()}

    def set_attrs(self, path: str, attrs: dict) -> None:
        node = self._node(path)
        for key, value in attrs.items():
            node.attrs[key] = _JsonAttrs.encode(value)

    def names(self, group: str) -> list[str]:
        from h5py import Group

        node = self._lookup(group)[0]
        return sorted(node.keys()) if isinstance(node, Group) else []

    def exists(self, path: str) -> bool:
        return self._has(path)

    def array(self, path: str) -> Node:
        """The dataset at ``path``, once :meth:`storage_problem` found nothing (kept: a
        training batch reads the same arrays again and again)."""
        node = self._arrays.get(path)
        if node is None:
            problem = self.storage_problem(path)
            if problem:
                raise ValueError(f"{path} is {problem} (refused)")
            node = self._arrays[path] = self._node(path)
        return node

    def write_array(self, path: str, data: np.ndarray, attrs: dict) -> None:
        self._arrays.pop(path, None)
        if self._has(path):
            del self._file[path]
        chunked = data.size > 0
        dset = self._file.create_dataset(
            path,
            data=data,
            chunks=_chunks(data.shape) if chunked else None,
            fletcher32=chunked,
        )
        self.set_attrs(path, attrs)
        del dset

    def ensure_group(self, path: str, attrs: dict | None = None) -> None:
        if not self._has(path):
            self._file.create_group(path)
        if attrs:
            self.set_attrs(path, attrs)

    def delete(self, path: str) -> None:
        self._arrays.pop(path, None)
        if self._has(path):
            del self._file[path]  # a link is removed, never followed

    def array_state(self, path: str) -> tuple[int, int] | None:
        if not self._has(path):
            return None
        return int(self._node(path).shape[0]), 0

    def size_bytes(self) -> int:
        self._file.flush()
        return os.path.getsize(self.location)

    def flush(self, *paths: str) -> None:
        """Write HDF5's buffers to the file and fsync it (the whole file: ``paths`` unused)."""
        self._file.flush()
        os.fsync(self._file.id.get_vfd_handle())

    def reload(self) -> None:
        pass  # one process writes an HDF5 store; its view is always current

    def close(self) -> None:
        self._file.close()


def _create_hdf5(path: Path) -> None:
    """Put a new, empty and complete HDF5 file at ``path`` in one rename.

    h5py writes a new file's superblock at once but the rest only at the first flush, so a
    writer killed in between would leave a file no library can open; built under another
    name and renamed, the file at ``path`` is always a readable one.
    """
    import h5py

    tmp = path.with_name(f".{path.name}.creating")
    with h5py.File(tmp, "w"):
        pass
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)
