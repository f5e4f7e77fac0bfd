"""Stores at s3:// URLs, against a real S3-compatible server (moto) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from metrics_reference import eval_auc
from synthetic_stores import planted_store

from anomalyclip.store import open_store
from anomalyclip.train import resolve_config

# commands in processes against a real S3 server or an endpoint that stalls, refuses or closes:
# seconds each, so all in the slow lane
pytestmark = pytest.mark.slow

moto_server = pytest.importorskip("moto.server")
pytest.importorskip("s3fs")


@pytest.fixture(scope="module")
def s3_env():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"]).create_bucket(Bucket="features")
    yield env
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


def anomaly(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "anomalyclip.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,  # a hang fails the test instead of the suite
    )


def test_push_info_verify_and_train_from_s3(tmp_path, tiny_clip, s3_env):
    cfg = resolve_config("demo", epochs=1, warmup_epochs=1, workers=1, eval_every=1)
    local = planted_store(tmp_path / "local.zarr", tiny_clip, cfg, n_abnormal=4, n_normal=5)
    url = "s3://features/demo.zarr"

    pushed = anomaly("store", "export", str(local), url, env=s3_env)
    assert pushed.returncode == 0, pushed.stderr

    info = anomaly("store", "info", url, "--json", env=s3_env)
    assert info.returncode == 0, info.stderr
    summary = json.loads(info.stdout)
    with open_store(local) as st:
        assert summary["videos"] == len(st.video_ids())
        assert summary["frames"] == sum(r.num_frames for r in st.records())
        vid = st.video_ids()[0]
        rows = st.features(vid)
    assert summary["size_bytes"] > rows.nbytes
    with open_store(url) as remote:  # read back through s3:// bit for bit
        assert np.array_equal(remote.features(vid), rows)

    verify = anomaly("store", "verify", url, env=s3_env)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "all" in verify.stdout and "intact" in verify.stdout

    run = tmp_path / "run"
    trained = anomaly("train", "--features", url, "--out", str(run), "--epochs", "1",
                      "--warmup-epochs", "1", "--workers", "1", env=s3_env)  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-2000:]
    config = json.loads((run / "config.json").read_text())
    assert config["store"]["location"] == url
    # the run evaluated from s3:// gives the AUC training recorded, and that AUC is the
    # Mann-Whitney statistic of the per-frame scores eval writes
    evaluated = anomaly("eval", "--checkpoint", str(run), "--out", str(tmp_path / "e"), env=s3_env)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["auc"] == pytest.approx(config["metrics"]["auc"], abs=1e-6)
    assert metrics["auc"] == pytest.approx(eval_auc(tmp_path / "e", "Normal"), abs=1e-4)


def test_damaged_object_on_s3_is_named_by_verify(tmp_path, tiny_clip, s3_env):
    import s3fs

    cfg = resolve_config("demo", epochs=1, warmup_epochs=1)
    local = planted_store(tmp_path / "local.zarr", tiny_clip, cfg, n_abnormal=2, n_normal=2)
    url = "s3://features/damaged.zarr"
    assert anomaly("store", "export", str(local), url, env=s3_env).returncode == 0
    fs = s3fs.S3FileSystem()
    chunk = sorted(p for p in fs.find("features/damaged.zarr/videos") if "/c/" in p)[0]
    data = bytearray(fs.cat_file(chunk))
    data[len(data) // 2] ^= 0xFF
    fs.pipe_file(chunk, bytes(data))
    verify = anomaly("store", "verify", url, env=s3_env)
    assert verify.returncode == 1
    damaged = chunk.split("/videos/")[1].split("/")[0]
    from urllib.parse import unquote

    assert unquote(damaged) in verify.stdout


class _Endpoint:
    """An S3 endpoint on 127.0.0.1 that misbehaves: ``silent`` accepts connections and never
    answers; ``forbidden`` answers every request with S3's 403 AccessDenied; ``closed`` is a
    port nobody listens on (connection refused)."""

    def __init__(self, kind: str) -> None:
        import socket
        import threading

        self.kind = kind
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.held: list = []
        if kind == "closed":
            self.sock.close()
            return
        self.sock.listen(64)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        body = (
            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
            b"<Message>Access Denied</Message></Error>"
        )
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)  # silent: keep it open, say nothing
            if self.kind == "forbidden":
                conn.recv(65536)
                conn.sendall(
                    b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                conn.close()

    def env(self) -> dict:
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.port}",
            "ANOMALYCLIP_URL_TIMEOUT": "1",
        }

    def close(self) -> None:
        for conn in self.held:
            conn.close()
        if self.kind != "closed":
            self.sock.close()


@pytest.mark.parametrize(
    ("kind", "reason", "command"),
    [
        ("silent", "no reply within 1 s", ["store", "info"]),
        ("closed", "cannot connect", ["store", "info"]),
        ("forbidden", "access denied", ["store", "info"]),
        ("silent", "no reply within 1 s", ["store", "export", "@local"]),
    ],
)
def test_broken_s3_endpoint_is_one_line_and_never_hangs(tmp_path, tiny_clip, kind, reason,
                                                        command):  # fmt: skip
    """Reading from and writing to an endpoint that never replies, refuses connections or
    forbids access: a one-line error naming the URL within seconds (the defaults of s3fs and
    botocore retry a silent endpoint for ~7 minutes)."""
    import time

    endpoint = _Endpoint(kind)
    url = "s3://features/demo.zarr"
    if command[-1] == "@local":  # export a local store to the broken endpoint
        cfg = resolve_config("demo", epochs=1, warmup_epochs=1)
        local = planted_store(tmp_path / "l.zarr", tiny_clip, cfg, n_abnormal=1, n_normal=1)
        args = [*command[:-1], str(local), url]
    else:
        args = [*command, url]
    try:
        start = time.monotonic()
        done = anomaly(*args, env=endpoint.env())
        took = time.monotonic() - start
    finally:
        endpoint.close()
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    [line] = [x for x in done.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: {url}: ") and reason in line, line
    assert took < 30, took
