"""The package's size limits, checked: modules, functions, parameters.

    python tools/code_shape.py          # one line per violation, exit 1 if any
    python tools/code_shape.py --stats  # the counts only

Limits (the house style): a module of the package at most 400 lines; a function at most 60
lines, except a CLI command (a function decorated with ``@<app>.command``), whose options are
free and whose body (after the docstring) is at most 40 lines; at most 8 parameters outside
the CLI (``self`` and ``cls`` not counted; beyond that, pass a config).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MAX_COMMAND_BODY_LINES = 40
MAX_PARAMETERS = 8
PACKAGE = Path(__file__).resolve().parents[1] / "anomalyclip"


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    what: str
    size: int
    limit: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what} ({self.size} > {self.limit})"


def _is_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Decorated with ``@something.command(...)``: a command of the CLI."""
    for deco in node.decorator_list:
        target = deco.func if isinstance(deco, ast.Call) else deco
        if isinstance(target, ast.Attribute) and target.attr == "command":
            return True
    return False


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and len(body) > 1:
        first = body[1]  # the docstring does not count
    return node.end_lineno - first.lineno + 1


def _parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    return len([n for n in names if n not in ("self", "cls")])


def module_violations(path: Path, root: Path) -> list[Violation]:
    text = path.read_text()
    name = str(path.relative_to(root.parent))
    found = []
    lines = text.count("\n") + (0 if text.endswith("\n") else 1)
    if lines > MAX_MODULE_LINES:
        found.append(Violation(name, 1, "module lines", lines, MAX_MODULE_LINES))
    in_cli = path.relative_to(root).parts[0] == "cli"
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        if in_cli and _is_command(node):
            size, limit, what = _body_lines(node), MAX_COMMAND_BODY_LINES, "command body lines"
        else:
            size = node.end_lineno - node.lineno + 1
            limit, what = MAX_FUNCTION_LINES, "function lines"
        if size > limit:
            found.append(Violation(name, node.lineno, f"{node.name}: {what}", size, limit))
        params = _parameters(node)
        if not in_cli and params > MAX_PARAMETERS:
            found.append(Violation(name, node.lineno, f"{node.name}: parameters", params,
                                   MAX_PARAMETERS))  # fmt: skip
    return found


def violations(root: Path = PACKAGE) -> list[Violation]:
    """Every violation of the limits in the package under ``root``."""
    return [v for path in sorted(root.rglob("*.py")) for v in module_violations(path, root)]


def main(argv: list[str]) -> int:
    found = violations()
    if "--stats" in argv:
        kinds: dict[str, int] = {}
        for v in found:
            kind = v.what.split(": ")[-1]
            kinds[kind] = kinds.get(kind, 0) + 1
        print(", ".join(f"{k}: {n}" for k, n in sorted(kinds.items())) or "no violations")
        return 0
    for v in found:
        print(v)
    print(f"{len(found)} violation(s) of the size limits" if found else "size limits: all met")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
