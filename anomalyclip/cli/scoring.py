"""Scoring with a trained run: ``eval`` (a store's test split) and ``predict`` (videos)."""

from __future__ import annotations

import glob
from pathlib import Path

import typer

from anomalyclip import checks, locations
from anomalyclip.cli.app import app
from anomalyclip.cli.options import (
    _at_least_one,
    _backend,
    _image_tower,
    _keep_memory_on_cpu,
    _positive,
    calibrate_on_option,
    cleaned_up,
    clip_option,
    decision_rule,
    device_option,
    exit_ratio_option,
    merge_gap_option,
    min_duration_option,
    plural,
    precision_option,
    threshold_option,
    threshold_rule_option,
    warn_if_random_clip,
)
from anomalyclip.errors import AnomalyError

RUN = typer.Option(..., "--checkpoint", "-c", metavar="RUN", help="Run folder.")


@app.command("eval")
def eval_cmd(
    checkpoint: str = RUN,
    features: str = typer.Option(
        None, "--features", "-f", metavar="STORE", help="Store to test on (default: the run's)."
    ),
    out: str = typer.Option(
        None, "--out", "-o", metavar="DIR", help="Output folder (default RUN/eval)."
    ),
    clip: str = clip_option("CLIP of the text tower (default: the run's)."),
    batch_size: int = typer.Option(64, "--batch-size", metavar="N", help="Sequences per pass."),
    annotations: str = typer.Option(
        None, "--annotations", metavar="FILE", help="Ground truth instead of the store's."
    ),
    threshold: float = threshold_option(),
    threshold_rule: str = threshold_rule_option(),
    calibrate_on: str = calibrate_on_option(),
    min_duration: float = min_duration_option(),
    merge_gap: float = merge_gap_option(),
    exit_ratio: float = exit_ratio_option(),
    device: str = device_option(),
    allow_backbone_mismatch: bool = typer.Option(
        False, "--allow-backbone-mismatch", help="Evaluate features of another backbone."
    ),
) -> None:
    """Paper metrics on a store's test split; decisions, events, CSVs and plots."""
    from anomalyclip.runs.config import RunConfig

    recorded = RunConfig.read(checkpoint)
    features = checks.store_location(features or locations.recorded(checkpoint, recorded, "store"))
    clip = clip or locations.recorded(checkpoint, recorded, "clip")
    locations.local_clip(clip)
    if annotations:
        checks.existing_path(annotations, "annotation file")
    if calibrate_on:
        calibrate_on = checks.store_location(calibrate_on)
    if device:
        checks.device_name(device)
    rule = decision_rule(threshold, threshold_rule)
    checks.check_event_settings(0.5, exit_ratio, merge_gap, min_duration)  # before any import
    checks.feature_store(features)
    from anomalyclip.events import EventConfig

    events = EventConfig(0.5, exit_ratio, merge_gap, min_duration)
    from anomalyclip.environment import provenance
    from anomalyclip.evaluate.evaluation import EvalOptions, evaluate_run, write_outputs
    from anomalyclip.evaluate.report import format_table
    from anomalyclip.runs import default_device, load_model

    dev = default_device(device)
    _keep_memory_on_cpu(device)
    model, config = load_model(checkpoint, clip)
    model.to(dev)
    options = EvalOptions(
        features, annotations, rule, calibrate_on, events, batch_size, dev,
        allow_backbone_mismatch=allow_backbone_mismatch, run_dir=checkpoint,
    )  # fmt: skip
    metrics, results = evaluate_run(model, config, options)
    metrics["provenance"] = {**provenance(), "run": checkpoint, "features": features, "clip": clip}
    out_dir = write_outputs(
        out or f"{checkpoint}/eval", metrics, results, model.cfg.classes, model.cfg.normal_id
    )
    typer.echo(format_table(metrics))
    typer.echo(f"outputs in {out_dir}")


def _claim_outputs(out: str, exist_ok: bool) -> tuple[Path, bool]:
    """``predict``'s output folder, as ``train`` picks a run's: OUT when free, else the next
    free OUT-2, OUT-3... (``--exist-ok``: OUT itself); and whether it was there before."""
    before = {Path(p) for p in glob.glob(glob.escape(str(out)) + "*")}
    folder = checks.claim_run_dir(out, exist_ok, what="output folder")
    return folder, folder in before


@app.command("predict")
def predict_cmd(
    videos: list[str] = typer.Argument(
        ..., metavar="VIDEO", help="Video files, frame folders, folders, globs or list files."
    ),
    checkpoint: str = RUN,
    out: str = typer.Option(
        "predictions",
        "--out",
        "-o",
        metavar="DIR",
        help="Output folder; when taken, the next free DIR-2, DIR-3...",
    ),  # fmt: skip
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Write into --out even if taken."),
    clip: str = clip_option("CLIP: image and text towers (default: the run's)."),
    render: bool = typer.Option(False, "--render", help="Also write an MP4 with the curves."),
    fps: float = typer.Option(
        None, "--fps", metavar="FPS", callback=_positive, help="Score FPS frames per second."
    ),
    stride: int = typer.Option(
        None, "--stride", metavar="K", callback=_at_least_one, help="Score every K-th frame."
    ),
    threshold: float = threshold_option(),
    threshold_rule: str = threshold_rule_option(),
    calibrate_on: str = calibrate_on_option(),
    min_duration: float = min_duration_option(),
    merge_gap: float = merge_gap_option(),
    exit_ratio: float = exit_ratio_option(),
    device: str = device_option(),
    precision: str = precision_option(),
    preprocess: str = typer.Option(
        None,
        "--preprocess",
        metavar="PATH",
        help="Frame path: native or authors (default: the run's).",
    ),
    backend: str = typer.Option(
        "torch",
        "--backend",
        metavar="NAME",
        callback=_backend,
        help="Image tower and model: torch, or the run's export run by onnxruntime or "
        "openvino (RUN/export/FORMAT; --clip: another export folder).",
    ),
) -> None:
    """Per-frame anomaly scores, classes and events of videos (no store needed).

    Every frame by default. Outputs are never overwritten: a taken --out gives the next free
    DIR-2, DIR-3... (or --exist-ok).
    """
    checks.check_event_settings(0.5, exit_ratio, merge_gap, min_duration)  # before any import
    checks.precision(precision)
    if preprocess:
        checks.preprocess(preprocess)
    clip = _image_tower(backend, clip, checkpoint)
    from anomalyclip.inputs import expand_inputs

    sources = expand_inputs(videos)  # files, folders, globs, list files
    if device:
        checks.device_name(device)
    if fps is not None and stride is not None:
        raise AnomalyError("give --fps or --stride, not both")
    if calibrate_on:
        calibrate_on = checks.store_location(calibrate_on)
    rule = decision_rule(threshold, threshold_rule)
    if backend == "torch":
        warn_if_random_clip(clip)
    from anomalyclip.events import EventConfig

    events = EventConfig(0.5, exit_ratio, merge_gap, min_duration)
    from anomalyclip.api import PredictConfig, Run
    from anomalyclip.extract.decode import Sampling

    sampling = Sampling("fps", fps) if fps else Sampling("stride", stride) if stride else Sampling()
    config = PredictConfig(sampling=sampling, threshold_rule=rule, calibrate_on=calibrate_on,
                           events=events, render=render, preprocess=preprocess)  # fmt: skip
    _keep_memory_on_cpu(device)
    folder, existed = _claim_outputs(out, exist_ok)
    with cleaned_up(folder, existed):
        run = Run.load(checkpoint, clip=clip, device=device, precision=precision, backend=backend)
        results, failed = run.predict_files(sources, folder, config)  # the Python API's path
    checks.drop_claim(folder)
    _report(results, failed, folder)


def _report(results, failed: dict[str, str], folder: Path) -> None:
    from anomalyclip.evaluate.prediction import printable

    for r in results:
        extra = f", {r.video}" if r.video else ""
        typer.echo(
            f"{printable(r.source)}: {r.frames} frames, mean p(A) {r.mean_p_abnormal:.3f}, "
            f"{plural(len(r.events), 'event')} -> {r.csv}, {r.events_file}, {r.plot}{extra}"
        )
        for e in r.events:
            top = ", ".join(f"{name} {p:.2f}" for name, p in e.top3)
            typer.echo(
                f"  {e.start_time:8.2f}-{e.end_time:8.2f} s  frames {e.start_frame}-"
                f"{e.end_frame - 1}  peak p(A) {e.peak:.2f}  mean {e.mean:.2f}  {top}"
            )
    for src, reason in failed.items():
        typer.echo(f"failed: {printable(src)}: {reason}", err=True)
    typer.echo(f"outputs in {folder}")
    if failed:
        raise typer.Exit(1)
