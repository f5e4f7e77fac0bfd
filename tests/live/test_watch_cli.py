"""``anomaly watch`` as a process: its checks before torch is imported, the run it trusts
and what it never does with it, credentials in what it shows, and its exit under signals.

Streams come from the real sender (``tests/support/stream_sender.py``) over 127.0.0.1; the webhook
receiver and the "feature store" that must never be contacted are real servers there too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from synthetic_stores import quick_run
from watch_helpers import (
    Proc,
    closed,
    event_video,
    free_port,
    read_events,
    read_only_folder,
    sender,
    watch,
)

STARTUP = 180  # seconds a watch process may take (imports torch on a busy machine)
PROBE = """\
import atexit, sys
atexit.register(lambda: print("torch imported:", "torch" in sys.modules))
from anomalyclip.cli import main
sys.argv = ["anomaly", *sys.argv[1:]]
main()
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_clip):
    return quick_run(tmp_path_factory.mktemp("run"), tiny_clip, epochs=1, n_each=4)[1]


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return event_video(tmp_path_factory.mktemp("video"))


def anomaly(*args: str) -> tuple[int, list[str], bool]:
    """(exit status, stderr lines, whether torch was imported) of ``anomaly ARGS``."""
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          timeout=STARTUP)  # fmt: skip
    return done.returncode, done.stderr.splitlines(), "torch imported: True" in done.stdout


@pytest.fixture
def read_only_out(tmp_path):
    yield from read_only_folder(tmp_path / "ro")


BAD_OPTIONS = [
    (["--drop", "sideways"], "--drop sideways: expected one of oldest, none"),
    (["--hop", "nan"], "--hop nan: a positive, finite number of seconds"),
    (["--hop", "inf"], "--hop inf: a positive, finite number of seconds"),
    (["--hop", "0"], "--hop 0.0: a positive, finite number of seconds"),
    (["--batch-size", "0"], "--batch-size 0: at least 1 frame"),
    (["--stall", "nan"], "--stall nan: a positive, finite number of seconds"),
    (["--status-every", "-1"], "--status-every -1.0: a number of seconds >= 0"),
    (
        ["--webhook", "ftp://u:pw@host/x"],
        "--webhook ftp://u:***@host/x: expected an http:// or https:// URL",
    ),  # fmt: skip
    (
        ["--webhook", "http://127.0.0.1:99999/"],
        "--webhook http://127.0.0.1:99999/: Port out of range 0-65535",
    ),  # fmt: skip
]


@pytest.mark.slow
@pytest.mark.parametrize("extra, message", BAD_OPTIONS, ids=[" ".join(b[0]) for b in BAD_OPTIONS])
def test_bad_numbers_are_one_line_before_torch(run_dir, video, tmp_path, extra, message):
    code, err, torch = anomaly("watch", str(video), "-c", str(run_dir), "-o", str(tmp_path / "o"),
                               *extra)  # fmt: skip
    assert (code, err, torch) == (2, [f"error: {message}"], False)


def test_a_threshold_that_is_no_probability_is_a_usage_error_before_torch(run_dir, video, tmp_path):
    """--threshold is checked by the option itself, as in eval and predict (click's usage
    error: the usage line, the help hint and the error)."""
    code, err, torch = anomaly("watch", str(video), "-c", str(run_dir), "-o", str(tmp_path / "o"),
                               "--threshold", "nan")  # fmt: skip
    assert (code, torch) == (2, False)
    assert err[-1] == "Error: Invalid value for '--threshold': nan is not a probability in [0, 1]"


def test_an_unwritable_out_is_one_line_before_torch(run_dir, video, tmp_path, read_only_out):
    afile = tmp_path / "afile"
    afile.write_text("")
    why = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
    for out, reason in ((afile, "File exists"), (afile / "sub", "Not a directory"),
                        (read_only_out / "w", why)):  # fmt: skip
        code, err, torch = anomaly("watch", str(video), "-c", str(run_dir), "-o", str(out))
        assert (code, err, torch) == (2, [f"error: {out}: cannot write events here ({reason})"],
                                      False)  # fmt: skip


def copy_run(run_dir: Path, folder: Path, **changes) -> Path:
    """A copy of the run whose config.json has ``changes`` (``a__b`` for ``config["a"]["b"]``;
    None removes the key)."""
    run = folder / "run"
    shutil.copytree(run_dir, run)
    config = json.loads((run / "config.json").read_text())
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = config
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    data = json.dumps(config).encode()
    (run / "config.json").write_bytes(data)
    # re-signed in the manifest, as whoever shares a run can do
    manifest = json.loads((run / "checkpoint.json").read_text())
    manifest["files"]["config.json"] = {
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    (run / "checkpoint.json").write_text(json.dumps(manifest))
    return run


@pytest.mark.slow
def test_a_broken_run_is_one_line_before_torch(run_dir, video, tmp_path):
    cases = []
    run = copy_run(run_dir, tmp_path / "a")
    (run / "model.safetensors").unlink()
    cases.append((run, f"{run}: no model.safetensors (an unfinished or damaged run?)"))
    run = copy_run(run_dir, tmp_path / "b", threshold__value="high")
    cases.append((run, f"{run / 'config.json'}: threshold.value = \"high\": expected a "
                       "probability in [0, 1]"))  # fmt: skip
    run = copy_run(run_dir, tmp_path / "c", store__sampling={"mode": "fps", "value": -1})
    sampling = '{"mode": "fps", "value": -1}'
    cases.append((run, f"{run / 'config.json'}: store.sampling = {sampling}: expected a "
                       "sampling (all; fps or stride with a positive value)"))  # fmt: skip
    run = copy_run(run_dir, tmp_path / "d")
    (run / "config.json").write_text("{")
    code, err, torch = anomaly("watch", str(video), "-c", str(run))
    assert code == 2 and len(err) == 1 and err[0].startswith(f"error: {run / 'config.json'}: ")
    assert not torch
    for run, message in cases:
        assert anomaly("watch", str(video), "-c", str(run)) == (2, [f"error: {message}"], False)
    # a wrong option is named before a wrong run
    expected = ["error: --drop sideways: expected one of oldest, none"]
    assert anomaly("watch", str(video), "-c", str(tmp_path / "none"), "--drop", "sideways") == (
        2, expected, False)  # fmt: skip


class Listener:
    """A TCP server on 127.0.0.1 that counts the connections it gets, and closes them."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.slow
def test_watch_uses_the_runs_threshold_and_never_opens_its_store(run_dir, video, tmp_path):
    """The run does not record its sampling and names a store at a URL: the watch scores
    every frame (and says so) without a connection there. Its threshold, set to 0 in the
    copy, is the one used when ``--threshold`` is not given: one event over the video."""
    store = Listener()
    try:
        run = copy_run(run_dir, tmp_path, store__sampling=None, threshold__value=0.0,
                       store__location=f"http://127.0.0.1:{store.port}/features.zarr",
                       inputs__store=None)  # fmt: skip
        proc = watch([str(video)], run, tmp_path / "out", None)
        assert proc.wait(STARTUP) == 0, proc.tail()
    finally:
        store.close()
    assert store.connections == 0
    assert proc.wait_for("does not record its features' sampling; every frame is scored", 5)
    assert proc.wait_for(r"watching 1 source\(s\), threshold 0\.0000, ", 5)
    (event,) = closed(read_events(tmp_path / "out" / "events.jsonl"))
    assert (event["start_frame"], event["end_frame"]) == (0, 90)


@pytest.mark.slow
def test_signals_during_the_shutdown_never_change_the_exit_status(run_dir, video, tmp_path):
    """SIGTERM every 20 ms from the moment an event is open until the process has gone:
    the first stops the watch in order, the others arrive during its shutdown and the
    interpreter's exit. The exit status is 0 and the event is closed in the file."""
    port = free_port()
    send = sender("http", video, port, "--speed", "1")
    proc = watch([f"http://127.0.0.1:{port}/cam"], run_dir, tmp_path, 0.0)
    sent = 0
    try:
        assert proc.wait_for(r'"kind": "opened"', STARTUP, where="out"), proc.tail()
        deadline = time.monotonic() + 60
        while proc.p.poll() is None and time.monotonic() < deadline:
            proc.p.send_signal(signal.SIGTERM)
            sent += 1
            time.sleep(0.02)
        code = proc.wait(5)
    finally:
        for p in (send, proc):
            p.kill()
    assert code == 0 and sent >= 2, (code, sent, proc.tail())
    events = read_events(tmp_path / "events.jsonl")
    assert events[0]["kind"] == "opened" and events[-1]["kind"] == "closed"
    assert events[-1]["start_frame"] == events[0]["start_frame"]


class Hook(BaseHTTPRequestHandler):
    """A webhook receiver that takes only its Basic credentials (401 otherwise)."""

    expected = "Basic " + base64.b64encode(b"hookuser:h00k@SECRET6").decode()
    received: list[dict] = []
    refused = 0

    def do_POST(self) -> None:  # noqa: N802 (the handler API's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        ok = self.headers.get("Authorization") == self.expected
        if ok:
            type(self).received.append(json.loads(body))
        else:
            type(self).refused += 1
        self.send_response(200 if ok else 401)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.mark.slow
def test_credentials_are_masked_in_everything_a_watch_shows(run_dir, video, tmp_path):
    """Passwords with ``@`` and ``'``, a token as the user, secrets in the query, a source
    that cannot be opened, a webhook with ``user:password@``; debug logging on. No secret
    appears on stdout, stderr (status, warnings, summary), in events.jsonl, the webhook's
    bodies or a clip's name, and the webhook gets its credentials as Basic auth."""
    port = free_port()
    send = sender("http", video, port, "--speed", "3")  # every request plays the video
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://hookuser:h00k%40SECRET6@127.0.0.1:{server.server_address[1]}/events"
    base = f"127.0.0.1:{port}"
    sources = [f"http://admin:p@ss'w0rdSECRET1@{base}/cam1", f"http://tok3nSECRET2@{base}/cam2",
               f"http://{base}/cam3?user=bob&password=SECRET3&token=SECRET4&channel=1",
               f"rtsp://admin:it'sSECRET5@127.0.0.1:{free_port()}/cam4"]  # fmt: skip
    cmd = [sys.executable, "-m", "anomalyclip.cli", "-v", "watch", *sources, "-c", str(run_dir),
           "-o", str(tmp_path), "--threshold", "0", "--save-clips", "--webhook", hook,
           "--status-every", "0.5", "--stall", "1.5", "--drop", "none"]  # fmt: skip
    proc = Proc(cmd)
    try:
        assert proc.wait_for("stream lost", STARTUP, count=3), proc.tail()
        assert proc.finish() == 0
    finally:
        for p in (send, proc):
            p.kill()
        server.shutdown()
    lines = read_events(tmp_path / "events.jsonl")
    assert {e["source"] for e in lines} >= {
        f"http://admin:***@{base}/cam1", f"http://***@{base}/cam2",
        f"http://{base}/cam3?user=bob&password=***&token=***&channel=1",
    }  # fmt: skip
    assert Hook.refused == 0 and Hook.received == lines  # delivered with Basic auth
    assert f"summary output webhook: sent {len(lines)}, failed 0, dropped 0, unsent 0" in proc.err
    clips = os.listdir(tmp_path / "clips")
    assert {c.split("-")[0] for c in clips} == {f"127.0.0.1_{port}_cam{i}" for i in (1, 2, 3)}
    assert any("status rtsp://admin:***@127.0.0.1:" in line for line in proc.err)
    shown = "\n".join([*proc.out, *proc.err, (tmp_path / "events.jsonl").read_text(), *clips,
                       json.dumps(Hook.received)])  # fmt: skip
    for secret in ("SECRET", "w0rd", "tok3n", "h00k"):
        assert secret not in shown
