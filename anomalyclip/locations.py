"""Where a run's inputs are (its CLIP and its feature store), so a run folder can move.

A run is a self-contained folder, like a ``save_pretrained`` directory: ``config.json``
records, for each local input, its absolute path and its path relative to the run folder.
Reading the run, the relative path is tried first (the run moved together with its inputs),
then the absolute one (the run alone was copied). Hub ids and URLs are kept as given.

A location that looks local is never sent to the Hugging Face hub: a missing local input is
a one-line error naming the paths looked at and the option that overrides them.
Standard library only, so the command line resolves a run's inputs before importing torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from anomalyclip.checks import is_url
from anomalyclip.errors import AnomalyError

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


def record(location: str | Path, run_dir: str | Path, local: bool | None = None) -> dict[str, Any]:
    """What ``config.json`` keeps of one input: ``given`` (as typed), and for a local path
    ``absolute`` and ``relative`` (to the run folder). ``local`` overrides the guess."""
    given = str(location)
    entry: dict[str, Any] = {"given": given}
    if looks_local(given) if local is None else local:
        absolute = Path(given).expanduser().resolve()
        entry["absolute"] = str(absolute)
        entry["relative"] = os.path.relpath(absolute, Path(run_dir).resolve())
    return entry


def recorded(run_dir: str | Path, config: dict[str, Any], name: str) -> str:
    """The location of the run's input ``name`` ('clip' or 'store') to open.

    Recorded local paths: relative to the run folder first, then absolute. Runs written
    before paths were recorded give the location as typed at training time.
    """
    what, flag = INPUTS[name]
    entry = (config.get("inputs") or {}).get(name)
    if entry and "absolute" in entry:
        beside = os.path.normpath(Path(run_dir).resolve() / entry["relative"])
        tried = [Path(beside), Path(entry["absolute"])]
    else:
        store = config.get("store") or {}
        given = config.get("clip") if name == "clip" else store.get("location")
        if not given:
            raise AnomalyError(f"{run_dir}: the run records no {what}; pass {flag}")
        local = looks_local(given) if name == "clip" else not is_url(given)
        if not local:
            return str(given)  # a hub id or a URL
        tried = [Path(given).expanduser()]
    for path in tried:
        if path.exists():
            return str(path)
    looked = " or ".join(dict.fromkeys(str(p) for p in tried))
    raise AnomalyError(f"{run_dir}: its {what} is not at {looked}; pass {flag} to give its place")
