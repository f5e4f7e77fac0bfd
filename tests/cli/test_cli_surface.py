"""The command line's surface, as a click user expects it: help that shows how each option is
typed, one name per concept across commands, and hints that name options the command has.

Help is read from every command of the real application (in this process: ``call_cli`` runs
the console script's entry point); errors from a new process (``run_cli``) where the exit
code and stderr matter.
"""

from __future__ import annotations

import re

import pytest
from cli_helper import call_cli

from anomalyclip.cli import app
from anomalyclip.train.config import PRESETS, resolve_config


def command_paths() -> list[tuple[str, ...]]:
    """Every command of ``anomaly`` (groups included), as its words: ('store', 'info')."""
    import typer.main

    root = typer.main.get_command(app)
    found: list[tuple[str, ...]] = [()]

    def walk(group, prefix: tuple[str, ...]) -> None:
        for name, cmd in group.commands.items():
            found.append((*prefix, name))
            if hasattr(cmd, "commands"):
                walk(cmd, (*prefix, name))

    walk(root, ())
    return found


COMMANDS = command_paths()


def help_of(*words: str, flag: str = "--help") -> str:
    done = call_cli(*words, flag)
    assert done.code == 0, done.err
    return done.out


def option_row(text: str, option: str) -> str:
    """The help panel's row(s) of ``option``: its line and the wrapped lines under it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"│\s+(\*\s+)?{option}\b", line))
    rows = [lines[start]]
    for line in lines[start + 1 :]:
        if re.search(r"│\s+(\*\s+)?--", line) or not line.startswith("│"):
            break
        rows.append(line)
    return " ".join(" ".join(r.strip("│ ").split()) for r in rows)


def test_every_command_is_listed():
    assert {("train",), ("predict",), ("watch",), ("store", "export"), ("bench", "all")} <= set(
        COMMANDS
    )


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "anomaly")
def test_help_shows_no_python_types_and_no_markup(words):
    """Flags show no value (they take none), options their metavar, arguments their name:
    never typer's ``<bool>``, ``<str>`` or ``<list[str]>``; and no reST markup."""
    text = help_of(*words)
    assert "Usage: anomaly" in text
    for shown in ("<bool>", "<str>", "<list[str]>", "``", "{"):
        assert shown not in text, f"{shown} in the help of anomaly {' '.join(words)}:\n{text}"


@pytest.mark.parametrize("words", [(), ("train",), ("store",), ("store", "export")])
def test_dash_h_is_help(words):
    assert help_of(*words, flag="-h") == help_of(*words)


def test_a_flag_takes_no_value():
    """``--render true`` is the flag followed by a second video, as in every click tool: the
    help must not suggest a value, and the usage error names the extra argument."""
    text = help_of("predict")
    assert option_row(text, "--render").startswith("--render Also write")
    assert "Usage: anomaly predict [OPTIONS] VIDEO..." in text


@pytest.mark.parametrize(
    ("option", "name"),
    [("--epochs", "epochs"), ("--lr", "lr"), ("--depth", "depth"), ("--emb-dim", "emb_dim"),
     ("--warmup-epochs", "warmup_epochs"), ("--batch-size", "batch_size"),
     ("--eval-every", "eval_every")],
)  # fmt: skip
def test_train_help_shows_each_presets_default(option, name):
    """An option whose default is the dataset's preset says so, with every preset's value,
    the very values training resolves (not typed by hand)."""
    row = option_row(help_of("train"), option)
    assert "preset" in row, row
    for preset in PRESETS:
        value = resolve_config(preset).to_dict()[name]
        assert f"{preset} {value}" in row, (preset, value, row)


@pytest.mark.parametrize("option", ["--seed", "--device", "--workers", "--calibration-share"])
def test_train_help_shows_a_default_shared_by_every_preset(option):
    row = option_row(help_of("train"), option)
    name = option.removeprefix("--").replace("-", "_")
    values = {str(resolve_config(p).to_dict()[name]) for p in PRESETS}
    assert len(values) == 1 and f"default: {values.pop()}, in every preset" in row, row


def test_command_summaries_are_one_line_each():
    """The root help lists each command with a sentence that is not cut mid-line."""
    text = help_of()
    assert "threshold,\n" not in text and "(stdout and\n" not in text
    for words in COMMANDS[1:]:
        if len(words) == 1:
            assert re.search(rf"│ {words[0]}\s", text), words


@pytest.mark.parametrize("words", [("features",), ("predict",), ("watch",), ("train",),
                                   ("eval",), ("import-checkpoint",), ("export-checkpoint",),
                                   ("bench", "extract")])  # fmt: skip
def test_clip_is_one_name_everywhere(words):
    """--clip in every command that takes a CLIP; --model still works where it was."""
    assert "--clip" in help_of(*words)


def test_decision_options_are_the_same_in_eval_predict_and_watch():
    names = ("--threshold ", "--threshold-rule", "--calibrate-on", "--min-duration",
             "--merge-gap", "--exit-ratio")  # fmt: skip
    rows = {}
    for command in ("eval", "predict", "watch"):
        text = help_of(command)
        rows[command] = [option_row(text, n.strip()) for n in names]
    assert rows["eval"] == rows["predict"] == rows["watch"]
