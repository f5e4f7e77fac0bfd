"""The ``anomaly`` command line.

Each command is a thin wrapper: it parses options and calls a plain function of the package,
so everything here is also usable from Python. Expected failures (:class:`AnomalyError`) are
printed on one line, ``error: <file>: <problem>``, with exit status 2.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from anomalyclip import checks, locations
from anomalyclip.errors import AnomalyError

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.split("\n")[0])
store_app = typer.Typer(
    no_args_is_help=True, help="Inspect, check, convert and merge feature stores."
)
bench_app = typer.Typer(
    no_args_is_help=True, help="Benchmarks (numbers are ratios within one run)."
)
app.add_typer(store_app, name="store")
app.add_typer(bench_app, name="bench")


def _print_version(value: bool) -> None:
    if value:
        from anomalyclip import __version__

        typer.echo(f"anomaly {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging."),
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Weakly supervised video anomaly detection and recognition with CLIP (AnomalyCLIP)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # zarr leaves pending asyncio tasks behind when a damaged chunk aborts a read
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


# -- commands are registered below, one section per stage ------------------------------------


# -- extract --------------------------------------------------------------------------------
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
) -> None:
    """Extract CLIP frame embeddings of a dataset into a feature store (resumable).

    Under ``torchrun`` each process takes a share of the videos (balanced by size) and all
    write one store; ``--shard I/N`` does the same for independent jobs (e.g. a job array).
    """
    checks.existing_dir(videos, "folder of videos")
    locations.local_clip(model)
    if lists:
        checks.existing_dir(lists, "folder of list files")
    if device:
        checks.device_name(device)
    checks.precision(precision)

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
    )
    summary = extract(entries, out or f"store/{adapter.folder_name}.zarr", model, config)
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


@bench_app.command("extract")
def bench_extract_cmd(
    model: str = typer.Option(None, "--model", help="CLIP (default: random ViT-B/16 size)."),
    frames: int = typer.Option(128, "--frames", help="Frames to extract."),
    batch_size: int = typer.Option(32, "--batch-size"),
    workers: int = typer.Option(2, "--workers"),
    device: str = typer.Option("cpu", "--device"),
    size: str = typer.Option("320x240", "--size", help="Input video WIDTHxHEIGHT."),
    setups: str = typer.Option(
        "fp32:eager,fp32:sdpa,bf16:sdpa", "--setups", help="PRECISION:ATTENTION,... to compare."
    ),
    repeats: int = typer.Option(2, "--repeats", help="Runs per setup (the best is kept)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Model-only and pipeline frames/s per precision and attention, GFLOP/s against the
    matmul peak, and where the pipeline's time goes."""
    import json

    from anomalyclip.bench.extract import ExtractBench, measure, table

    w, h = (int(v) for v in size.lower().split("x"))
    pairs = tuple(tuple(s.split(":", 1)) for s in setups.split(","))
    if any(len(p) != 2 for p in pairs):
        raise AnomalyError(f"--setups {setups}: expected PRECISION:ATTENTION,... e.g. bf16:sdpa")
    bench = ExtractBench(model, frames, size=(w, h), batch_size=batch_size, workers=workers,
                         device=device, setups=pairs, repeats=repeats)  # fmt: skip
    result = measure(bench)
    typer.echo(json.dumps(result, indent=2) if as_json else table(result))


# -- store ----------------------------------------------------------------------------------
def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{n} B"


@store_app.command("info")
def store_info(
    path: str = typer.Argument(..., help="Store: Zarr dir, .zip, .h5 or URL."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Dataset, backbone, dtype, counts per split and class, frames and size on disk."""
    checks.store_location(path)
    import json

    from anomalyclip.store import open_store

    with open_store(path) as st:
        info = st.summary()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    typer.echo(f"store      {info['location']}")
    typer.echo(f"dataset    {info['dataset']}")
    typer.echo(f"backbone   {info['backbone']} (dim {info['dim']}, stored {info['dtype']})")
    typer.echo(f"sampling   {info['sampling']}")
    typer.echo(
        f"videos     {info['videos']} complete, {info['incomplete']} incomplete, "
        f"{info['failed']} failed" + (f", {info['damaged']} damaged" if info["damaged"] else "")
    )
    typer.echo(f"frames     {info['frames']:,}")
    typer.echo(f"size       {_human_bytes(info['size_bytes'])}")
    for split, n in info["per_split"].items():
        classes = {
            k.split("/", 1)[1]: v for k, v in info["per_class"].items() if k.startswith(split)
        }
        typer.echo(f"  {split:<6} {n:>6}  " + ", ".join(f"{c} {v}" for c, v in classes.items()))


@store_app.command("ls")
def store_ls(path: str = typer.Argument(..., help="Store to list.")) -> None:
    """One line per video: id, split, class, frames, state."""
    checks.store_location(path)
    from anomalyclip.store import open_store

    with open_store(path) as st:
        for vid, r, state in st.listing():
            if r is None:  # a damaged record: its id comes from its key
                typer.echo(f"{vid}\t-\t-\t0\t{state}")
            else:
                typer.echo(f"{r.video_id}\t{r.split}\t{r.label}\t{r.num_frames}\t{state}")
        for vid, failure in st.failures().items():
            typer.echo(f"{vid}\t-\t-\t0\tfailed: {failure.get('error', '')}")


@store_app.command("verify")
def store_verify(path: str = typer.Argument(..., help="Store to check.")) -> None:
    """Recompute every video's checksum; list damaged, missing or incomplete videos (exit 1)."""
    checks.store_location(path)
    from anomalyclip.store import open_store

    with open_store(path) as st:
        n = len(st.keys())
        problems = st.verify(progress=True)
        truncated = {} if problems else st.truncated()
    for vid, reason in problems.items():
        typer.echo(f"{vid}: {reason}")
    if problems:
        typer.echo(f"{path}: {len(problems)} of {n} videos failed verification", err=True)
        raise typer.Exit(1)
    for vid, why in truncated.items():
        typer.echo(f"{vid}: truncated source, stored as decoded: {why}")
    typer.echo(
        f"{path}: all {n} videos intact" + (f" ({len(truncated)} truncated)" if truncated else "")
    )


@store_app.command("export")
def store_export(
    src: str = typer.Argument(..., help="Source store."),
    dst: str = typer.Argument(
        ..., help="New store, format from the suffix: none or .zarr, .zip, .h5 or .hdf5."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing destination."),
) -> None:
    """Convert a store between Zarr directory, Zarr zip and HDF5, bit-exact."""
    checks.store_location(src)
    from anomalyclip.store import export_store
    from anomalyclip.store.backend import store_format

    store_format(dst)  # an unknown suffix is refused before anything is read or written
    n = export_store(src, dst, overwrite=overwrite)
    typer.echo(f"exported {n} videos to {dst}")


@store_app.command("merge")
def store_merge(
    dst: str = typer.Argument(..., help="Store to add to (created if absent)."),
    sources: list[str] = typer.Argument(..., help="Stores to add."),
) -> None:
    """Merge stores that share dataset, backbone, preprocessing and sampling."""
    for source in sources:
        checks.store_location(source)
    from anomalyclip.store import merge_stores

    report = merge_stores(dst, sources)
    typer.echo(
        f"added {len(report.added)}, already present {len(report.identical)}, "
        f"conflicts {len(report.conflicts)}"
    )
    for vid, why in report.conflicts.items():
        typer.echo(f"conflict: {vid}: {why}", err=True)
    if report.conflicts:
        raise typer.Exit(1)


@store_app.command("import-npy")
def store_import_npy(
    npy_dir: str = typer.Argument(..., help="Folder of per-video .npy features, any nesting."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="ucf, xd, sht, demo or csv:FILE."),
    out: str = typer.Option(..., "--out", "-o", help="Store to create or add to (Zarr, .h5)."),
    lists: str = typer.Option(None, "--lists", help="Folder of official list / truth files."),
    authors_list: list[str] = typer.Option(
        None,
        "--authors-list",
        help="Authors' 'path start end label' list (FILE, train=FILE or test=FILE).",
    ),
    dtype: str = typer.Option("float16", "--dtype", help="float16, or float32 (bit-exact)."),
    ncrops: int = typer.Option(1, "--ncrops", help="Crops: files __0..__N-1 or (T*N, D) rows."),
    crop: str = typer.Option("0", "--crop", help="Crop to keep (0-based), or 'mean'."),
    backbone: str = typer.Option(
        "openai/clip-vit-base-patch16", "--backbone", help="Model the features came from."
    ),
    dim: int = typer.Option(None, "--dim", help="Feature width (default 512, or the store's)."),
    fps: float = typer.Option(None, "--fps", help="Frame rate, for presentation times."),
    stride: int = typer.Option(1, "--stride", help="Decoded frames between consecutive rows."),
) -> None:
    """Import published per-video .npy features, labels and test ground truth into a store."""
    checks.existing_dir(npy_dir, "folder of .npy features")
    if lists:
        checks.existing_dir(lists, "folder of list files")
    for item in authors_list or []:
        checks.existing_file(item.split("=", 1)[-1], "list file")
    if crop != "mean" and not crop.isdigit():
        raise AnomalyError(f"--crop must be a crop index or 'mean', not {crop!r}")
    from anomalyclip.interop.npy_import import import_npy

    summary = import_npy(
        npy_dir, dataset, out, lists=lists, authors_lists=authors_list or None, dtype=dtype,
        ncrops=ncrops, crop=crop if crop == "mean" else int(crop), backbone=backbone, dim=dim,
        fps=fps, stride=stride, progress=True,
    )  # fmt: skip
    typer.echo(
        f"imported {len(summary.imported)} ({summary.frames:,} rows), "
        f"unchanged {len(summary.skipped)}, failed {len(summary.failed)}, "
        f"listed without .npy {len(summary.missing)}, .npy not listed {len(summary.unlisted)}"
    )
    for vid, why in summary.failed.items():
        typer.echo(f"failed: {vid}: {why}", err=True)
    if summary.failed:
        raise typer.Exit(1)


# -- train ----------------------------------------------------------------------------------
def _threshold_rule(value: str | None) -> str | None:
    if value is not None:
        from anomalyclip.thresholds import ThresholdRule

        try:
            ThresholdRule.parse(value)
        except AnomalyError as exc:
            raise typer.BadParameter(str(exc)) from None
    return value


def _conv_algorithm(value: str | None) -> str | None:
    from anomalyclip.kernels import CONV_ALGORITHMS  # no torch: argument errors stay fast

    if value is not None and value not in CONV_ALGORITHMS:
        raise typer.BadParameter(f"{value!r}: choose one of {', '.join(CONV_ALGORITHMS)}")
    return value


def _keep_memory_on_cpu(device: str | None) -> None:
    """The allocator policy of the commands that train or score on the CPU: glibc keeps freed
    memory, so the 30-130 MB tensors of every batch stop faulting in fresh pages
    (:mod:`anomalyclip.kernels.allocator`; ``ANOMALY_KEEP_MEMORY=0`` turns it off)."""
    from anomalyclip.kernels.allocator import keep_freed_memory
    from anomalyclip.runs import default_device

    if default_device(device).type == "cpu":
        keep_freed_memory()


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


def _run_folder(out: str, resume: bool, exist_ok: bool):
    """The run folder: an existing run to resume, or a new one claimed now (never a run
    overwritten unless ``exist_ok``). Under ``torchrun`` rank 0 alone claims and writes."""
    import os
    from pathlib import Path

    if resume:
        return checks.run_dir(out)
    if os.environ.get("RANK", "0") != "0":
        return Path(out)
    return checks.claim_run_dir(out, exist_ok)


# -- evaluate -------------------------------------------------------------------------------
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
    from anomalyclip.environment import provenance
    from anomalyclip.evaluate.evaluation import EvalOptions, evaluate_run, write_outputs
    from anomalyclip.evaluate.report import format_table
    from anomalyclip.events import EventConfig
    from anomalyclip.runs import default_device, load_model

    events = EventConfig(0.5, exit_ratio, merge_gap, min_duration)
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


def _probability(value: float | None) -> float | None:
    if value is not None and not 0.0 <= value <= 1.0:
        raise typer.BadParameter(f"{value:g} is not a probability in [0, 1]")
    return value


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
) -> None:
    """Per-frame anomaly scores, classes and events for videos that are not in any store."""
    checks.precision(precision)
    clip = clip or locations.recorded(checkpoint, checks.run_config(checkpoint), "clip")
    locations.local_clip(clip)
    for video in videos:
        checks.existing_path(video, "video file or frame folder")
    if device:
        checks.device_name(device)
    if fps and stride:
        raise AnomalyError("give --fps or --stride, not both")
    from anomalyclip.evaluate.predict import PredictConfig, predict
    from anomalyclip.events import EventConfig
    from anomalyclip.extract.decode import Sampling

    sampling = Sampling("fps", fps) if fps else Sampling("stride", stride) if stride else Sampling()
    _keep_memory_on_cpu(device)
    events = EventConfig(threshold or 0.5, exit_ratio, merge_gap, min_duration)
    config = PredictConfig(clip, device, precision, sampling, threshold=threshold, events=events,
                           render=render)  # fmt: skip
    results, failed = predict(videos, checkpoint, out, config)
    for r in results:
        extra = f", {r.video}" if r.video else ""
        typer.echo(
            f"{r.source}: {r.frames} frames, mean p(A) {r.mean_p_abnormal:.3f}, "
            f"{len(r.events)} events -> {r.csv}, {r.events_file}, {r.plot}{extra}"
        )
        for e in r.events:
            top = ", ".join(f"{name} {p:.2f}" for name, p in e.top3)
            typer.echo(
                f"  {e.start_time:8.2f}-{e.end_time:8.2f} s  frames {e.start_frame}-"
                f"{e.end_frame - 1}  peak p(A) {e.peak:.2f}  mean {e.mean:.2f}  {top}"
            )
    for src, reason in failed.items():
        typer.echo(f"failed: {src}: {reason}", err=True)
    if failed:
        raise typer.Exit(1)


# -- interop: the authors' published checkpoints ----------------------------------------------
@app.command("import-checkpoint")
def import_checkpoint_cmd(
    ckpt: str = typer.Argument(..., help="The authors' last.ckpt (read safely, on the CPU)."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="ucf, xd or sht."),
    out: str = typer.Option(..., "--out", "-o", help="Run directory to write."),
    centroid: str = typer.Option(None, "--centroid", help="The authors' ncentroid.pt."),
    features: str = typer.Option(
        None, "--features", "-f", help="Store: the run's default; centroid if no --centroid."
    ),
    clip: str = typer.Option(None, "--clip", help="CLIP for the tokenizer and image tower."),
) -> None:
    """Import a published AnomalyCLIP checkpoint as a run (eval, predict, train --resume)."""
    checks.existing_file(ckpt, "checkpoint file")
    if centroid:
        checks.existing_file(centroid, "centroid file")
    if features:
        checks.store_location(features)
    if clip:
        locations.local_clip(clip)
    from anomalyclip.backbone import DEFAULT_CLIP
    from anomalyclip.interop.authors import import_checkpoint

    run = import_checkpoint(ckpt, dataset, out, clip or DEFAULT_CLIP, centroid, features)
    typer.echo(f"run written to {run}")


@app.command("export-checkpoint")
def export_checkpoint_cmd(
    run: str = typer.Argument(..., help="Run directory."),
    out: str = typer.Argument(..., help="Checkpoint to write (ncentroid.pt goes beside it)."),
    clip: str = typer.Option(None, "--clip", help="Also write this CLIP's image tower."),
) -> None:
    """Write a run as a checkpoint in the authors' layout (their key names and shapes)."""
    checks.run_dir(run)
    if clip:
        locations.local_clip(clip)
    from anomalyclip.interop.authors import export_checkpoint

    path = export_checkpoint(run, out, clip)
    typer.echo(f"checkpoint written to {path} (centroid: {path.with_name('ncentroid.pt')})")


# -- the machine ----------------------------------------------------------------------------
@app.command("env")
def env_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Versions, platform, CPUs, threads, CUDA and bf16 support: what a bug report needs."""
    import json

    from anomalyclip.environment import report

    info = report()
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    git = info["git"]
    source = f" (git {git['commit'][:12]}{', modified' if git['dirty'] else ''})" if git else ""
    rows = {"anomalyclip": f"{info['anomalyclip']}{source}", "python": info["python"]}
    rows.update({k: v or "not installed" for k, v in info["versions"].items()})
    rows["platform"] = info["platform"]
    rows["cpus"] = f"{info['cpus']} ({info['cpus_usable']} usable)"
    rows["threads"] = f"torch {info['torch_threads']}, interop {info['torch_interop_threads']}"
    rows["cpu_bf16"] = " ".join(info["cpu_bf16"]) or "no bf16 instructions"
    if info["cuda_available"]:
        devices = "; ".join(
            f"{d['name']} {d['memory_gib']} GiB (sm {d['capability']})"
            for d in info["cuda_devices"]
        )
        bf16 = "bf16" if info.get("cuda_bf16") else "no bf16"
        rows["cuda"] = f"{info['cuda_version']}: {devices}; {bf16}"
    else:
        rows["cuda"] = "not available" + ("" if info["cuda_version"] else " (CPU-only torch)")
    for key, value in rows.items():
        typer.echo(f"{key:<13} {value}")


@bench_app.command("store")
def bench_store_cmd(
    videos: int = typer.Option(64, "--videos", help="Synthetic videos to write."),
    frames: int = typer.Option(4000, "--frames", help="Mean frames per video (T/2 to 3T/2)."),
    batches: int = typer.Option(5, "--batches", help="Batches timed (median reported)."),
    out: str = typer.Option(None, "--out", help="Folder for the data (default: a temp dir)."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Store size and training-batch read time: float16 Zarr and HDF5 against float32 .npy."""
    import json
    import tempfile

    from anomalyclip.bench.store import measure, table

    with tempfile.TemporaryDirectory(prefix="anomaly-bench-store-") as tmp:
        result = measure(out or tmp, videos, frames, seed=seed, batches=batches)
    typer.echo(json.dumps(result, indent=2) if as_json else table(result))


def _bench_convs(conv: str) -> tuple[str, ...]:
    if conv not in ("direct", "winograd", "both"):
        raise AnomalyError(f"--conv: expected direct, winograd or both, got {conv!r}")
    return ("direct", "winograd") if conv == "both" else (conv,)


@bench_app.command("train")
def bench_train_cmd(
    steps: int = typer.Option(3, "--steps", help="Timed steps per configuration (median)."),
    conv: str = typer.Option("both", "--conv", help="direct | winograd | both."),
    bf16: bool = typer.Option(False, "--bf16", help="Also time bf16 autocast."),
    rounds: int = typer.Option(1, "--rounds", help="Interleaved repeats of every configuration."),
    libc_malloc: bool = typer.Option(
        False, "--libc-malloc", help="Also time with glibc's default allocator settings."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Seconds per training step at the paper's UCF-Crime shape, against the published code."""
    import json

    from anomalyclip.bench.train import measure, table

    dtypes = (False, True) if bf16 else (False,)
    keep = (True, False) if libc_malloc else (True,)
    result = measure(
        convs=_bench_convs(conv), bf16=dtypes, steps=steps, rounds=rounds, keep_memory=keep
    )
    typer.echo(json.dumps(result, indent=2) if as_json else table(result))


@bench_app.command("eval")
def bench_eval_cmd(
    videos: int = typer.Option(16, "--videos", help="Random-length test videos."),
    rounds: int = typer.Option(3, "--rounds", help="Interleaved repeats (median)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Test-mode frames/s at the UCF-Crime shape: reference vs fast path, fp32 and bf16."""
    import json

    from anomalyclip.bench.eval import measure, table

    result = measure(n_videos=videos, rounds=rounds)
    typer.echo(json.dumps(result, indent=2) if as_json else table(result))


@bench_app.command("demo")
def bench_demo_cmd(
    out: str = typer.Option(None, "--out", help="Keep the demo here (default: a temp dir)."),
    precision: str = typer.Option("fp32", "--precision", help="Extraction: fp32, bf16, auto."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Seconds of every demo step, with the demo's AUC, alarms and events found."""
    import json

    from anomalyclip.bench.demo import measure, table

    result = measure(out, precision=precision)
    typer.echo(json.dumps(result, indent=2) if as_json else table(result))


@bench_app.command("predict")
def bench_predict_cmd(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", help="Run directory."),
    videos: list[str] = typer.Option(None, "--video", help="Videos (default: two generated)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """`predict --render` frames/s end to end, and the shares of extraction and rendering."""
    import json

    from anomalyclip.bench.predict import measure, table

    result = measure(checkpoint, videos or None)
    typer.echo(json.dumps(result, indent=2) if as_json else table(result))


@bench_app.command("all")
def bench_all_cmd(
    readme: str = typer.Option(None, "--readme", help="Write the table into this README."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every benchmark at quick sizes (~15 min on 2 cores), one table of ratios."""
    import json

    from anomalyclip.bench.all import measure, table, write_readme

    if readme and not os.path.isfile(readme):
        raise AnomalyError(f"{readme}: no such file")
    result = measure()
    text = table(result)
    typer.echo(json.dumps(result, indent=2, default=str) if as_json else text)
    if readme:
        write_readme(readme, text)
        typer.echo(f"written into {readme}")


# -- live video -----------------------------------------------------------------------------
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
) -> None:
    """Score cameras and streams as they arrive; anomaly events as JSON lines (stdout and
    OUT/events.jsonl). SIGINT or SIGTERM closes open events and exits 0."""
    import dataclasses
    import signal
    import threading

    from anomalyclip.inputs import expand_inputs

    checks.precision(precision)
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
    from anomalyclip.live.watch import Watcher, load_for_watch, run_sampling, run_threshold

    model, encoder, config = load_for_watch(checkpoint, clip, device, precision)
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


@bench_app.command("watch")
def bench_watch_cmd(
    soak: float = typer.Option(
        0.0, "--soak", help="Wall seconds of a long stream scored as fast as possible."
    ),
    clip: str = typer.Option("all", "--clip", help="tiny, vit-b-16 or all."),
    precision: str = typer.Option("all", "--precision", help="fp32, bf16 or all (ViT-B/16)."),
    seconds: float = typer.Option(20.0, "--seconds", help="Length of each real-time trial."),
    threads: int = typer.Option(2, "--threads", help="CPU threads (cores) to use."),
    agreement: str = typer.Option(
        None, "--agreement", help="An 'anomaly demo' folder: live vs offline scores instead."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Highest frame rate sustained in real time without drops; with --soak, memory, fps,
    lag and drops over a long stream; with --agreement, live against offline scores."""
    import json

    from anomalyclip.bench.watch import measure, table

    if agreement:
        from anomalyclip.bench.watch import agreement as measure_agreement

        typer.echo(json.dumps(measure_agreement(agreement), indent=2))
        return
    result = measure(clip=clip, precision=precision, soak=soak, trial=seconds, threads=threads)
    typer.echo(json.dumps(result, indent=2) if as_json else table(result))


def _click_exceptions() -> tuple[type[Exception], ...]:
    """Click's exception base classes: typer's bundled copy (typer >= 0.2x) and/or click's."""
    found: list[type[Exception]] = []
    try:
        from typer._click.exceptions import ClickException
    except ImportError:
        pass
    else:
        found.append(ClickException)
    try:
        from click import ClickException
    except ImportError:
        pass
    else:
        found.append(ClickException)
    return tuple(found)


def main() -> None:
    """Entry point of the ``anomaly`` console script.

    Usage errors (a missing or unknown option, a bad value) print click's usage line, a
    ``Try 'anomaly ... --help'`` hint and the error, exit 2; an :class:`AnomalyError` prints
    ``error: ...`` on one line, exit 2. Anything else is a bug and keeps its traceback.
    """
    try:
        code = app(standalone_mode=False, prog_name="anomaly")
    except AnomalyError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click's usage errors come here in standalone_mode=False
        if isinstance(exc, _click_exceptions()):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
