"""The ``anomaly`` command line.

Each command is a thin wrapper: it parses options and calls a plain function of the package,
so everything here is also usable from Python. Expected failures (:class:`AnomalyError`) are
printed on one line, ``error: <file>: <problem>``, with exit status 2.
"""

from __future__ import annotations

import logging
import sys

import typer

from anomalyclip.errors import AnomalyError

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__.split("\n")[0])
store_app = typer.Typer(no_args_is_help=True, help="Inspect, check, convert and merge feature stores.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks (numbers are ratios within one run).")
app.add_typer(store_app, name="store")
app.add_typer(bench_app, name="bench")


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging.")) -> None:
    """Weakly supervised video anomaly detection and recognition with CLIP (AnomalyCLIP)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # zarr leaves pending asyncio tasks behind when a damaged chunk aborts a read
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)


# -- commands are registered below, one section per stage ------------------------------------


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
        f"{info['failed']} failed"
    )
    typer.echo(f"frames     {info['frames']:,}")
    typer.echo(f"size       {_human_bytes(info['size_bytes'])}")
    for split, n in info["per_split"].items():
        classes = {k.split("/", 1)[1]: v for k, v in info["per_class"].items() if k.startswith(split)}
        typer.echo(f"  {split:<6} {n:>6}  " + ", ".join(f"{c} {v}" for c, v in classes.items()))


@store_app.command("ls")
def store_ls(path: str = typer.Argument(..., help="Store to list.")) -> None:
    """One line per video: id, split, class, frames, state."""
    from anomalyclip.store import open_store

    with open_store(path) as st:
        for key in st.keys():
            r = st.record_by_key(key)
            state = "ok" if r.complete else "incomplete"
            typer.echo(f"{r.video_id}\t{r.split}\t{r.label}\t{r.num_frames}\t{state}")
        for vid, failure in st.failures().items():
            typer.echo(f"{vid}\t-\t-\t0\tfailed: {failure.get('error', '')}")


@store_app.command("verify")
def store_verify(path: str = typer.Argument(..., help="Store to check.")) -> None:
    """Recompute every video's checksum; list damaged, missing or incomplete videos (exit 1)."""
    from anomalyclip.store import open_store

    with open_store(path) as st:
        n = len(st.keys())
        problems = st.verify(progress=True)
    for vid, reason in problems.items():
        typer.echo(f"{vid}: {reason}")
    if problems:
        typer.echo(f"{path}: {len(problems)} of {n} videos failed verification", err=True)
        raise typer.Exit(1)
    typer.echo(f"{path}: all {n} videos intact")


@store_app.command("export")
def store_export(
    src: str = typer.Argument(..., help="Source store."),
    dst: str = typer.Argument(..., help="New store; format from the suffix: .h5, .zip, else Zarr."),
) -> None:
    """Convert a store between Zarr directory, Zarr zip and HDF5, bit-exact."""
    from anomalyclip.store import export_store

    n = export_store(src, dst)
    typer.echo(f"exported {n} videos to {dst}")


@store_app.command("merge")
def store_merge(
    dst: str = typer.Argument(..., help="Store to add to (created if absent)."),
    sources: list[str] = typer.Argument(..., help="Stores to add."),
) -> None:
    """Merge stores that share dataset, backbone, preprocessing and sampling."""
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


def main() -> None:
    """Entry point of the ``anomaly`` console script."""
    try:
        code = app(standalone_mode=False)
    except AnomalyError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as exc:  # click usage errors come here in standalone_mode=False
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
