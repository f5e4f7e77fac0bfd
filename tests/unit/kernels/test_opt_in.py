"""Performance as an opt-in layer: the convolution algorithm is an argument, the allocator
policy belongs to the entry points, the native kernels ship with their own subpackage."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helper import SOURCE_ROOT, cli_env, run_cli
from synthetic_stores import planted_store, quick_run

from anomalyclip.errors import AnomalyError
from anomalyclip.kernels import CONV_ALGORITHMS, native
from anomalyclip.train import resolve_config

# In a fresh process: the library's train() must leave glibc alone; then the `anomaly train`
# entry point, in the same process, applies its policy and passes --conv down to the model.
TRAIN_TWICE = """
import sys
from anomalyclip.cli import main
from anomalyclip.kernels.allocator import keeps_freed_memory
from anomalyclip.train import resolve_config, train

store, root = sys.argv[1], sys.argv[2]
cfg = resolve_config("demo", epochs=1, warmup_epochs=1, workers=0, eval_every=0)
train(store, root + "/library", cfg, progress=False)
print("library", keeps_freed_memory())
sys.argv = ["anomaly", "train", "--features", store, "--out", root + "/cli", "--epochs", "1",
            "--warmup-epochs", "1", "--eval-every", "0", "--conv", "winograd"]
try:
    main()
except SystemExit as exc:
    print("exit", exc.code)
print("cli", keeps_freed_memory())
"""


def _fresh_python(code: str, *args, env: dict[str, str] | None = None) -> tuple[list[str], str]:
    """Run ``code`` with ``args`` in a new interpreter: its output lines, and everything it
    printed (for assertion messages)."""
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        env=cli_env(env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    return done.stdout.split("\n"), done.stdout + done.stderr


@pytest.mark.slow
def test_the_train_command_not_the_library_sets_the_allocator_policy_and_passes_conv(
    tmp_path, tiny_clip
):
    cfg = resolve_config("demo")
    store = planted_store(tmp_path / "s.zarr", tiny_clip, cfg, n_abnormal=4, n_normal=6)
    lines, printed = _fresh_python(TRAIN_TWICE, store, tmp_path)
    assert "library False" in lines, printed
    assert "exit 0" in lines and "cli True" in lines, printed
    config = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert config["train"]["conv"] == "winograd"
    library = json.loads((tmp_path / "library" / "config.json").read_text())
    assert library["train"]["conv"] == "auto"  # the default, as `anomaly train` always had


# `anomaly eval` scores batches of ~30-130 MB tensors, like a training step: the same policy
# (without it, ~220,000 page faults per batch of 64 sequences at the UCF shape).
EVAL_ONCE = """
import sys
from anomalyclip.cli import main
from anomalyclip.kernels.allocator import keeps_freed_memory

print("before", keeps_freed_memory())
sys.argv = ["anomaly", "eval", "--checkpoint", sys.argv[1], "--out", sys.argv[2]]
try:
    main()
except SystemExit as exc:
    print("exit", exc.code)
print("cli", keeps_freed_memory())
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a glibc setting")
def test_the_eval_command_keeps_freed_memory_on_the_cpu(tmp_path, tiny_clip):
    _, run = quick_run(tmp_path / "q", tiny_clip, epochs=1, n_each=3)
    lines, printed = _fresh_python(EVAL_ONCE, run, tmp_path / "eval")
    assert "before False" in lines, printed
    assert "exit 0" in lines and "cli True" in lines, printed
    assert (tmp_path / "eval" / "metrics.json").is_file()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a glibc setting")
def test_keep_memory_switch_still_turns_the_policy_off():
    code = "from anomalyclip.kernels.allocator import keep_freed_memory as k; print(k(), k())"
    for value, expected in (("0", "False False"), ("1", "True True")):
        lines, printed = _fresh_python(code, env={"ANOMALY_KEEP_MEMORY": value})
        assert lines[0] == expected, printed


def test_unknown_conv_is_a_usage_error_naming_the_choices(tmp_path):
    done = run_cli("train", "--features", tmp_path / "s.zarr", "--conv", "fft")
    assert done.code == 2 and "Traceback" not in done.err
    assert "--conv" in done.err and all(c in done.err for c in CONV_ALGORITHMS), done.err


def test_conv_choice_is_checked_in_the_training_config(tmp_path):
    with pytest.raises(AnomalyError, match="unknown conv algorithm 'fft'"):
        resolve_config("demo", conv="fft")
    toml = tmp_path / "c.toml"
    toml.write_text('[train]\nconv = "direct"\n')
    assert resolve_config("demo", toml).conv == "direct"


def test_kernel_source_ships_as_package_data_of_its_subpackage():
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((Path(SOURCE_ROOT) / "pyproject.toml").read_text())
    data = pyproject["tool"]["setuptools"]["package-data"]
    source = native.SOURCE
    assert source.is_file()
    package = "anomalyclip." + source.parent.name
    assert source.parent == Path(SOURCE_ROOT) / "anomalyclip" / "kernels"
    assert any(source.match(pattern) for pattern in data[package])


def test_tomli_is_a_dependency_where_tomllib_is_missing():
    """Training configs are read with tomllib from Python 3.11 on and with tomli before:
    requires-python allows 3.10, so tomli must be installed there (and only there)."""
    from packaging.requirements import Requirement

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(SOURCE_ROOT) / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=3.10"
    [tomli] = [Requirement(d) for d in project["dependencies"] if d.startswith("tomli")]
    assert tomli.name == "tomli" and tomli.marker is not None
    assert [tomli.marker.evaluate({"python_version": v}) for v in ("3.10", "3.11", "3.13")] == [
        True, False, False
    ]  # fmt: skip
