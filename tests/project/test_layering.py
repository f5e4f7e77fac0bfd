"""The package's layers only look down, as the table in docs/architecture.md says.

Every import of every module, those inside functions included, is read with ``ast`` and
checked against the table's "may use" column; the table must name every top-level module
and package of ``anomalyclip``, and every layer it lets a row use must be used by that row
(a table that allows more than the code does is as wrong as code that does more than the
table allows).

A layer is the first component under ``anomalyclip`` (``anomalyclip.train.loop`` is in
``train``; a top-level module such as ``anomalyclip.events`` is its own layer). The table's
first row is the foundation: every layer may use its modules. In the "may use" column a
name in backticks is a layer (``extract.preprocess``: that module of it only),
"everything" is every other layer, and other words are commentary. Nothing imports ``cli``.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from paths import ROOT

import anomalyclip

PACKAGE = Path(anomalyclip.__file__).parent
ARCHITECTURE = ROOT / "docs" / "architecture.md"


@dataclass
class Table:
    rows: list[tuple[set[str], set[str] | None]]  # layers, what they may use (None: everything)

    @property
    def foundation(self) -> set[str]:
        return self.rows[0][0]

    @property
    def may_use(self) -> dict[str, set[str] | None]:
        return {layer: allowed for layers, allowed in self.rows for layer in layers}

    @property
    def layers(self) -> set[str]:
        return set(self.may_use)


def _names(cell: str) -> list[str]:
    return [n.rstrip("/").removesuffix(".py") for n in re.findall(r"`([^`]+)`", cell)]


def parse_table(markdown: str) -> Table:
    """The layer table: the rows under the header ``| layer | ... | may use |``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| layer |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        allowed = None if "everything" in cells[-1] else set(_names(cells[-1]))
        rows.append((set(_names(cells[0])), allowed))
    return Table(rows)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute name) of every import in ``source``, at any depth; ``from X import
    a`` gives ``X.a`` (a module or a name of X: either way it is in X's layer)."""
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
            found += [
                (node.lineno, target if alias.name == "*" else f"{target}.{alias.name}")
                for alias in node.names
            ]
    return found


def layer_of(module: str, layers: set[str]) -> str | None:
    """The layer of an absolute name inside the package (None: outside it, or the package
    root itself, such as ``anomalyclip.__version__``)."""
    parts = module.split(".")
    if parts[0] != "anomalyclip" or len(parts) < 2 or parts[1] not in layers:
        return None
    return parts[1]


def top_level(root: Path) -> set[str]:
    """The package's top-level modules and packages."""
    return {
        p.stem if p.is_file() else p.name
        for p in root.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and any(p.glob("*.py")))
    }


def covered(target: str, entry: str) -> bool:
    """Whether the import of ``target`` is one that the table entry ``entry`` allows."""
    name = f"anomalyclip.{entry}"
    return target == name or target.startswith(name + ".")


def imports_by_layer(root: Path, table: Table) -> dict[str, list[tuple[str, int, str]]]:
    """layer -> (file, line, target) of every import of another layer by one of its modules."""
    found: dict[str, list[tuple[str, int, str]]] = {}
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        own = layer_of(module, table.layers)
        source = path.read_text(encoding="utf-8")
        for line, target in imported_modules(source, module, path.stem == "__init__"):
            other = layer_of(target, table.layers)
            if own is not None and other is not None and other != own:
                where = str(path.relative_to(root.parent))
                found.setdefault(own, []).append((where, line, target))
    return found


def allows(table: Table, own: str, target: str) -> bool:
    """Whether layer ``own`` may import ``target`` (in another layer): nothing imports
    ``cli``; the foundation is everyone's, but its own modules use only what its row says."""
    other = target.split(".")[1]
    if other == "cli":
        return False
    allowed = table.may_use[own]
    if allowed is None or (other in table.foundation and own not in table.foundation):
        return True
    return any(covered(target, entry) for entry in allowed)


def violations(root: Path, table: Table) -> list[str]:
    """Every import under ``root`` (a package folder) that the table does not allow."""
    problems = [
        f"{where}:{line}: {own} imports {target}"
        for own, imports in imports_by_layer(root, table).items()
        for where, line, target in imports
        if not allows(table, own, target)
    ]
    return sorted(set(problems))


def unused_entries(root: Path, table: Table) -> list[str]:
    """Every layer the table lets a row use that none of the row's modules imports."""
    imports = imports_by_layer(root, table)
    unused = []
    for layers, allowed in table.rows:
        targets = [target for own in layers for _, _, target in imports.get(own, [])]
        for entry in sorted(allowed or ()):
            if not any(covered(target, entry) for target in targets):
                unused.append(f"{', '.join(sorted(layers))} may use {entry}, but does not")
    return unused


def table_problems(root: Path, table: Table) -> list[str]:
    """Layers the table misses or names wrongly, entries that are no layer, and cycles."""
    problems = [f"{name}: not in the table" for name in sorted(top_level(root) - table.layers)]
    problems += [f"{name}: no such module" for name in sorted(table.layers - top_level(root))]
    for own, allowed in sorted(table.may_use.items()):
        for entry in sorted(allowed or ()):
            if entry.split(".")[0] not in table.layers:
                problems.append(f"{own} may use {entry}: no such layer")
    below: dict[str, set[str]] = {}

    def reach(layer: str, path: tuple[str, ...]) -> set[str]:
        if layer in path:
            problems.append("cycle: " + " -> ".join((*path, layer)))
            return set()
        if layer not in below:
            allowed = table.may_use.get(layer) or set()
            direct = {e.split(".")[0] for e in allowed} - table.foundation - {layer}
            below[layer] = direct.union(*(reach(d, (*path, layer)) for d in direct))
        return below[layer]

    for layer in sorted(table.layers):
        reach(layer, ())
    return sorted(set(problems))


def test_the_table_names_every_module_and_has_no_cycle():
    table = parse_table(ARCHITECTURE.read_text(encoding="utf-8"))
    assert table_problems(PACKAGE, table) == []


def test_the_package_keeps_its_layers():
    table = parse_table(ARCHITECTURE.read_text(encoding="utf-8"))
    assert violations(PACKAGE, table) == []


def test_every_layer_the_table_allows_is_used():
    table = parse_table(ARCHITECTURE.read_text(encoding="utf-8"))
    assert unused_entries(PACKAGE, table) == []


def test_every_module_is_read():
    """The walk sees the package's modules (a checker that reads nothing passes anything)."""
    names = {module_name(p, PACKAGE) for p in PACKAGE.rglob("*.py")}
    assert {"anomalyclip.train.loop", "anomalyclip.model.anomalyclip", "anomalyclip.cli"} <= names
    table = parse_table(ARCHITECTURE.read_text(encoding="utf-8"))
    assert {"errors", "store", "live", "cli", "demo"} <= table.layers
    assert table.may_use["cli"] is None and "errors" in table.foundation


FAKE_TABLE = """
| layer | what it holds | may use |
|---|---|---|
| `errors`, `names` | the foundation | `errors` |
| `model/` | the network | `kernels` (opt-in) |
| `kernels/` | fast paths | torch |
| `store/` | features on disk | nothing else |
| `train/` | the loop | `model`, `store`'s reader, `datasets` |
| `datasets/` | adapters | nothing else |
| `extract/` | decoding | `store`, `model.memo` |
| `live/` | watching | `extract` |
| `demo.py` | the demo | `train`, `extract` |
| `bench/` | measurements | `demo`, `train` |
| `cli/` | the command line | everything |
"""


def test_the_checker_finds_each_kind_of_violation(tmp_path):
    """A fake package breaking each rule once, the imports hidden where a grep of top-level
    lines would miss them (in a function, relative, or as an attribute of the package)."""
    root = tmp_path / "anomalyclip"
    files = {
        "__init__.py": "",
        "errors.py": "def f():\n    from anomalyclip.names import x\n",
        "names.py": "from anomalyclip import errors\n",  # allowed: the foundation row says so
        "kernels/__init__.py": "",
        "model/__init__.py": "from anomalyclip.errors import AnomalyError\n",  # foundation
        "model/net.py": "def f():\n    from anomalyclip.train import loop\n",
        "model/memo.py": "",
        "store/__init__.py": "from ..evaluate import metrics\n",  # no such layer: not read
        "store/read.py": "from anomalyclip import datasets\n",
        "datasets/x.py": "import anomalyclip.extract.decode\n",
        "train/loop.py": "from anomalyclip.model import net\nfrom . import data\n",  # allowed
        "train/data.py": "from anomalyclip.store.read import x\n",  # allowed
        "extract/pipe.py": "from anomalyclip.model.memo import Memo\nfrom ..model import net\n",
        "extract/decode.py": "from anomalyclip.store import read\n",  # allowed
        "bench/b.py": "def g():\n    import anomalyclip.cli\n",
        "bench/c.py": "from anomalyclip import demo, train\n",  # allowed
        "live/e.py": "from anomalyclip.demo import encode_video\nfrom ..extract import pipe\n",
        "demo.py": "from anomalyclip.extract import pipe\nfrom anomalyclip.train import loop\n",
        "cli/__init__.py": "from anomalyclip.demo import run_demo\nimport anomalyclip.bench\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    table = parse_table(FAKE_TABLE)
    assert table.foundation == {"errors", "names"} and table.may_use["kernels"] == set()
    assert table.may_use["train"] == {"model", "store", "datasets"}
    assert violations(root, table) == [
        "anomalyclip/bench/b.py:2: bench imports anomalyclip.cli",
        "anomalyclip/datasets/x.py:1: datasets imports anomalyclip.extract.decode",
        "anomalyclip/errors.py:2: errors imports anomalyclip.names.x",
        "anomalyclip/extract/pipe.py:2: extract imports anomalyclip.model.net",
        "anomalyclip/live/e.py:1: live imports anomalyclip.demo.encode_video",
        "anomalyclip/model/net.py:2: model imports anomalyclip.train.loop",
        "anomalyclip/store/read.py:1: store imports anomalyclip.datasets",
    ]
    assert unused_entries(root, table) == [
        "model may use kernels, but does not",
        "train may use datasets, but does not",
    ]
    assert table_problems(root, table) == []


def test_the_table_is_checked_against_the_package(tmp_path):
    """A module the table does not name, a name that is no module, an entry that is no
    layer, and layers that use each other."""
    root = tmp_path / "anomalyclip"
    for name in ("__init__.py", "errors.py", "a/__init__.py", "b.py", "c.py", "stray.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    table = parse_table(
        "| layer | what | may use |\n|---|---|---|\n| `errors` | base | nothing |\n"
        "| `a/` | A | `b` |\n| `b.py` | B | `c`, `d` |\n| `c.py` | C | `a.x` |\n"
        "| `gone.py` | removed | nothing |\n"
    )
    assert table_problems(root, table) == [
        "b may use d: no such layer",
        "cycle: a -> b -> c -> a",
        "gone: no such module",
        "stray: not in the table",
    ]
