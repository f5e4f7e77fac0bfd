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
