"""report.html in a real browser (Debian's headless Chromium through Playwright), opened from
disk: the table of test videos, sorting, filtering, a chosen video's curve and its rendered
MP4, no network resource; and the page's data (downsampled curves that keep their peaks, a
size that does not grow with the videos' length)."""

from __future__ import annotations

import base64
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import av
import numpy as np
import pytest
from browser import new_tab, require_chromium, unavailable
from cli_helper import call_cli, run_cli
from report_load_time import load_times
from synthetic_eval import synthetic_eval
from synthetic_stores import quick_run

from anomalyclip.evaluate.html import BUCKETS, EMPTY, envelope, report_data, simplify
from anomalyclip.evaluate.report import read_video_csv
from anomalyclip.store import open_store

ROWS = "#video-table tbody tr"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_clip):
    """A real ``anomaly eval`` output (12 test videos of a planted store), with the store's
    test records (their ground truth) to check the page against."""
    require_chromium()  # every test of it opens the page
    tmp = tmp_path_factory.mktemp("report")
    store, run = quick_run(tmp, tiny_clip, epochs=1, n_each=4)
    done = call_cli("eval", "--checkpoint", run, "--out", tmp / "eval")
    assert done.code == 0, done.err
    with open_store(store) as st:
        records = {r.video_id: r for r in st.records("test")}
    return tmp / "eval", records


def write_mp4(path: Path, seconds: float = 2.0, fps: int = 15) -> Path:
    """A small H.264 MP4 (what ``predict --render`` writes, in miniature)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        for i in range(int(seconds * fps)):
            rgb = np.full((64, 64, 3), (8 * i) % 256, np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def with_movie(evaluated, tmp_path_factory):
    """A copy of the evaluation folder with a rendered MP4 beside one video's CSV, and its
    page rebuilt by ``anomaly report`` (a new process, as a user runs it)."""
    folder, records = evaluated
    copy = tmp_path_factory.mktemp("movie") / "eval"
    shutil.copytree(folder, copy)
    chosen = next(v for v, r in sorted(records.items()) if r.intervals)
    movie = write_mp4(copy / "videos" / f"{chosen}.mp4")
    done = run_cli("report", copy)
    assert done.code == 0, done.err
    return copy, chosen, movie


def table(tab) -> list[dict[str, str]]:
    """The visible rows of the video table, as column label -> text."""
    return tab.page.evaluate(
        """() => {
        const heads = [...document.querySelectorAll('#video-table th')].map(th => th.dataset.key);
        return [...document.querySelectorAll('#video-table tbody tr')].filter(r => !r.hidden)
          .map(r => Object.fromEntries([...r.cells].map((c, i) => [heads[i], c.textContent])));
        }"""
    )


def choose(tab, video_id: str) -> None:
    tab.page.click(f"{ROWS}[data-id='{video_id}']")
    tab.page.wait_for_function(
        "id => document.getElementById('detail-title').textContent === id", arg=video_id
    )


@pytest.mark.slow
def test_eval_writes_a_report_with_a_row_per_test_video(evaluated, tab):
    folder, records = evaluated
    metrics = json.loads((folder / "metrics.json").read_text())
    tab.open(folder / "report.html")
    rows = table(tab)
    assert len(rows) == metrics["videos"] == len(records) == 12
    assert sorted(r["id"] for r in rows) == sorted(records)
    for r in rows:  # each row agrees with the video's CSV and the store's ground truth
        back = read_video_csv(folder / "videos" / f"{r['id']}.csv")
        assert r["class"] == records[r["id"]].label
        assert int(r["frames"].replace(",", "")) == back["frame"].size
        # shown to 3 decimals from the page's 4: within 5.5e-4
        assert float(r["max"]) == pytest.approx(back["p_abnormal"].max(), abs=5.5e-4)
        share = (back["labels"] != metrics["normal_id"]).mean()
        assert float(r["abnormal"]) == pytest.approx(100 * share, abs=0.05)
    headline = tab.page.inner_text("#headline")
    assert f"{100 * metrics['auc']:.2f}" in headline and f"{100 * metrics['ap']:.2f}" in headline
    # ROC and PR drawn from data, the confusion matrix one cell per class pair
    assert tab.page.locator("#roc path.xy").count() == 1
    assert tab.page.locator("#pr path.xy").count() == 1
    assert tab.page.locator("#confusion rect.cell").count() == len(metrics["class_names"]) ** 2
    assert tab.page.locator("#classes tbody tr").count() == len(metrics["per_class"])
    assert tab.errors == []


@pytest.mark.slow
def test_sorting_and_filtering_the_video_table(evaluated, tab):
    folder, records = evaluated
    tab.open(folder / "report.html")
    tab.page.click("#video-table th[data-key='max']")
    ascending = [float(r["max"]) for r in table(tab)]
    assert ascending == sorted(ascending) and len(set(ascending)) > 1
    tab.page.click("#video-table th[data-key='max']")
    assert [float(r["max"]) for r in table(tab)] == sorted(ascending, reverse=True)
    tab.page.click("#video-table th[data-key='id']")
    assert [r["id"] for r in table(tab)] == sorted(records)

    tab.page.fill("#filter", "tampering")
    assert {r["id"] for r in table(tab)} == {v for v in records if "Tampering" in v}
    assert tab.page.inner_text("#count") == f"{len(table(tab))} of 12 videos"
    tab.page.fill("#filter", "")
    tab.page.select_option("#class-filter", "Normal")
    normal = {v for v, r in records.items() if r.label == "Normal"}
    assert {r["id"] for r in table(tab)} == normal and len(normal) == 8
    tab.page.fill("#filter", "v02")
    assert {r["id"] for r in table(tab)} == {v for v in normal if "v02" in v}
    assert tab.errors == []


@pytest.mark.slow
def test_choosing_a_video_draws_its_curve_truth_threshold_and_events(evaluated, tab):
    folder, records = evaluated
    metrics = json.loads((folder / "metrics.json").read_text())
    events = json.loads((folder / "events.json").read_text())
    threshold = metrics["decision"]["threshold"]["value"]
    tab.open(folder / "report.html")
    for video_id, record in sorted(records.items()):
        choose(tab, video_id)
        assert tab.page.locator("#curve rect.gt").count() == len(record.intervals)
        mine = [e for e in events if e["source"] == video_id]
        assert tab.page.locator("#curve rect.event").count() == len(mine)
        assert tab.page.locator("#curve path.curve").count() == 1
        assert tab.page.locator("#curve line.threshold").count() == 1
        assert tab.page.locator("#player").is_hidden()  # no MP4 beside this report
        # the truth band and the threshold line sit where the data puts them
        geometry = tab.page.evaluate(
            """() => {
            const grid = [...document.querySelectorAll('#curve line.grid')];
            const ys = grid.map(l => +l.getAttribute('y1'));
            const gt = document.querySelector('#curve rect.gt');
            const axis = grid[0];
            return {top: Math.min(...ys), bottom: Math.max(...ys),
                    left: +axis.getAttribute('x1'), right: +axis.getAttribute('x2'),
                    threshold: +document.querySelector('#curve line.threshold').getAttribute('y1'),
                    gt: gt && [+gt.getAttribute('x'), +gt.getAttribute('width')]};
            }"""
        )
        y = geometry["bottom"] - threshold * (geometry["bottom"] - geometry["top"])
        assert geometry["threshold"] == pytest.approx(y, abs=0.5)
        if record.intervals:
            (start, end), fps = record.intervals[0], record.fps
            rows = read_video_csv(folder / "videos" / f"{video_id}.csv")["frame"].size
            width = geometry["right"] - geometry["left"]
            assert geometry["gt"][0] == pytest.approx(
                geometry["left"] + start / rows * width, abs=1.0
            )
            assert geometry["gt"][1] == pytest.approx((end - start) / rows * width, abs=1.0)
            assert fps > 0
    # the arrow keys move the choice along the table's visible rows
    first, second = [r["id"] for r in table(tab)][:2]
    choose(tab, first)
    tab.page.focus(f"{ROWS}[data-id='{first}']")
    tab.page.keyboard.press("ArrowDown")
    assert tab.page.inner_text("#detail-title") == second
    assert tab.errors == []


@pytest.mark.slow
def test_report_rebuilds_the_same_page_and_plays_a_rendered_mp4(evaluated, with_movie, tab):
    folder, _ = evaluated
    copy, chosen, movie = with_movie
    rebuilt = (copy / "report.html").read_text()
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', rebuilt).group(1))
    linked = {v["id"]: v["video"] for v in data["videos"] if v["video"]}
    assert linked == {chosen: f"videos/{chosen}.mp4"}
    # `anomaly report` rebuilds the page `anomaly eval` wrote, but for the link to the MP4
    assert rebuilt.replace(f'"videos/{chosen}.mp4"', "null") == (folder / "report.html").read_text()

    tab.open(copy / "report.html")
    choose(tab, chosen)
    player = tab.page.locator("#player")
    assert player.is_visible()
    tab.page.wait_for_function("() => document.getElementById('player').readyState >= 1")
    assert tab.page.evaluate("() => document.getElementById('player').duration") == pytest.approx(
        2.0
    )
    tab.page.evaluate(
        "() => { const p = document.getElementById('player'); p.muted = true; p.play(); }"
    )
    tab.page.wait_for_function("() => document.getElementById('player').currentTime > 0.2")
    tab.page.evaluate("() => document.getElementById('player').pause()")
    # a click on the curve seeks the video to that time
    span = next(v["span"] for v in data["videos"] if v["id"] == chosen)
    grid = tab.page.locator("#curve line.grid").first
    left, right = float(grid.get_attribute("x1")), float(grid.get_attribute("x2"))
    x = left + (1.0 - span[0]) / (span[1] - span[0]) * (right - left)
    tab.page.locator("#curve").click(position={"x": x, "y": 60})
    seek = "() => document.getElementById('player').currentTime"
    assert tab.page.evaluate(seek) == pytest.approx(1.0, abs=0.05)
    other = next(r["id"] for r in table(tab) if r["id"] != chosen)
    choose(tab, other)
    assert player.is_hidden() and tab.page.locator("#no-video").is_visible()
    assert set(tab.requests) == {(copy / "report.html").as_uri(), movie.as_uri()}
    assert tab.errors == []


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href", "srcset", "action", "poster", "data", "xlink:href"):
                self.links.append((tag, name, value or ""))


@pytest.mark.slow
def test_the_report_has_no_network_resource(with_movie, tab):
    copy, chosen, movie = with_movie
    page = (copy / "report.html").read_text()
    parser = _Links()
    parser.feed(page)
    assert parser.links == []  # nothing loaded by the markup itself
    assert "://" not in page  # no URL with a scheme anywhere (http, https, ws, file...)
    assert not re.search(r"""["'(=]\s*//""", page)  # nor a scheme-relative one
    for call in ("fetch(", "XMLHttpRequest", "WebSocket", "EventSource", "sendBeacon",
                 "import(", "url(", "@import", "<link", "<iframe", "<img"):  # fmt: skip
        assert call not in page, call
    data = json.loads(re.search(r'id="report-data">(.*?)</script>', page).group(1))
    movies = [v["video"] for v in data["videos"] if v["video"]]
    assert movies == [f"videos/{chosen}.mp4"]  # relative, beside the report, and there
    assert (copy / movies[0]).resolve() == movie.resolve() and ".." not in movies[0]

    tab.open(copy / "report.html")
    for row in tab.page.locator(ROWS).all():  # every video chosen once
        row.click()
    tab.page.wait_for_timeout(300)
    assert set(tab.requests) == {(copy / "report.html").as_uri(), movie.as_uri()}
    assert tab.errors == []


@pytest.mark.slow
def test_a_large_test_set_stays_light_and_keeps_its_peaks(tmp_path, chromium):
    """40 videos of ~300 to ~10,000 rows (lengths spread as UCF-Crime's), 120,000 frames: the
    page costs about the same per video whatever its length, and every video's drawn curve
    reaches its highest p(A)."""
    folder, results = synthetic_eval(tmp_path / "eval", videos=40, frames=120_000)
    size = (folder / "report.html").stat().st_size
    # the page, metrics and ROC/PR points (~60 kB), then ~1.9 kB a video: 600 buckets of
    # (lowest, highest) p(A) in base64 (1.6 kB), its table row, truth and events
    assert size < 70_000 + 40 * 2_100
    data = report_data(folder)
    for r, v in zip(sorted(results, key=lambda r: r.video_id), data["videos"], strict=True):
        assert v["id"] == r.video_id
        hi = np.frombuffer(base64.b64decode(v["hi"]), np.uint8)
        assert hi.size == min(BUCKETS, r.p_abnormal.size)
        assert (hi != EMPTY).all()  # evenly spaced rows leave no bucket empty
        assert hi.max() / 254 == pytest.approx(r.p_abnormal.max(), abs=0.5 / 254 + 1e-6)
        assert len(v["gt"]) == len(r.intervals) - _overlaps(r.intervals)
    assert max(r.p_abnormal.size for r in results) > 10 * BUCKETS  # downsampling was needed
    assert len(data["curves"]["roc"]) <= 1001

    with new_tab(chromium, 390, 844) as tab:  # a phone-sized window
        tab.open(folder / "report.html")
        assert tab.page.locator(ROWS).count() == 40
        tab.page.select_option("#class-filter", "Normal")
        assert len(table(tab)) == sum(r.label == "Normal" for r in results)
        assert tab.errors == []
    # the load-time command's clock stops once every row is there and painted
    times = load_times(folder / "report.html", 2, chromium)
    assert [t["rows"] for t in times] == [40, 40]
    assert all(0 < t["drawn"] <= t["painted"] for t in times), times


def _overlaps(intervals) -> int:
    """How many intervals join the one before them (they draw as one band)."""
    return sum(s <= e0 for (_, e0), (s, _) in zip(intervals[:-1], intervals[1:], strict=True))


def test_envelope_keeps_a_one_row_peak_and_gives_even_rows_a_bucket_each():
    x = np.arange(50_000) / 30.0
    p = np.full(x.size, 0.1)
    p[31_234] = 0.97
    lo, hi = envelope(x, p, x[-1] + 1 / 30)
    assert lo.size == hi.size == BUCKETS
    assert hi.max() == round(0.97 * 254) and lo.min() == round(0.1 * 254)
    assert int(np.argmax(hi)) == int(31_234 / 50_000 * BUCKETS + 0.5)

    jittered = np.arange(300) / 29.97 + np.random.default_rng(0).uniform(-0.004, 0.004, 300)
    q = np.random.default_rng(1).random(300)
    lo, hi = envelope(jittered, q, jittered[-1] + 1 / 29.97)
    np.testing.assert_array_equal(lo, hi)  # one row per bucket: no row merged or lost
    np.testing.assert_array_equal(hi, np.round(254 * q).astype(np.uint8))


def test_simplified_curves_stay_within_a_step_of_every_point():
    rng = np.random.default_rng(0)
    fpr = np.r_[0.0, np.sort(rng.random(200_000)), 1.0]
    tpr = np.sqrt(fpr)  # steep at the start, flat at the end
    kept = np.array(simplify(fpr, tpr))
    assert len(kept) <= 2 / 0.002 + 2
    assert kept[0].tolist() == [0, 0] and kept[-1].tolist() == [1, 1]
    some = rng.choice(fpr.size, 3000, replace=False)  # every point is near a kept one
    apart = np.abs(np.stack([fpr[some], tpr[some]], 1)[:, None] - kept[None]).max(-1)
    assert apart.min(1).max() <= 0.002 + 1e-4


def test_report_of_a_folder_that_is_not_an_evaluation(tmp_path):
    done = run_cli("report", tmp_path / "missing")
    assert done.code == 2 and done.error_line.startswith("error: ") and "Traceback" not in done.err
    done = run_cli("report", tmp_path)
    assert done.code == 2
    assert (
        done.error_line
        == f"error: {tmp_path}: no metrics.json (not an `anomaly eval` output folder)"
    )


def test_missing_browser_skips_locally_and_fails_where_ci_requires_it(monkeypatch):
    monkeypatch.delenv("ANOMALYCLIP_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception):
        unavailable("no Chromium")
    monkeypatch.setenv("ANOMALYCLIP_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="no Chromium"):
        unavailable("no Chromium")
