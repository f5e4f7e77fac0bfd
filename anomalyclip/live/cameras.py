"""The cameras of a watch: names, thresholds, zones and hops, resolved before torch is imported.

A camera's **name** is its id everywhere: MQTT topics, metric labels, clip file names and the
``camera`` field of every line. A ``[[camera]]`` of a site file names itself; a source given on
the command line is named after its address (:func:`~anomalyclip.inputs.safe_source_name`:
``rtsp://admin:pw@10.0.0.5:554/cam1`` -> ``10.0.0.5_554_cam1``, a file by its stem), with
``-2``, ``-3``... when two would share a name.

A camera's **threshold**, first found of:

1. ``--threshold`` on the command line (every camera);
2. the camera's ``threshold`` in the site file, or its ``threshold_rule`` applied to the
   camera's own normal footage when it was calibrated, else to the run's held-out videos;
3. the camera's calibrated threshold (``anomaly calibrate``), kept in ``RUN/cameras.json``;
4. ``threshold`` at the top of the site file;
5. the run's own (``config.json``).

``RUN/cameras.json`` is written atomically by :func:`save_calibration` (a temporary file,
fsynced, renamed over the old one) and holds, per camera, the threshold, the quantiles of
p(A) on its normal frames, the videos, frame count, seconds, rule, zone, date, package
version and the run's model hash they were computed with.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalyclip.errors import AnomalyError
from anomalyclip.inputs import Source, display_name, expand_inputs, safe_source_name
from anomalyclip.live.site import CameraSpec, Site

log = logging.getLogger(__name__)

CAMERAS_FILE = "cameras.json"
FORMAT = "anomalyclip.cameras"


@dataclass(frozen=True)
class Camera:
    """One source of a watch and how it is watched. ``threshold`` None: the watch's own;
    ``label`` names it in status and summary lines (its name when a site file named it, its
    masked address otherwise)."""

    source: Source
    name: str
    label: str
    threshold: float | None = None
    why: str = ""  # where the threshold comes from
    zone: Any = None  # anomalyclip.extract.zone.Zone
    hop: float | None = None

    @classmethod
    def of(cls, source: Source, name: str | None = None) -> Camera:
        return cls(source, name or safe_source_name(str(source)), display_name(source))


def unique_name(name: str, taken: set[str]) -> str:
    """``name``, or ``name-2``, ``name-3``... the first not in ``taken`` (which gets it)."""
    chosen, k = name, 1
    while chosen in taken:
        k += 1
        chosen = f"{name}-{k}"
    taken.add(chosen)
    return chosen


def model_hash(run: Path) -> str | None:
    """The SHA-256 of the run's model file, as its manifest records it (None without one)."""
    try:
        manifest = json.loads((run / "checkpoint.json").read_text())
        return manifest["files"]["model.safetensors"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_calibrations(run: str | Path) -> dict[str, dict]:
    """The calibrated cameras of ``run`` (name -> record); {} when it has none."""
    file = Path(run) / CAMERAS_FILE
    try:
        data = json.loads(file.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise AnomalyError(f"{file}: not readable as JSON ({exc})") from exc
    cameras = data.get("cameras") if isinstance(data, dict) else None
    if data.get("format") != FORMAT or not isinstance(cameras, dict):
        raise AnomalyError(f"{file}: not a cameras file (format {FORMAT})")
    for name, record in cameras.items():
        value = (record.get("threshold") or {}).get("value") if isinstance(record, dict) else None
        if not (isinstance(value, (int, float)) and 0 <= value <= 1):
            raise AnomalyError(f"{file}: camera {name!r}: threshold.value is not a probability")
    return cameras


def save_calibration(run: str | Path, name: str, record: dict) -> Path:
    """Set camera ``name``'s record in ``RUN/cameras.json``, atomically (module docstring)."""
    from anomalyclip.permissions import make_shareable

    folder = Path(run)
    cameras = read_calibrations(folder)
    cameras[name] = record
    data = json.dumps({"format": FORMAT, "version": 1, "cameras": cameras}, indent=1) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{CAMERAS_FILE}.", dir=folder)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        make_shareable(tmp)
        os.replace(tmp, folder / CAMERAS_FILE)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return folder / CAMERAS_FILE


def resolve_cameras(site: Site, sources: list[str], run: Any, given: float | None) -> list[Camera]:
    """The cameras to watch: the site file's, then one per source named on the command line;
    each with its threshold (module docstring), zone and hop. ``run`` is the checked
    :class:`~anomalyclip.live.run.WatchRun`; ``given`` is ``--threshold``."""
    calibrated = read_calibrations(run.path)
    cameras = [_file_camera(site, spec, run, calibrated, given) for spec in site.cameras]
    taken = {c.name for c in cameras}
    for item in sources:
        for source in expand_inputs([item], live=True):
            camera = Camera.of(source)
            name = unique_name(camera.name, taken)
            record = calibrated.get(name)
            if record is not None:
                _check_record(CameraSpec(str(source), name), record, run.path)
            threshold, why = given, "--threshold"
            if given is None and record is not None:
                threshold, why = record["threshold"]["value"], _calibrated(record)
            elif given is None:
                threshold, why = site.options.get("threshold"), str(site.path or "the run's")
                why = why if threshold is not None else "the run's"
            cameras.append(Camera(source, name, camera.label, threshold, why))
    if not cameras:
        raise AnomalyError("no sources: name them on the command line or as [[camera]] tables")
    return cameras


def _file_camera(site: Site, spec: CameraSpec, run: Any, calibrated: dict, given) -> Camera:
    expanded = expand_inputs([spec.source], live=True)
    if len(expanded) != 1:
        raise AnomalyError(f"{site.path}: [[camera]] {spec.name!r} source names "
                           f"{len(expanded)} videos; a camera is one source")  # fmt: skip
    record = calibrated.get(spec.name)
    if record is not None:
        _check_record(spec, record, run.path)
    if given is not None:
        threshold, why = given, "--threshold"
    elif spec.threshold is not None:
        threshold, why = spec.threshold, f"{site.path}"
    elif spec.threshold_rule is not None:
        threshold, why = _rule(spec, record, run)
    elif record is not None:
        threshold, why = record["threshold"]["value"], _calibrated(record)
    elif "threshold" in site.options:
        threshold, why = site.options["threshold"], f"{site.path}"
    else:
        threshold, why = None, "the run's"
    return Camera(expanded[0], spec.name, spec.name, threshold, why, spec.zone, spec.hop)


def _rule(spec: CameraSpec, record: dict | None, run: Any) -> tuple[float, str]:
    from anomalyclip.thresholds import choose_threshold

    normal = (record or {}).get("calibration") or run.config.calibration
    where = "its own footage" if record else "the run's held-out videos"
    try:
        chosen = choose_threshold(spec.threshold_rule, normal)
    except AnomalyError as exc:
        raise AnomalyError(f"camera {spec.name}: threshold_rule: {exc}") from None
    if chosen.rule.startswith("fixed"):
        return chosen.value, chosen.rule
    return chosen.value, f"{chosen.rule} on {where}"


def _calibrated(record: dict) -> str:
    return (f"calibrated {record['threshold'].get('rule')} on {len(record.get('videos', []))} "
            f"video(s), {record.get('frames')} frames, {record.get('date')}")  # fmt: skip


def _check_record(spec: CameraSpec, record: dict, run: Path) -> None:
    """Warn when a calibration no longer fits: another zone, or the run's model changed."""
    zone = spec.zone.describe() if spec.zone is not None else None
    if record.get("zone") != zone:
        log.warning("camera %s was calibrated with zone %s and is watched with zone %s: "
                    "calibrate it again", spec.name, record.get("zone"), zone)  # fmt: skip
    if record.get("model_sha256") not in (None, model_hash(run)):
        log.warning("camera %s was calibrated with another model of %s: calibrate it again",
                    spec.name, run)  # fmt: skip
