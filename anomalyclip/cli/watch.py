"""``anomaly watch``: live scoring of cameras and streams."""

from __future__ import annotations

import signal

import typer

from anomalyclip import checks
from anomalyclip.cli.app import app


@app.command("watch")
def watch_cmd(
    sources: list[str] = typer.Argument(
        ...,
        help="rtsp://, http(s)://, udp://, srt:// URLs, /dev/videoN, files, folders, globs "
        "or lists of them.",
    ),
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Run directory."),
    out: str = typer.Option("watch", "--out", "-o", help="Folder for events.jsonl and clips/."),
    clip: str = typer.Option(None, "--clip", help="Image tower (default: the run's CLIP)."),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: auto)."),
    precision: str = typer.Option("auto", "--precision", help="CLIP: auto, fp32, bf16, fp16."),
    hop: float = typer.Option(0.5, "--hop", help="Seconds between two scorings of a source."),
    threshold: float = typer.Option(
        None, "--threshold", help="p(A) that opens an event (default: the run's calibrated one)."
    ),
    realtime: bool = typer.Option(False, "--realtime", help="Play files at their frame rate."),
    drop: str = typer.Option(
        None, "--drop", help="When behind: oldest (default for live sources) or none (files)."
    ),
    webhook: str = typer.Option(None, "--webhook", help="POST every event line here as JSON."),
    save_clips: bool = typer.Option(False, "--save-clips", help="Write each event as an MP4."),
    status_every: float = typer.Option(
        10.0, "--status-every", help="Seconds between status lines on stderr (0: none)."
    ),
    rtsp_transport: str = typer.Option("tcp", "--rtsp-transport", help="tcp or udp."),
    stall: float = typer.Option(5.0, "--stall", help="Seconds without data before reconnecting."),
    batch_size: int = typer.Option(32, "--batch-size", help="Frames per CLIP forward at most."),
    preprocess: str = typer.Option(
        None, "--preprocess", help="Frame path: native or authors (default: the run's)."
    ),
) -> None:
    """Score cameras and streams as they arrive; anomaly events as JSON lines (stdout and
    OUT/events.jsonl). SIGINT or SIGTERM closes open events and exits 0 (a second one hurries
    that shutdown)."""
    import dataclasses

    from anomalyclip.events import EventConfig
    from anomalyclip.inputs import expand_inputs
    from anomalyclip.live.config import ReadConfig, WatchConfig, check_out
    from anomalyclip.live.run import check_run

    # options, the run and the output folder are checked before torch is imported
    checks.precision(precision)
    if preprocess:
        checks.preprocess(preprocess)
    if device:
        checks.device_name(device)
    read = ReadConfig(realtime=realtime, drop=drop, rtsp_transport=rtsp_transport, stall=stall)
    cfg = WatchConfig(EventConfig(0.5), out=out, hop=hop, batch_size=batch_size,
                      status_every=status_every, read=read, save_clips=save_clips,
                      webhook=webhook)  # fmt: skip
    run = check_run(checkpoint, threshold, clip)
    cfg = dataclasses.replace(cfg, events=EventConfig(run.threshold))
    check_out(out)
    expanded = expand_inputs(sources, live=True)
    stops = _Stops()
    from anomalyclip.live.watch import Watcher, load_for_watch, run_sampling

    model, encoder, config = load_for_watch(checkpoint, run.clip, device, precision)
    from anomalyclip.runs.load import preprocessing_for

    mode = preprocessing_for(checkpoint, config, preprocess)
    cfg = dataclasses.replace(cfg, read=dataclasses.replace(cfg.read, preprocess=mode))
    watcher = Watcher(expanded, model, encoder, run_sampling(config, checkpoint), cfg)
    stops.attach(watcher)
    typer.echo(
        f"watching {len(expanded)} source(s), threshold {run.threshold:.4f}, events in {out}",
        err=True,
    )
    summary = watcher.run()
    stops.ignore()  # all is written: a late signal must not turn the exit status into 143
    if all(s["failed"] for s in summary["sources"].values()):
        raise typer.Exit(1)


class _Stops:
    """SIGINT and SIGTERM during a watch. The first stops it in order (open events closed
    and written, clips finished, the webhook queue delivered for a few seconds); any later
    one hurries that shutdown (no more webhook delivery or clip frames) but never abandons
    it: the exit status stays the watch's. Only SIGKILL cuts a shutdown short."""

    def __init__(self) -> None:
        self.count = 0
        self.watcher = None
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.count += 1
        if self.watcher is not None:
            self.watcher.stop()

    def attach(self, watcher) -> None:
        """``watcher`` is the one to stop; signals that came while it loaded are applied."""
        self.watcher = watcher
        for _ in range(min(self.count, 2)):
            watcher.stop()

    def ignore(self) -> None:
        """Ignore SIGINT and SIGTERM from now on: everything is written, and while it exits
        the interpreter gives back their default (killing) action to signals that have a
        Python handler, not to ignored ones."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
