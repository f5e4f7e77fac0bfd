"""Cheap checks of what a user typed, made before torch, transformers or zarr are imported.

Importing the numerical stack takes seconds; a mistyped path or device name should not. The
command line runs these first, so an argument error comes back at once, as one line. A new
run's folder is claimed here too, so an unusable ``--out`` fails before any work.
Nothing here imports more than the standard library.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import sys
import tempfile
from pathlib import Path

from anomalyclip.errors import AnomalyError, one_line

DEVICE_PATTERN = re.compile(r"(cpu|cuda|mps)(:\d+)?")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # of the image tower (extract.encoder)
PREPROCESS_MODES = ("native", "authors")  # frame paths (extract.preprocess)


def device_name(requested: str) -> str:
    """``requested`` if it spells a device (cpu, cuda, cuda:N, mps), else a one-line error."""
    if not DEVICE_PATTERN.fullmatch(requested):
        raise AnomalyError(f"--device {requested}: expected cpu, cuda, cuda:N or mps")
    return requested


def precision(requested: str) -> str:
    """``requested`` if it names an image-tower precision, else a one-line error."""
    if requested not in PRECISIONS:
        raise AnomalyError(f"--precision {requested}: expected auto, fp32, bf16 or fp16")
    return requested


def preprocess(requested: str) -> str:
    """``requested`` if it names a frame path whose libraries are installed (``authors``
    needs OpenCV, looked up without importing it), else a one-line error."""
    if requested not in PREPROCESS_MODES:
        raise AnomalyError(f"--preprocess {requested}: expected native or authors")
    if requested == "authors":
        import importlib.util

        if importlib.util.find_spec("cv2") is None:
            raise AnomalyError(
                "--preprocess authors needs OpenCV: pip install 'anomalyclip[authors]'"
            )
    return requested


def is_url(location: str | Path) -> bool:
    """A remote location (``s3://``, ``memory://`` ...), which only its library can check.

    The store's own rule (``anomalyclip.store.backend.is_url``), without importing the store.
    """
    text = str(location)
    return "://" in text and not text.startswith("file://")


def existing_file(path: str | Path, what: str) -> Path:
    """``path`` if it is a file, else ``<path>: no such <what>``."""
    p = Path(path)
    if not p.is_file():
        raise AnomalyError(f"{path}: no such {what}")
    return p


def existing_dir(path: str | Path, what: str) -> Path:
    """``path`` if it is a directory, else ``<path>: no such <what>``."""
    p = Path(path)
    if not p.is_dir():
        raise AnomalyError(f"{path}: no such {what}")
    return p


def existing_path(path: str | Path, what: str) -> Path:
    """``path`` if it exists (file or directory), else ``<path>: no such <what>``."""
    p = Path(path)
    if not p.exists():
        raise AnomalyError(f"{path}: no such {what}")
    return p


def readme_markers(block: str) -> tuple[str, str]:
    """The comments a README's block of ``anomaly bench BLOCK --readme`` stands between."""
    return f"<!-- bench:{block} -->", f"<!-- /bench:{block} -->"


def readme_block(path: str | Path, block: str) -> Path:
    """``path`` if it is a file holding the markers of ``block``, else one line saying which
    is missing (before a bench spends minutes measuring what it could not write)."""
    p = existing_file(path, "file")
    begin, end = readme_markers(block)
    body = p.read_text(errors="replace")
    if begin not in body or end not in body[body.index(begin) :]:
        raise AnomalyError(f"{path}: no '{begin}' ... '{end}' block to fill")
    return p


def store_location(location: str | Path) -> str:
    """A feature store's location: a URL as given, a local store that exists."""
    if not is_url(location) and not Path(location).exists():
        raise AnomalyError(f"{location}: no feature store here")  # the store's own words
    return str(location)


def feature_store(location: str | Path) -> str:
    """:func:`store_location`, and a local folder must hold a Zarr store (``zarr.json``): a
    folder of videos given as a store is refused at once, not after torch is imported."""
    path = Path(store_location(location))
    if not is_url(location) and path.is_dir() and not (path / "zarr.json").is_file():
        raise AnomalyError(
            f"{location}: no feature store here (a folder without zarr.json; "
            "'anomaly features' makes a store of videos)"
        )
    return str(location)


def run_dir(path: str | Path) -> Path:
    """A run directory: a folder holding ``config.json``."""
    p = existing_dir(path, "run directory")
    if not (p / "config.json").is_file():
        raise AnomalyError(f"{path}: not a run directory (no config.json)")
    return p


def read_toml(path: str | Path) -> dict:
    """The table of the TOML file ``path`` (a training config, a site file): one line for a
    file that is not there, cannot be read or is not TOML."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise AnomalyError(f"{path}: no such config file") from exc
    except OSError as exc:
        raise AnomalyError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise AnomalyError(f"{path}: invalid TOML ({one_line(exc, 160)})") from exc


CLAIM = ".claimed"  # the file that makes a run folder this process's (removed once used)


def claim_run_dir(out: str | Path, exist_ok: bool = False, what: str = "run folder") -> Path:
    """Create the folder a new run (or other output, named by ``what``) writes to, claim it,
    and return it.

    A run is never overwritten: ``out`` is used when it is absent or an empty folder, else
    the first free of ``out-2``, ``out-3``, ... With ``exist_ok``, ``out`` itself, unclaimed.
    The claim is one exclusive create of :data:`CLAIM` inside the folder, so of two commands
    started together exactly one gets each folder (an empty folder is not enough: both would
    see it empty). The claim also shows the folder takes files, so a read-only place fails
    now, not after an epoch. The first checkpoint removes it; a process that exits without
    writing one gives the folder back (see :func:`give_back`).
    """
    base = Path(out)
    if not base.name:
        base = base.resolve()
    if base.is_file():
        raise AnomalyError(f"{out}: exists and is a file, not a {what}")
    n = 1
    while True:
        folder = base if n == 1 else base.with_name(f"{base.name}-{n}")
        n += 1
        try:
            folder.mkdir(parents=True)
            created = True
        except FileExistsError:
            if folder.is_file() or (not exist_ok and _holds_more_than_a_claim(folder)):
                continue
            created = False
        except OSError as exc:
            raise AnomalyError(f"{folder}: cannot create the {what} ({exc.strerror})") from exc
        if exist_ok:
            _check_writable(folder, what)
            return folder
        try:
            os.close(os.open(folder / CLAIM, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            continue  # another command claimed it first
        except OSError as exc:
            why = exc.strerror
            raise AnomalyError(f"{folder}: cannot write in the {what} ({why})") from exc
        atexit.register(give_back, folder, created)
        return folder


def _holds_more_than_a_claim(folder: Path) -> bool:
    return any(p.name != CLAIM for p in folder.iterdir())


def _check_writable(folder: Path, what: str) -> None:
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise AnomalyError(f"{folder}: cannot write in the {what} ({exc.strerror})") from exc


def drop_claim(folder: str | Path) -> None:
    """The folder holds what it was claimed for: it is taken for good (the claim goes)."""
    (Path(folder) / CLAIM).unlink(missing_ok=True)


def give_back(folder: Path, created: bool) -> None:
    """Give back a claimed folder nothing was written into, at exit or when a command fails:
    the claim removed, and the folder too if this process made it; a folder holding a run
    (or outputs) keeps it."""
    try:
        if _holds_more_than_a_claim(folder):
            return
        (folder / CLAIM).unlink(missing_ok=True)
        if created:
            folder.rmdir()
    except OSError:
        pass  # moved or removed meanwhile: nothing to give back


def check_event_settings(
    threshold: float, exit_ratio: float, merge_gap: float, min_duration: float
) -> None:
    """The one check of the event settings (:class:`anomalyclip.events.EventConfig`), named by
    the options that set them; standard library only, so a command checks them before numpy
    or torch is imported. NaN compares false, so it fails every check (a NaN gap or duration
    once silently dropped every event)."""
    rules = (
        ("--threshold", threshold, lambda x: 0.0 <= x <= 1.0, "a probability in [0, 1]"),
        ("--exit-ratio", exit_ratio, lambda x: 0.0 < x <= 1.0, "a ratio in (0, 1]"),
        ("--merge-gap", merge_gap, lambda x: 0.0 <= x < math.inf, "seconds >= 0"),
        ("--min-duration", min_duration, lambda x: 0.0 <= x < math.inf, "seconds >= 0"),
    )
    for flag, value, ok, expected in rules:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and ok(value)):
            raise AnomalyError(f"{flag} {value}: expected {expected}")
