"""Pages in a real browser: Debian's headless Chromium driven by Playwright.

Playwright starts the system's ``/usr/bin/chromium`` (``$ANOMALYCLIP_CHROMIUM`` to name
another); it never downloads a browser. Each start gets a fresh temporary profile
(Playwright's own ``--user-data-dir``, removed on close) and flags that keep Chromium offline
and quiet when run as root in a container: no sandbox, no GPU, no QUIC, no first-run,
background, component-update or sync traffic.

Without the browser (or the ``playwright`` package) a test that needs it skips with one line
on a developer's machine, and fails where ``ANOMALYCLIP_REQUIRE_BROWSER=1`` (``.ci/run`` sets
it), so CI cannot pass by skipping the browser tests.

:class:`Tab` is one page in a new browser context, with everything it asked for
(``requests``) and every script error or console error (``errors``) recorded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> Path:
    return Path(os.environ.get("ANOMALYCLIP_CHROMIUM", "/usr/bin/chromium"))


def unavailable(reason: str) -> None:
    """Skip (one line) or, where CI requires the browser, fail."""
    if os.environ.get("ANOMALYCLIP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"browser tests required (ANOMALYCLIP_REQUIRE_BROWSER=1): {reason}")
    pytest.skip(reason)


def require_chromium() -> Path:
    """The browser's path, after checking it and Playwright are there (see :func:`unavailable`);
    a fixture that prepares a page's data can call it first, to skip before the work."""
    path = chromium_path()
    if not path.is_file():
        unavailable(f"no Chromium at {path} (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        unavailable("the playwright package is not installed (pip install -e .[dev])")
    return path


@contextlib.contextmanager
def start_chromium() -> Iterator[object]:
    """A Playwright ``Browser`` running the system's headless Chromium."""
    path = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(path), args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Tab:
    page: object  # playwright.sync_api.Page
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def open(self, path: Path, ready: str = "body[data-ready='1']") -> None:
        """Open a file from disk and wait until ``ready`` matches (the page has drawn)."""
        self.page.goto(Path(path).resolve().as_uri())
        self.page.wait_for_selector(ready, state="attached")


@contextlib.contextmanager
def new_tab(browser, width: int = 1440, height: int = 900) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": width, "height": height})
    try:
        page = context.new_page()
        tab = Tab(page)
        page.on("request", lambda r: tab.requests.append(r.url))
        page.on("pageerror", lambda e: tab.errors.append(f"script error: {e}"))
        page.on("console", lambda m: m.type == "error" and tab.errors.append(m.text))
        yield tab
    finally:
        context.close()
