"""``anomaly watch``: live scoring of cameras and streams."""

from __future__ import annotations

import dataclasses
import signal

import typer

from anomalyclip import checks
from anomalyclip.cli.app import app
from anomalyclip.cli.options import (
    _image_tower,
    calibrate_on_option,
    clip_option,
    decision_rule,
    device_option,
    exit_ratio_option,
    merge_gap_option,
    min_duration_option,
    threshold_option,
    threshold_rule_option,
    warn_if_random_clip,
)
from anomalyclip.errors import AnomalyError


@app.command("watch")
def watch_cmd(
    sources: list[str] = typer.Argument(
        None,
        metavar="SOURCE",
        help="rtsp://, http(s)://, udp://, srt:// URLs, /dev/videoN, files, folders, globs "
        "or lists of them (besides the site file's cameras).",
    ),
    config: str = typer.Option(
        None, "--config", metavar="FILE", help="A site file (TOML): the run, cameras, MQTT..."
    ),
    checkpoint: str = typer.Option(None, "--checkpoint", "-c", metavar="RUN", help="Run folder."),
    out: str = typer.Option(
        None, "--out", "-o", metavar="DIR", help="Folder for events.jsonl and clips/ (watch)."
    ),
    clip: str = clip_option("CLIP: image and text towers (default: the run's)."),
    device: str = device_option(),
    precision: str = typer.Option(
        None, "--precision", metavar="PRECISION", help="Image tower: auto, fp32, bf16, fp16."
    ),
    hop: float = typer.Option(
        None, "--hop", metavar="SECONDS", help="Time between two scorings of a source (0.5)."
    ),
    threshold: float = threshold_option(),
    threshold_rule: str = threshold_rule_option(),
    calibrate_on: str = calibrate_on_option(),
    min_duration: float = min_duration_option(),
    merge_gap: float = merge_gap_option(),
    exit_ratio: float = exit_ratio_option(),
    realtime: bool = typer.Option(None, "--realtime", help="Play files at their frame rate."),
    drop: str = typer.Option(
        None, "--drop", metavar="POLICY", help="When behind: oldest (live default) or none."
    ),
    webhook: str = typer.Option(
        None, "--webhook", metavar="URL", help="POST every event line here as JSON."
    ),
    mqtt: str = typer.Option(
        None,
        "--mqtt",
        metavar="URL",
        help="The change-feed's broker: mqtt://user:password@host:port/prefix (all but the host "
        "optional).",
    ),  # fmt: skip
    metrics: str = typer.Option(
        None, "--metrics", metavar="[HOST:]PORT", help="Prometheus metrics (loopback by default)."
    ),
    save_clips: bool = typer.Option(None, "--save-clips", help="Write each event as an MP4."),
    status_every: float = typer.Option(
        None, "--status-every", metavar="SECONDS", help="Time between status lines (10; 0: none)."
    ),
    rtsp_transport: str = typer.Option(
        None, "--rtsp-transport", metavar="PROTOCOL", help="tcp (default) or udp."
    ),
    stall: float = typer.Option(
        None, "--stall", metavar="SECONDS", help="Time without data before reconnecting (5)."
    ),
    batch_size: int = typer.Option(
        None, "--batch-size", metavar="N", help="Frames per forward (32)."
    ),
    ui: str = typer.Option(
        None,
        "--ui",
        metavar="HOST:PORT",
        help="Serve a live page (PORT alone: 127.0.0.1; 0: any free port).",
    ),  # fmt: skip
    ui_token: str = typer.Option(
        None,
        "--ui-token",
        metavar="TOKEN",
        envvar="ANOMALY_UI_TOKEN",
        help="Token every page request must carry; needed for a --ui off the loopback.",
    ),  # fmt: skip
    preprocess: str = typer.Option(
        None, "--preprocess", metavar="PATH", help="Frame path: native or authors (the run's)."
    ),
    backend: str = typer.Option(
        None,
        "--backend",
        metavar="NAME",
        help="Image tower and model: torch, or the run's export run by onnxruntime or "
        "openvino (RUN/export/FORMAT; --clip: another export folder).",
    ),  # fmt: skip
) -> None:
    """Score cameras and streams as they arrive; events as JSON lines on stdout.

    Events also go to OUT/events.jsonl, and where asked to an MQTT broker, a webhook, a
    metrics endpoint and a live page. SIGINT or SIGTERM closes open events and exits 0 (a
    second one hurries that shutdown).
    """
    from anomalyclip.live.ui import open_page, serving

    given = {k: v for k, v in locals().items() if k not in ("sources", "config", "ui_token")}
    run, cfg, cameras, o = _plan(config, sources or [], given)
    page = open_page(o.get("ui"), ui_token)  # the page's socket, bound at once (or None)
    stops = _Stops()
    from anomalyclip.evaluate.predict import write_provenance
    from anomalyclip.live.watch import Watcher, load_for_watch, run_sampling
    from anomalyclip.runs.load import preprocessing_for

    model, encoder, run_config = load_for_watch(run.path, run.clip, o.get("device"),
                                                o["precision"], o["backend"])  # fmt: skip
    if o["backend"] == "torch":
        warn_if_random_clip(run.clip)
    run, cfg = _decide(run, cfg, model, run_config, o)
    try:
        write_provenance(cfg.out, run.path, encoder)
    except OSError as exc:  # a full or read-only disk: the watch still scores, and says so
        typer.echo(f"warning: {cfg.out}: provenance.json not written ({exc.strerror})", err=True)
    mode = preprocessing_for(run.path, run_config, o.get("preprocess"))
    cfg = dataclasses.replace(cfg, read=dataclasses.replace(cfg.read, preprocess=mode))
    watcher = Watcher(cameras, model, encoder, run_sampling(run_config, run.path), cfg)
    stops.attach(watcher)
    _say_thresholds(cameras, run.threshold, cfg.out)
    with serving(watcher.ui, page, ui_token):
        summary = watcher.run()
    stops.ignore()  # all is written: a late signal must not turn the exit status into 143
    if all(s["failed"] for s in summary["sources"].values()):
        raise typer.Exit(1)


def _decide(run, cfg, model, run_config, o: dict):
    """The threshold ``--threshold-rule`` chooses now, once the model is loaded (a labelled
    rule scores the store ``--calibrate-on``); the run's own (or ``--threshold``) else."""
    if o.get("threshold_rule") is None:
        return run, cfg
    from anomalyclip.evaluate.evaluation import decision_threshold

    dev = next(model.parameters()).device if hasattr(model, "parameters") else None
    value = decision_threshold(model, run_config, o["threshold_rule"], o.get("calibrate_on"),
                               dev).value  # fmt: skip
    run = dataclasses.replace(run, threshold=value)
    return run, dataclasses.replace(cfg, events=dataclasses.replace(cfg.events, threshold=value))


DEFAULTS = {"out": "watch", "precision": "auto", "hop": 0.5, "realtime": False,
            "save_clips": False, "status_every": 10.0, "rtsp_transport": "tcp", "stall": 5.0,
            "batch_size": 32, "backend": "torch", "min_duration": 0.5, "merge_gap": 1.0,
            "exit_ratio": 0.8}  # fmt: skip


def _plan(config: str | None, sources: list[str], given: dict):
    """Everything a watch needs but the model, checked before torch is imported: the run,
    the :class:`WatchConfig` and the cameras; options, the site file's and the defaults."""
    from anomalyclip.events import EventConfig
    from anomalyclip.live.cameras import resolve_cameras
    from anomalyclip.live.config import ReadConfig, RetentionConfig, WatchConfig, check_out
    from anomalyclip.live.run import check_run
    from anomalyclip.live.site import Site, load_site

    site = load_site(config) if config else Site()
    o = site.merged(given, DEFAULTS)
    checks.precision(o["precision"])
    if o.get("preprocess"):
        checks.preprocess(o["preprocess"])
    if o.get("device"):
        checks.device_name(o["device"])
    read = ReadConfig(realtime=o["realtime"], drop=o.get("drop"),
                      rtsp_transport=o["rtsp_transport"], stall=o["stall"])  # fmt: skip
    keep = site.table("retention")
    cfg = WatchConfig(EventConfig(0.5), out=o["out"], hop=o["hop"], batch_size=o["batch_size"],
                      status_every=o["status_every"], read=read, save_clips=o["save_clips"],
                      webhook=o.get("webhook"), mqtt=o.get("mqtt"), metrics=o.get("metrics"),
                      ui=bool(o.get("ui")),
                      retention=RetentionConfig(**keep) if keep else None)  # fmt: skip
    if not o.get("checkpoint"):
        raise AnomalyError("no run: give --checkpoint RUN, or checkpoint = ... in the site file")
    from anomalyclip.export.manifest import BACKENDS

    if o["backend"] not in BACKENDS:
        raise AnomalyError(f"backend {o['backend']!r}: choose one of {', '.join(BACKENDS)}")
    clip = o.get("clip")
    if o["backend"] != "torch":  # the export folder stands in for the CLIP
        clip = _image_tower(o["backend"], clip, o["checkpoint"])
    decision_rule(o.get("threshold"), o.get("threshold_rule"))  # one of them at most
    if o.get("calibrate_on"):
        o["calibrate_on"] = checks.store_location(o["calibrate_on"])
    # a --threshold-rule decides once the model is loaded (_decide): until then, any value
    placeholder = 0.5 if o.get("threshold_rule") and o.get("threshold") is None else None
    given_threshold = o.get("threshold")
    run = check_run(o["checkpoint"], placeholder if given_threshold is None else given_threshold,
                    clip)  # fmt: skip
    events = EventConfig(run.threshold, o["exit_ratio"], o["merge_gap"], o["min_duration"])
    cfg = dataclasses.replace(cfg, events=events)
    check_out(o["out"])
    cameras = resolve_cameras(site, sources, run, given.get("threshold"))
    return run, cfg, cameras, o


def _say_thresholds(cameras, default: float, out: str) -> None:
    """One line for the watch; one per camera when they differ from the run's threshold."""
    values = {c.threshold if c.threshold is not None else default for c in cameras}
    shown = f"threshold {default:.4f}" if values == {default} else "thresholds per camera"
    typer.echo(f"watching {len(cameras)} source(s), {shown}, events in {out}", err=True)
    for c in cameras:
        if values != {default} or c.threshold is not None:
            value = c.threshold if c.threshold is not None else default
            typer.echo(f"camera {c.name}: threshold {value:.4f} ({c.why})", err=True)


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
