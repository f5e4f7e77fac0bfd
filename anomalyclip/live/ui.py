"""``anomaly watch --ui HOST:PORT``: the live page, served from a thread of the watch.

One page (``ui_page/``: plain HTML, CSS and JavaScript shipped with the package, no build
step) shows a tile per camera (its newest frame, its p(A) of the last minutes against the
threshold, its state, its open event) and the recent events with their clips and two
buttons, "confirm" and "false alarm", whose decisions go to ``reviews.jsonl``
(:mod:`anomalyclip.live.reviews`).

The server is Starlette under uvicorn (the ``service`` extra), run by :class:`LivePage` in a
daemon thread of the watch with its own event loop. It only reads what the watch's
:class:`~anomalyclip.live.ui_state.UiState` collected, so it never holds up scoring, and it
serves only:

- ``/``, ``/app.js``, ``/app.css``, ``/icon.svg``: the page's files, read from the package
  at start;
- ``/stream``: server-sent events, the page's updates (``hello``, then a ``tile`` message
  per camera when something of it changed, and ``events`` with the events that changed),
  checked four times a second;
- ``/frame/N``: camera N's newest JPEG, from memory;
- ``/clips/NAME``: a clip, only when NAME is exactly the file name of a clip this watch
  wrote (looked up in a dict: no part of a request's path is ever joined to a folder);
- ``POST /review``: ``{"event": ID, "decision": "confirm" | "false_alarm"}`` as JSON.

Access: on a loopback address (the default, 127.0.0.1) any local client may use it, and the
``Host`` header must name a loopback address (a web page elsewhere cannot reach it through
a rebound DNS name). Any other address needs a token (``--ui-token``), then required in every
request as ``Authorization: Bearer TOKEN`` or a ``token`` query parameter, and compared in
constant time; a request without it gets 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import importlib
import importlib.resources
import ipaddress
import json
import logging
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs

from anomalyclip.errors import AnomalyError

log = logging.getLogger(__name__)

EXTRA = "service"
TOKEN = re.compile(r"[A-Za-z0-9._~-]{16,256}")
TICK = 0.25  # seconds between two looks at the state for each open page
MAX_STREAMS = 32  # pages open at once
_FILES = {"app.js": "text/javascript", "app.css": "text/css", "icon.svg": "image/svg+xml"}
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; media-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class UiConfig:
    """Where the page is served, and the token every request must carry (None: none)."""

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = None


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: where it points is not ours to trust


def parse_ui(address: str, token: str | None = None) -> UiConfig:
    """``--ui HOST:PORT`` (``PORT`` alone: 127.0.0.1; ``[::1]:PORT`` for IPv6) and
    ``--ui-token``, checked: a one-line error for a bad address, a weak token, or a
    non-loopback address without a token."""
    m = re.fullmatch(r"(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]*)):(\d{1,5})|(\d{1,5})", address.strip())
    port = int(next((g for g in (m.group(3), m.group(4)) if g), -1)) if m else -1
    if not 0 <= port <= 65535:
        raise AnomalyError(f"--ui {address}: expected HOST:PORT (127.0.0.1:8080, [::1]:8080)")
    host = (m.group(1) or m.group(2) or "127.0.0.1") if m.group(3) else "127.0.0.1"
    if token is not None and not TOKEN.fullmatch(token):
        raise AnomalyError(
            "--ui-token: 16 to 256 characters of A-Z a-z 0-9 . _ ~ - (for example "
            "python -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )
    if token is None and not is_loopback(host):
        raise AnomalyError(
            f"--ui {address}: an address other than the loopback needs --ui-token (then "
            "required in every request)"
        )
    return UiConfig(host, port, token)


def require_service() -> None:
    """A one-line error when the server's packages are missing."""
    for module in ("starlette", "uvicorn"):
        try:
            importlib.import_module(module)
        except ImportError:
            raise AnomalyError(
                f"--ui: {module} is not installed; the live page needs the '{EXTRA}' extra "
                f"(pip install 'anomalyclip[{EXTRA}]')"
            ) from None


def listen(cfg: UiConfig) -> socket.socket:
    """The page's listening socket, bound now (before the model loads: an address in use is
    a one-line error at once). Port 0 takes a free one."""
    family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((cfg.host, cfg.port))
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise AnomalyError(
            f"--ui {cfg.host}:{cfg.port}: cannot listen there ({exc.strerror or exc})"
        ) from exc
    sock.set_inheritable(False)
    return sock


def open_page(address: str | None, token: str | None) -> socket.socket | None:
    """``--ui`` and ``--ui-token`` checked and the page's socket bound (None without
    ``--ui``); the page's address on stderr."""
    if address is None:
        if token is not None:
            raise AnomalyError("--ui-token: only with --ui")
        return None
    cfg = parse_ui(address, token)
    require_service()
    sock = listen(cfg)
    log.info("live page at %s", page_url(sock))
    return sock


def page_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}/"


class _Guard:
    """ASGI middleware: the token (when there is one), else a loopback ``Host``."""

    def __init__(self, app, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope, receive, send) -> None:
        from starlette.responses import PlainTextResponse

        if scope["type"] == "http" and not self._allowed(scope):
            code, text = (401, "unauthorized") if self.token else (403, "forbidden host")
            response = PlainTextResponse(text, code, headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, scope) -> bool:
        headers = dict(scope["headers"])
        if self.token is None:
            host = headers.get(b"host", b"").decode("latin-1")
            return is_loopback(re.sub(r":\d+$", "", host))
        given = ""
        auth = headers.get(b"authorization", b"").decode("latin-1")
        if auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        else:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = query.get("token", [""])[0]
        return hmac.compare_digest(given.encode(), self.token.encode())


class _Site:
    """The page's endpoints over ``state`` (a ``UiState``)."""

    def __init__(self, state, token: str | None, closing: threading.Event) -> None:
        self.state, self.closing, self.streams = state, closing, 0
        folder = importlib.resources.files("anomalyclip.live") / "ui_page"
        query = f"?token={token}" if token else ""  # the token's characters need no quoting
        self.html = (folder / "index.html").read_text("utf-8").replace("__QUERY__", query)
        self.files = {name: (folder / name).read_bytes() for name in _FILES}

    async def page(self, request):
        from starlette.responses import Response

        return Response(self.html, media_type="text/html; charset=utf-8", headers=_HEADERS)

    async def asset(self, request):
        from starlette.responses import Response

        name = request.url.path.lstrip("/")
        return Response(self.files[name], media_type=_FILES[name], headers=_HEADERS)

    async def frame(self, request):
        from starlette.responses import Response

        jpeg = self.state.frame(request.path_params["camera"])
        if jpeg is None:
            return Response("no frame", 404, media_type="text/plain")
        return Response(jpeg, media_type="image/jpeg", headers=_HEADERS)

    async def clip(self, request):
        from starlette.responses import FileResponse, Response

        path = self.state.clip(request.path_params["name"])
        if path is None or not path.is_file():
            return Response("no such clip", 404, media_type="text/plain")
        return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "no-store"})

    async def stream(self, request):
        from starlette.responses import Response, StreamingResponse

        if self.streams >= MAX_STREAMS:
            return Response("too many pages open", 503, media_type="text/plain")
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(self._events(), media_type="text/event-stream", headers=headers)

    async def review(self, request):
        from starlette.responses import JSONResponse

        from anomalyclip.live.reviews import DECISIONS

        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":  # also what keeps other sites' plain forms out
            return JSONResponse({"error": "expected application/json"}, 415)
        try:
            data = json.loads(await _body(request, 4096))
            event, decision = str(data["event"]), str(data["decision"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'expected {"event": ID, "decision": ...}'}, 400)
        if decision not in DECISIONS:
            return JSONResponse({"error": f"decision: one of {', '.join(DECISIONS)}"}, 400)
        client = request.client.host if request.client else None
        try:
            return JSONResponse(self.state.review(event, decision, client))
        except KeyError:
            return JSONResponse({"error": f"no event {event!r} in the list"}, 404)
        except OSError as exc:
            return JSONResponse({"error": str(exc)}, 503)

    async def _events(self):
        """The server-sent events of one open page."""
        from anomalyclip.live.ui_state import Cursor

        self.streams += 1
        try:
            yield _message("hello", self.state.hello())
            cursor, quiet = Cursor(), 0.0
            while not self.closing.is_set():
                tiles, events = self.state.updates(cursor)
                for tile in tiles:
                    yield _message("tile", tile)
                if events:
                    yield _message("events", events)
                quiet = 0.0 if tiles or events else quiet + TICK
                if quiet >= 15.0:  # a comment now and then keeps proxies from closing it
                    quiet = 0.0
                    yield ": still here\n\n"
                await asyncio.sleep(TICK)
        finally:
            self.streams -= 1


def build_app(state, token: str | None, closing: threading.Event):
    """The page's Starlette application over ``state`` (a ``UiState``)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Route

    site = _Site(state, token, closing)
    routes = [Route("/", site.page), *(Route(f"/{name}", site.asset) for name in _FILES),
              Route("/stream", site.stream), Route("/frame/{camera:int}", site.frame),
              Route("/clips/{name}", site.clip),
              Route("/review", site.review, methods=["POST"])]  # fmt: skip
    app = Starlette(routes=routes, middleware=[Middleware(_Guard, token=token)])
    app.router.redirect_slashes = False  # a path is served as asked, or not at all
    return app


async def _body(request, limit: int) -> bytes:
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            return b""  # too long: read as not JSON
    return data


def _message(kind: str, data) -> str:
    return f"event: {kind}\ndata: {json.dumps(data, allow_nan=False, separators=(',', ':'))}\n\n"


class LivePage:
    """The page's server in a daemon thread: :meth:`start`, then :meth:`stop` (open pages'
    streams end, uvicorn shuts down within a few seconds)."""

    def __init__(self, state, sock: socket.socket, token: str | None = None) -> None:
        import uvicorn

        self.sock, self.url = sock, page_url(sock)
        self.closing = threading.Event()
        app = build_app(state, token, self.closing)
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                lifespan="off", ws="none", server_header=False,
                                timeout_graceful_shutdown=2)  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="ui", daemon=True)
        self.native_id: int | None = None  # the server thread's, once it runs (benchmarks)

    def _run(self) -> None:
        self.native_id = threading.get_native_id()
        try:
            self.server.run(sockets=[self.sock])
        except Exception:  # noqa: BLE001 - the page failing must not end the watch
            log.exception("the live page's server stopped")

    def start(self) -> LivePage:
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self.closing.set()
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(1.0)
        self.sock.close()


@contextlib.contextmanager
def serving(state, sock: socket.socket | None, token: str | None = None) -> Iterator[None]:
    """Serve the page over ``state`` while the block runs (nothing when ``sock`` is None)."""
    if sock is None:
        yield
        return
    page = LivePage(state, sock, token).start()
    try:
        yield
    finally:
        page.stop()
