"""Shared fixtures: a tiny random CLIP, and the real test videos when they are given.

The real videos (OpenCV's ``samples/data``: vtest.avi, tree.avi, Megamind.avi,
Megamind_bugy.avi) are found through one variable, ``ANOMALYCLIP_TEST_VIDEOS``, the folder
holding them. Without it the tests that decode them skip, and the run ends with one line
saying how many did; with ``ANOMALYCLIP_REQUIRE_TEST_VIDEOS=1`` (CI) they fail instead, so
a run cannot be green without having decoded a real video.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from anomalyclip.backbone import build_clip

VIDEOS_VARIABLE = "ANOMALYCLIP_TEST_VIDEOS"
REQUIRE_VARIABLE = "ANOMALYCLIP_REQUIRE_TEST_VIDEOS"
REAL_VIDEOS = ("vtest.avi", "tree.avi", "Megamind.avi", "Megamind_bugy.avi")
NO_VIDEOS = "real test videos not given"  # how their skips start (counted at the end)


def shared_videos_dir() -> Path | None:
    """``$ANOMALYCLIP_TEST_VIDEOS`` when it holds the real test videos, else None (or a
    failure of the calling test under ``ANOMALYCLIP_REQUIRE_TEST_VIDEOS=1``)."""
    given = os.environ.get(VIDEOS_VARIABLE)
    missing = [n for n in REAL_VIDEOS if not given or not (Path(given) / n).is_file()]
    if not missing:
        return Path(given)
    why = f"{VIDEOS_VARIABLE}={given}: no {', '.join(missing)}" if given else "unset"
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"real test videos required ({REQUIRE_VARIABLE}=1) but {why}")
    return None


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    """The folder of real test videos; tests that need it skip without it (fail in CI)."""
    folder = shared_videos_dir()
    if folder is None:
        pytest.skip(f"{NO_VIDEOS} (set {VIDEOS_VARIABLE})")
    return folder


def pytest_configure(config) -> None:
    """Children see Ctrl-C as a user's terminal sends it. A shell without job control starts
    a background command (``make test &``, ``nohup``) with SIGINT ignored, and an ignored
    signal stays ignored across ``exec``: every ``anomaly`` the tests start would then shrug
    off the SIGINT that the Ctrl-C and watch tests send. A handler, unlike ``SIG_IGN``, is
    reset to the default in a child, whose Python then raises KeyboardInterrupt as usual."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_terminal_summary(terminalreporter) -> None:
    """One line when tests skipped for want of the real videos."""
    skipped = terminalreporter.stats.get("skipped", [])
    n = sum(NO_VIDEOS in str(getattr(r, "longrepr", "")) for r in skipped)
    if n:
        terminalreporter.write_line(
            f"{n} tests that decode real videos skipped: set {VIDEOS_VARIABLE} to a folder "
            f"holding {', '.join(REAL_VIDEOS)} (OpenCV's samples/data)"
        )


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A random CLIP with real input and output sizes (224x224, 512-d), saved in HF format."""
    return build_clip(tmp_path_factory.mktemp("clip"), "tiny")


@pytest.fixture
def chromium():
    """Debian's headless Chromium under Playwright (``tests/support/browser.py``); skips without it
    unless ``ANOMALYCLIP_REQUIRE_BROWSER=1``. Started per test: while it runs, Playwright's
    event loop runs in this thread, so work that needs asyncio (Zarr stores, ``anomaly
    eval`` in-process) belongs in fixtures set up before it, or in a subprocess."""
    from browser import start_chromium

    with start_chromium() as browser:
        yield browser


@pytest.fixture
def tab(chromium):
    """A desktop-sized (1440x900) page of :func:`chromium` that records its requests and
    script errors (``browser.Tab``)."""
    from browser import new_tab

    with new_tab(chromium) as opened:
        yield opened


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """The whole demo with its defaults (``anomaly demo``): 85 generated videos, the tiny CLIP
    and its stand-in pre-training, features, a trained run and its evaluation; made once for
    every test that needs a run that really detects the demo's events."""
    from anomalyclip.demo import run_demo

    return run_demo(tmp_path_factory.mktemp("demo") / "demo", seed=0, progress=False)
