"""``anomaly calibrate``: a camera's threshold from its own normal footage."""

from __future__ import annotations

import typer

from anomalyclip import checks
from anomalyclip.cli.app import app
from anomalyclip.cli.options import clip_option, device_option, precision_option
from anomalyclip.errors import AnomalyError


@app.command("calibrate")
def calibrate_cmd(
    run: str = typer.Argument(..., metavar="RUN", help="Run folder (the threshold is kept in it)."),
    videos: list[str] = typer.Argument(
        None,
        metavar="VIDEO",
        help="The camera's normal footage: videos, folders, globs, lists of them, or "
        "stream URLs (with --seconds); optional with --reviews.",
    ),  # fmt: skip
    camera: str = typer.Option(
        ..., "--camera", metavar="NAME", help="The camera's name (as watch names it)."
    ),
    reviews: str = typer.Option(
        None,
        "--reviews",
        metavar="WATCH_DIR",
        help="A watch's output folder: the clips of the camera's events marked false alarm "
        "on its live page are normal footage too.",
    ),  # fmt: skip
    seconds: float = typer.Option(
        None, "--seconds", metavar="SECONDS", help="Time of each stream to record."
    ),
    rule: str = typer.Option(
        None,
        "--threshold-rule",
        "--rule",
        metavar="RULE",
        help="far@X or fixed@T (default: the run's rule, else far@1).",
    ),  # fmt: skip
    config: str = typer.Option(
        None, "--config", metavar="FILE", help="A site file: the camera's zone."
    ),
    clip: str = clip_option("CLIP: image and text towers (default: the run's)."),
    device: str = device_option(),
    precision: str = precision_option(),
) -> None:
    """Score footage the site says is normal as predict does (the camera's zone included) and
    set the camera's threshold by the run's rule; kept in RUN/cameras.json, where watch finds
    it for that camera. With --reviews, the clips of the camera's events an operator marked
    "false alarm" on the watch's live page are added to the footage."""
    from anomalyclip.live.calibrate import CalibrateConfig, calibrate_camera
    from anomalyclip.live.cameras import save_calibration

    cfg = CalibrateConfig(rule, seconds, None, clip, device, precision)
    sources, cfg, clips = _checked(run, camera, (videos or [], reviews), config, cfg)
    record = calibrate_camera(run, camera, sources, cfg)
    where = save_calibration(run, camera, record)
    value, before = record["threshold"]["value"], record["run_threshold"]
    shown = f"; the run's {before:.4f}" if before is not None else ""
    added = f" ({len(clips)} false-alarm clip{'s'[: len(clips) != 1]} from {reviews})"
    typer.echo(f"camera {camera}: threshold {value:.4f} ({record['rule']} on "
               f"{len(record['videos'])} video(s), {record['frames']} frames, "
               f"{record['seconds']:.0f} s{shown}) in {where}{added * bool(reviews)}")  # fmt: skip


def _false_alarms(reviews: str | None, camera: str, videos: list[str] | None) -> list[str]:
    """The clips of ``camera``'s events whose last review in the watch folder ``reviews`` is
    a false alarm; an error when neither they nor ``videos`` give any footage."""
    from anomalyclip.live.reviews import false_alarm_clips

    if reviews is None:
        if not videos:
            raise AnomalyError("no footage: give the camera's normal videos (VIDEO...) or "
                               "--reviews WATCH_DIR")  # fmt: skip
        return []
    checks.existing_dir(reviews, "watch output folder (--reviews)")
    clips = [str(p) for p in false_alarm_clips(reviews).get(camera, [])]
    if not clips and not videos:
        raise AnomalyError(f"--reviews {reviews}: no event of camera {camera!r} marked a false "
                           "alarm (with its clip); give the camera's normal footage as "
                           "VIDEO... too")  # fmt: skip
    return clips


def _checked(run: str, camera: str, footage: tuple, config: str | None, cfg):
    """The sources (``footage``: the VIDEOs, then the false-alarm clips of ``--reviews``), the
    config (the camera's zone from the site file) and the clips, every argument checked
    before torch is imported."""
    import dataclasses
    import math

    from anomalyclip.inputs import expand_inputs, is_live
    from anomalyclip.live.calibrate import calibration_rule
    from anomalyclip.live.site import NAME, load_site
    from anomalyclip.runs.config import RunConfig

    run_config = RunConfig.read(run)
    checks.precision(cfg.precision)
    if cfg.device:
        checks.device_name(cfg.device)
    if not NAME.fullmatch(camera):
        raise AnomalyError(f"--camera {camera!r}: use 1 to 80 letters, digits, '_', '-' or '.'")
    calibration_rule(run_config, cfg.rule)
    videos, reviews = footage
    clips = _false_alarms(reviews, camera, videos)
    sources = expand_inputs([*videos, *clips], live=True)
    seconds = cfg.seconds
    if any(is_live(s) for s in sources) and not (seconds and math.isfinite(seconds)
                                                 and seconds > 0):  # fmt: skip
        raise AnomalyError("a stream is calibrated on a recording: give --seconds N (N > 0)")
    if config:
        spec = next((c for c in load_site(config).cameras if c.name == camera), None)
        if spec is None:
            raise AnomalyError(f"{config}: no [[camera]] named {camera!r}")
        cfg = dataclasses.replace(cfg, zone=spec.zone)
    return sources, cfg, clips
