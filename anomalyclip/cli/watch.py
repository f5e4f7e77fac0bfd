"""``anomaly watch``: live scoring of cameras and streams."""

from __future__ import annotations

import typer

from anomalyclip import checks, locations
from anomalyclip.cli.app import app
from anomalyclip.cli.options import (
    calibrate_on_option,
    clip_option,
    decision_rule,
    device_option,
    exit_ratio_option,
    merge_gap_option,
    min_duration_option,
    precision_option,
    threshold_option,
    threshold_rule_option,
    warn_if_random_clip,
)


@app.command("watch")
def watch_cmd(
    sources: list[str] = typer.Argument(
        ...,
        metavar="SOURCE",
        help="rtsp://, http(s)://, udp://, srt:// URLs, /dev/videoN, files, folders, globs "
        "or lists of them.",
    ),  # fmt: skip
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", metavar="RUN", help="Run folder."),
    out: str = typer.Option(
        "watch", "--out", "-o", metavar="DIR", help="Folder for events.jsonl and clips/."
    ),
    clip: str = clip_option("CLIP: image and text towers (default: the run's)."),
    device: str = device_option(),
    precision: str = precision_option(),
    hop: float = typer.Option(
        0.5, "--hop", metavar="SECONDS", help="Time between two scorings of a source."
    ),
    threshold: float = threshold_option(),
    threshold_rule: str = threshold_rule_option(),
    calibrate_on: str = calibrate_on_option(),
    min_duration: float = min_duration_option(),
    merge_gap: float = merge_gap_option(),
    exit_ratio: float = exit_ratio_option(),
    realtime: bool = typer.Option(False, "--realtime", help="Play files at their frame rate."),
    drop: str = typer.Option(
        None, "--drop", metavar="POLICY", help="When behind: oldest (live default) or none."
    ),
    webhook: str = typer.Option(
        None, "--webhook", metavar="URL", help="POST every event line here as JSON."
    ),
    save_clips: bool = typer.Option(False, "--save-clips", help="Write each event as an MP4."),
    status_every: float = typer.Option(
        10.0,
        "--status-every",
        metavar="SECONDS",
        help="Time between status lines on stderr (0: none).",
    ),
    rtsp_transport: str = typer.Option(
        "tcp", "--rtsp-transport", metavar="PROTOCOL", help="tcp or udp."
    ),
    stall: float = typer.Option(
        5.0, "--stall", metavar="SECONDS", help="Time without data before reconnecting."
    ),
    batch_size: int = typer.Option(32, "--batch-size", metavar="N", help="Frames per forward."),
) -> None:
    """Score cameras and streams as they arrive; events as JSON lines on stdout.

    Events also go to OUT/events.jsonl. SIGINT or SIGTERM closes open events and exits 0.
    """
    import dataclasses

    from anomalyclip.inputs import expand_inputs

    checks.precision(precision)
    if clip:
        locations.local_clip(clip)
    if calibrate_on:
        calibrate_on = checks.store_location(calibrate_on)
    rule = decision_rule(threshold, threshold_rule)
    expanded = expand_inputs(sources, live=True)
    watchers = _stop_on_signals()
    from anomalyclip.events import EventConfig
    from anomalyclip.live.config import ReadConfig, WatchConfig

    # every option is checked before torch is imported: a typo fails in a second
    cfg = WatchConfig(
        EventConfig(0.5, exit_ratio, merge_gap, min_duration),
        out=out, hop=hop, batch_size=batch_size, status_every=status_every,
        read=ReadConfig(realtime=realtime, drop=drop, rtsp_transport=rtsp_transport, stall=stall),
        save_clips=save_clips, webhook=webhook,
    )  # fmt: skip
    from anomalyclip.evaluate.evaluation import decision_threshold
    from anomalyclip.live.watch import Watcher, load_for_watch, run_sampling

    model, encoder, config = load_for_watch(checkpoint, clip, device, precision)
    warn_if_random_clip(str(encoder.model))
    value = decision_threshold(model, config, rule, calibrate_on, device).value
    cfg = dataclasses.replace(cfg, events=dataclasses.replace(cfg.events, threshold=value))
    watcher = Watcher(expanded, model, encoder, run_sampling(config, checkpoint), cfg)
    watchers.append(watcher)
    typer.echo(
        f"watching {len(expanded)} source(s), threshold {value:.4f}, events in {out}", err=True
    )
    summary = watcher.run()
    if all(s["failed"] for s in summary["sources"].values()):
        raise typer.Exit(1)


class _Watchers(list):
    """The watchers to stop on SIGINT or SIGTERM; one added after a signal stops at once."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped = False

    def append(self, watcher) -> None:
        super().append(watcher)
        if self.stopped:
            watcher.stop()


def _stop_on_signals() -> _Watchers:
    import signal

    watchers = _Watchers()

    def on_signal(signum, frame) -> None:
        watchers.stopped = True
        for w in watchers:
            w.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    return watchers
