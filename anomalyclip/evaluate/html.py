"""``report.html``: an evaluation folder as one page that opens offline, from disk.

The page is built from what ``anomaly eval`` leaves behind and nothing else (``metrics.json``,
the per-video CSVs under ``videos/``, ``events.json``), so ``anomaly report EVAL_DIR`` rebuilds
exactly the page that ``eval`` wrote. Everything it shows is embedded in it as JSON and drawn
by the page's own script in SVG (the template, script and style sheet are the package data
under ``report_page/``): no server, no network, no other file read, except a video's
rendered MP4 when one lies beside its CSV with the CSV's name (``videos/<name>.mp4``; e.g.
what ``anomaly predict --render`` wrote for that video), linked relatively and played there.

What is kept of the frames, so the page stays light (about 1.9 kB per video whatever its
length, 60 kB besides; a synthetic UCF-Crime-sized test set of 290 videos and 1.1 M frames
gives 0.6 MB):

- a video's p(A) curve becomes at most :data:`BUCKETS` equal time buckets, each keeping the
  lowest and the highest p(A) of its rows (quantised to 1/254), so a one-frame peak is drawn
  at its full height however long the video; the page draws the band between the two;
- its ground truth becomes intervals (runs of rows whose ``gt_label`` is not Normal) and its
  events those of ``events.json``; the table's numbers (rows, share of abnormal rows, highest
  p(A), intervals found and missed, false events) are computed on every row;
- the test set's ROC and PR curves keep a point wherever the curve enters a new
  :data:`CURVE_STEP`-sized cell (about 1000 points each).
"""

from __future__ import annotations

import base64
import html
import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np

from anomalyclip.errors import AnomalyError
from anomalyclip.evaluate.event_metrics import Scored, match
from anomalyclip.evaluate.metrics import json_ready, pr_curve, roc_curve
from anomalyclip.evaluate.report import read_scores, write_text
from anomalyclip.events import row_period
from anomalyclip.names import safe_name

log = logging.getLogger(__name__)

BUCKETS = 600  # per video curve: about one per pixel of a wide window
CURVE_STEP = 0.002  # ROC / PR: the cell size of the points kept
MATCH_IOU = 0.1  # an event finds an interval at this temporal IoU (the loosest reported)
EMPTY = 255  # a bucket without rows; values are round(254 * p)
PAGE_FILES = ("page.html", "report.js", "report.css")


def envelope(x: np.ndarray, p: np.ndarray, end: float, buckets: int = BUCKETS):
    """(lo, hi) uint8 arrays of ``n = min(buckets, T)`` buckets of ``[x[0], end)``: the lowest
    and highest ``p`` (T,) of the rows in each, as ``round(254 * p)``; :data:`EMPTY` where a
    bucket holds no row. Bucket ``i`` is centred on ``x[0] + i * w`` (``w = (end - x[0]) /
    n``), so a video of evenly spaced rows with ``T <= buckets`` keeps each row, at its time,
    in a bucket of its own, even with some jitter in the times."""
    n = max(1, min(buckets, p.size))
    span = end - x[0]
    where = np.floor((x - x[0]) / span * n + 0.5) if span > 0 else np.zeros(p.size)
    where = np.clip(where.astype(np.int64), 0, n - 1)
    lo, hi = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(lo, where, p)
    np.maximum.at(hi, where, p)

    def quantised(v: np.ndarray) -> np.ndarray:
        levels = np.round(254 * np.clip(np.nan_to_num(v), 0.0, 1.0))
        return np.where(np.isfinite(v), levels, EMPTY).astype(np.uint8)

    return quantised(lo), quantised(hi)


def simplify(xs: np.ndarray, ys: np.ndarray, step: float = CURVE_STEP) -> list[list[float]]:
    """The points of a curve where it enters a new ``step`` x ``step`` cell (the first and
    the last point always kept), rounded to 1e-4: a monotone curve keeps <= 2 / step."""
    cells = np.stack([np.floor(xs / step), np.floor(ys / step)], axis=1)
    kept = np.r_[True, (cells[1:] != cells[:-1]).any(1)]
    kept[-1] = True
    return np.round(np.stack([xs[kept], ys[kept]], axis=1), 4).tolist()


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) row ranges of the True runs of ``mask``."""
    edges = np.diff(np.r_[0, mask.astype(np.int8), 0])
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def _edges(values: np.ndarray, spans: list[tuple[int, int]]) -> list[tuple[float, float]]:
    """Row spans as [value of the first row, value of the row after) (past the last row: one
    row period more)."""
    after = np.r_[values, values[-1] + row_period(values)] if values.size else values
    return [(float(after[a]), float(after[b])) for a, b in spans]


def video_entry(name: str, rows: dict[str, Any], events: list[dict] | None, normal: str) -> dict:
    """One video of the page: its row of the table and what its curve panel draws.
    ``rows``: :func:`~anomalyclip.evaluate.report.read_scores`; ``events``: the video's
    events in ``events.json`` (None when no threshold decided)."""
    frames, times, p = rows["frame"], rows["time"], rows["p_abnormal"]
    timed = bool(times.size) and bool(np.isfinite(times).all())
    x = times if timed else frames.astype(np.float64)  # untimed rows: the frame axis
    known = rows["labels"] is not None
    names = rows["class_names"]
    truth = rows["labels"] != names.index(normal) if known else np.zeros(p.size, bool)
    spans = runs(truth)
    kinds, counts = np.unique(rows["labels"][truth], return_counts=True) if known else ([], [])
    label = names[kinds[np.argmax(counts)]] if len(kinds) else (normal if known else "")
    end = float(x[-1] + row_period(x)) if x.size else 0.0
    lo, hi = envelope(x, p, end) if p.size else (np.zeros(0, np.uint8),) * 2
    found = missed = false = None
    if events is not None:
        true = [Scored(0, int(a), int(b)) for a, b in _edges(frames, spans)]
        pred = [Scored(0, e["start_frame"], e["end_frame"], score=e["peak"]) for e in events]
        hits = match(pred, true, MATCH_IOU)
        found = int(hits.sum())
        missed, false = len(true) - found, len(pred) - found
    return {
        "id": unquote(name),
        "class": label,
        "frames": int(p.size),
        "abnormal": round(float(truth.mean()), 4) if known and p.size else None,
        "max": round(float(p.max()), 4) if p.size else None,
        "found": found,
        "missed": missed,
        "false": false,
        "unit": "s" if timed else "frame",
        "span": [round(float(x[0]), 4) if x.size else 0.0, round(end, 4)],
        "lo": base64.b64encode(lo.tobytes()).decode(),
        "hi": base64.b64encode(hi.tobytes()).decode(),
        "gt": [[round(a, 4), round(b, 4)] for a, b in _edges(x, spans)],
        "events": [
            [round(e[k], 4) for k in ("start_time", "end_time", "peak")] + [e["class"]]
            for e in events or []
        ],
    }


def _read_events(folder: Path) -> dict[str, list[dict]]:
    """``events.json`` as output name -> that video's events (empty without the file)."""
    path = folder / "events.json"
    if not path.is_file():
        return {}
    try:
        found = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise AnomalyError(f"{path}: not JSON ({e.msg}, line {e.lineno})") from e
    by_video: dict[str, list[dict]] = {}
    for event in found:
        by_video.setdefault(safe_name(event["source"]), []).append(event)
    return by_video


def _curves(p: np.ndarray, abnormal: np.ndarray) -> dict[str, Any]:
    """The test set's ROC (fpr, tpr) and PR (recall, precision) points (None where undefined)."""
    out: dict[str, Any] = {"roc": None, "pr": None}
    if abnormal.any() and not abnormal.all():
        fpr, tpr, _ = roc_curve(p, abnormal)
        out["roc"] = simplify(fpr, tpr)
    if abnormal.any():
        precision, recall, _ = pr_curve(p, abnormal)
        out["pr"] = simplify(np.r_[0.0, recall], np.r_[1.0, precision])
    return out


def report_data(eval_dir: str | Path, normal: str | None = None) -> dict[str, Any]:
    """Everything the page shows, read from an evaluation folder; ``normal`` names the
    Normal class (default: the one ``metrics.json`` names)."""
    folder = Path(eval_dir)
    metrics_path = folder / "metrics.json"
    if not metrics_path.is_file():
        raise AnomalyError(f"{folder}: no metrics.json (not an `anomaly eval` output folder)")
    try:
        metrics = json.loads(metrics_path.read_text())
    except json.JSONDecodeError as e:
        raise AnomalyError(f"{metrics_path}: not JSON ({e.msg}, line {e.lineno})") from e
    if normal is None:
        try:
            normal = metrics["class_names"][metrics["normal_id"]]
        except (KeyError, IndexError, TypeError) as e:
            raise AnomalyError(f"{metrics_path}: names no Normal class ({e!r})") from e
    events = _read_events(folder)
    decided = bool(metrics.get("decision"))  # events were looked for, at a threshold
    csvs = sorted((folder / "videos").rglob("*.csv"))
    if not csvs:
        raise AnomalyError(f"{folder / 'videos'}: no per-video CSV files")
    videos, scores, truths = [], [], []
    for path in csvs:
        name = path.relative_to(folder / "videos").with_suffix("").as_posix()
        rows = read_scores(path)
        entry = video_entry(name, rows, events.get(name, []) if decided else None, normal)
        movie = path.with_suffix(".mp4")
        entry["video"] = quote(movie.relative_to(folder).as_posix()) if movie.is_file() else None
        videos.append(entry)
        if rows["labels"] is not None:
            scores.append(rows["p_abnormal"])
            truths.append(rows["labels"] != rows["class_names"].index(normal))
    curves = _curves(np.concatenate(scores), np.concatenate(truths)) if scores else {}
    return {"metrics": metrics, "curves": curves, "videos": videos, "match_iou": MATCH_IOU}


def render_page(data: dict[str, Any]) -> str:
    """The page's HTML: the template with its style sheet, script and ``data`` inlined."""
    files = resources.files("anomalyclip.evaluate") / "report_page"
    template, script, style = (files.joinpath(f).read_text("utf-8") for f in PAGE_FILES)
    # "<" escaped: the JSON cannot close its <script> element, whatever the video names hold
    text = json.dumps(json_ready(data), separators=(",", ":"), allow_nan=False)
    text = text.replace("<", "\\u003c")
    metrics = data["metrics"]
    title = f"Evaluation: {metrics.get('dataset', '')}, {metrics.get('videos', '')} test videos"
    filled = {"TITLE": html.escape(title), "STYLE": style, "SCRIPT": script, "DATA": text}
    parts = template.split("{{")  # one pass: nothing inserted is read again for markers
    out = [parts[0]]
    for part in parts[1:]:
        key, sep, rest = part.partition("}}")
        if not sep or key not in filled:
            raise ValueError(f"report template: unknown marker {{{{{key[:20]}")
        out += [filled[key], rest]
    return "".join(out)


def write_report(eval_dir: str | Path, normal: str | None = None) -> Path:
    """Write ``EVAL_DIR/report.html`` (atomically) and return its path."""
    folder = Path(eval_dir)
    page = render_page(report_data(folder, normal))
    path = write_text(folder / "report.html", page)
    log.debug("report: %s (%.0f kB)", path, path.stat().st_size / 1e3)
    return path
