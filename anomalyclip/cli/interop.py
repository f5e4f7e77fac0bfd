"""The authors' published checkpoints, and what a bug report needs (``env``)."""

from __future__ import annotations

import typer

from anomalyclip import checks, locations
from anomalyclip.cli.app import app
from anomalyclip.cli.options import clip_option
from anomalyclip.errors import AnomalyError


@app.command("import-checkpoint")
def import_checkpoint_cmd(
    ckpt: str = typer.Argument(
        ..., metavar="CKPT", help="The authors' last.ckpt (read safely, on the CPU)."
    ),
    dataset: str = typer.Option(..., "--dataset", "-d", metavar="NAME", help="ucf, xd or sht."),
    out: str = typer.Option(..., "--out", "-o", metavar="DIR", help="Run folder to write."),
    centroid: str = typer.Option(
        None, "--centroid", metavar="FILE", help="The authors' ncentroid.pt."
    ),
    features: str = typer.Option(
        None,
        "--features",
        "-f",
        metavar="STORE",
        help="The run's store; without --centroid, its normal training videos give the centroid.",
    ),  # fmt: skip
    clip: str = clip_option("CLIP: tokenizer and image tower.", locations.DEFAULT_CLIP),
) -> None:
    """Import a published AnomalyCLIP checkpoint as a run (eval, predict, train --resume)."""
    checks.existing_file(ckpt, "checkpoint file")
    if centroid:
        checks.existing_file(centroid, "centroid file")
    if features:
        checks.store_location(features)
    if centroid is None and features is None:
        raise AnomalyError(
            f"{ckpt}: the normal centroid is needed; pass --centroid ncentroid.pt or "
            "--features STORE (its normal training videos)"
        )
    from anomalyclip.datasets import get_dataset

    get_dataset(dataset)  # an unknown name fails before torch is imported
    locations.local_clip(clip)
    from anomalyclip.interop.authors import import_checkpoint

    run = import_checkpoint(ckpt, dataset, out, clip, centroid, features)
    typer.echo(f"run written to {run}")


@app.command("export-checkpoint")
def export_checkpoint_cmd(
    run: str = typer.Argument(..., metavar="RUN", help="Run folder."),
    out: str = typer.Argument(
        ..., metavar="CKPT", help="Checkpoint to write (ncentroid.pt goes beside it)."
    ),
    clip: str = clip_option("Also write this CLIP's image tower."),
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
