"""Running the ``anomaly`` command in tests, the way a user runs it.

:func:`run_cli` starts the console script's entry point in a fresh Python (a subprocess), so
imports, exit codes and what reaches stderr are the real ones; :func:`call_cli` runs the same
entry point in this process (faster when torch is already imported), exit code included.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import anomalyclip
from anomalyclip.cli import main

# the checkout these tests import, so a subprocess runs the very same code
SOURCE_ROOT = str(Path(anomalyclip.__file__).resolve().parents[1])


@dataclass
class Done:
    code: int
    out: str
    err: str

    @property
    def error_line(self) -> str:
        """The last line of stderr (where a one-line error is)."""
        lines = self.err.strip().splitlines()
        return lines[-1] if lines else ""


def cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    path = os.pathsep.join(p for p in (SOURCE_ROOT, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **(env or {})}


def run_cli(
    *args: str | Path,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    python_flags: tuple[str, ...] = (),
    timeout: float = 600,
) -> Done:
    """``anomaly ARGS`` as a new process (``python -m anomalyclip.cli``)."""
    done = subprocess.run(
        [sys.executable, *python_flags, "-m", "anomalyclip.cli", *map(str, args)],
        cwd=cwd,
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Done(done.returncode, done.stdout, done.stderr)


def call_cli(*args: str | Path, cwd: str | Path | None = None) -> Done:
    """``anomaly ARGS`` through the console script's entry point, in this process (in the
    working directory ``cwd`` if given)."""
    argv, here = sys.argv, os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    sys.argv = ["anomaly", *map(str, args)]
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(here)
    return Done(code, out.getvalue(), err.getvalue())


def anomaly(monkeypatch, capsys, *args: str | Path) -> tuple[int, str, str]:
    """Run the console script in-process under pytest's ``monkeypatch`` and ``capsys``;
    returns (exit code, stdout, stderr)."""
    import pytest

    from anomalyclip.cli import main

    monkeypatch.setattr(sys, "argv", ["anomaly", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def error_lines(err: str) -> list[str]:
    """The ``error: ...`` lines of a command's stderr."""
    return [line for line in err.splitlines() if line.startswith("error:")]
