"""The tests' own layout, as docs/architecture.md's "Tests" table states it: every folder that
holds tests is a row of the table and every row holds tests, no two test files share a base
name (pytest imports each by it: a second one would fail to import), helpers live only in
``support/``, and ``make test`` runs every test (no marker expression drops any)."""

from __future__ import annotations

import re
from collections import Counter

from paths import ROOT, SUPPORT, TESTS

DATA_ONLY = {"support", "fixtures"}  # rows of the table that hold no tests


def layout_table() -> set[str]:
    """The first column of the table whose header starts ``| folder |``."""
    lines = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| folder |"))
    rows = set()
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.add(line.split("|")[1].strip().strip("`").rstrip("/"))
    return rows


def folders_holding_tests() -> set[str]:
    return {p.parent.relative_to(TESTS).as_posix() for p in TESTS.rglob("test_*.py")}


def test_every_folder_of_tests_is_a_row_of_the_table_and_every_row_holds_tests():
    rows, folders = layout_table(), folders_holding_tests()
    assert sorted(folders - rows) == []  # tests in a folder the table does not name
    assert sorted(rows - DATA_ONLY - folders) == []  # a row with no tests
    assert "." not in folders  # nothing left at the top of tests/


def test_no_two_test_files_share_a_base_name():
    names = Counter(p.name for p in TESTS.rglob("*.py") if p.name != "conftest.py")
    assert [name for name, n in names.items() if n > 1] == []


def test_helpers_are_in_support_and_support_holds_no_tests():
    stray = [
        p.relative_to(TESTS).as_posix()
        for p in TESTS.rglob("*.py")
        if not p.name.startswith("test_") and p.name != "conftest.py" and SUPPORT not in p.parents
    ]
    assert stray == []
    assert sorted(p.name for p in SUPPORT.rglob("test_*.py")) == []


def test_make_test_runs_every_test(pytestconfig):
    """CI runs ``make test``: neither it nor pytest's options deselect by marker."""
    assert "-m" not in pytestconfig.getini("addopts")
    recipe = re.search(r"^test:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe and "pytest" in recipe.group(1) and " -m " not in recipe.group(1)
