"""The command line as a user meets it: usage errors, one-line errors, fast failures.

Every command here runs through the console script's entry point in a new process, so exit
codes and stderr are what a shell sees.
"""

from __future__ import annotations

import pytest
from cli_helper import run_cli

import anomalyclip


def assert_usage_error(done, *expected: str) -> None:
    assert done.code == 2, (done.code, done.err)
    assert "Traceback" not in done.err and "Traceback" not in done.out
    for text in expected:
        assert text in done.err, done.err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["eval"], ["Missing option '--checkpoint'", "Try 'anomaly eval --help' for help."]),
        (
            ["train", "--features", "s.zarr", "--epoch", "3"],
            ["No such option: --epoch", "Try 'anomaly train --help' for help."],
        ),
        (["train", "--features", "s.zarr", "--epochs", "three"], ["Invalid value for '--epochs'"]),
        (["evl"], ["No such command 'evl'", "Try 'anomaly --help' for help."]),
        (["store", "info"], ["Missing argument 'path'", "Try 'anomaly store info --help'"]),
        (["--nonsense"], ["No such option: --nonsense"]),
    ],
)
def test_usage_errors_are_one_message_and_exit_2(args, expected):
    assert_usage_error(run_cli(*args), *expected)


@pytest.mark.parametrize("args", [[], ["store"], ["bench"]])
def test_a_bare_group_shows_its_help(args):
    done = run_cli(*args)  # click's way: the help (typer draws it on stdout), exit 2
    assert done.code == 2 and "Traceback" not in done.out + done.err
    assert f"Usage: anomaly {' '.join(args)}".rstrip() in done.out and "Commands" in done.out


def test_version():
    done = run_cli("--version")
    assert done.code == 0, done.err
    assert done.out.strip() == f"anomaly {anomalyclip.__version__}"
