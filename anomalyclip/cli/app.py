"""The ``anomaly`` application object, its command groups and its root options.

Help follows click's conventions: ``-h`` and ``--help``; a flag is shown without a value
(it takes none); an option shows its metavar (``--out DIR``), an argument its name
(``VIDEO...``); a docstring's paragraphs are re-flowed to the terminal. typer 0.29's rich
help prints a type column for every parameter, flags and its own ``--help`` included
(``<bool>``), and arguments whatever their metavar (``<list[str]>``), and keeps the line
breaks of the source: :class:`Command` and :class:`Group` fix both for every command at once.
"""

from __future__ import annotations

import inspect
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

HELP_NAMES = {"help_option_names": ["--help", "-h"]}  # the first one goes in hints


class _Flag(TyperOption):
    """An on/off option: it takes no value, so its help shows none."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None


class _Named(TyperArgument):
    """An argument with a metavar: shown as ``NAME`` or ``NAME...`` (click's way), no type."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _rich_display_name(self) -> str:
        return self.metavar + ("..." if self.nargs != 1 else "")

    def _usage_display_name(self) -> str:
        name = self._rich_display_name()
        return name if self.required else f"[{name}]"


def _reflowed(text: str | None) -> str | None:
    """Each paragraph of a docstring on one line (rich help keeps the source's breaks)."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _conventional(params: list) -> list:
    for p in params:
        if isinstance(p, TyperOption) and p.is_flag and not isinstance(p, _Flag):
            p.__class__ = _Flag  # same state, a display rule of its own
        elif isinstance(p, TyperArgument) and p.metavar and not isinstance(p, _Named):
            p.__class__ = _Named
    return params


class Command(TyperCommand):
    """A command whose help follows click's conventions (module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _reflowed(self.help)

    def get_params(self, ctx: Any) -> list:
        return _conventional(super().get_params(ctx))

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:  # typer would turn it into a silent exit 130
            from anomalyclip.cli.options import Interrupted

            raise Interrupted() from None


class Group(TyperGroup):
    """A command group whose own options follow the same conventions."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _reflowed(self.help)

    def get_params(self, ctx: Any) -> list:
        return _conventional(super().get_params(ctx))


class App(typer.Typer):
    """``typer.Typer`` whose commands are :class:`Command` and groups :class:`Group`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=Group, context_settings=HELP_NAMES, **kwargs)

    def command(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)


app = App(
    no_args_is_help=True,
    add_completion=False,
    help="Weakly supervised video anomaly detection and recognition with CLIP (AnomalyCLIP).",
)
store_app = App(no_args_is_help=True, help="Inspect, check, convert and merge feature stores.")
bench_app = App(no_args_is_help=True, help="Benchmarks (numbers are ratios within one run).")
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
    from anomalyclip.cli.logs import setup_logging

    setup_logging(verbose)
