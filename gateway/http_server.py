"""The gateway's HTTP endpoint (stdlib asyncio, no framework).

- ``/health``: 200 when every device answers, no sink's backlog is older than its limit, no sink reports
  a problem (a reconnect loop, a refused login, failing writes) and no data was dropped within
  ``health_window``; else 503. The body is only the status and one short reason per problem (no hosts,
  no counts), so it can be served without auth; ``/api/status`` has the detail.
- ``/metrics``: Prometheus text format, from the one registry every component records into.
- ``/api/tags``: value, quality and timestamp of every tag (``?q=`` filter, ``offset``, ``limit``,
  ``history=1`` for sparkline points); ``/api/status``: devices and sinks.
- ``/``: the status page (one static file, no build step; it polls the two APIs).

Deliberately small: GET/HEAD only, one request per connection, bounded header size, optional basic auth
with wrong passwords rate-limited per client address. A port that is taken stops the start
(``HttpPortTaken``): a second gateway must not run beside the first.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import math
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.config.site import HttpConfig
from gateway.errors import GatewayError
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.redact import redact
from gateway.status import StatusBoard

Response = tuple[int, str, bytes]
Route = Callable[[dict[str, list[str]]], Awaitable[Response]]
MAX_HEADER = 16 * 1024
REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 429: "Too Many Requests",
           503: "Service Unavailable"}
LOGIN_FAILURES = 5
"""Wrong passwords from one address within ``LOGIN_WINDOW`` seconds before it is refused for a while."""
LOGIN_WINDOW = 60.0
LOCKOUT_FIRST, LOCKOUT_MAX = 30.0, 900.0


class HttpPortTaken(GatewayError):
    """The configured HTTP port is in use (most likely by another gateway)."""


class _Logins:
    """Wrong-password bookkeeping per client address: after ``LOGIN_FAILURES`` within ``LOGIN_WINDOW`` the
    address is refused (429) for ``LOCKOUT_FIRST`` seconds, doubling with every further lockout."""

    def __init__(self) -> None:
        self._fails: dict[str, list[float]] = {}
        self._locked: dict[str, tuple[float, float]] = {}  # address -> (until, length)

    def retry_after(self, addr: str, now: float) -> float:
        until, _ = self._locked.get(addr, (0.0, 0.0))
        return max(0.0, until - now)

    def failed(self, addr: str, now: float) -> float | None:
        """Record a wrong password; returns the lockout length when this one starts a lockout."""
        fails = [t for t in self._fails.get(addr, []) if now - t < LOGIN_WINDOW] + [now]
        self._fails[addr] = fails
        if len(fails) < LOGIN_FAILURES:
            return None
        _, last = self._locked.get(addr, (0.0, 0.0))
        length = min(LOCKOUT_MAX, last * 2 if last else LOCKOUT_FIRST)
        self._locked[addr] = (now + length, length)
        self._fails[addr] = []
        if len(self._locked) > 10_000:  # bounded: forget the longest-expired lockouts
            for key in sorted(self._locked, key=lambda k: self._locked[k][0])[:5_000]:
                del self._locked[key]
        return length

    def succeeded(self, addr: str) -> None:
        self._fails.pop(addr, None)
        self._locked.pop(addr, None)
JSON = "application/json"


def _json(status: int, body: Any) -> Response:
    # redacted as text: a credential in any URL a component reports (an error, a target) never leaves
    return status, JSON, redact(json.dumps(body, separators=(",", ":"))).encode()


def _int(query: dict[str, list[str]], key: str, default: int | None) -> int | None:
    try:
        return max(0, int(query[key][0]))
    except (KeyError, ValueError, IndexError):
        return default


class HttpEndpoint:
    def __init__(self, config: HttpConfig, metrics: Metrics, board: StatusBoard | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.board = board
        self.log = get_logger("gateway.http")
        self.routes: dict[str, Route] = {"/metrics": self._metrics}
        if board is not None:
            self.routes |= {"/health": self._health, "/api/tags": self._tags, "/api/status": self._status,
                            "/": self._page}
        self._auth: bytes | None = None
        if config.username is not None and config.password is not None:
            token = f"{config.username}:{config.password.get_secret_value()}".encode()
            self._auth = b"Basic " + base64.b64encode(token)
        self._server: asyncio.Server | None = None
        self._logins = _Logins()
        self.port: int | None = None
        self._page_bytes: bytes | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.config.bind, self.config.port)
        except OSError as exc:
            raise HttpPortTaken(
                f"http port {self.config.bind}:{self.config.port} is taken ({exc.strerror or exc}); is another"
                " gateway running? set http.port, or http.enabled: false") from None
        self.port = self._server.sockets[0].getsockname()[1]
        self.log.info("http endpoint listening", url=f"http://{self.config.bind}:{self.port}/")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    # --- routes ---------------------------------------------------------------------------------
    async def _metrics(self, _: dict[str, list[str]]) -> Response:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)

    async def _health(self, _: dict[str, list[str]]) -> Response:
        assert self.board is not None
        ok, body = self.board.public_health()
        return _json(200 if ok else 503, body)

    async def _status(self, query: dict[str, list[str]]) -> Response:
        assert self.board is not None
        _, body = self.board.health()
        body["tag_count"] = self.board.live.count()
        return _json(200, body)

    async def _tags(self, query: dict[str, list[str]]) -> Response:
        assert self.board is not None
        body = self.board.tags(
            query.get("q", [""])[0], _int(query, "offset", 0) or 0, _int(query, "limit", None),
            history=query.get("history", ["0"])[0] in ("1", "true"),
        )
        return _json(200, body)

    async def _page(self, _: dict[str, list[str]]) -> Response:
        if self._page_bytes is None:
            self._page_bytes = resources.files("gateway.web").joinpath("status.html").read_bytes()
        return 200, "text/html; charset=utf-8", self._page_bytes

    # --- plumbing -------------------------------------------------------------------------------
    def _authorised(self, path: str, head: bytes, addr: str) -> bool | float:
        """True, False (ask for credentials) or the seconds this address must wait (rate-limited)."""
        if self._auth is None or (path == "/health" and self.config.public_health):
            return True
        now = time.monotonic()
        wait = self._logins.retry_after(addr, now)
        if wait > 0:
            return wait
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"authorization":
                if hmac.compare_digest(value.strip(), self._auth):
                    self._logins.succeeded(addr)
                    return True
                locked = self._logins.failed(addr, now)
                if locked is not None:
                    self.log.warning("status page: wrong passwords; address refused for a while", client=addr,
                                     seconds=locked)
                    return locked
                return False
        return False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            if len(head) > MAX_HEADER:
                raise ValueError("header too large")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            path, _, qs = target.partition("?")
            route = self.routes.get(path)
            extra = ""
            if method not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"method not allowed\n"
            elif route is None:
                status, ctype, body = 404, "text/plain", b"not found\n"
            elif (auth := self._authorised(path, head, _peer(writer))) is not True:
                if auth is False:
                    status, ctype, body = 401, "text/plain", b"authentication required\n"
                    extra = 'WWW-Authenticate: Basic realm="edge-gateway"\r\n'
                else:
                    status, ctype, body = 429, "text/plain", b"too many wrong passwords; try again later\n"
                    extra = f"Retry-After: {math.ceil(auth)}\r\n"
            else:
                status, ctype, body = await route(parse_qs(qs))
            writer.write(
                f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n{extra}Connection: close\r\n\r\n"
                .encode("latin-1")
            )
            if method != "HEAD":
                writer.write(body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError, OSError):
            pass  # a client that hangs up or sends garbage gets nothing more
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else "?"
