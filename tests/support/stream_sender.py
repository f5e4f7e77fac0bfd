"""A live video sender for the watch tests: an MPEG-TS file sent over the loopback in real time.

Run as a process (``python tests/support/stream_sender.py udp|http|rtsp FILE.ts --port P``), it
plays the file at its own rate (times ``--speed``) the way a camera or an encoder box sends
a stream, so the watcher under test meets what it meets in the field: packets that arrive
over time through a real socket, a sender that can be killed and restarted, datagrams that
carry garbage.

- ``udp``: 1316-byte datagrams (seven TS packets, what IPTV and cameras send) to
  127.0.0.1:PORT; ``--garbage K`` sends a datagram of random bytes after every K-th datagram
  and overwrites 100 bytes inside every K-th one.
- ``http``: a server on 127.0.0.1:PORT answering every GET with an endless-looking
  ``video/mp2t`` response that plays the file from its start (what IP cameras and
  ``ffmpeg -listen 1`` serve); with ``--once`` only the first request is played (later ones
  get 404), so a test sees one play of the file.
- ``rtsp``: the minimal RTSP server of ``tests/support/rtsp_server.py`` (TCP-interleaved and UDP
  RTP, payload type 33, MPEG-TS).

:func:`encode_ts` writes the TS files the tests send: H.264 with a keyframe every second and
no B-frames (how cameras encode, so a receiver can join or recover within a second), one
segment per frame size (a resolution change inside one stream).
"""

from __future__ import annotations

import argparse
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

TS_PACKET = 188
DATAGRAM = 7 * TS_PACKET


def encode_ts(path: Path, segments: Sequence[np.ndarray], fps: int = 15) -> Path:
    """Encode (T, H, W, 3) uint8 segments, one after the other with continuing timestamps,
    into an MPEG-TS file; a segment of another size is a resolution change mid-stream."""
    chunks = []
    first = 0
    for frames in segments:
        tmp = path.with_name(f".{path.name}.{first}.part")
        with av.open(str(tmp), "w", format="mpegts") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height = frames.shape[2], frames.shape[1]
            stream.pix_fmt = "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "20", "g": str(fps), "bf": "0"}
            stream.codec_context.time_base = Fraction(1, fps)
            for t, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = first + t
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        chunks.append(tmp.read_bytes())
        tmp.unlink()
        first += len(frames)
    path.write_bytes(b"".join(chunks))
    return path


def schedule(path: Path) -> tuple[bytes, np.ndarray]:
    """The file's bytes and, per TS packet, the second at which a real-time sender sends it
    (the decoding time of the last video packet that starts at or before it)."""
    data = Path(path).read_bytes()
    positions, times = [], []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if packet.dts is None or packet.pos is None or packet.pos < 0:
                continue
            positions.append(packet.pos)
            times.append(float(packet.dts * packet.time_base))
    positions, times = np.asarray(positions), np.asarray(times)
    order = np.argsort(positions, kind="stable")
    positions, times = positions[order], np.maximum.accumulate(times[order])
    starts = np.arange(0, len(data), TS_PACKET)
    k = np.searchsorted(positions, starts, side="right") - 1
    at = np.where(k >= 0, times[np.maximum(k, 0)], 0.0)
    return data, at - at.min()


class Player:
    """Hands out the file's bytes in ``size`` chunks as their send time comes."""

    def __init__(self, path: Path, speed: float, size: int = DATAGRAM, once: bool = False) -> None:
        self.data, self.at = schedule(path)
        self.speed, self.size, self.once = speed, size, once
        self._plays = 0
        self._lock = threading.Lock()

    def claim(self) -> bool:
        """May a new client be played to? (``once``: only the first, like a finished event.)"""
        with self._lock:
            self._plays += 1
            return not self.once or self._plays == 1

    def chunks(self, stop: threading.Event | None = None):
        t0 = time.monotonic()
        per = self.size // TS_PACKET
        for i in range(0, len(self.at), per):
            delay = t0 + self.at[i] / self.speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            if stop is not None and stop.is_set():
                return
            yield self.data[i * TS_PACKET : (i + per) * TS_PACKET]


def send_udp(player: Player, port: int, garbage: int, loop: bool) -> None:
    rng = np.random.default_rng(0)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    while True:
        for n, chunk in enumerate(player.chunks(), start=1):
            if garbage and n % garbage == 0:
                chunk = bytearray(chunk)
                at = int(rng.integers(0, max(1, len(chunk) - 100)))
                chunk[at : at + 100] = rng.integers(0, 256, 100, dtype=np.uint8).tobytes()
                sock.sendto(bytes(chunk), ("127.0.0.1", port))
                sock.sendto(
                    rng.integers(0, 256, DATAGRAM, dtype=np.uint8).tobytes(),
                    (
                        "127.0.0.1",
                        port,
                    ),
                )
            else:
                sock.sendto(chunk, ("127.0.0.1", port))
        if not loop:
            return


def serve_http(player: Player, port: int) -> None:
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            request = self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # headers
            if not request.startswith(b"GET") or not player.claim():
                self.wfile.write(b"HTTP/1.0 404 Not Found\r\n\r\n")
                return
            self.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\n\r\n")
            try:
                for chunk in player.chunks():
                    self.wfile.write(chunk)
            except OSError:
                return

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    with Server(("127.0.0.1", port), Handler) as server:
        print(f"listening on {port}", flush=True)
        server.serve_forever()


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("transport", choices=["udp", "http", "rtsp"])
    ap.add_argument("ts", type=Path)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--garbage", type=int, default=0)
    ap.add_argument("--loop", action="store_true")
    ap.add_argument("--once", action="store_true", help="http/rtsp: play to the first client only")
    args = ap.parse_args(argv)
    player = Player(args.ts, args.speed, once=args.once)
    if args.transport == "udp":
        print("sending", flush=True)
        send_udp(player, args.port, args.garbage, args.loop)
    elif args.transport == "http":
        serve_http(player, args.port)
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        from rtsp_server import serve_rtsp

        serve_rtsp(player, args.port)


if __name__ == "__main__":
    main()
