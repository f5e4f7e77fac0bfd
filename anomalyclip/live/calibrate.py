"""``anomaly calibrate``: a camera's threshold from its own normal footage.

A run's threshold is chosen on held-out normal videos of its training data, so on a camera
the run never saw (another background, another angle) the same p(A) may be reached by far
more, or far fewer, normal frames. :func:`calibrate_camera` scores footage the site says is
normal, exactly as ``predict`` scores a video (:func:`~anomalyclip.evaluate.predict.
Predictor`: the extraction pipeline, the camera's zone included, then the whole video
through the model), applies the run's threshold rule (``far@1`` by default: the p(A) that 1 %
of these frames reach) and returns what :func:`~anomalyclip.live.cameras.save_calibration`
keeps in ``RUN/cameras.json``: the threshold and the quantiles it came from, the videos,
frames, seconds, rule, zone, precision, date, package version and the run's model hash.

A live source (a URL, ``/dev/videoN``) is recorded first for ``seconds`` seconds, its packets
copied into a Matroska file as they come (no re-encoding), and that file is scored.
"""

from __future__ import annotations

import logging
import math
import shlex
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import av
import numpy as np

from anomalyclip.errors import AnomalyError
from anomalyclip.events import video_seconds
from anomalyclip.extract.zone import Zone
from anomalyclip.inputs import Source, is_live, redact
from anomalyclip.live.cameras import model_hash
from anomalyclip.runs.config import RunConfig
from anomalyclip.thresholds import ThresholdRule, choose_threshold, normal_quantiles

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrateConfig:
    """How footage is scored: ``rule`` (None: the run's, when it needs no labels; else
    far@1), ``seconds`` of each live source to record, the camera's ``zone``, and the image
    tower's ``clip``, ``device`` and ``precision`` (those the camera is watched with)."""

    rule: str | None = None
    seconds: float | None = None
    zone: Zone | None = None
    clip: str | None = None
    device: str | None = None
    precision: str = "auto"


def calibration_rule(run_config: RunConfig, given: str | None) -> ThresholdRule:
    """The rule to calibrate with: ``given``, else the run's own when it needs no labels
    (normal footage has none), else ``far@1``."""
    if given is not None:
        rule = ThresholdRule.parse(given)
        if rule.needs_labels:
            raise AnomalyError(f"--threshold-rule {given}: needs frames labelled abnormal; a "
                               "camera's normal footage calibrates far@X or fixed@T")  # fmt: skip
        return rule
    own = run_config.threshold_rule or "far@1"
    parsed = ThresholdRule.parse(own)
    return ThresholdRule.parse("far@1") if parsed.needs_labels else parsed


def record_stream(url: str, seconds: float, path: Path) -> Path:
    """Copy ``seconds`` seconds of the live source ``url``'s video packets into ``path``
    (Matroska), as they arrive."""
    shown = redact(url)
    try:
        src = av.open(url, timeout=(10.0, 10.0))
        with src, av.open(str(path), "w", format="matroska") as dst:
            if not src.streams.video:
                raise AnomalyError(f"{shown}: no video stream")
            stream = src.streams.video[0]
            out = dst.add_stream_from_template(stream)
            start = None
            for packet in src.demux(stream):
                if packet.dts is None or packet.pts is None:
                    continue
                t = float(packet.pts * stream.time_base)
                start = t if start is None else start
                if t - start >= seconds:
                    break
                packet.stream = out
                dst.mux(packet)
    except (av.error.FFmpegError, OSError) as exc:
        raise AnomalyError(f"{shown}: cannot record ({redact(str(exc))})") from exc
    log.info("%s: %g s recorded for calibration", shown, seconds)
    return path


def calibrate_camera(run: str | Path, camera: str, sources: list[Source],
                     cfg: CalibrateConfig) -> dict:  # fmt: skip
    """The calibration record of ``camera`` from its normal footage ``sources`` (module
    docstring); nothing is written."""
    from anomalyclip.evaluate.predict import PredictConfig, Predictor

    precision = _precision(cfg.precision, cfg.device)
    predictor = Predictor(run, cfg.clip, cfg.device, precision)
    run_config = predictor.config
    rule = calibration_rule(run_config, cfg.rule)
    with tempfile.TemporaryDirectory(prefix="anomaly-calibrate-") as tmp:
        paths = [record_stream(str(s), cfg.seconds, Path(tmp) / f"stream-{k}.mkv")
                 if is_live(s) else Path(s) for k, s in enumerate(sources)]  # fmt: skip
        options = PredictConfig(threshold=0.5, zone=cfg.zone)  # only the curves are used
        scored, failed = predictor.predict(paths, options)
    if failed:
        path, reason = next(iter(failed.items()))
        raise AnomalyError(f"{redact(path)}: cannot be scored ({redact(reason)})")
    names = [redact(str(s)) for s in sources]
    seconds = sum(_seconds(pred.times, pred.fps) for pred in scored)
    quantiles = normal_quantiles([pred.p_abnormal for pred in scored], seconds, names)
    normal = {"source": f"normal footage of camera {camera}", **quantiles}
    chosen = choose_threshold(rule, normal)
    return {
        "threshold": chosen.to_dict(),
        "calibration": normal,
        "videos": names,
        "frames": quantiles["frames"],
        "seconds": seconds,
        "rule": str(rule),
        "zone": cfg.zone.describe() if cfg.zone is not None else None,
        "precision": precision,
        "run_threshold": run_config.threshold.value if run_config.threshold else None,
        "model_sha256": model_hash(Path(run)),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "anomalyclip": _version(),
        "command": redact(shlex.join(["anomaly", *sys.argv[1:]])),
    }


def _precision(precision: str, device: str | None) -> str:
    """``auto`` as the watch resolves it on this device (the image tower's fastest)."""
    if precision != "auto":
        return precision
    from anomalyclip.extract.encoder import resolve_precision
    from anomalyclip.runs import default_device

    return resolve_precision("auto", default_device(device))


def _seconds(times: np.ndarray, fps: float) -> float:
    """Seconds of video the rows cover (by their count at ``fps`` when times are unknown)."""
    seconds = video_seconds(times)
    return seconds if not math.isnan(seconds) else len(times) / (fps or 1.0)


def _version() -> str:
    from anomalyclip import __version__

    return __version__
