"""The pipeline's first steps: ``features`` (videos to a store) and ``demo`` (everything)."""

from __future__ import annotations

from pathlib import Path

import typer

from anomalyclip import checks, locations
from anomalyclip.cli.app import app
from anomalyclip.cli.options import (
    Interrupted,
    _at_least_one,
    _backend,
    _image_model,
    _image_tower,
    _keep_memory_on_cpu,
    _positive,
    clip_option,
    device_option,
    precision_option,
    rerun_command,
)
from anomalyclip.errors import AnomalyError


def _shard(shard: str | None) -> tuple[int, int] | None:
    """``--shard I/N`` as (I, N); None without it (torchrun's ranks share the work)."""
    if shard is None:
        return None
    i, sep, n = shard.partition("/")
    if not (sep and i.isdigit() and n.isdigit() and int(i) < int(n)):
        raise AnomalyError(f"--shard {shard}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(i), int(n)


def _kept(store: str, ids: list[str]) -> str:
    """``12 of 85 videos complete in STORE``, read back from the store after Ctrl-C."""
    from anomalyclip.store import open_store

    try:
        with open_store(store) as st:
            done = sum(st.is_complete(vid) for vid in ids)
    except Exception:  # noqa: BLE001 - the store may not even exist yet: say so plainly
        return f"every video finished before Ctrl-C is kept in {store}"
    return f"{done} of {len(ids)} videos complete in {store} are kept"


@app.command("features")
def features_cmd(
    dataset: str = typer.Option(
        ..., "--dataset", "-d", metavar="NAME", help="ucf, xd, sht, demo, or csv:FILE."
    ),
    videos: str = typer.Option(..., "--videos", metavar="DIR", help="The dataset's videos."),
    out: str = typer.Option(
        None, "--out", "-o", metavar="STORE", help="Store to write (default store/DATASET.zarr)."
    ),
    clip: str = clip_option("Image tower: hub id or local CLIP folder.", locations.DEFAULT_CLIP),
    device: str = device_option(),
    fps: float = typer.Option(
        None, "--fps", metavar="FPS", callback=_positive, help="Keep FPS frames per second."
    ),
    stride: int = typer.Option(
        None, "--stride", metavar="K", callback=_at_least_one, help="Keep every K-th frame."
    ),
    batch_size: int = typer.Option(64, "--batch-size", metavar="N", help="Frames per forward."),
    workers: int = typer.Option(4, "--workers", metavar="N", help="Decoder threads."),
    dtype: str = typer.Option("float16", "--dtype", metavar="DTYPE", help="float16 or float32."),
    lists: str = typer.Option(
        None, "--lists", metavar="DIR", help="Folder of the official list and truth files."
    ),
    frames_fps: float = typer.Option(
        None, "--frames-fps", metavar="FPS", callback=_positive, help="Rate of frame folders."
    ),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Skip absent videos."),
    shard: str = typer.Option(
        None, "--shard", metavar="I/N", help="Share I of N (job arrays; torchrun: automatic)."
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Record videos that end far short of their header as failed."
    ),
    precision: str = precision_option(),
    preprocess: str = typer.Option(
        "native",
        "--preprocess",
        metavar="PATH",
        help="Frame path: native, or authors (the published features').",
    ),
    backend: str = typer.Option(
        "torch",
        "--backend",
        metavar="NAME",
        callback=_backend,
        help="Image tower: torch, or an export run by onnxruntime or openvino (--clip: its "
        "folder, or the exported run).",
    ),
) -> None:
    """Extract CLIP frame embeddings of a dataset into a feature store (resumable).

    Every frame by default (--fps or --stride to sample); frame folders play at 30 frames per
    second unless --frames-fps. Under torchrun each process takes a share of the videos
    (balanced by size) and all write one store; --shard I/N does the same for independent
    jobs. Ctrl-C keeps every finished video: the same command goes on with the others.
    """
    checks.existing_dir(videos, "folder of videos")
    clip = _image_tower(backend, clip, None)
    if lists:
        checks.existing_dir(lists, "folder of list files")
    if device:
        checks.device_name(device)
    checks.precision(precision)
    checks.preprocess(preprocess)
    if fps is not None and stride is not None:
        raise AnomalyError("--fps and --stride: choose one sampling")
    shard_of = _shard(shard)
    from anomalyclip.datasets import get_adapter

    adapter = get_adapter(dataset)  # a CSV's content or an unknown name fails here, at once
    lists_dir = Path(lists) if lists else None
    entries = adapter.discover(Path(videos), lists_dir, allow_missing=allow_missing)
    store = out or f"store/{adapter.folder_name}.zarr"
    choices = dict(batch_size=batch_size, workers=workers, folder_fps=frames_fps, dtype=dtype,
                   strict=strict, preprocess=preprocess)  # fmt: skip
    try:
        config = _extract_config(adapter.spec.name, videos, shard_of, device, precision)
        from anomalyclip.extract.decode import Sampling
        from anomalyclip.extract.pipeline import extract

        sampling = (
            Sampling("fps", fps) if fps else Sampling("stride", stride) if stride else Sampling()
        )
        image = _image_model(backend, clip)
        summary = extract(entries, store, image, config, sampling=sampling, **choices)
    except KeyboardInterrupt:
        ids = [e.video_id for e in entries]
        raise Interrupted(f"{_kept(store, ids)}; go on with: {rerun_command({})}") from None
    typer.echo(summary.format())
    if not summary.ok:
        raise typer.Exit(1)


def _extract_config(dataset: str, videos: str, shard, device: str | None, precision: str):
    """The run's ExtractConfig: this job's share and device (one GPU per torchrun process)."""
    import os

    from anomalyclip.extract.pipeline import ExtractConfig, shard_from_env
    from anomalyclip.runs import default_device

    rank, world = shard or shard_from_env()
    device = str(default_device(device))
    if device == "cuda" and world > 1 and shard is None:  # torchrun: one GPU per process
        device = f"cuda:{os.environ.get('LOCAL_RANK', rank)}"
    coordinated = shard is None  # torchrun's ranks start together; job-array tasks do not
    return ExtractConfig(dataset=dataset, device=device, precision=precision, root=videos,
                         shard=(rank, world), coordinated=coordinated)  # fmt: skip


@app.command("demo")
def demo_cmd(
    out: str = typer.Option(
        "demo", "--out", "-o", metavar="DIR", help="Folder for videos, CLIP, store and run."
    ),
    seed: int = typer.Option(
        0, "--seed", metavar="N", help="Seed of the videos and the CLIP (training: the preset's)."
    ),
    precision: str = typer.Option(
        "fp32", "--precision", metavar="PRECISION", help="Image tower: fp32, bf16 or auto."
    ),
) -> None:
    """The whole pipeline on a generated dataset: no download, a few minutes on a CPU."""
    checks.precision(precision)
    from anomalyclip.demo import run_demo
    from anomalyclip.evaluate.report import format_table

    _keep_memory_on_cpu(None)
    try:
        run = run_demo(out, seed=seed, precision=precision)
    except KeyboardInterrupt:
        made = [n for n in ("videos", "clip", "store.zarr", "run") if (Path(out) / n).exists()]
        kept = f"keeps what the demo wrote ({', '.join(made)})" if made else "holds nothing yet"
        raise Interrupted(
            f"{out} {kept}; it does not resume: run it again from the start with: "
            f"{rerun_command({})}"
        ) from None
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
