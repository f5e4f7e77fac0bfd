"""How long ``report.html`` takes to show its table in Debian's headless Chromium.

Run from the repository root (it writes the UCF-Crime-sized synthetic evaluation of
:mod:`synthetic_eval` into FOLDER first, unless ``report.html`` is already there)::

    python tests/support/report_load_time.py ucf-eval

Each load opens the page from disk in a new browser context (a fresh tab, nothing shared
with the load before) and reads, from the page's own clock (``performance``, milliseconds
since the navigation began):

- ``drawn``: the page's script has built every part, the table's rows included (the
  ``report-drawn`` mark the script sets as it ends);
- ``painted``: the first frame after that has been painted (a task queued from the next
  animation frame, started at the ``load`` event).

It prints every load and the medians of ``--loads`` loads (5 by default). Timings are
reported, never asserted: they depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from browser import new_tab, start_chromium

AFTER_PAINT = """
window.addEventListener("load", () =>
  requestAnimationFrame(() => setTimeout(() => performance.mark("report-painted"), 0)));
"""
READ = """() => ({
  drawn: performance.getEntriesByName("report-drawn")[0].startTime,
  painted: performance.getEntriesByName("report-painted")[0].startTime,
  rows: document.querySelectorAll("#video-table tbody tr").length,
})"""


def load_times(page: Path, loads: int = 5, browser=None) -> list[dict]:
    """One dict per load of ``page``: ``drawn`` and ``painted`` (ms since navigation) and
    ``rows`` (the table's rows when it was read)."""
    if browser is None:
        with start_chromium() as started:
            return load_times(page, loads, started)
    found = []
    for _ in range(loads):
        with new_tab(browser) as tab:
            tab.page.add_init_script(AFTER_PAINT)
            tab.open(page)
            tab.page.wait_for_function('performance.getEntriesByName("report-painted").length')
            found.append(tab.page.evaluate(READ))
            if tab.errors:
                raise RuntimeError(f"{page}: {tab.errors[0]}")
    return found


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="evaluation folder (written when absent)")
    parser.add_argument("--loads", type=int, default=5)
    args = parser.parse_args(argv)
    page = args.folder / "report.html"
    if not page.is_file():
        from synthetic_eval import synthetic_eval

        synthetic_eval(args.folder)
    times = load_times(page, args.loads)
    for k, t in enumerate(times, 1):
        print(f"load {k}: table drawn {t['drawn']:.0f} ms, painted {t['painted']:.0f} ms "
              f"({t['rows']} rows)")  # fmt: skip
    drawn = statistics.median(t["drawn"] for t in times)
    painted = statistics.median(t["painted"] for t in times)
    size = page.stat().st_size / 1e6
    print(f"{page} ({size:.2f} MB): median of {len(times)} loads: table drawn {drawn:.0f} ms, "
          f"painted {painted:.0f} ms after navigation")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
