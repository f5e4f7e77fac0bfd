"""Reading ``torch.save`` files without running anything they name.

A PyTorch checkpoint is a zip archive: ``<name>/data.pkl`` (a pickle of the saved object)
and one raw record ``<name>/data/<key>`` per tensor storage. A pickle is a small program: its
GLOBAL opcodes name any importable callable and REDUCE calls it, which is how a malicious
file runs code, and how a real Lightning checkpoint drags in the authors' own classes
(``src.models.components.loss.ComputeLoss``, ``functools.partial``, omegaconf configs).

This module unpickles ``data.pkl`` itself, so every callable the pickle can reach is chosen
here. :meth:`RestrictedUnpickler.find_class` is the one place a pickle turns a name into an
object (GLOBAL, STACK_GLOBAL, INST, OBJ and EXT opcodes all go through it), and it never
imports: it returns

- our own re-implementations of torch's tensor-rebuilding functions, which only build a view
  of a storage read here from the archive (storages are materialised on the CPU, whatever
  device the file was saved from, e.g. ``cuda:0``);
- markers for the storage types (``torch.FloatStorage`` ...), used only as dtype tags;
- ``collections.OrderedDict`` and plain builtin containers (both ``builtins`` and protocol 2's
  ``__builtin__`` spellings), and a latin-1-only stand-in for ``_codecs.encode``;
- for every other name, an inert placeholder class that records its arguments and state and
  has no behaviour (no module is looked up, so nothing named in the file is imported).

So a real checkpoint loads completely (its hyper-parameters become placeholders) and only
plain tensors and containers are used from it; a malicious ``__reduce__`` yields a
placeholder instead of a call. ``torch.load`` is not used at all.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from anomalyclip.errors import AnomalyError, one_line


class Placeholder:
    """Stand-in for a global the pickle names but we refuse to resolve.

    Every refused name gets its own subclass (see :func:`placeholder_class`) whose
    ``qualified_name`` is the name from the file; instances keep the arguments and state the
    pickle gave them, so a caller can inspect (never run) what the file contained.
    """

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Placeholder:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None
        self.items: list[Any] = []

    def __setstate__(self, state: Any) -> None:
        self.state = state

    # containers subclassed by the pickled class (SETITEM(S), APPEND(S) opcodes)
    def __setitem__(self, key: Any, value: Any) -> None:
        self.items.append((key, value))

    def append(self, value: Any) -> None:
        self.items.append(value)

    def extend(self, values: Any) -> None:
        self.items.extend(values)

    def __repr__(self) -> str:
        return f"<placeholder for {self.qualified_name}>"


_PLACEHOLDERS: dict[tuple[str, str], type[Placeholder]] = {}


def placeholder_class(module: str, name: str) -> type[Placeholder]:
    """The (cached) inert class standing for ``module.name``."""
    key = (module, name)
    if key not in _PLACEHOLDERS:
        cls = type("Placeholder", (Placeholder,), {"qualified_name": f"{module}.{name}"})
        _PLACEHOLDERS[key] = cls
    return _PLACEHOLDERS[key]


@dataclass(frozen=True)
class StorageType:
    """What ``torch.FloatStorage`` & co. become: a dtype tag for ``persistent_load``."""

    dtype: torch.dtype


_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}


def _as_view(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    for value in (offset, *size, *stride):
        if not isinstance(value, int) or value < 0:
            raise pickle.UnpicklingError(f"bad tensor geometry {offset}, {size}, {stride}")
    # as_strided checks the view stays inside the storage
    return storage.as_strided(tuple(size), tuple(stride), offset)


def _check_metadata(metadata: Any) -> None:
    if metadata:  # conj / neg bits: never set on real-valued weights
        raise pickle.UnpicklingError(f"unsupported tensor metadata {metadata!r}")


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> torch.Tensor:
    return _as_view(storage, offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    _check_metadata(metadata)
    return _as_view(storage, offset, size, stride)


def _rebuild_tensor_v3(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    backward_hooks: Any,
    dtype: Any,
    metadata: Any = None,
) -> torch.Tensor:
    _check_metadata(metadata)
    if not isinstance(dtype, torch.dtype) or not isinstance(storage, torch.Tensor):
        raise pickle.UnpicklingError("tensor rebuilt with a bad dtype or storage")
    return _as_view(storage.view(dtype), offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any) -> Any:
    return data  # a Parameter's value; gradients and hooks mean nothing here


def _rebuild_parameter_with_state(
    data: Any, requires_grad: Any, backward_hooks: Any, state: Any
) -> Any:
    return data


_REBUILDERS = (
    _rebuild_tensor,
    _rebuild_tensor_v2,
    _rebuild_tensor_v3,
    _rebuild_parameter,
    _rebuild_parameter_with_state,
)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    """Tensor subclasses: rebuild the plain tensor with one of *our* rebuilders, drop the type."""
    if func not in _REBUILDERS or not isinstance(args, tuple):
        return placeholder_class("torch._tensor", "_rebuild_from_type_v2")(
            func, new_type, args, state
        )
    return func(*args)


def _codecs_encode(text: Any, encoding: str = "utf-8") -> bytes:
    """Protocol 2 writes ``bytes`` as ``_codecs.encode(str, 'latin1')``; allow exactly that."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is only allowed for latin-1 strings")
    return text.encode("latin-1")


def _bytearray(data: Any = b"", encoding: str | None = None) -> bytearray:
    if isinstance(data, str) and encoding in ("latin1", "latin-1"):
        return bytearray(data.encode("latin-1"))
    if isinstance(data, bytes) and encoding is None:
        return bytearray(data)
    raise pickle.UnpicklingError("bytearray is only rebuilt from bytes or latin-1 text")


_BUILTINS: dict[str, Any] = {
    "set": set,
    "frozenset": frozenset,
    "list": list,
    "tuple": tuple,
    "dict": dict,
    "complex": complex,
    "slice": slice,
    "bytearray": _bytearray,
}

_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("_codecs", "encode"): _codecs_encode,
    **{("builtins", k): v for k, v in _BUILTINS.items()},
    **{("__builtin__", k): v for k, v in _BUILTINS.items()},
    **{("torch", k): StorageType(v) for k, v in _STORAGE_DTYPES.items()},
}


class RestrictedUnpickler(pickle.Unpickler):
    """A pickle reader whose globals are the table above or inert placeholders.

    ``load_storage(storage_type, key, location, numel)`` answers torch's persistent ids.
    """

    def __init__(self, file: io.BufferedIOBase, load_storage: Any) -> None:
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        return found if found is not None else placeholder_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")):
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80}")
        _, storage_type, key, location, numel = pid
        if not isinstance(storage_type, StorageType):
            raise pickle.UnpicklingError(f"storage of unknown type {storage_type!r}")
        if not (isinstance(key, str) and isinstance(location, str) and isinstance(numel, int)):
            raise pickle.UnpicklingError(f"malformed storage reference {pid!r:.80}")
        return self._load_storage(storage_type.dtype, key, location, numel)


@dataclass
class LoadedArchive:
    """What a ``torch.save`` file held; ``locations`` are the devices its storages name."""

    obj: Any
    locations: set[str] = field(default_factory=set)


def _archive_prefix(zf: zipfile.ZipFile) -> str:
    for name in zf.namelist():
        parts = name.split("/")
        if len(parts) == 2 and parts[1] == "data.pkl":
            return parts[0]
    raise AnomalyError(f"{zf.filename}: zip archive without data.pkl, not a torch.save file")


def load_torch_file(path: str | Path) -> LoadedArchive:
    """Unpickle a ``torch.save`` zip archive safely, every tensor on the CPU.

    Raises :class:`AnomalyError` (one line, naming the file) for anything that is not a
    readable archive of that kind.
    """
    path = Path(path)
    if not path.is_file():
        raise AnomalyError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise AnomalyError(
            f"{path}: not a PyTorch checkpoint (expected the zip archive torch.save writes)"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            prefix = _archive_prefix(zf)
            names = set(zf.namelist())
            byteorder = f"{prefix}/byteorder"
            if byteorder in names and zf.read(byteorder).strip() != b"little":
                raise AnomalyError(f"{path}: big-endian checkpoints are not supported")
            storages: dict[str, torch.Tensor] = {}
            locations: set[str] = set()

            def load_storage(dtype: torch.dtype, key: str, location: str, numel: int) -> Any:
                locations.add(location)
                if key not in storages:
                    record = f"{prefix}/data/{key}"
                    if record not in names:
                        raise pickle.UnpicklingError(f"storage record {record} is missing")
                    nbytes = numel * torch.empty((), dtype=dtype).element_size()
                    if zf.getinfo(record).file_size != nbytes:
                        raise pickle.UnpicklingError(f"storage record {record} has the wrong size")
                    raw = bytearray(zf.read(record))  # writable, owned by the tensor
                    storages[key] = (
                        torch.frombuffer(raw, dtype=dtype)
                        if nbytes
                        else torch.empty(0, dtype=dtype)
                    )
                return storages[key]

            with zf.open(f"{prefix}/data.pkl") as fh:
                obj = RestrictedUnpickler(io.BufferedReader(fh), load_storage).load()
    except AnomalyError:
        raise
    except Exception as exc:  # nothing from the file runs, so any failure means a bad file
        raise AnomalyError(f"{path}: not a readable PyTorch checkpoint ({one_line(exc)})") from exc
    return LoadedArchive(obj, locations)
