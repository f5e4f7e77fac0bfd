"""``anomaly report``: rebuild the page of an evaluation folder."""

from __future__ import annotations

import typer

from anomalyclip import checks
from anomalyclip.cli.app import app


@app.command("report")
def report_cmd(
    eval_dir: str = typer.Argument(
        ..., metavar="EVAL_DIR", help="An 'anomaly eval' output folder."
    ),
) -> None:
    """Rebuild EVAL_DIR/report.html from the folder's metrics.json, per-video CSVs and
    events.json: one page that opens offline from disk (a video's MP4 beside its CSV, as
    `predict --render` writes it, is played there)."""
    checks.existing_dir(eval_dir, "evaluation folder")
    from anomalyclip.evaluate.html import write_report

    path = write_report(eval_dir)
    typer.echo(f"{path} ({path.stat().st_size / 1e3:.0f} kB)")
