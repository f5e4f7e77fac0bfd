"""The pipeline's commands: features, demo, train, eval, predict."""

from __future__ import annotations

import logging

import typer

from anomalyclip import checks, locations
from anomalyclip.cli.app import app
from anomalyclip.cli.options import (
    _backend,
    _conv_algorithm,
    _image_model,
    _image_tower,
    _keep_memory_on_cpu,
    _probability,
    _run_folder,
    _threshold_rule,
)
from anomalyclip.errors import AnomalyError


@app.command("features")
def features_cmd(
    dataset: str = typer.Option(..., "--dataset", "-d", help="ucf, xd, sht, demo or csv:FILE."),
    videos: str = typer.Option(..., "--videos", help="The dataset's folder of videos."),
    out: str = typer.Option(None, "--out", "-o", help="Store (default store/<dataset>.zarr)."),
    model: str = typer.Option(
        "openai/clip-vit-base-patch16", "--model", help="Hub id or local HF CLIP directory."
    ),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: auto)."),
    fps: float = typer.Option(None, "--fps", help="Keep N frames per second (default: all)."),
    stride: int = typer.Option(None, "--stride", help="Keep every K-th frame (default: all)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Frames per forward pass."),
    workers: int = typer.Option(4, "--workers", help="Decoder threads."),
    dtype: str = typer.Option("float16", "--dtype", help="Stored dtype: float16 or float32."),
    lists: str = typer.Option(None, "--lists", help="Folder of the official list/GT files."),
    frames_fps: float = typer.Option(None, "--frames-fps", help="Rate of frame folders (30)."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Skip absent videos."),
    shard: str = typer.Option(
        None, "--shard", help="I/N: this job's share of N (job arrays; default torchrun's)."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Record videos that end far short of their header as failed."
    ),
    precision: str = typer.Option(
        "auto", "--precision", help="CLIP: auto (bf16 on CPUs with bf16 units), fp32, bf16, fp16."
    ),
    preprocess: str = typer.Option(
        "native", "--preprocess", help="Frame path: native, or authors (the published features')."
    ),
    backend: str = typer.Option(
        "torch",
        "--backend",
        callback=_backend,
        help="Image tower: torch, or an export run by onnxruntime or openvino (--model: its "
        "folder, or the exported run).",
    ),
) -> None:
    """Extract CLIP frame embeddings of a dataset into a feature store (resumable).

    Under ``torchrun`` each process takes a share of the videos (balanced by size) and all
    write one store; ``--shard I/N`` does the same for independent jobs (e.g. a job array).
    """
    checks.existing_dir(videos, "folder of videos")
    model = _image_tower(backend, model, None)
    if lists:
        checks.existing_dir(lists, "folder of list files")
    if device:
        checks.device_name(device)
    checks.precision(precision)
    checks.preprocess(preprocess)

    import os
    from pathlib import Path

    from anomalyclip.datasets import get_adapter
    from anomalyclip.extract.decode import Sampling
    from anomalyclip.extract.pipeline import ExtractConfig, extract, shard_from_env
    from anomalyclip.runs import default_device

    if fps is not None and stride is not None:
        raise AnomalyError("--fps and --stride: choose one sampling")
    sampling = Sampling("fps", fps) if fps else Sampling("stride", stride) if stride else Sampling()
    if shard is None:
        rank, world = shard_from_env()
    else:
        i, sep, n = shard.partition("/")
        if not (sep and i.isdigit() and n.isdigit() and int(i) < int(n)):
            raise AnomalyError(f"--shard {shard}: expected I/N with 0 <= I < N, e.g. 0/4")
        rank, world = int(i), int(n)
    device = str(default_device(device))
    if device == "cuda" and world > 1 and shard is None:  # torchrun: one GPU per process
        device = f"cuda:{os.environ.get('LOCAL_RANK', rank)}"
    lists_dir = Path(lists) if lists else None
    adapter = get_adapter(dataset)
    entries = adapter.discover(Path(videos), lists_dir, allow_missing=allow_missing)
    config = ExtractConfig(
        dataset=adapter.spec.name,
        device=device,
        precision=precision,
        batch_size=batch_size,
        sampling=sampling,
        workers=workers,
        folder_fps=frames_fps,
        dtype=dtype,
        root=videos,
        strict=strict,
        shard=(rank, world),
        coordinated=shard is None,  # torchrun's ranks start together; job-array tasks do not
        preprocess=preprocess,
    )
    image = _image_model(backend, model)
    summary = extract(entries, out or f"store/{adapter.folder_name}.zarr", image, config)
    typer.echo(summary.format())
    if not summary.ok:
        raise typer.Exit(1)


@app.command("demo")
def demo_cmd(
    out: str = typer.Option("demo", "--out", "-o", help="Folder for videos, CLIP, store, runs."),
    seed: int = typer.Option(0, "--seed"),
    precision: str = typer.Option(
        "fp32", "--precision", help="The image tower's in extraction: fp32, bf16, auto."
    ),
) -> None:
    """The whole pipeline on a generated dataset: no download, a few minutes on a CPU."""
    from anomalyclip.demo import run_demo
    from anomalyclip.evaluate.report import format_table

    checks.precision(precision)
    _keep_memory_on_cpu(None)
    run = run_demo(out, seed=seed, precision=precision)
    for name, seconds in run.timings.items():
        result = run.results[name]
        detail = result.format().splitlines()[0] if hasattr(result, "format") else ""
        typer.echo(f"{name:<10} {seconds:6.1f} s  {detail}".rstrip())
    typer.echo("")
    typer.echo(format_table(run.results["evaluate"]))
    typer.echo("")
    typer.echo(f"videos    {run.video_root}")
    typer.echo(f"features  {run.store}")
    typer.echo(f"model     {run.run_dir}")
    typer.echo(f"pictures  {run.eval_dir} (roc.png, pr.png, confusion.png, videos/*.png)")


@app.command("train")
def train_cmd(
    features: str = typer.Option(..., "--features", "-f", help="Feature store to train on."),
    out: str = typer.Option(
        None,
        "--out",
        "-o",
        help="Run folder (default runs/<dataset>); taken: the next free of OUT-2, OUT-3...",
    ),
    clip: str = typer.Option(
        None, "--clip", help="CLIP for the text encoder (default: the store's)."
    ),
    config: str = typer.Option(None, "--config", help="TOML file overriding the dataset preset."),
    epochs: int = typer.Option(None, "--epochs"),
    warmup_epochs: int = typer.Option(None, "--warmup-epochs"),
    lr: float = typer.Option(None, "--lr"),
    batch_size: int = typer.Option(None, "--batch-size", help="Videos per step, half abnormal."),
    emb_dim: int = typer.Option(None, "--emb-dim", help="Temporal model width E."),
    depth: int = typer.Option(None, "--depth"),
    seed: int = typer.Option(None, "--seed"),
    eval_every: int = typer.Option(None, "--eval-every", help="Epochs between test evaluations."),
    workers: int = typer.Option(None, "--workers", help="Threads reading the store ahead."),
    sampler: str = typer.Option(
        None, "--sampler", help="Training frames: published (the paper's, default) or uniform."
    ),
    device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: auto)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Write into --out even if taken."),
    calibration_share: float = typer.Option(
        None,
        "--calibration-share",
        help="Share of the normal training videos held out to set the threshold (0.1).",
    ),
    threshold_rule: str = typer.Option(
        None,
        "--threshold-rule",
        callback=_threshold_rule,
        help="far@X (X % of normal frames alarm; far@1), fixed@T, youden or best-f1.",
    ),
    allow_backbone_mismatch: bool = typer.Option(
        False, "--allow-backbone-mismatch", help="Resume on features of another backbone."
    ),
    conv: str = typer.Option(
        None,
        "--conv",
        callback=_conv_algorithm,
        help="3x3 convolutions: direct, winograd (same result, ~4x fewer multiplies) or auto "
        "(the default: winograd on CPU in fp32 from 128 channels on, where it measured faster).",
    ),
) -> None:
    """Train AnomalyCLIP on a feature store (the dataset and classes come from the store)."""
    checks.store_location(features)
    if config:
        checks.existing_file(config, "config file")
    if device:
        checks.device_name(device)
    if clip:
        locations.local_clip(clip)
    # an unusable --out fails now; a folder left empty by a later error counts as free
    folder = _run_folder(out, resume, exist_ok) if out else None
    from anomalyclip.evaluate.evaluation import metrics_on_test_split
    from anomalyclip.evaluate.report import format_table
    from anomalyclip.store import open_store
    from anomalyclip.train import resolve_config, train

    with open_store(features) as st:
        dataset = st.dataset
        if resume:
            from anomalyclip.runs.checkpoint import check_backbone, read_run_config

            run_dir = out or f"runs/{dataset}"
            check_backbone(read_run_config(run_dir), st, run_dir, allow_backbone_mismatch)
    cfg = resolve_config(
        dataset,
        config,
        epochs=epochs,
        warmup_epochs=warmup_epochs,
        lr=lr,
        batch_size=batch_size,
        emb_dim=emb_dim,
        depth=depth,
        seed=seed,
        eval_every=eval_every,
        workers=workers,
        sampler=sampler,
        device=device,
        calibration_share=calibration_share,
        threshold_rule=threshold_rule,
        conv=conv,
    )
    _keep_memory_on_cpu(cfg.device)  # also refuses a device this machine does not have
    folder = folder or _run_folder(f"runs/{dataset}", resume, exist_ok)
    logging.getLogger(__name__).info("run folder %s", folder)
    result = train(features, folder, cfg, clip=clip, resume=resume, evaluate=metrics_on_test_split)
    typer.echo(f"run written to {folder}")
    if result.get("metrics"):
        typer.echo(format_table(result["metrics"]))


@app.command("eval")
def eval_cmd(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Run directory."),
    features: str = typer.Option(None, "--features", "-f", help="Store (default: the run's)."),
    out: str = typer.Option(None, "--out", "-o", help="Output folder (default <run>/eval)."),
    clip: str = typer.Option(None, "--clip", help="Text encoder source (default: the run's)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Sequences per forward pass."),
    annotations: str = typer.Option(
        None, "--annotations", help="Ground-truth file to use instead of the store's."
    ),
    threshold_rule: str = typer.Option(
        None,
        "--threshold-rule",
        callback=_threshold_rule,
        help="far@X, fixed@T, youden or best-f1 (default: the run's threshold).",
    ),
    calibrate_on: str = typer.Option(
        None, "--calibrate-on", help="Store with frame ground truth for youden / best-f1."
    ),
    min_duration: float = typer.Option(0.5, "--min-duration", help="Shortest event (s)."),
    merge_gap: float = typer.Option(1.0, "--merge-gap", help="Merge events this close (s)."),
    exit_ratio: float = typer.Option(
        0.8, "--exit-ratio", help="An event ends below threshold x this."
    ),
    device: str = typer.Option(None, "--device"),
    allow_backbone_mismatch: bool = typer.Option(
        False, "--allow-backbone-mismatch", help="Evaluate features of another backbone."
    ),
) -> None:
    """Paper metrics on the test split, decisions and events at the run's threshold,
    per-video CSVs and plots."""
    recorded = checks.run_config(checkpoint)
    features = checks.store_location(features or locations.recorded(checkpoint, recorded, "store"))
    clip = clip or locations.recorded(checkpoint, recorded, "clip")
    locations.local_clip(clip)
    if annotations:
        checks.existing_path(annotations, "annotation file")
    if calibrate_on:
        calibrate_on = checks.store_location(calibrate_on)
    if device:
        checks.device_name(device)
    from anomalyclip.events import EventConfig

    events = EventConfig(0.5, exit_ratio, merge_gap, min_duration)  # checked before torch
    from anomalyclip.environment import provenance
    from anomalyclip.evaluate.evaluation import EvalOptions, evaluate_run, write_outputs
    from anomalyclip.evaluate.report import format_table
    from anomalyclip.runs import default_device, load_model

    dev = default_device(device)
    _keep_memory_on_cpu(device)
    model, config = load_model(checkpoint, clip)
    model.to(dev)
    options = EvalOptions(
        features, annotations, threshold_rule, calibrate_on, events, batch_size, dev,
        allow_backbone_mismatch=allow_backbone_mismatch, run_dir=checkpoint,
    )  # fmt: skip
    metrics, results = evaluate_run(model, config, options)
    metrics["provenance"] = {**provenance(), "run": checkpoint, "features": features, "clip": clip}
    out_dir = write_outputs(
        out or f"{checkpoint}/eval", metrics, results, model.cfg.classes, model.cfg.normal_id
    )
    typer.echo(format_table(metrics))
    typer.echo(f"outputs in {out_dir}")


@app.command("predict")
def predict_cmd(
    videos: list[str] = typer.Argument(..., help="Video files or folders of frames."),
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Run directory."),
    out: str = typer.Option("predictions", "--out", "-o", help="Output folder."),
    clip: str = typer.Option(None, "--clip", help="Image tower (default: the run's CLIP)."),
    render: bool = typer.Option(False, "--render", help="Also write an MP4 with the curves."),
    fps: float = typer.Option(None, "--fps", help="Score N frames per second (default: all)."),
    stride: int = typer.Option(None, "--stride", help="Score every K-th frame."),
    threshold: float = typer.Option(
        None,
        "--threshold",
        callback=_probability,
        help="p(A) above which a frame is abnormal (default: the run's).",
    ),
    min_duration: float = typer.Option(0.5, "--min-duration", help="Shortest event (s)."),
    merge_gap: float = typer.Option(1.0, "--merge-gap", help="Merge events this close (s)."),
    exit_ratio: float = typer.Option(
        0.8, "--exit-ratio", help="An event ends below threshold x this."
    ),
    device: str = typer.Option(None, "--device"),
    precision: str = typer.Option(
        "auto", "--precision", help="CLIP: auto (bf16 on CPUs with bf16 units), fp32, bf16, fp16."
    ),
    preprocess: str = typer.Option(
        None, "--preprocess", help="Frame path: native or authors (default: the run's)."
    ),
    backend: str = typer.Option(
        "torch",
        "--backend",
        callback=_backend,
        help="Image tower and model: torch, or the run's export run by onnxruntime or "
        "openvino (RUN/export/FORMAT; --clip: another export folder).",
    ),
) -> None:
    """Per-frame anomaly scores, classes and events for videos that are not in any store."""
    checks.precision(precision)
    if preprocess:
        checks.preprocess(preprocess)
    clip = _image_tower(backend, clip, checkpoint)
    for video in videos:
        checks.existing_path(video, "video file or frame folder")
    if device:
        checks.device_name(device)
    if fps and stride:
        raise AnomalyError("give --fps or --stride, not both")
    from anomalyclip.events import EventConfig

    events = EventConfig(threshold or 0.5, exit_ratio, merge_gap, min_duration)  # before torch
    from anomalyclip.api import PredictConfig, Run
    from anomalyclip.evaluate.prediction import printable
    from anomalyclip.extract.decode import Sampling

    sampling = Sampling("fps", fps) if fps else Sampling("stride", stride) if stride else Sampling()
    _keep_memory_on_cpu(device)
    config = PredictConfig(sampling=sampling, threshold=threshold, events=events, render=render,
                           preprocess=preprocess)  # fmt: skip
    run = Run.load(checkpoint, clip=clip, device=device, precision=precision, backend=backend)
    results, failed = run.predict_files(videos, out, config)  # the Python API's own path
    for r in results:
        extra = f", {r.video}" if r.video else ""
        typer.echo(
            f"{printable(r.source)}: {r.frames} frames, mean p(A) {r.mean_p_abnormal:.3f}, "
            f"{len(r.events)} events -> {r.csv}, {r.events_file}, {r.plot}{extra}"
        )
        for e in r.events:
            top = ", ".join(f"{name} {p:.2f}" for name, p in e.top3)
            typer.echo(
                f"  {e.start_time:8.2f}-{e.end_time:8.2f} s  frames {e.start_frame}-"
                f"{e.end_frame - 1}  peak p(A) {e.peak:.2f}  mean {e.mean:.2f}  {top}"
            )
    for src, reason in failed.items():
        typer.echo(f"failed: {printable(src)}: {reason}", err=True)
    if failed:
        raise typer.Exit(1)
