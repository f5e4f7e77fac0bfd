"""``anomaly bench ...``: measurements, reported as ratios within one run."""

from __future__ import annotations

import os

import typer

from anomalyclip import checks
from anomalyclip.cli.app import bench_app
from anomalyclip.cli.options import clip_option
from anomalyclip.errors import AnomalyError


@bench_app.command("extract")
def bench_extract_cmd(
    model: str = clip_option("CLIP to time (default: random weights of ViT-B/16's size)."),
    frames: int = typer.Option(128, "--frames", metavar="N", help="Frames to extract."),
    batch_size: int = typer.Option(32, "--batch-size", metavar="N", help="Frames per forward."),
    workers: int = typer.Option(2, "--workers", metavar="N", help="Decoder threads."),
    device: str = typer.Option("cpu", "--device", metavar="DEVICE", help="cpu, cuda or cuda:N."),
    size: str = typer.Option("320x240", "--size", metavar="WxH", help="Input video size."),
    setups: str = typer.Option(
        None,
        "--setups",
        metavar="LIST",
        help="PRECISION:ATTENTION[:PREPROCESS],... to compare (default: fp32:eager, fp32:sdpa, "
        "bf16:sdpa, and fp32:sdpa:authors where OpenCV is installed).",
    ),
    repeats: int = typer.Option(
        2, "--repeats", metavar="N", help="Runs per setup (the best is kept)."
    ),
    readme: str = typer.Option(
        None, "--readme", metavar="FILE", help="Write the table and this command into this README."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """CLIP extraction frames/s per precision and attention, against the matmul peak.

    Model-only and whole-pipeline rates, GFLOP/s against the measured matmul peak, and where
    the pipeline's time goes.
    """
    import json

    if readme:
        checks.readme_block(readme, "extract")
    from anomalyclip.bench.extract import ExtractBench, measure, readme_text, table

    w, h = (int(v) for v in size.lower().split("x"))
    chosen = {}
    if setups:
        parts = [s.split(":") for s in setups.split(",")]
        if any(len(p) not in (2, 3) for p in parts):
            raise AnomalyError(
                f"--setups {setups}: expected PRECISION:ATTENTION[:PREPROCESS],... e.g. bf16:sdpa"
            )
        chosen["setups"] = tuple((*p[:2], checks.preprocess(p[2] if len(p) > 2 else "native"))
                                 for p in parts)  # fmt: skip
    bench = ExtractBench(model, frames, size=(w, h), batch_size=batch_size, workers=workers,
                         device=device, repeats=repeats, **chosen)  # fmt: skip
    result = measure(bench)
    typer.echo(json.dumps(result, indent=2) if as_json else table(result))
    if readme:
        from anomalyclip.bench.all import write_readme
        from anomalyclip.environment import provenance

        write_readme(readme, readme_text(result, provenance()["command"]), "extract")
        typer.echo(f"written into {readme}")


@bench_app.command("preprocess")
def bench_preprocess_cmd(
    videos: list[str] = typer.Argument(..., metavar="VIDEO...", help="Video files."),
    model: str = typer.Option(
        None, "--clip", "--model", metavar="CLIP", help="CLIP (default: random ViT-B/16 size)."
    ),
    stride: int = typer.Option(10, "--stride", metavar="K", help="Every K-th frame."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """How far the frame paths' features lie apart (native, resize only, the authors' JPEG
    path; float16 storage), as store compare measures it, and each path's cost."""
    import json

    for video in videos:
        checks.existing_file(video, "video file")
    checks.preprocess("authors")
    if stride < 1:
        raise AnomalyError(f"--stride must be at least 1, not {stride}")
    from anomalyclip.bench.preprocess import PreprocessBench, measure, table

    result = measure(PreprocessBench(tuple(videos), model, stride))
    typer.echo(json.dumps(result, indent=2) if as_json else table(result))


@bench_app.command("store")
def bench_store_cmd(
    videos: int = typer.Option(64, "--videos", metavar="N", help="Synthetic videos to write."),
    frames: int = typer.Option(
        4000, "--frames", metavar="T", help="Mean frames per video (T/2 to 3T/2)."
    ),
    batches: int = typer.Option(
        5, "--batches", metavar="N", help="Batches timed (median reported)."
    ),
    out: str = typer.Option(
        None, "--out", metavar="DIR", help="Folder for the data (default: a temp dir)."
    ),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of the synthetic store."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
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
    steps: int = typer.Option(
        3, "--steps", metavar="N", help="Timed steps per configuration (median)."
    ),
    conv: str = typer.Option(
        "both", "--conv", metavar="ALGORITHM", help="direct, winograd or both."
    ),
    bf16: bool = typer.Option(False, "--bf16", help="Also time bf16 autocast."),
    rounds: int = typer.Option(
        1, "--rounds", metavar="N", help="Interleaved repeats of every configuration."
    ),
    libc_malloc: bool = typer.Option(
        False, "--libc-malloc", help="Also time with glibc's default allocator settings."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Seconds per training step at the paper's UCF-Crime shape, against the published code."""
    import json

    from anomalyclip.bench.train import TrainBench, measure, table

    dtypes = (False, True) if bf16 else (False,)
    keep = (True, False) if libc_malloc else (True,)
    bench = TrainBench(
        convs=_bench_convs(conv), bf16=dtypes, steps=steps, rounds=rounds, keep_memory=keep
    )
    result = measure(bench)
    typer.echo(json.dumps(result, indent=2) if as_json else table(result))


@bench_app.command("eval")
def bench_eval_cmd(
    videos: int = typer.Option(16, "--videos", metavar="N", help="Random-length test videos."),
    rounds: int = typer.Option(3, "--rounds", metavar="N", help="Interleaved repeats (median)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Test-mode frames/s at the UCF-Crime shape: reference vs fast path, fp32 and bf16."""
    import json

    from anomalyclip.bench.eval import measure, table

    result = measure(n_videos=videos, rounds=rounds)
    typer.echo(json.dumps(result, indent=2) if as_json else table(result))


@bench_app.command("demo")
def bench_demo_cmd(
    out: str = typer.Option(
        None, "--out", metavar="DIR", help="Keep the demo here (default: a temp dir)."
    ),
    precision: str = typer.Option(
        "fp32", "--precision", metavar="PRECISION", help="Extraction: fp32, bf16, auto."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Seconds of every demo step, with the demo's AUC, alarms and events found."""
    import json

    from anomalyclip.bench.demo import measure, table

    result = measure(out, precision=precision)
    typer.echo(json.dumps(result, indent=2) if as_json else table(result))


@bench_app.command("calibrate")
def bench_calibrate_cmd(
    demo: str = typer.Argument(
        ..., metavar="DEMO", help="An 'anomaly demo' folder (its run and videos)."
    ),
    cameras: int = typer.Option(3, "--cameras", metavar="N", help="New backgrounds to measure on."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of the generated cameras."),
    precision: str = typer.Option(
        "fp32", "--precision", metavar="PRECISION", help="CLIP: fp32, bf16, auto."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """False alarms per hour and planted events found on cameras the run never saw, at the
    run's threshold and at each camera's own (anomaly calibrate on its normal footage)."""
    import json

    from anomalyclip import checks
    from anomalyclip.bench.calibrate import measure, table
    from anomalyclip.runs.config import RunConfig

    RunConfig.read(os.path.join(demo, "run"))
    checks.precision(precision)
    result = measure(demo, cameras=cameras, seed=seed, precision=precision)
    typer.echo(json.dumps(result, indent=2) if as_json else table(result))


@bench_app.command("predict")
def bench_predict_cmd(
    checkpoint: str = typer.Option(..., "--checkpoint", "-c", metavar="RUN", help="Run folder."),
    videos: list[str] = typer.Option(
        None, "--video", metavar="VIDEO", help="Videos (default: two generated)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """predict --render frames/s end to end, and the shares of extraction and rendering."""
    import json

    from anomalyclip.bench.predict import measure, table

    result = measure(checkpoint, videos or None)
    typer.echo(json.dumps(result, indent=2) if as_json else table(result))


@bench_app.command("all")
def bench_all_cmd(
    readme: str = typer.Option(
        None, "--readme", metavar="FILE", help="Write the table into this README."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Every benchmark at quick sizes (~15 min on 2 cores), one table of ratios."""
    import json

    if readme:
        checks.readme_block(readme, "all")
    from anomalyclip.bench.all import measure, table, write_readme

    result = measure()
    text = table(result)
    typer.echo(json.dumps(result, indent=2, default=str) if as_json else text)
    if readme:
        write_readme(readme, text)
        typer.echo(f"written into {readme}")


@bench_app.command("watch")
def bench_watch_cmd(
    soak: float = typer.Option(
        0.0,
        "--soak",
        metavar="SECONDS",
        help="Wall seconds of a long stream scored as fast as possible.",
    ),
    clip: str = typer.Option(
        "all", "--clip", metavar="SHAPE", help="Random CLIP: tiny, vit-b-16 or all."
    ),
    precision: str = typer.Option(
        "all", "--precision", metavar="PRECISION", help="fp32, bf16 or all (ViT-B/16)."
    ),
    seconds: float = typer.Option(
        20.0, "--seconds", metavar="SECONDS", help="Length of each real-time trial."
    ),
    threads: int = typer.Option(2, "--threads", metavar="N", help="CPU threads to use."),
    agreement: str = typer.Option(
        None,
        "--agreement",
        metavar="DIR",
        help="An 'anomaly demo' folder: live against offline scores instead.",
    ),
    ui: bool = typer.Option(
        False, "--ui", help="The live page's update rate and its cost to scoring instead."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Highest camera frame rate scored in real time without drops.

    With --soak: memory, frames/s, lag and drops over a long stream; with --agreement: live
    against offline scores of the demo's test videos; with --ui: the live page's updates
    and what they cost scoring (3 cameras, tiny CLIP).
    """
    import json

    from anomalyclip.bench.watch import measure, table

    if agreement:
        from anomalyclip.bench.watch import agreement as measure_agreement

        typer.echo(json.dumps(measure_agreement(agreement), indent=2))
        return
    if ui:
        from anomalyclip.bench.ui import measure_ui, ui_table

        result = measure_ui(seconds=seconds, threads=threads)
        typer.echo(json.dumps(result, indent=2) if as_json else ui_table(result))
        return
    result = measure(clip=clip, precision=precision, soak=soak, trial=seconds, threads=threads)
    typer.echo(json.dumps(result, indent=2) if as_json else table(result))
