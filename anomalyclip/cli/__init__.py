"""The ``anomaly`` command line.

Each command is a thin wrapper: it parses options and calls a plain function of the package,
so everything here is also usable from Python. Expected failures (:class:`AnomalyError`) are
printed on one line, ``error: <file>: <problem>``, with exit status 2.
"""

from __future__ import annotations

import importlib
import sys

import typer

from anomalyclip.cli.app import app
from anomalyclip.cli.options import Interrupted
from anomalyclip.errors import AnomalyError

__all__ = ["app", "main"]

# importing a module registers its commands; --help lists them in this order
for _group in ("pipeline", "train", "scoring", "report", "interop", "watch", "calibrate", "export",
               "store", "bench"):  # fmt: skip
    importlib.import_module(f"anomalyclip.cli.{_group}")


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
    ``error: ...`` on one line, exit 2. Ctrl-C exits 130, saying what was kept and the
    command that goes on where the command knows (:class:`Interrupted`). Anything else is a
    bug and keeps its traceback.
    """
    try:
        code = app(standalone_mode=False, prog_name="anomaly")
    except AnomalyError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Interrupted as exc:
        typer.echo(f"interrupted: {exc}" if str(exc) else "interrupted", err=True)
        sys.exit(130)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # click's usage errors come here in standalone_mode=False
        if isinstance(exc, _click_exceptions()):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)
