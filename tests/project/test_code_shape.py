"""The package's size limits, checked by ``tools/code_shape.py`` (the one place they are
written): no module, function or parameter list of the package goes over them, and the
checker finds each kind of excess in a package made to have exactly one of each (and passes
what sits on a limit); docs/architecture.md's path from ``anomaly features`` to
``metrics.json`` is at most ten files, whose line counts it quotes truly."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys

from paths import ROOT

TOOLS = ROOT / "tools"


def _load_checker():
    spec = importlib.util.spec_from_file_location("code_shape", TOOLS / "code_shape.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks the module up while being made
    spec.loader.exec_module(module)
    return module


shape = _load_checker()


def test_the_package_meets_the_size_limits():
    found = shape.violations()
    assert not found, "\n".join(map(str, found))


def _function(name: str, lines: int, params: int = 0, decorator: str = "") -> str:
    """A function of ``lines`` lines (def line included) with ``params`` parameters."""
    args = ", ".join(f"a{i}" for i in range(params))
    head = f"{decorator}\n" if decorator else ""
    return head + f"def {name}({args}):\n" + "    x = 1\n" * (lines - 1) + "\n\n"


def _command(name: str, body: int) -> str:
    """A CLI command with twelve options, a docstring and a body of ``body`` lines."""
    options = ", ".join(f"o{i}: int = 0" for i in range(12))
    return (
        f"@app.command('{name}')\ndef {name}({options}):\n    '''Help.'''\n"
        + "    x = 1\n" * body
        + "\n\n"
    )


def test_the_checker_finds_each_kind_of_excess_and_passes_what_is_on_a_limit(tmp_path):
    pkg = tmp_path / "anomalyclip"
    (pkg / "cli").mkdir(parents=True)
    lines, params = shape.MAX_FUNCTION_LINES, shape.MAX_PARAMETERS
    (pkg / "__init__.py").write_text("")
    (pkg / "at_limit.py").write_text("x = 0\n" * shape.MAX_MODULE_LINES)
    (pkg / "long.py").write_text("x = 0\n" * (shape.MAX_MODULE_LINES + 1))
    (pkg / "funcs.py").write_text(
        _function("fits", lines, params)
        + _function("too_long", lines + 1)
        + _function("too_many", 2, params + 1)
        + f"class C:\n    def method(self, {', '.join(f'a{i}' for i in range(params))}):\n"
        "        pass\n"  # self is not counted
    )
    body = shape.MAX_COMMAND_BODY_LINES
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "cli" / "cmds.py").write_text(
        "app = None\n\n\n"
        + _command("fits_cmd", body)
        + _command("long_cmd", body + 1)
        + _function("helper", lines + 1, params + 1)  # in the CLI: its parameters are free
    )
    found = {(v.path, v.what, v.size, v.limit) for v in shape.violations(pkg)}
    assert found == {
        ("anomalyclip/long.py", "module lines", shape.MAX_MODULE_LINES + 1, shape.MAX_MODULE_LINES),
        ("anomalyclip/funcs.py", "too_long: function lines", lines + 1, lines),
        ("anomalyclip/funcs.py", "too_many: parameters", params + 1, params),
        ("anomalyclip/cli/cmds.py", "long_cmd: command body lines", body + 1, body),
        ("anomalyclip/cli/cmds.py", "helper: function lines", lines + 1, lines),
    }


def _spine_rows() -> list[tuple[str, int, str]]:
    """(file, lines quoted, function named first) of docs/architecture.md's path table."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## The path from `anomaly features` to `metrics.json`")[1]
    section = section.split("\n## ")[0]
    rows = re.findall(r"^\| \w+ \| `([\w/]+\.py)` \| (\d+) \| `(\w+)`", section, re.M)
    return [(file, int(lines), name) for file, lines, name in rows]


def test_the_documented_path_is_at_most_ten_files_and_its_line_counts_are_true():
    rows = _spine_rows()
    assert 3 <= len(rows) <= 10
    for file, quoted, name in rows:
        source = (ROOT / "anomalyclip" / file).read_text(encoding="utf-8")
        actual = len(source.splitlines())
        assert abs(actual - quoted) <= 0.1 * actual, f"{file}: {actual} lines, table says {quoted}"
        defined = {n.name for n in ast.walk(ast.parse(source)) if hasattr(n, "name")}
        assert name in defined, f"{file} has no {name}"
