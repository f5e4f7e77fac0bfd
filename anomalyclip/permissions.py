"""Output files get the permissions any tool's outputs have.

Some writers create private (0600) files: ``tempfile.mkstemp``, and safetensors' own writer
(used by our checkpoints and by ``save_pretrained``). A result on a team's shared drive must
be readable by the team, so such files are given what ``open()`` would have given them:
0666 less the umask (0644 under the usual umask 022).
"""

from __future__ import annotations

import os
from pathlib import Path


def umask() -> int:
    """The process's umask, read without changing it where the system allows."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere the only way to read it is to set it
    os.umask(mask)
    return mask


def make_shareable(*paths: str | Path) -> None:
    """Give each file the mode a plain ``open()`` would have created it with."""
    mode = 0o666 & ~umask()
    for path in paths:
        os.chmod(path, mode)
