"""Where the tests' files lie, so that a test reads them the same from any folder of tests/."""

from __future__ import annotations

from pathlib import Path

SUPPORT = Path(__file__).resolve().parent  # these helpers (on the path: pyproject's pythonpath)
TESTS = SUPPORT.parent
ROOT = TESTS.parent  # the repository: docs/, tools/, README.md
FIXTURES = TESTS / "fixtures"  # data files: the authors' state-dict tables, dataset lists
