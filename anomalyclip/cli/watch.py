"""``anomaly watch``: live scoring of cameras and streams."""

from __future__ import annotations

import typer

from anomalyclip import checks
from anomalyclip.cli.app import app
from anomalyclip.cli.options import _backend, _image_tower


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
    backend: str = typer.Option(
        "torch",
        "--backend",
        callback=_backend,
        help="Image tower and model: torch, or the run's export run by onnxruntime or "
        "openvino (RUN/export/FORMAT; --clip: another export folder).",
    ),
) -> None:
    """Score cameras and streams as they arrive; anomaly events as JSON lines (stdout and
    OUT/events.jsonl). SIGINT or SIGTERM closes open events and exits 0."""
    import dataclasses
    import signal
    import threading

    from anomalyclip.inputs import expand_inputs

    checks.precision(precision)
    if backend != "torch":
        clip = _image_tower(backend, clip, checkpoint)
    expanded = expand_inputs(sources, live=True)
    stop_requested = threading.Event()
    watchers: list = []

    def on_signal(signum, frame) -> None:
        stop_requested.set()
        for w in watchers:
            w.stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    from anomalyclip.events import EventConfig
    from anomalyclip.live.config import ReadConfig, WatchConfig

    # every option is checked before torch is imported: a typo fails in a second
    cfg = WatchConfig(
        EventConfig(0.5 if threshold is None else threshold),
        out=out,
        hop=hop,
        batch_size=batch_size,
        status_every=status_every,
        read=ReadConfig(realtime=realtime, drop=drop, rtsp_transport=rtsp_transport, stall=stall),
        save_clips=save_clips,
        webhook=webhook,
    )
    from anomalyclip.evaluate.predict import write_provenance
    from anomalyclip.live.watch import Watcher, load_for_watch, run_sampling, run_threshold

    model, encoder, config = load_for_watch(checkpoint, clip, device, precision, backend)
    write_provenance(out, checkpoint, encoder)
    value = run_threshold(config, checkpoint, threshold)
    cfg = dataclasses.replace(cfg, events=EventConfig(value))
    watcher = Watcher(expanded, model, encoder, run_sampling(config, checkpoint), cfg)
    watchers.append(watcher)
    if stop_requested.is_set():
        watcher.stop()
    typer.echo(
        f"watching {len(expanded)} source(s), threshold {value:.4f}, events in {out}", err=True
    )
    summary = watcher.run()
    if all(s["failed"] for s in summary["sources"].values()):
        raise typer.Exit(1)
