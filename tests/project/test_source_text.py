"""The source says what the code does, not where a change came from: no tracker numbers in
the package or its tests (they mean nothing to a reader of the code)."""

from __future__ import annotations

import re
from pathlib import Path

from paths import TESTS

import anomalyclip

ROOTS = (Path(anomalyclip.__file__).parent, TESTS)
TRACKER = re.compile(r"\bissues? ?#?\d+", re.IGNORECASE)


def tracker_numbers(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if TRACKER.search(line):
                found.append(f"{path.name}:{number}: {line.strip()}")
    return found


def test_no_issue_numbers_in_code_or_tests():
    assert [hit for root in ROOTS for hit in tracker_numbers(root)] == []


def test_the_check_finds_them(tmp_path):
    word = "Issue"  # not spelled with its number here, so this file passes its own check
    (tmp_path / "a.py").write_text(f'"""Benchmark ({word} 5)."""\n# see {word}s #12\nx = 1\n')
    assert tracker_numbers(tmp_path) == [
        f'a.py:1: """Benchmark ({word} 5)."""',
        f"a.py:2: # see {word}s #12",
    ]
