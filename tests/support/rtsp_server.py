"""A minimal RTSP server for the watch tests (loopback only): one MPEG-TS stream over RTP.

No RTSP server package is available from this machine's registries, and FFmpeg can only
*receive* RTSP (``-rtsp_flags listen`` waits for a client that records). This is the part of
RFC 2326 an RTSP client needs to play one stream, as cameras and media servers answer it:

- ``OPTIONS``, ``DESCRIBE`` (an SDP with one ``m=video`` line, static payload type 33
  ``MP2T/90000``: MPEG-TS carried in RTP, RFC 2250), ``SETUP``, ``PLAY``, ``GET_PARAMETER``
  (the clients' keep-alive) and ``TEARDOWN``;
- transports ``RTP/AVP/TCP;interleaved=a-b`` (RTP packets framed as ``$``, channel, 16-bit
  length, on the RTSP connection) and ``RTP/AVP;client_port=a-b`` (RTP datagrams from a
  server port to the client's port on 127.0.0.1);
- each RTP packet carries seven TS packets, with a 90 kHz timestamp of its send time.

On ``PLAY`` the file is played from its start at its own rate (``Player``), each client on
its own. RTCP is not sent; clients of MPEG-TS over RTP take their timing from the stream.
"""

from __future__ import annotations

import re
import socket
import socketserver
import struct
import threading
import time
import uuid

SDP = (
    "v=0\r\n"
    "o=- 0 0 IN IP4 127.0.0.1\r\n"
    "s=anomalyclip test stream\r\n"
    "c=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\n"
    "a=control:*\r\n"
    "m=video 0 RTP/AVP 33\r\n"
    "a=rtpmap:33 MP2T/90000\r\n"
    "a=control:track0\r\n"
)


def rtp_packet(seq: int, timestamp: int, ssrc: int, payload: bytes) -> bytes:
    """Version 2, no padding/extension/CSRC, marker 0, payload type 33."""
    header = struct.pack("!BBHII", 0x80, 33, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
    return header + payload


class _Session:
    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.interleaved: int | None = None  # RTP channel on the RTSP connection
        self.client: tuple[str, int] | None = None  # UDP destination of RTP
        self.udp: socket.socket | None = None
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None


def make_handler(player):
    class Handler(socketserver.StreamRequestHandler):
        def setup(self) -> None:
            super().setup()
            self.lock = threading.Lock()  # responses and interleaved packets share the socket
            self.session: _Session | None = None

        def send(self, data: bytes) -> None:
            with self.lock:
                self.wfile.write(data)
                self.wfile.flush()

        def reply(self, cseq: str, headers: dict | None = None, body: str = "") -> None:
            lines = ["RTSP/1.0 200 OK", f"CSeq: {cseq}"]
            lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
            if body:
                lines += ["Content-Type: application/sdp", f"Content-Length: {len(body)}"]
            self.send(("\r\n".join(lines) + "\r\n\r\n" + body).encode())

        def handle(self) -> None:
            try:
                while True:
                    first = self.rfile.read(1)
                    if not first:
                        return
                    if first == b"$":  # an interleaved RTCP report from the client: skip it
                        _, length = struct.unpack("!BH", self.rfile.read(3))
                        self.rfile.read(length)
                        continue
                    request = (first + self.rfile.readline()).decode("latin-1").strip()
                    headers = {}
                    while (line := self.rfile.readline().decode("latin-1").strip()) != "":
                        key, _, value = line.partition(":")
                        headers[key.strip().lower()] = value.strip()
                    if int(headers.get("content-length", 0)):
                        self.rfile.read(int(headers["content-length"]))
                    self.dispatch(request.split(" ")[0], request, headers)
            except (OSError, struct.error):
                return
            finally:
                self.end_session()

        def dispatch(self, method: str, request: str, headers: dict) -> None:
            cseq = headers.get("cseq", "0")
            url = request.split(" ")[1] if " " in request else ""
            if method == "OPTIONS":
                self.reply(
                    cseq, {"Public": "OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER, TEARDOWN"}
                )
            elif method == "DESCRIBE":
                if not player.claim():  # --once: the stream was played already
                    self.send(f"RTSP/1.0 404 Not Found\r\nCSeq: {cseq}\r\n\r\n".encode())
                    return
                self.reply(cseq, {"Content-Base": url.rstrip("/") + "/"}, SDP)
            elif method == "SETUP":
                self.reply(cseq, self.setup_transport(headers.get("transport", "")))
            elif method == "PLAY":  # reply first: no RTP may precede the answer to PLAY
                self.reply(cseq, {"Session": self.session.id, "Range": "npt=0.000-"})
                self.play()
            elif method == "GET_PARAMETER":
                self.reply(cseq, {"Session": self.session.id} if self.session else {})
            elif method == "TEARDOWN":
                self.end_session()
                self.reply(cseq)
            else:
                self.send(f"RTSP/1.0 501 Not Implemented\r\nCSeq: {cseq}\r\n\r\n".encode())

        def setup_transport(self, transport: str) -> dict:
            self.session = self.session or _Session()
            interleaved = re.search(r"interleaved=(\d+)", transport)
            if "TCP" in transport.upper() and interleaved:
                self.session.interleaved = int(interleaved.group(1))
                chosen = f"RTP/AVP/TCP;unicast;interleaved={interleaved.group(0).split('=')[1]}"
            else:
                ports = re.search(r"client_port=(\d+)(?:-(\d+))?", transport)
                if not ports:
                    raise OSError("SETUP without a usable transport")
                self.session.client = ("127.0.0.1", int(ports.group(1)))
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                udp.bind(("127.0.0.1", 0))
                self.session.udp = udp
                server = udp.getsockname()[1]
                chosen = (
                    f"RTP/AVP;unicast;client_port={ports.group(1)}-"
                    f"{ports.group(2) or int(ports.group(1)) + 1};server_port={server}-{server + 1}"
                )
            return {"Transport": chosen, "Session": f"{self.session.id};timeout=60"}

        def play(self) -> None:
            session = self.session
            if session is None or session.thread is not None:
                return
            session.thread = threading.Thread(target=self.stream, args=(session,), daemon=True)
            session.thread.start()

        def stream(self, session: _Session) -> None:
            ssrc, t0 = 0x5EED1234, time.monotonic()
            try:
                for seq, chunk in enumerate(player.chunks(session.stop)):
                    packet = rtp_packet(seq, int((time.monotonic() - t0) * 90000), ssrc, chunk)
                    if session.interleaved is not None:
                        frame = struct.pack("!cBH", b"$", session.interleaved, len(packet))
                        self.send(frame + packet)
                    else:
                        session.udp.sendto(packet, session.client)
            except OSError:
                return

        def end_session(self) -> None:
            if self.session is not None:
                self.session.stop.set()
                if self.session.udp is not None:
                    self.session.udp.close()
                self.session = None

    return Handler


def serve_rtsp(player, port: int) -> None:
    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    with Server(("127.0.0.1", port), make_handler(player)) as server:
        print(f"listening on {port}", flush=True)
        server.serve_forever()
