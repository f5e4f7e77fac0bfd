"""Which files of the package `anomaly features` -> `train` -> `eval` -> metrics.json runs.

    python tools/path_files.py --videos DEMO_VIDEOS --clip CLIP [--work DIR] [--top N]

Runs the three commands in this process on a demo-layout folder of videos (``anomaly demo``
leaves one under ``demo/videos``; a few videos a class are enough) with a profiler hook that
records every function of the package that is called (importing a module is not a call),
then prints, per file, its lines and how many of its functions ran, most first. The count of
files is what a newcomer who follows every call would open; docs/architecture.md lists the
spine among them (the files that hold the chain of calls from each command to its output).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "anomalyclip"


def _commands(videos: str, clip: str, work: Path) -> list[list[str]]:
    store, run = work / "s.zarr", work / "run"
    return [
        ["features", "--dataset", "demo", "--videos", videos, "--clip", clip, "-o", str(store)],
        [
            "train",
            "--features",
            str(store),
            "--out",
            str(run),
            "--epochs",
            "2",
            "--warmup-epochs",
            "1",
            "--batch-size",
            "2",
        ],  # fmt: skip
        ["eval", "--checkpoint", str(run), "--out", str(work / "eval")],
    ]


def trace(commands: list[list[str]]) -> dict[str, set[str]]:
    """file (relative to the package) -> names of its functions called by ``commands``."""
    from anomalyclip.cli import app

    called: dict[str, set[str]] = defaultdict(set)
    root = str(PACKAGE)

    def hook(frame, event, arg) -> None:  # noqa: ANN001 - sys.setprofile's signature
        code = frame.f_code
        if event == "call" and code.co_filename.startswith(root) and code.co_name != "<module>":
            called[code.co_filename[len(root) + 1 :]].add(code.co_qualname)

    for args in commands:
        sys.setprofile(hook)
        try:
            app(args, standalone_mode=False, prog_name="anomaly")
        finally:
            sys.setprofile(None)
    return called


def table(called: dict[str, set[str]], top: int | None = None) -> str:
    """Markdown: file, lines, functions called; most functions first."""
    rows = sorted(called.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:top]
    lines = ["| file | lines | functions called |", "|---|---:|---:|"]
    for name, funcs in rows:
        n = len((PACKAGE / name).read_text(encoding="utf-8").splitlines())
        lines.append(f"| `{name}` | {n} | {len(funcs)} |")
    total = sum(len((PACKAGE / f).read_text(encoding="utf-8").splitlines()) for f in called)
    lines.append(f"\n{len(called)} files of the package ran ({total} lines in them).")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", required=True, help="a demo-layout folder of videos")
    parser.add_argument("--clip", required=True, help="a local CLIP folder")
    parser.add_argument("--work", help="where the store, run and evaluation go (default: temp)")
    parser.add_argument("--top", type=int, help="only the N files with most functions called")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="anomaly-path-") as tmp:
        work = Path(args.work or tmp)
        called = trace(_commands(args.videos, args.clip, work))
    print(table(called, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
