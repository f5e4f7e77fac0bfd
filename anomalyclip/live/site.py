"""One file for a site: ``anomaly watch --config site.toml``.

The file holds what the command line holds (``checkpoint``, ``out``, ``hop``, ``threshold``,
...: the options of ``anomaly watch``, with ``_`` for ``-``), one ``[[camera]]`` table per
camera, and the ``[mqtt]``, ``[metrics]`` and ``[retention]`` tables::

    checkpoint = "runs/ucf"
    out = "watch"

    [[camera]]
    name = "gate"                       # the camera's id: MQTT topics, metric labels, clips
    source = "rtsp://admin:pw@10.0.0.5:554/stream1"
    threshold = 0.6                     # or threshold_rule = "far@0.5"
    zone = [[0, 200], [640, 200], [640, 480], [0, 480]]
    hop = 1.0

    [mqtt]
    url = "mqtt://user:pw@127.0.0.1:1883/anomalyclip"

    [metrics]
    listen = "127.0.0.1:9108"

    [retention]
    max_gb = 20
    max_days = 14
    max_log_mb = 100
    keep_logs = 5

Options given on the command line win over the file's. Paths in the file (``checkpoint``,
``out``, ``clip``, a camera's ``source`` when it is not a URL) are relative to the file's
folder. An unknown table or key, or a value of the wrong type, is one line naming the file,
the table and the key. Everything here is the standard library: the file is read and checked
before torch is imported.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomalyclip import checks
from anomalyclip.errors import AnomalyError
from anomalyclip.inputs import is_live

NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,79}")

_STR, _NUM, _INT, _BOOL, _LIST = "a string", "a number", "an integer", "true or false", "a list"
# key -> the type it takes: the command's options, and each table's keys
OPTIONS = {
    "checkpoint": _STR, "out": _STR, "clip": _STR, "device": _STR, "precision": _STR,
    "hop": _NUM, "threshold": _NUM, "realtime": _BOOL, "drop": _STR, "webhook": _STR,
    "save_clips": _BOOL, "status_every": _NUM, "rtsp_transport": _STR, "stall": _NUM,
    "batch_size": _INT, "mqtt": _STR, "metrics": _STR, "ui": _STR, "preprocess": _STR,
    "backend": _STR,
}  # fmt: skip
CAMERA = {"name": _STR, "source": _STR, "threshold": _NUM, "threshold_rule": _STR,
          "zone": _LIST, "hop": _NUM}  # fmt: skip
TABLES = {
    "mqtt": {"url": _STR},
    "metrics": {"listen": _STR},
    "retention": {"max_gb": _NUM, "max_days": _NUM, "max_log_mb": _NUM, "keep_logs": _INT},
}
_PATHS = ("checkpoint", "out", "clip")  # relative to the file's folder


@dataclass(frozen=True)
class CameraSpec:
    """One ``[[camera]]`` of a site file (``name`` None: derived from the source)."""

    source: str
    name: str | None = None
    threshold: float | None = None
    threshold_rule: str | None = None
    zone: Any = None  # a checked :class:`~anomalyclip.extract.zone.Zone`
    hop: float | None = None


@dataclass(frozen=True)
class Site:
    """A site file's content, checked; an empty one without ``--config``."""

    path: Path | None = None
    options: dict[str, Any] = field(default_factory=dict)  # top-level keys given
    cameras: tuple[CameraSpec, ...] = ()
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)  # mqtt, metrics, retention

    def merged(self, given: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
        """Each option: the command line's (not None), else the file's, else the default."""
        out = dict(defaults)
        out.update(self.options)
        out.update({k: v for k, v in given.items() if v is not None})
        if self.tables.get("mqtt", {}).get("url") and given.get("mqtt") is None:
            out["mqtt"] = self.tables["mqtt"]["url"]
        if self.tables.get("metrics", {}).get("listen") and given.get("metrics") is None:
            out["metrics"] = self.tables["metrics"]["listen"]
        return out

    def table(self, name: str) -> dict[str, Any]:
        return dict(self.tables.get(name, {}))


def load_site(path: str | Path) -> Site:
    """The checked content of the site file at ``path`` (module docstring)."""
    file = Path(path)
    if not file.is_file():
        raise AnomalyError(f"{path}: no such site file")
    data = checks.read_toml(file)
    where = str(path)
    cameras = data.pop("camera", [])
    tables = {name: data.pop(name) for name in TABLES if isinstance(data.get(name), dict)}
    for key, value in data.items():
        if isinstance(value, dict):
            raise AnomalyError(f"{where}: unknown table [{key}] (known: camera, "
                               f"{', '.join(TABLES)})")  # fmt: skip
        _check(where, "", key, value, OPTIONS)
    for name, table in tables.items():
        for key, value in table.items():
            _check(where, f"[{name}] ", key, value, TABLES[name])
    if not isinstance(cameras, list) or not all(isinstance(c, dict) for c in cameras):
        raise AnomalyError(f"{where}: camera: expected [[camera]] tables")
    options = {k: _relative(file, v) if k in _PATHS else v for k, v in data.items()}
    specs = tuple(_camera(file, where, k, table) for k, table in enumerate(cameras, 1))
    names = [c.name for c in specs]
    for name in names:
        if names.count(name) > 1:
            raise AnomalyError(f"{where}: [[camera]] name {name!r} is given twice")
    return Site(file, options, specs, tables)


def _camera(file: Path, where: str, k: int, table: dict) -> CameraSpec:
    from anomalyclip.extract.zone import Zone

    label = f"[[camera]] {table['name']!r}" if isinstance(table.get("name"), str) else \
        f"[[camera]] #{k}"  # fmt: skip
    for key, value in table.items():
        _check(where, f"{label} ", key, value, CAMERA)
    for key in ("name", "source"):
        if key not in table:
            raise AnomalyError(f"{where}: {label}: no {key}")
    if not NAME.fullmatch(table["name"]):
        raise AnomalyError(
            f"{where}: {label} name: use 1 to 80 letters, digits, '_', '-' or '.' (not first): "
            "the name is an MQTT topic level, a metric label and a clip file name"
        )
    if "threshold" in table and "threshold_rule" in table:
        raise AnomalyError(f"{where}: {label}: threshold and threshold_rule: give one of them")
    if "threshold" in table and not 0 <= table["threshold"] <= 1:
        raise AnomalyError(f"{where}: {label} threshold: a probability in [0, 1]")
    if "threshold_rule" in table:
        from anomalyclip.thresholds import ThresholdRule

        try:
            ThresholdRule.parse(table["threshold_rule"])
        except AnomalyError as exc:
            raise AnomalyError(f"{where}: {label} threshold_rule: {exc}") from None
    zone = Zone.parse(table["zone"], f"{where}: {label} zone") if "zone" in table else None
    source = table["source"] if is_live(table["source"]) else _relative(file, table["source"])
    return CameraSpec(source, table["name"], table.get("threshold"), table.get("threshold_rule"),
                      zone, table.get("hop"))  # fmt: skip


def _check(where: str, table: str, key: str, value: Any, known: dict[str, str]) -> None:
    if key not in known:
        raise AnomalyError(f"{where}: {table}unknown key {key!r} (known: {', '.join(known)})")
    expected = known[key]
    ok = {
        _STR: isinstance(value, str),
        _NUM: isinstance(value, (int, float)) and not isinstance(value, bool)
        and math.isfinite(value),
        _INT: isinstance(value, int) and not isinstance(value, bool),
        _BOOL: isinstance(value, bool),
        _LIST: isinstance(value, list),
    }[expected]  # fmt: skip
    if not ok:
        raise AnomalyError(f"{where}: {table}{key} = {value!r}: expected {expected}")


def _relative(file: Path, value: str) -> str:
    """``value`` as a path relative to the site file's folder (absolute paths, ``~`` and
    URLs as they are)."""
    if is_live(value) or "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else file.parent / path)
