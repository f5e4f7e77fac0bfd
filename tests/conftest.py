"""Shared fixtures: a tiny random CLIP, and the real test videos when they are present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from anomalyclip.backbone import build_clip


def shared_videos_dir() -> Path:
    """``shared/data/videos`` beside the repository (CI), or ``$ANOMALYCLIP_TEST_VIDEOS``."""
    env = os.environ.get("ANOMALYCLIP_TEST_VIDEOS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared/data/videos"


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> Path:
    """A random CLIP with real input and output sizes (224x224, 512-d), saved in HF format."""
    return build_clip(tmp_path_factory.mktemp("clip"), "tiny")


@pytest.fixture(scope="session")
def shared_videos() -> Path:
    """The folder of real test videos; tests that need it skip on a fresh clone."""
    folder = shared_videos_dir()
    if not (folder / "vtest.avi").is_file():
        pytest.skip(f"real test videos not found in {folder}")
    return folder


@pytest.fixture
def chromium():
    """Debian's headless Chromium under Playwright (``tests/browser.py``); skips without it
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
