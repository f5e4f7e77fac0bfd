"""``anomaly export``: a run's graphs for CPU boxes; ``anomaly bench export``: their speed."""

from __future__ import annotations

import glob

import typer

from anomalyclip import checks
from anomalyclip.cli.app import app, bench_app
from anomalyclip.errors import AnomalyError
from anomalyclip.export.manifest import MIN_COSINE


@app.command("export")
def export_cmd(
    run: str = typer.Argument(..., metavar="RUN", help="Run folder."),
    fmt: str = typer.Option(
        "onnx", "--format", metavar="FORMAT", help="onnx (ONNX Runtime) or openvino (IR)."
    ),
    int8: bool = typer.Option(False, "--int8", help="Quantise the image tower to int8."),
    min_cosine: float = typer.Option(
        MIN_COSINE,
        "--int8-min-cosine",
        metavar="C",
        help="int8: keep float the matrix multiplies the per-frame cosine to fp32 needs to "
        "reach C on held-out calibration frames (0: all int8, fastest; 1: all float).",
    ),
    calibrate_on: list[str] = typer.Option(
        None,
        "--calibrate-on",
        metavar="VIDEOS_OR_STORE",
        help="int8 calibration frames: videos (files, folders, globs, lists), or the run's "
        "store with --videos (default: demo-world frames, for demo runs).",
    ),
    videos: str = typer.Option(
        None, "--videos", metavar="DIR", help="The folder a --calibrate-on store's videos are in."
    ),
    out: str = typer.Option(
        None, "--out", "-o", metavar="DIR", help="Folder (default RUN/export/FORMAT)."
    ),
) -> None:
    """Export the run's image tower (frames -> features) and scorer (a window of features ->
    p(A) and classes) as ONNX or OpenVINO graphs, with a manifest, for predict/watch/features
    --backend onnxruntime|openvino."""
    from anomalyclip.export.manifest import check_format, check_installed, needed_packages

    checks.run_dir(run)
    check_format(fmt)
    if (calibrate_on or videos) and not int8:
        raise AnomalyError("--calibrate-on and --videos choose int8 calibration frames: add --int8")
    if not 0.0 <= min_cosine <= 1.0:
        raise AnomalyError(f"--int8-min-cosine {min_cosine}: a cosine in [0, 1]")
    for item in calibrate_on or []:
        if not glob.glob(item):
            raise AnomalyError(f"--calibrate-on {item}: no such store, video, folder or list")
    if videos:
        checks.existing_dir(videos, "folder of videos")
    check_installed(*needed_packages(fmt, int8))
    from anomalyclip.export.exporter import ExportConfig, export_run
    from anomalyclip.export.quantize import Calibration

    calibration = Calibration(tuple(calibrate_on) if calibrate_on else None, videos)
    folder = export_run(run, ExportConfig(fmt, int8, calibration, out, min_cosine))
    for path in sorted(folder.iterdir()):
        typer.echo(f"{path}  {path.stat().st_size / 1e6:.1f} MB")


@bench_app.command("export")
def bench_export_cmd(
    frames: int = typer.Option(
        16, "--frames", metavar="N", help="Frames per timed image-tower call."
    ),
    repeats: int = typer.Option(
        3, "--repeats", metavar="N", help="Interleaved rounds (the best is kept)."
    ),
    seconds: float = typer.Option(
        20.0, "--seconds", metavar="SECONDS", help="Length of each watch trial."
    ),
    watch: bool = typer.Option(True, "--watch/--no-watch", help="Also the real-time rates."),
    accuracy: bool = typer.Option(
        False, "--accuracy", help="Also the demo's AUC and events through each exported tower."
    ),
    demo: str = typer.Option(
        None,
        "--demo",
        metavar="DIR",
        help="An 'anomaly demo' folder for --accuracy (default: new).",
    ),
    readme: str = typer.Option(
        None, "--readme", metavar="FILE", help="Write the table into this README."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Image tower frames/s per backend (torch fp32/bf16, ONNX Runtime, OpenVINO fp32/int8) as
    ratios to torch fp32, scorer time per window, watch real-time rates; --accuracy: int8 on
    the demo."""
    import json
    import os

    from anomalyclip.export.manifest import check_installed, needed_packages

    if readme:
        checks.readme_block(readme, "export")
    if demo:
        checks.run_dir(os.path.join(demo, "run"))
    check_installed(*needed_packages("openvino", True), "onnxruntime")
    from anomalyclip.bench.all import write_readme
    from anomalyclip.bench.export import ExportBench, demo_accuracy, measure, table

    result = measure(ExportBench(frames, repeats, watch, seconds))
    if accuracy:
        result["accuracy"] = demo_accuracy(demo)
    text = table(result)
    typer.echo(json.dumps(result, indent=2, default=str) if as_json else text)
    if readme:
        write_readme(readme, text, "export")
        typer.echo(f"written into {readme}")
