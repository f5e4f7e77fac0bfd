"""Printing results for people (the CLI's tables)."""

from __future__ import annotations

from typing import Any

import typer

from anomalyclip.evaluate.report import format_table


def print_metrics(metrics: dict[str, Any]) -> None:
    typer.echo(format_table(metrics))
