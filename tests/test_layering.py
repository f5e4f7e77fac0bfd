"""The package's layers only look down: every import of every module, those inside functions
included, is read with ``ast`` and checked against the rules below.

A layer is the first component under ``anomalyclip`` (``anomalyclip.train.loop`` is in
``train``; a top-level module such as ``anomalyclip.runs`` is its own layer).
"""

from __future__ import annotations

import ast
from pathlib import Path

import anomalyclip

PACKAGE = Path(anomalyclip.__file__).parent

# layer -> the layers it must not import
FORBIDDEN: dict[str, set[str]] = {
    "model": {"extract", "train", "evaluate", "interop", "export", "cli"},
    "store": {"extract", "train", "evaluate", "interop", "export", "cli"},
    "datasets": {"extract", "train", "evaluate", "interop", "export", "cli"},
    "train": {"evaluate", "export", "cli"},
    "evaluate": {"train", "cli"},
    "extract": {"train", "evaluate", "export", "cli"},
    "export": {"train", "evaluate", "live", "interop", "cli"},
}
# entry points -> the only layers that may import them: nothing imports the command line;
# the demo (an orchestration of every stage) is started by the command line, and timed by the
# demo benchmark
ENTRY_POINTS: dict[str, set[str]] = {"cli": set(), "demo": {"cli", "bench"}}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, at any depth."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing module's package
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            if target == "anomalyclip":  # `from anomalyclip import train` names a layer
                found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "anomalyclip" or len(parts) < 2:
        return None
    return parts[1]


def violations(root: Path) -> list[str]:
    """Every import under ``root`` (a package folder) that breaks the layering."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        own = layer_of(module)
        entry = {name for name, users in ENTRY_POINTS.items() if own not in users}
        banned = FORBIDDEN.get(own, set()) | entry
        for line, target in imported_modules(path.read_text(), module, path.stem == "__init__"):
            other = layer_of(target)
            if other is not None and other != own and other in banned:
                problems.append(f"{path.relative_to(root.parent)}:{line}: {own} imports {target}")
    return sorted(set(problems))


def test_the_package_keeps_its_layers():
    assert violations(PACKAGE) == []


def test_every_module_is_read():
    """The walk sees the package's modules (a checker that reads nothing passes anything)."""
    names = {module_name(p, PACKAGE) for p in PACKAGE.rglob("*.py")}
    assert {"anomalyclip.train.loop", "anomalyclip.model.anomalyclip", "anomalyclip.cli"} <= names


def test_the_checker_finds_each_kind_of_violation(tmp_path):
    """A fake package breaking each rule once, the imports hidden where a grep of top-level
    lines would miss them (in a function, relative, or as an attribute of the package)."""
    root = tmp_path / "anomalyclip"
    files = {
        "__init__.py": "",
        "model/__init__.py": "",
        "model/net.py": "def f():\n    from anomalyclip.train import loop\n",
        "store/__init__.py": "from ..evaluate import metrics\n",
        "datasets/x.py": "import anomalyclip.interop.authors\n",
        "train/loop.py": "from anomalyclip import evaluate\n",
        "evaluate/evaluation.py": "from anomalyclip.model import AnomalyCLIP\n",  # allowed
        "extract/pipe.py": "from . import decode\nfrom anomalyclip.store import open_store\n",
        "bench/b.py": "def g():\n    import anomalyclip.cli\n",
        "live/e.py": "from anomalyclip.demo import encode_video\n",
        "cli.py": "from anomalyclip.demo import run_demo\n",  # allowed
        "runs.py": "from anomalyclip.train.build import build_network\n",  # allowed
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    assert violations(root) == [
        "anomalyclip/bench/b.py:2: bench imports anomalyclip.cli",
        "anomalyclip/datasets/x.py:1: datasets imports anomalyclip.interop.authors",
        "anomalyclip/live/e.py:1: live imports anomalyclip.demo",
        "anomalyclip/model/net.py:2: model imports anomalyclip.train",
        "anomalyclip/store/__init__.py:1: store imports anomalyclip.evaluate",
        "anomalyclip/train/loop.py:1: train imports anomalyclip.evaluate",
    ]
