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


# -- commands are registered below, one section per stage ------------------------------------


def main() -> None:
    """Entry point of the ``anomaly`` console script."""
    try:
        app(standalone_mode=False)
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


if __name__ == "__main__":
    main()
