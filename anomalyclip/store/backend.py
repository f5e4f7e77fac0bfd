"""Two storage formats behind one tiny interface: Zarr v3 and HDF5.

The store logic (:mod:`anomalyclip.store.store`) only needs nested names, arrays with
JSON-like attributes, listing and deletion, which both formats have. This module hides the
differences that remain: how a location is opened (directory, zip, fsspec URL, ``.h5`` file),
how attributes are encoded (HDF5 attributes cannot hold nested JSON, so values are stored as
JSON text), and how chunks are protected (Zarr gets a CRC32C codec, HDF5 the Fletcher-32
filter, so a flipped byte is caught on read, not silently returned). The HDF5 side is in
:mod:`anomalyclip.store.hdf5`.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

import numpy as np

from anomalyclip.errors import AnomalyError, one_line

HDF5_SUFFIXES = (".h5", ".hdf5")
CHUNK_ROWS = 1024
HDF5_HEADROOM = 1 << 20  # bytes of metadata an HDF5 flush may need beyond a video's rows
URL_TIMEOUT_S = 20.0  # connect and read timeout of object stores; ANOMALYCLIP_URL_TIMEOUT
URL_ATTEMPTS = 2  # tries per request (botocore's; s3fs's own retry loop is made a single try)


def is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def url_timeout() -> float:
    try:
        return float(os.environ.get("ANOMALYCLIP_URL_TIMEOUT", URL_TIMEOUT_S))
    except ValueError as exc:
        raise AnomalyError(
            f"ANOMALYCLIP_URL_TIMEOUT={os.environ['ANOMALYCLIP_URL_TIMEOUT']}: not seconds"
        ) from exc


def url_options(location: str, storage_options: dict | None) -> dict:
    """fsspec options for a URL: bounded timeouts and retries for S3 (s3fs and botocore
    would otherwise retry an endpoint that never replies for about seven minutes)."""
    options = dict(storage_options or {})
    if location.startswith(("s3://", "s3a://")):
        timeout = url_timeout()
        config = {
            "connect_timeout": timeout,
            "read_timeout": timeout,
            "retries": {"max_attempts": URL_ATTEMPTS, "mode": "standard"},
        }
        options["config_kwargs"] = {**config, **options.get("config_kwargs", {})}
    return options


def bounded_retries(fs) -> None:
    """One try in s3fs's own retry loop (5 by default, each doing botocore's retries)."""
    if hasattr(fs, "retries"):
        fs.retries = 1


_TIMEOUTS = {"ReadTimeoutError", "ServerTimeoutError", "FSTimeoutError", "TimeoutError",
             "timeout", "ReadTimeout"}  # fmt: skip
_NO_CONNECTION = {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError",
                  "ConnectionRefusedError", "ConnectionClosedError", "ServerDisconnectedError",
                  "ConnectionError", "ConnectTimeout"}  # fmt: skip
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403",
           "AllAccessDisabled", "ExpiredToken", "InvalidToken"}  # fmt: skip


def disk_error(exc: BaseException) -> str | None:
    """A short reason when a write failed on the disk's side (full, read-only, I/O error);
    h5py reports those as RuntimeError with the C library's errno in its text."""
    text = str(exc)
    if getattr(exc, "errno", None) == errno.ENOSPC or "errno = 28" in text:
        return "no space left on device"
    if isinstance(exc, OSError):
        return one_line(exc)
    if isinstance(exc, RuntimeError) and "file write failed" in text:
        return one_line(exc, 160)
    return None


def remote_error(exc: BaseException) -> str | None:
    """A short reason when ``exc`` (or what caused it) means an object store could not be
    reached or refused access; None for anything else (damage, bugs)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        names = {c.__name__ for c in type(exc).__mro__}
        text = str(exc)
        if (
            isinstance(exc, PermissionError)
            or any(code in text for code in _DENIED)
            and ("ClientError" in names or isinstance(exc, OSError))
        ):
            return "access denied (check the credentials and the bucket's policy)"
        if names & _TIMEOUTS:
            return f"no reply within {url_timeout():g} s (ANOMALYCLIP_URL_TIMEOUT sets the wait)"
        if names & _NO_CONNECTION:
            return "cannot connect to the endpoint (check the URL and AWS_ENDPOINT_URL)"
        exc = exc.__cause__ or exc.__context__
    return None


def store_format(location: str | Path) -> str:
    """``"hdf5"``, ``"zip"`` or ``"zarr"``, from the location's suffix.

    A Zarr directory has no suffix or ``.zarr`` (an existing directory is Zarr whatever its
    name); any other suffix is refused, so ``x.parquet`` is not silently written as Zarr.
    """
    name = str(location).rstrip("/")
    suffix = PurePosixPath(name.rsplit("/", 1)[-1]).suffix.lower()
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
    if suffix == ".zip":
        return "zip"
    # ".partial": the temporary name an export gives a suffix-less Zarr directory
    if suffix in ("", ".zarr", ".partial") or (not is_url(name) and Path(name).is_dir()):
        return "zarr"
    raise AnomalyError(
        f"{location}: unknown store format {suffix!r}; use a Zarr directory (no suffix or "
        ".zarr), a Zarr zip (.zip) or HDF5 (.h5, .hdf5)"
    )


class Node(Protocol):
    """An array in a store: shape, dtype, slicing and attributes."""

    shape: tuple[int, ...]
    dtype: np.dtype

    def __getitem__(self, key: Any) -> np.ndarray: ...


class Backend(Protocol):
    write_once: bool  # a zip cannot rewrite an entry, so attributes are final at creation

    def get_attrs(self, path: str) -> dict: ...
    def set_attrs(self, path: str, attrs: dict) -> None: ...
    def names(self, group: str) -> list[str]: ...
    def exists(self, path: str) -> bool: ...
    def array(self, path: str) -> Node: ...
    def write_array(self, path: str, data: np.ndarray, attrs: dict) -> None: ...
    def ensure_group(self, path: str, attrs: dict | None = None) -> None: ...
    def delete(self, path: str) -> None: ...
    def reserve(self, nbytes: int) -> None: ...
    def array_state(self, path: str) -> tuple[int, int] | None: ...
    def storage_problem(self, path: str) -> str | None: ...
    def size_bytes(self) -> int: ...
    def flush(self, *paths: str) -> None: ...
    def reload(self) -> None: ...
    def close(self) -> None: ...


def _chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """At most CHUNK_ROWS rows per chunk, split evenly over the video.

    Both formats store an edge chunk at full size, so 1100 rows in chunks of 1024 would cost
    2048 rows on disk (HDF5 keeps the padding; Zarr only shrinks it when compressing).
    """
    n = max(1, shape[0])
    per_chunk = -(-n // -(-n // CHUNK_ROWS))  # ceil(n / ceil(n / CHUNK_ROWS))
    return (per_chunk,) + tuple(shape[1:])


class ZarrBackend:
    """Zarr v3 through ``zarr-python``: a local directory, a ``.zip`` file or an fsspec URL."""

    def __init__(self, location: str, mode: str, storage_options: dict | None = None):
        import zarr
        from zarr.storage import FsspecStore, LocalStore, ZipStore

        self.location = location
        self.write_once = False
        read_only = mode == "r"
        if store_format(location) == "zip":
            if mode == "a":
                raise AnomalyError(f"{location}: a zip store is written once; export into it")
            self._store = ZipStore(location, mode="r" if read_only else "w")
            self.write_once = not read_only
        elif is_url(location):
            self._store = FsspecStore.from_url(
                location, storage_options=url_options(location, storage_options),
                read_only=read_only,
            )  # fmt: skip
            bounded_retries(self._store.fs)
        else:
            if mode == "w" and Path(location).exists():
                shutil.rmtree(location)
            self._store = LocalStore(location, read_only=read_only)
        self._root = None
        if self.write_once:  # the root's zarr.json is written once, with attributes, by init
            return
        try:
            if mode == "a":
                self._root = self._open_existing_or_create()
            else:
                self._root = zarr.open_group(store=self._store, mode=mode, zarr_format=3)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError) as exc:
            raise AnomalyError(f"{location}: no feature store here") from exc
        except Exception as exc:
            reason = remote_error(exc)
            if reason:
                raise AnomalyError(f"{location}: {reason}") from exc
            if isinstance(exc, OSError):
                raise AnomalyError(f"{location}: cannot open ({disk_error(exc)})") from exc
            if not isinstance(exc, (ValueError, RecursionError, TypeError)):
                raise
            text = one_line(exc, 200)  # a damaged root zarr.json
            raise AnomalyError(
                f"{location}: unreadable root metadata ({type(exc).__name__}: {text})"
            ) from exc

    def _open_existing_or_create(self, attempts: int = 50):
        """Open the root for appending without ever replacing an existing one.

        zarr's own mode "a" creates a fresh root whenever opening fails, which would wipe the
        root attributes if another process (a rank of the same extraction) is rewriting them
        at that moment; here only a root that is really absent is created, and a metadata file
        caught half-written is read again.
        """
        import zarr

        for attempt in range(attempts):
            try:
                return zarr.open_group(store=self._store, mode="r+", zarr_format=3)
            except (FileNotFoundError, zarr.errors.GroupNotFoundError):
                return zarr.open_group(store=self._store, mode="a", zarr_format=3)
            except ValueError:  # JSON of a metadata file being written by another process
                if attempt == attempts - 1:
                    raise
                time.sleep(0.1)
        raise AssertionError("unreachable")

    def reserve(self, nbytes: int) -> None:
        """Nothing to check: every Zarr file is written whole under a temporary name."""

    def storage_problem(self, path: str) -> str | None:
        """Nothing to refuse: a Zarr array's chunks are files (or objects) under its name."""
        return None

    def reload(self) -> None:
        """Read the root's metadata again (another process may have changed it)."""
        import zarr

        if self._root is not None and not self.write_once:
            mode = "r" if self._store.read_only else "r+"
            self._root = zarr.open_group(store=self._store, mode=mode, zarr_format=3)

    def get_attrs(self, path: str) -> dict:
        if self._root is None:
            return {}
        node = self._root if path == "" else self._root[path]
        return node.attrs.asdict()

    def set_attrs(self, path: str, attrs: dict) -> None:
        if self._root is None:
            import zarr

            self._root = zarr.create_group(store=self._store, attributes=attrs)
            return
        node = self._root if path == "" else self._root[path]
        node.update_attributes(attrs)  # one metadata write (attrs.update writes once per key)

    def _sync(self, coroutine):
        from zarr.core.sync import sync

        return sync(coroutine)

    async def _list_dir(self, prefix: str) -> list[str]:
        return [name async for name in self._store.list_dir(prefix)]

    def names(self, group: str) -> list[str]:
        """The children of a group, from a listing alone: one child's unreadable metadata
        (say, JSON nested too deep to parse) must not hide its siblings."""
        if self._root is None or not self.exists(group):
            return []
        names = self._sync(self._list_dir(group))
        return sorted(n for n in names if n != "zarr.json")

    def exists(self, path: str) -> bool:
        """Whether a node's metadata file is there (without parsing it)."""
        if self._root is None:
            return False
        return bool(self._sync(self._store.exists(f"{path}/zarr.json")))

    def array(self, path: str) -> Node:
        return self._root[path]

    def write_array(self, path: str, data: np.ndarray, attrs: dict) -> None:
        from zarr.codecs import Crc32cCodec

        # No compressor: float16 CLIP embeddings shrink by only ~8% under zstd, while
        # decoding it doubled the time to read a training batch (see anomalyclip.bench.store).
        arr = self._root.create_array(
            path,
            shape=data.shape,
            dtype=data.dtype,
            chunks=_chunks(data.shape),
            compressors=[Crc32cCodec()],
            attributes=attrs,
            config={"write_empty_chunks": True},
            overwrite=True,
        )
        if data.size:
            arr[...] = data

    def ensure_group(self, path: str, attrs: dict | None = None) -> None:
        if path not in self._root:
            self._root.create_group(path, attributes=attrs or {})
        elif attrs:
            self.set_attrs(path, attrs)

    def delete(self, path: str) -> None:
        if path in self._root:
            del self._root[path]

    def array_state(self, path: str) -> tuple[int, int] | None:
        """(rows, missing chunks) of an array, from one metadata read and one listing;
        None when there is no array at ``path``."""
        try:
            arr = self._root[path]
        except KeyError:
            return None
        missing = int(arr.nchunks - arr.nchunks_initialized) if arr.size else 0
        return int(arr.shape[0]), missing

    def size_bytes(self) -> int:
        if is_url(self.location):
            import fsspec

            fs, root = fsspec.core.url_to_fs(self.location, **url_options(self.location, None))
            bounded_retries(fs)
            return int(fs.du(root))
        return _disk_usage(Path(self.location))

    def flush(self, *paths: str) -> None:
        """Make the named nodes durable: fsync every file below each path (a path ending in
        ``/``: that folder's entries only) and the folders holding them. zarr writes each
        file to a temporary name and renames it, but never fsyncs; without this a power cut
        could keep a completeness flag whose rows never reached the disk. Nothing to do for
        URL stores (an object is durable once its PUT returns) and zip files (closed whole)."""
        if is_url(self.location) or store_format(self.location) == "zip":
            return
        root = Path(self.location)
        for path in paths:
            target = root / path
            if path.endswith("/") or target.is_file():
                _fsync(target if path.endswith("/") else target)
                _fsync(target.parent)
                continue
            for folder, _, files in os.walk(target):
                for name in files:
                    _fsync(Path(folder) / name)
                _fsync(Path(folder))
            _fsync(target.parent)

    def close(self) -> None:
        self._store.close()


def _fsync(path: Path) -> None:
    """Flush a file's or a folder's data to the disk (a rename is only durable once its
    folder is synced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # removed meanwhile (another writer): nothing of it to make durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_usage(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum((Path(d) / n).stat().st_size for d, _, files in os.walk(path) for n in files)


def open_backend(location: str | Path, mode: str, storage_options: dict | None = None) -> Backend:
    location = str(location)
    if mode not in ("r", "a", "w"):
        raise ValueError(f"mode must be 'r', 'a' or 'w', not {mode!r}")
    if mode != "r" and not is_url(location):
        # as a Zarr directory does: h5py and zipfile fail in a folder that does not exist yet
        Path(location).parent.mkdir(parents=True, exist_ok=True)
    if store_format(location) == "hdf5":
        from anomalyclip.store.hdf5 import HDF5Backend

        return HDF5Backend(location, mode)
    return ZarrBackend(location, mode, storage_options)
