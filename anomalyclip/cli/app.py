"""The ``anomaly`` application object, its command groups and its root options."""

from __future__ import annotations

import logging

import typer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Weakly supervised video anomaly detection and recognition with CLIP (AnomalyCLIP).",
)
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
