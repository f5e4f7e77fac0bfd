"""The live page of ``anomaly watch --ui`` in a real browser: Debian's headless Chromium
(``tests/support/browser.py``) on the page of a watch of three demo-style cameras played live.

The watch is the real command in its own process (``--realtime``: files paced at their
frame rate, as cameras deliver them); its threshold is chosen from the cameras' own live
scores (a fast in-process watch of the same file beforehand) so that camera 0 has an event
that opens and closes while the camera still plays: its clip is then complete mid-watch,
which is when the page may offer it.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from synthetic_stores import quick_run
from watch_helpers import read_events, watch

from anomalyclip.events import EventConfig, find_events
from anomalyclip.live.config import WatchConfig
from anomalyclip.live.watch import Watcher, load_for_watch, run_sampling
from anomalyclip.synthetic import encode_video, render_scene

# a watch of three cameras played in real time, in a real browser: slow
pytestmark = pytest.mark.slow

STARTUP = 180  # seconds a watch process may take to start (imports torch on a busy machine)
SECONDS = 24  # each camera's length, played in real time
FPS = 15


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_clip):
    from browser import require_chromium

    require_chromium()  # skip before the work when there is no browser
    return quick_run(tmp_path_factory.mktemp("run"), tiny_clip, epochs=1, n_each=4)[1]


@pytest.fixture(scope="module")
def cameras(tmp_path_factory):
    """Three demo-style scenes (one with an explosion), 320x240 H.264 at 15 fps."""
    folder = tmp_path_factory.mktemp("cams")
    paths = []
    for k, label in enumerate(["Explosion", "Normal", "Intruder"]):
        frames, _ = render_scene(label, np.random.default_rng([3, k]), SECONDS * FPS, (320, 240))
        encode_video(folder / f"cam{k}.mp4", frames, FPS)
        paths.append(folder / f"cam{k}.mp4")
    return paths


@pytest.fixture(scope="module")
def threshold(run_dir, cameras, tmp_path_factory):
    """A threshold under which camera 0 has an event that ends at least 6 s before the
    camera does, no score within 1e-3 of either hysteresis level (so the live run, whose
    CLIP batches mix cameras, takes the same decisions)."""
    model, encoder, config = load_for_watch(run_dir, None, "cpu")
    rows: list[tuple] = []
    cfg = WatchConfig(EventConfig(1.0), out=tmp_path_factory.mktemp("pre"), status_every=0)
    watcher = Watcher(cameras[:1], model, encoder, run_sampling(config, run_dir), cfg,
                      io.StringIO())  # fmt: skip
    watcher.on_rows = lambda source, *row: rows.append(row)
    watcher.run()
    frames, times, p, probs = (np.concatenate(x) for x in zip(*rows, strict=True))
    curve = {"frames": frames, "times": times, "p": p, "probs": probs}
    labels = (list(model.cfg.classes), model.cfg.normal_id)
    levels = np.sort(np.unique(p))
    for level in ((levels[1:] + levels[:-1]) / 2)[::-1]:  # between two scores, high to low
        if min(np.abs(p - level).min(), np.abs(p - 0.8 * level).min()) < 1e-4:
            continue
        events = find_events("cam0", curve, labels, EventConfig(float(level)))
        if any(e.start_time >= 1.0 and e.end_time <= SECONDS - 6 for e in events):
            return float(level)
    pytest.fail(f"no threshold gives camera 0 an event that ends early: p {p.min()}..{p.max()}")


def test_the_live_page_shows_the_cameras_and_takes_a_false_alarm(
    chromium, run_dir, cameras, threshold, tmp_path
):
    from browser import new_tab

    out = tmp_path / "out"
    proc = watch([str(c) for c in cameras], run_dir, out, threshold, "--realtime",
                 "--save-clips", "--ui", "127.0.0.1:0")  # fmt: skip
    try:
        assert proc.wait_for(r"watching 3 source", STARTUP), proc.tail()
        (url,) = {m for line in proc.err for m in re.findall(r"live page at (\S+)", line)}
        with new_tab(chromium) as tab:
            page = tab.page
            page.goto(url)
            page.wait_for_selector("body[data-ready='1']", state="attached")
            check_tiles(page, cameras, threshold)
            event = check_false_alarm(page)
            assert tab.errors == []
            assert all(r.startswith(url) for r in tab.requests), tab.requests  # nothing else
    finally:
        code = proc.finish()
    assert code == 0, proc.tail()
    check_review(out, cameras[0], event)


def check_tiles(page, cameras, threshold) -> None:
    """A tile per camera, named; each frame image replaced at least 3 times, at the video's
    size; a curve with points; the threshold line where the threshold is."""
    assert page.locator(".tile .name").all_text_contents() == [c.name for c in cameras]
    page.wait_for_function("() => [0, 1, 2].every(i => (anomalyWatch.frames[i] || 0) >= 3)",
                           timeout=60_000)  # fmt: skip
    sizes = page.eval_on_selector_all(".tile img", "els => els.map(e => [e.naturalWidth, "
                                      "e.naturalHeight, e.src])")  # fmt: skip
    assert [s[:2] for s in sizes] == [[320, 240]] * 3
    assert [re.search(r"/frame/(\d+)\?v=\d+$", s[2]).group(1) for s in sizes] == ["0", "1", "2"]
    page.wait_for_function("() => [...document.querySelectorAll('.tile .curve')].every("
                           "c => c.getAttribute('points').split(' ').length >= 3)")  # fmt: skip
    y = page.eval_on_selector_all(".tile .threshold", "els => els.map(e => +e.getAttribute('y1'))")
    assert y == pytest.approx([100 * (1 - threshold)] * 3, abs=1e-3)
    states = page.locator(".tile .state").all_text_contents()
    assert set(states) <= {"online", "connecting"}, states


def check_false_alarm(page) -> str:
    """Camera 0's event appears, its clip plays once complete, "false alarm" is taken."""
    item = page.locator('li.event[data-event^="0:"]').filter(has=page.locator("button.play"))
    item.first.wait_for(timeout=90_000)
    event = item.first.get_attribute("data-event")
    item = page.locator(f'li.event[data-event="{event}"]')  # its button becomes a video
    assert item.locator(".event-camera").text_content() == "cam0.mp4"
    item.locator("button.play").click()
    page.wait_for_function("li => { const v = li.querySelector('video'); "
                           "return v && v.readyState >= 1 && v.duration > 2 }",
                           arg=item.element_handle(), timeout=30_000)  # fmt: skip
    item.locator("button.false-alarm").click()
    page.wait_for_function("li => li.querySelector('.decision').textContent === "
                           "'marked false alarm'", arg=item.element_handle())  # fmt: skip
    assert item.locator("button.false-alarm").get_attribute("aria-pressed") == "true"
    return event


def check_review(out, camera, event: str) -> None:
    """One line in reviews.jsonl, naming that event as events.jsonl does."""
    (line,) = read_events(out / "reviews.jsonl")
    start_frame = int(event.split(":")[1])
    lines = read_events(out / "events.jsonl")
    (opened,) = [e for e in lines if e["kind"] == "opened" and e["source"] == str(camera)
                 and e["start_frame"] == start_frame]  # fmt: skip
    (clip,) = [e for e in lines if e["kind"] == "clip" and e["source"] == str(camera)
               and e["start_frame"] == start_frame]  # fmt: skip
    closed = [e for e in lines if e["kind"] == "closed" and e["source"] == str(camera)
              and e["start_frame"] == start_frame]  # fmt: skip
    assert line["decision"] == "false_alarm" and line["client"] == "127.0.0.1"
    assert (line["event"], line["source"], line["start_frame"]) == (event, str(camera), start_frame)
    assert line["opened_at"] == opened["reported_at"]
    assert line["clip"] == clip["clip"].rsplit("/", 1)[1]
    assert (line["start_time"], line["end_time"]) == (closed[0]["start_time"],
                                                       closed[0]["end_time"])  # fmt: skip
