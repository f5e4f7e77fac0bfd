"""What the command line prints besides its results: log lines on stderr.

At the default level a person reads the package's own information as plain sentences and
its warnings as ``warning: ...``; other libraries speak only of their warnings, and their
loading and saving bars (transformers, huggingface_hub) stay off. ``-v`` shows everything,
each line with its level and logger.
"""

from __future__ import annotations

import logging
import os
import sys


class _Plain(logging.Formatter):
    """``message`` for information, ``warning: message`` (``error: ...``) above it."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def setup_logging(verbose: bool = False) -> None:
    """Configure logging for one command (``verbose``: debug lines of every library)."""
    if not verbose:
        # read when transformers / huggingface_hub are imported, which comes later
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        if "transformers" in sys.modules:  # already imported (the command run in-process)
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
    root = logging.getLogger()
    if root.handlers:  # configured by the program that runs this command (a test, a notebook)
        return
    handler = logging.StreamHandler()  # stderr
    if verbose:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    else:
        handler.setFormatter(_Plain("%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    logging.getLogger("anomalyclip").setLevel(logging.DEBUG if verbose else logging.INFO)
    # zarr leaves pending asyncio tasks behind when a damaged chunk aborts a read
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
