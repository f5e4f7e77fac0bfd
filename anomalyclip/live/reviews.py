"""``reviews.jsonl``: what operators decided about a watch's events, and what it gives back.

The live page (:mod:`anomalyclip.live.ui`) appends one JSON line per decision to
``DIR/reviews.jsonl``, one whole line at a time like ``events.jsonl``::

    {"event": "0:120", "source": "cam1.ts", "start_frame": 120,
     "opened_at": "2025-01-01T10:00:00.000+00:00", "decision": "false_alarm",
     "time": "2025-01-01T10:00:09.512+00:00", "client": "127.0.0.1",
     "start_time": 8.0, "end_time": 11.5, "class": "Explosion", "peak": 0.93,
     "clip": "cam1-000000120.mp4"}

``decision`` is ``confirm`` or ``false_alarm``; ``source`` and ``start_frame`` name the
event as its lines in ``events.jsonl`` do, and ``opened_at`` (the ``reported_at`` of its
``opened`` line) tells it apart from an event of a watch restarted into the same folder,
whose frame numbers start again at 0. ``clip`` is the clip's file name when it was complete
at the time of the decision, else null. A later decision on the same event replaces an
earlier one.

:func:`false_alarm_clips` lists, per camera, the clip files of the events whose last
decision is a false alarm: footage an operator called normal, which ``anomaly calibrate RUN
--camera NAME --reviews DIR`` adds to that camera's normal footage.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

DECISIONS = ("confirm", "false_alarm")
REVIEWS = "reviews.jsonl"


def _lines(path: Path) -> Iterator[dict]:
    """The JSON objects of a JSON-lines file, in order (a missing file has none; a line that
    is not a JSON object is skipped and counted in one warning)."""
    if not path.is_file():
        return
    bad = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if isinstance(record, dict):
                yield record
            else:
                bad += 1
    if bad:
        log.warning("%s: %d line(s) that are not JSON objects skipped", path, bad)


def last_decisions(folder: str | Path) -> dict[tuple[str, int, str | None], dict]:
    """``(source, start_frame, opened_at)`` -> the last review line of that event."""
    decisions: dict[tuple[str, int, str | None], dict] = {}
    for r in _lines(Path(folder) / REVIEWS):
        if r.get("decision") in DECISIONS and isinstance(r.get("start_frame"), int):
            decisions[(str(r.get("source")), r["start_frame"], r.get("opened_at"))] = r
    return decisions


def false_alarm_clips(folder: str | Path) -> dict[str, list[Path]]:
    """Per camera (the ``camera`` name of its lines, as ``watch`` names it and ``calibrate
    --camera`` takes it), the clip files under ``folder/clips`` of the events whose last
    decision in ``folder/reviews.jsonl`` is ``false_alarm``, in the order of ``events.jsonl``.

    An event's clip is found from its ``clip`` line in ``events.jsonl`` (the first one after
    the event's ``opened`` line), and only by file name inside ``folder/clips``; clips that
    failed or are gone are left out. These are the videos to give ``anomaly calibrate`` as
    more normal footage of that camera.
    """
    folder = Path(folder)
    wanted = {k for k, r in last_decisions(folder).items() if r["decision"] == "false_alarm"}
    waiting: dict[tuple[str, int], str] = {}  # false alarms opened, clip line not yet seen
    found: dict[str, list[Path]] = {}
    for line in _lines(folder / "events.jsonl"):
        key = (str(line.get("source")), line.get("start_frame"))
        if line.get("kind") == "opened":
            if (*key, line.get("reported_at")) in wanted:
                waiting[key] = str(line.get("camera") or key[0])
            else:
                waiting.pop(key, None)  # the same key again: a later watch's event
        elif line.get("kind") == "clip" and key in waiting:
            camera = waiting.pop(key)
            name = Path(str(line.get("clip") or "")).name
            path = folder / "clips" / name
            if name and path.is_file():
                found.setdefault(camera, []).append(path)
    return found
