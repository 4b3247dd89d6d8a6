"""The gateway's HTTP endpoint (stdlib asyncio, no framework).

- ``/health``: 200 when every device answers and no sink's backlog is older than its limit, else 503;
  the JSON body says which device or sink is unhealthy and why.
- ``/metrics``: Prometheus text format, from the one registry every component records into.
- ``/api/tags``: value, quality and timestamp of every tag (``?q=`` filter, ``offset``, ``limit``,
  ``history=1`` for sparkline points); ``/api/status``: devices and sinks.
- ``/``: the status page (one static file, no build step; it polls the two APIs).

Deliberately small: GET/HEAD only, one request per connection, bounded header size, optional basic auth.
A port that is taken is logged and the gateway runs on without the endpoint: collection matters more.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.config.site import HttpConfig
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.redact import redact
from gateway.status import StatusBoard

Response = tuple[int, str, bytes]
Route = Callable[[dict[str, list[str]]], Awaitable[Response]]
MAX_HEADER = 16 * 1024
REASONS = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
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
        self.port: int | None = None
        self._page_bytes: bytes | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.config.bind, self.config.port)
        except OSError as exc:
            self.log.error("http endpoint not started", bind=self.config.bind, port=self.config.port,
                           error=exc.strerror or str(exc))
            return
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
        ok, body = self.board.health()
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
    def _authorised(self, path: str, head: bytes) -> bool:
        if self._auth is None or (path == "/health" and self.config.public_health):
            return True
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"authorization":
                return hmac.compare_digest(value.strip(), self._auth)
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
            elif not self._authorised(path, head):
                status, ctype, body = 401, "text/plain", b"authentication required\n"
                extra = 'WWW-Authenticate: Basic realm="edge-gateway"\r\n'
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
