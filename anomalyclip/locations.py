"""Where a run's or a store's inputs are (a CLIP, a feature store), so folders can move.

A run is a self-contained folder, like a ``save_pretrained`` directory: ``config.json``
records, for each local input, its absolute path and its path relative to the run folder.
A feature store records the CLIP it was extracted with the same way, relative to the store
(root attribute ``inputs``). Reading them, the relative path is tried first (moved together
with its inputs), then the absolute one (the run or store alone was copied). Hub ids and
URLs are kept as given.

A location that looks local is never sent to the Hugging Face hub: a missing local input is
a one-line error naming the paths looked at and the option that overrides them.
Standard library only, so the command line resolves inputs before importing torch.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from anomalyclip.checks import is_url
from anomalyclip.errors import AnomalyError

DEFAULT_CLIP = "openai/clip-vit-base-patch16"
# the file that marks a CLIP folder of random weights (anomalyclip.backbone.build_clip: the
# tests' and the demo's stand-in), whose scores mean nothing on real footage
RANDOM_CLIP_MARK = "anomalyclip-random-weights.json"

# input name -> (what it is, the option that gives it explicitly)
INPUTS = {"clip": ("CLIP", "--clip"), "store": ("feature store", "--features")}


def looks_local(location: str | Path) -> bool:
    """A filesystem path rather than a hub id (``org/name``) or a URL: it exists, is
    absolute, or starts with ``.`` or ``~``."""
    text = str(location)
    if is_url(text):
        return False
    return text.startswith((".", "~")) or Path(text).is_absolute() or Path(text).exists()


def local_clip(location: str | Path) -> Path | None:
    """The folder of a CLIP given as a local path (it must exist); None for a hub id."""
    if not looks_local(location):
        return None
    folder = Path(str(location)).expanduser()
    if not folder.is_dir():
        raise AnomalyError(
            f"{location}: no such CLIP folder; pass --clip with a local Hugging Face CLIP "
            "folder or a hub id"
        )
    return folder


def is_random_clip(location: str | Path) -> bool:
    """Whether ``location`` is a local CLIP folder of random weights (marked by build_clip)."""
    return looks_local(location) and (Path(str(location)).expanduser() / RANDOM_CLIP_MARK).is_file()


def record(
    location: str | Path, base: str | Path | None, local: bool | None = None
) -> dict[str, Any]:
    """What a run or store keeps of one input: ``given`` (as typed), and for a local path
    ``absolute`` and ``relative`` (to the folder ``base``; none without one, e.g. for a store
    at a URL). ``local`` overrides the guess."""
    given = str(location)
    entry: dict[str, Any] = {"given": given}
    if looks_local(given) if local is None else local:
        absolute = Path(given).expanduser().resolve()
        entry["absolute"] = str(absolute)
        if base is not None:
            entry["relative"] = os.path.relpath(absolute, Path(base).resolve())
    return entry


def weights_sha256(folder: str | Path) -> str:
    """SHA-256 of a model folder's weight files (``*.safetensors``, then ``*.bin``, each
    sorted by name): what tells two CLIPs apart whatever their folders are called."""
    digest = hashlib.sha256()
    folder = Path(folder)
    for f in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _found(owner: str | Path, entry: dict[str, Any], base: str | Path | None, what: str,
           flag: str) -> str:  # fmt: skip
    """The first of ``entry``'s relative (to ``base``) and absolute paths that exists; when
    both exist and differ (a store exported beside another CLIP), the one whose weights
    have the recorded hash."""
    tried = []
    if base is not None and entry.get("relative") is not None:
        tried.append(Path(os.path.normpath(Path(base).resolve() / entry["relative"])))
    tried.append(Path(entry["absolute"]))
    found = [p for p in dict.fromkeys(tried) if p.exists()]
    if len(found) > 1 and entry.get("weights_sha256"):
        same = [p for p in found if p.is_dir() and weights_sha256(p) == entry["weights_sha256"]]
        found = same or found
    if found:
        return str(found[0])
    looked = " or ".join(dict.fromkeys(str(p) for p in tried))
    raise AnomalyError(f"{owner}: its {what} is not at {looked}; pass {flag} to give its place")


def store_clip(location: str | Path, attrs: dict[str, Any]) -> str:
    """The CLIP a feature store was extracted with, from its root attributes ``attrs``: its
    recorded local folder (relative to the store, then absolute) or its hub id. Stores
    written before the record name it as typed at extraction (``backbone.model``)."""
    entry = (attrs.get("inputs") or {}).get("clip")
    base = None if is_url(location) else location
    if entry and entry.get("absolute"):
        return _found(location, entry, base, "CLIP", "--clip")
    given = (attrs.get("backbone") or {}).get("model")
    if not given:
        raise AnomalyError(f"{location}: the store names no CLIP; pass --clip")
    if looks_local(given) and not Path(str(given)).expanduser().exists():
        raise AnomalyError(f"{location}: its CLIP is not at {given}; pass --clip to give its place")
    return str(given)


def recorded(run_dir: str | Path, config: Any, name: str) -> str:
    """The location of the run's input ``name`` ('clip' or 'store') to open; ``config`` is
    the run's :class:`anomalyclip.runs.RunConfig`.

    Recorded local paths: relative to the run folder first, then absolute. Runs written
    before paths were recorded give the location as typed at training time.
    """
    what, flag = INPUTS[name]
    entry = config.inputs.get(name)
    if entry and "absolute" in entry:
        return _found(run_dir, entry, run_dir, what, flag)
    given = config.get("clip") if name == "clip" else config.store.get("location")
    if not given:
        raise AnomalyError(f"{run_dir}: the run records no {what}; pass {flag}")
    local = looks_local(given) if name == "clip" else not is_url(given)
    if not local:
        return str(given)  # a hub id or a URL
    return _found(run_dir, {"absolute": str(Path(given).expanduser())}, None, what, flag)
