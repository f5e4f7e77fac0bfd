"""The live page's server (``anomaly watch --ui``) without a browser: what it refuses, its
token, its reviews, the false alarms it gives back for calibration, and its bounded state.

The state comes from a real watch (the event video decoded by PyAV, scored by a trained run,
its clip encoded by x264); the server is the real uvicorn on 127.0.0.1, spoken to over
sockets exactly as a browser or an attacker would (raw request lines, so nothing between the
test and the server normalises ``..``).
"""

from __future__ import annotations

import http.client
import io
import json
import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from synthetic_stores import quick_run
from test_watch_cli import anomaly
from watch_helpers import event_video, read_events

from anomalyclip.events import EventConfig
from anomalyclip.live.config import WatchConfig
from anomalyclip.live.reviews import false_alarm_clips
from anomalyclip.live.stats import SourceStats
from anomalyclip.live.ui import LivePage, UiConfig, listen, parse_ui
from anomalyclip.live.ui_state import MAX_EVENTS, Cursor, UiState
from anomalyclip.live.watch import Watcher, load_for_watch, run_sampling

TOKEN = "t0ken-for-the-tests-0123456789"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_clip):
    return quick_run(tmp_path_factory.mktemp("run"), tiny_clip, epochs=1, n_each=4)[1]


@pytest.fixture(scope="module")
def loaded(run_dir):
    model, encoder, config = load_for_watch(run_dir, None, "cpu")
    return model, encoder, run_sampling(config, run_dir)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return event_video(tmp_path_factory.mktemp("video"))


def watch_once(loaded, sources, out: Path) -> Watcher:
    """A watch with the page's state and clips; threshold 0: each file is one event."""
    model, encoder, sampling = loaded
    cfg = WatchConfig(EventConfig(0.0), out=out, status_every=0, save_clips=True, ui=True)
    watcher = Watcher(sources, model, encoder, sampling, cfg, io.StringIO())
    watcher.run()
    return watcher


@pytest.fixture(scope="module")
def watched(loaded, video, tmp_path_factory):
    return watch_once(loaded, [video], tmp_path_factory.mktemp("out"))


def serve(state: UiState, token: str | None = None) -> LivePage:
    return LivePage(state, listen(UiConfig("127.0.0.1", 0, token)), token).start()


@pytest.fixture
def page(watched):
    page = serve(watched.ui)
    yield page
    page.stop()


def request(page: LivePage, method: str, target: str, body=None, headers=None):
    """(status, body) of one request sent as written (``target`` is not normalised)."""
    host, port = page.sock.getsockname()[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.putrequest(method, target, skip_host="Host" in (headers or {}),
                        skip_accept_encoding=True)  # fmt: skip
        for key, value in {"Content-Length": str(len(body or b"")), **(headers or {})}.items():
            conn.putheader(key, value)
        conn.endheaders(body)
        reply = conn.getresponse()
        return reply.status, reply.read()
    finally:
        conn.close()


def review(page, event: str, decision: str, **headers):
    body = json.dumps({"event": event, "decision": decision}).encode()
    status, data = request(page, "POST", "/review", body,
                           {"Content-Type": "application/json", **headers})  # fmt: skip
    return status, json.loads(data) if data.startswith(b"{") else data


# -- options ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address, host, port",
    [("8080", "127.0.0.1", 8080), ("127.0.0.1:0", "127.0.0.1", 0), ("localhost:9", "localhost", 9),
     ("[::1]:8080", "::1", 8080), ("127.3.4.5:80", "127.3.4.5", 80)],
)  # fmt: skip
def test_loopback_addresses_need_no_token(address, host, port):
    assert parse_ui(address) == UiConfig(host, port, None)


@pytest.mark.parametrize("address", ["0.0.0.0:8080", "192.168.1.20:80", "[::]:8080", "cam:80"])
def test_other_addresses_need_a_token(address):
    from anomalyclip.errors import AnomalyError

    with pytest.raises(AnomalyError, match="other than the loopback needs --ui-token"):
        parse_ui(address)
    assert parse_ui(address, TOKEN).token == TOKEN


@pytest.mark.slow
def test_ui_mistakes_are_one_line_before_torch(run_dir, video, tmp_path):
    """A non-loopback --ui without a token, a weak token, a bad address, a port in use and a
    missing server package: one line each, exit 2, torch never imported."""
    out = str(tmp_path / "o")
    base = ["watch", str(video), "-c", str(run_dir), "-o", out]
    cases = [
        (["--ui", "0.0.0.0:8080"], "error: --ui 0.0.0.0:8080: an address other than the loopback "
                                   "needs --ui-token (then required in every request)"),
        (["--ui", "127.0.0.1:8080", "--ui-token", "short"], "error: --ui-token: 16 to 256 "),
        (["--ui", "127.0.0.1:99999"], "error: --ui 127.0.0.1:99999: expected HOST:PORT"),
        (["--ui-token", TOKEN], "error: --ui-token: only with --ui"),
    ]  # fmt: skip
    with listen(UiConfig("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        in_use = f"error: --ui 127.0.0.1:{port}: cannot listen there (Address already in use)"
        cases.append((["--ui", f"127.0.0.1:{port}"], in_use))
        for extra, message in cases:
            code, err, torch = anomaly(*base, *extra)
            assert (code, len(err), torch) == (2, 1, False), (extra, err)
            assert err[0].startswith(message), (extra, err)


def test_a_missing_server_package_names_the_extra(run_dir, video, tmp_path):
    """Without starlette (hidden from this interpreter as an uninstalled package is)."""
    import subprocess

    probe = "import sys; sys.modules['starlette'] = None\n" + PROBE_MAIN
    done = subprocess.run([sys.executable, "-c", probe, "watch", str(video), "-c", str(run_dir),
                           "-o", str(tmp_path / "o"), "--ui", "0"],
                          capture_output=True, text=True, timeout=180)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: --ui: starlette is not installed; the live page needs the 'service' extra "
        "(pip install 'anomalyclip[service]')"
    ]
    assert "torch imported: False" in done.stdout


PROBE_MAIN = """\
import atexit
atexit.register(lambda: print("torch imported:", "torch" in sys.modules))
from anomalyclip.cli import main
sys.argv = ["anomaly", *sys.argv[1:]]
main()
"""


# -- what the server refuses -----------------------------------------------------------------
OPENED: list[str] = []  # files this process opened while RECORDING is set
RECORDING = threading.Event()


def _audit(event: str, args) -> None:
    if event == "open" and RECORDING.is_set():
        OPENED.append(str(args[0]))


sys.addaudithook(_audit)  # Python's own record of every file a thread of this process opens


@pytest.mark.slow
def test_paths_from_requests_never_reach_the_disk(watched, page, tmp_path):
    """``..`` raw and percent-encoded, absolute paths, a file planted in the clips folder and
    another watch's clip: 404 (or 403), and no file opened while the server refused them."""
    out = watched.out
    (clip,) = [e["clip"] for e in read_events(out / "events.jsonl") if e["kind"] == "clip"]
    name = Path(clip).name
    shutil.copy(clip, out / "clips" / "planted.mp4")  # in the folder, not written by the watch
    other = tmp_path / "other" / "clips"
    other.mkdir(parents=True)
    shutil.copy(clip, other / "cam-000000000.mp4")  # another camera's, outside this folder
    secret = tmp_path / "secret.txt"
    secret.write_text("never served")
    targets = [
        "/clips/../events.jsonl", "/clips/../../../../etc/passwd", "/../events.jsonl",
        "/clips/..%2fevents.jsonl", "/clips/%2e%2e%2fevents.jsonl", "/clips/%2E%2E/events.jsonl",
        "/clips/..%5cevents.jsonl", "/clips/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        f"/clips/{secret}", f"/clips/%2F{str(secret)[1:].replace('/', '%2F')}",
        f"/clips//{secret}", f"//{secret}", f"/{secret}", "/clips/planted.mp4",
        f"/clips/{other}/cam-000000000.mp4", "/clips/cam-000000000.mp4", f"/clips/{name}%00",
        f"/clips/./{name}", f"/clips/{name}/", "/clips/", "/clips/.", "/clips/..",
        "/frame/../events.jsonl", "/frame/-1", "/frame/1", "/frame/%2e%2e", "/app.js/../x",
        "/ui_page/app.js", "/index.html", "/app.js%00", "/events.jsonl", "/reviews.jsonl",
    ]  # fmt: skip
    assert request(page, "GET", "/no-such-page")[0] == 404  # warm: imports done
    OPENED.clear()
    RECORDING.set()
    try:
        refused = {t: request(page, "GET", t)[0] for t in targets}
    finally:
        RECORDING.clear()
    assert {t: s for t, s in refused.items() if s not in (403, 404)} == {}
    assert OPENED == []
    # what it does serve: its clip, by exact name, byte for byte
    status, data = request(page, "GET", f"/clips/{name}")
    assert (status, data) == (200, Path(clip).read_bytes())


def test_a_foreign_host_name_is_refused(page):
    """Without a token, only loopback Host names: a rebound DNS name is not served."""
    assert request(page, "GET", "/", headers={"Host": "localhost"})[0] == 200
    assert request(page, "GET", "/", headers={"Host": "[::1]:80"})[0] == 200
    assert request(page, "GET", "/", headers={"Host": "evil.example:8080"})[0] == 403
    assert request(page, "GET", "/frame/0", headers={"Host": "10.0.0.5"})[0] == 403


def test_with_a_token_every_request_needs_it(watched):
    page = serve(watched.ui, TOKEN)
    try:
        targets = ["/", "/app.js", "/app.css", "/stream", "/frame/0", "/clips/x.mp4"]
        wrong = "t0ken-for-the-tests-0123456780"  # same length, last character differs
        for target in targets:
            assert request(page, "GET", target)[0] == 401, target
            assert request(page, "GET", f"{target}?token={wrong}")[0] == 401, target
            assert request(page, "GET", target, headers={"Authorization": f"Bearer {wrong}"}
                           )[0] == 401  # fmt: skip
        assert review(page, "0:0", "confirm")[0] == 401
        assert not (watched.out / "reviews.jsonl").exists()
        status, html = request(page, "GET", f"/?token={TOKEN}")
        assert status == 200 and f'src="app.js?token={TOKEN}"' in html.decode()
        assert request(page, "GET", "/frame/0", headers={"Authorization": f"Bearer {TOKEN}"}
                       )[0] == 200  # fmt: skip
        assert request(page, "GET", "/app.css", headers={"Host": "evil.example"},
                       )[0] == 401  # fmt: skip
        assert request(page, "GET", f"/app.css?token={TOKEN}", headers={"Host": "evil.example"}
                       )[0] == 200  # fmt: skip
    finally:
        page.stop()


# -- reviews ---------------------------------------------------------------------------------
def test_decisions_are_whole_lines_and_false_alarms_give_their_clips(loaded, video, tmp_path):
    """Two watches of the same video into one folder: each opens an event at frame 0, the
    second's clip is ``...-1.mp4``. The second is marked a false alarm (after a confirm), the
    first confirmed: only the second's clip comes back, under its camera's name."""
    out = tmp_path / "out"
    first = watch_once(loaded, [video], out)
    second = watch_once(loaded, [video], out)
    pages = [serve(first.ui), serve(second.ui)]
    try:
        assert review(pages[1], "0:0", "confirm")[0] == 200
        status, line = review(pages[1], "0:0", "false_alarm")
        assert status == 200
        assert review(pages[0], "0:0", "confirm")[0] == 200
        assert review(pages[0], "0:1", "confirm")[0] == 404
        assert review(pages[0], "0:0", "maybe")[0] == 400
        bad = request(pages[0], "POST", "/review", b'{"event": "0:0", "decision": "confirm"}',
                      {"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
        assert bad[0] == 415
        assert request(pages[0], "POST", "/review", b"{not json",
                       {"Content-Type": "application/json"})[0] == 400  # fmt: skip
    finally:
        for page in pages:
            page.stop()
    events = read_events(out / "events.jsonl")
    opened = [e for e in events if e["kind"] == "opened"]
    assert [(e["source"], e["start_frame"]) for e in opened] == [(str(video), 0)] * 2
    lines = read_events(out / "reviews.jsonl")
    assert [(r["decision"], r["opened_at"]) for r in lines] == [
        ("confirm", opened[1]["reported_at"]), ("false_alarm", opened[1]["reported_at"]),
        ("confirm", opened[0]["reported_at"])]  # fmt: skip
    assert line == lines[1]
    clips = [Path(e["clip"]).name for e in events if e["kind"] == "clip"]
    assert clips == [f"{video.stem}-000000000.mp4", f"{video.stem}-000000000-1.mp4"]
    assert {k: line[k] for k in ("event", "source", "start_frame", "client", "clip")} == {
        "event": "0:0", "source": str(video), "start_frame": 0, "client": "127.0.0.1",
        "clip": clips[1]}  # fmt: skip
    assert false_alarm_clips(out) == {video.stem: [out / "clips" / clips[1]]}
    (out / "clips" / clips[1]).unlink()  # a clip that is gone is left out
    assert false_alarm_clips(out) == {}


# -- bounded state ---------------------------------------------------------------------------
def test_the_page_state_stays_bounded(tmp_path):
    """An hour of a 30 fps camera's scores and 500 events: 300 points (one per second of the
    last five minutes, each the highest p(A) of its second) and the last 50 events."""
    state = UiState(0.5, tmp_path)
    state.camera("cam", SourceStats())
    p = np.random.default_rng(0).random(3600 * 30)
    for hop in range(3600 * 2):  # 0.5 s hops of 15 rows
        rows = slice(hop * 15, hop * 15 + 15)
        state.scores("cam", np.arange(3600 * 30)[rows] / 30, p[rows], np.full(15, 0.1))
    cam = state.cameras[0]
    assert [t for _, t, _ in cam.points] == list(range(3299, 3599))  # 3599: still filling
    assert [v for _, _, v in cam.points] == p.reshape(3600, 30).max(1)[3299:3599].tolist()
    for k in range(500):
        base = {"source": "cam", "start_frame": k, "start_time": k, "end_time": k + 1,
                "peak": 0.9, "class": "Explosion", "reported_at": "t"}  # fmt: skip
        for kind in ("opened", "closed"):
            state.write({"kind": kind, **base}, "")
        state.write({"kind": "clip", "source": "cam", "start_frame": k, "clip": f"c{k}.mp4"}, "")
    tiles, events = state.updates(Cursor())
    assert len(events) == MAX_EVENTS and events[-1]["id"] == "0:499"
    assert events[-1]["clip"] == "c499.mp4" and not events[-1]["open"]
    assert len(tiles) == 1 and len(tiles[0]["points"]) == 300
