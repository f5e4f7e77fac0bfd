"""``anomaly export``: a run's graphs for CPU boxes; ``anomaly bench export``: their speed."""

from __future__ import annotations

import glob

import typer

from anomalyclip import checks
from anomalyclip.cli.app import app
from anomalyclip.errors import AnomalyError


@app.command("export")
def export_cmd(
    run: str = typer.Argument(..., help="Run directory."),
    fmt: str = typer.Option("onnx", "--format", help="onnx (ONNX Runtime) or openvino (IR)."),
    int8: bool = typer.Option(False, "--int8", help="Quantise the image tower to int8."),
    calibrate_on: list[str] = typer.Option(
        None,
        "--calibrate-on",
        help="int8 calibration frames: videos (files, folders, globs, lists), or the run's "
        "store with --videos (default: demo-world frames, for demo runs).",
    ),
    videos: str = typer.Option(
        None, "--videos", help="The folder a --calibrate-on store's videos are in."
    ),
    out: str = typer.Option(None, "--out", "-o", help="Folder (default RUN/export/FORMAT)."),
) -> None:
    """Export the run's image tower (frames -> features) and scorer (a window of features ->
    p(A) and classes) as ONNX or OpenVINO graphs, with a manifest, for predict/watch/features
    --backend onnxruntime|openvino."""
    from anomalyclip.export.manifest import check_format, check_installed, needed_packages

    checks.run_dir(run)
    check_format(fmt)
    if (calibrate_on or videos) and not int8:
        raise AnomalyError("--calibrate-on and --videos choose int8 calibration frames: add --int8")
    for item in calibrate_on or []:
        if not glob.glob(item):
            raise AnomalyError(f"--calibrate-on {item}: no such store, video, folder or list")
    if videos:
        checks.existing_dir(videos, "folder of videos")
    check_installed(*needed_packages(fmt, int8))
    from anomalyclip.export.exporter import ExportConfig, export_run
    from anomalyclip.export.quantize import Calibration

    calibration = Calibration(tuple(calibrate_on) if calibrate_on else None, videos)
    folder = export_run(run, ExportConfig(fmt, int8, calibration, out))
    for path in sorted(folder.iterdir()):
        typer.echo(f"{path}  {path.stat().st_size / 1e6:.1f} MB")
