"""The gateway's HTTP endpoint (aiohttp's server: ``aiohttp.web`` behind an ``AppRunner`` and a ``TCPSite``).

- ``/health``: 200 when every device answers, no sink's backlog is older than its limit, no sink reports
  a problem (a reconnect loop, a refused login, failing writes) and no data was dropped within
  ``health_window``; else 503. The body is only the status and one short reason per problem (no hosts,
  no counts), so it can be served without auth; ``/api/status`` has the detail.
- ``/metrics``: Prometheus text format, from the one registry every component records into.
- ``/api/tags``: value, quality and timestamp of every tag (``?q=`` filter, ``offset``, ``limit``,
  ``history=1`` for sparkline points); ``/api/status``: devices and sinks.
- ``/``: the status page (one static file, no build step; it polls the two APIs).

Deliberately small: GET/HEAD only (405 with ``Allow`` otherwise, 404 for any other path), keep-alive
connections closed after ``IDLE_TIMEOUT`` of silence, bounded request line and header fields, no access
log. Optional basic auth (a middleware; ``/health`` stays public unless ``public_health: false``) with
wrong passwords rate-limited per client address. A handler that raises answers 500 with a short body and
logs the traceback; the server keeps serving. A port that is taken stops the start (``HttpPortTaken``): a
second gateway must not run beside the first.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.config.site import HttpConfig
from gateway.errors import HttpPortTaken
from gateway.history import MAX_BUCKETS, RANGES, History, HistoryUnavailable, render_svg
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.redact import redact
from gateway.status import StatusBoard, iso
from gateway.values import finite

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
MAX_LINE = 8 * 1024
"""Longest request line and longest single header field (name and value) accepted; longer answers 400."""
IDLE_TIMEOUT = 10.0
"""Seconds a connection may sit without a complete request (before the first one or between two)."""
STOP_TIMEOUT = 1.0
"""At stop, how long a request still being answered may take before its connection is closed anyway."""
ALLOWED = "GET, HEAD"
JSON = "application/json"
LOGIN_FAILURES = 5
"""Wrong passwords from one address within ``LOGIN_WINDOW`` seconds before it is refused for a while."""
LOGIN_WINDOW = 60.0
LOCKOUT_FIRST, LOCKOUT_MAX = 30.0, 900.0


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


class _ClientFaults(logging.Filter):
    """aiohttp's connection-level logger reports a malformed request (garbage, a request line or header
    over ``MAX_LINE``) with a traceback, mostly as an error; it is the client's fault and already answered
    400, so it becomes one line, at warning at most, without traceback or request text. Anything else
    aiohttp reports keeps its level and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            client = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            # the class only: the message quotes the request (a header line could hold a credential)
            record.msg, record.args = "http: bad request from %s (%s)", (client, type(exc).__name__)
            if record.levelno > logging.WARNING:
                record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info, record.exc_text = None, None
            return _PROTOCOL_LOG.isEnabledFor(record.levelno)
        return True


_PROTOCOL_LOG = logging.getLogger("gateway.http.protocol")
_PROTOCOL_LOG.addFilter(_ClientFaults())
_LAST_MS = (2**63 - 1) // 1_000_000
"""The last ms a zoom may reach: times are int64 ns in the store."""


def _answer(status: int, ctype: str, body: bytes, headers: Mapping[str, str] | None = None) -> web.Response:
    # aiohttp leaves the body out of a HEAD answer and keeps its Content-Length
    return web.Response(status=status, body=body,
                        headers={"Content-Type": ctype, "Cache-Control": "no-store", **(headers or {})})


async def _server_header(_: web.Request, response: web.StreamResponse) -> None:
    # aiohttp's default names the Python and aiohttp versions, on pages served without auth
    response.headers["Server"] = "edge-gateway"


def _text(status: int, text: str, headers: Mapping[str, str] | None = None) -> web.Response:
    return _answer(status, "text/plain", text.encode(), headers)


def _json(status: int, body: Any) -> web.Response:
    # redacted as text: a credential in any URL a component reports (an error, a target) never leaves
    return _answer(status, JSON, redact(json.dumps(body, separators=(",", ":"))).encode())


def _int(query: Mapping[str, str], key: str, default: int | None) -> int | None:
    try:
        return max(0, int(query[key]))
    except (KeyError, ValueError):
        return default


class HttpEndpoint:
    def __init__(self, config: HttpConfig, metrics: Metrics, board: StatusBoard | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.board = board
        self.log = get_logger("gateway.http")
        self.routes: dict[str, Handler] = {"/metrics": self._metrics}
        if board is not None:
            self.routes |= {"/health": self._health, "/api/tags": self._tags, "/api/status": self._status,
                            "/api/history": self._history, "/api/history.svg": self._history_svg, "/": self._page}
        self._auth: bytes | None = None
        if config.username is not None and config.password is not None:
            token = f"{config.username}:{config.password.get_secret_value()}".encode()
            self._auth = b"Basic " + base64.b64encode(token)
        self._runner: web.AppRunner | None = None
        self._logins = _Logins()
        self.port: int | None = None
        self._page_bytes: bytes | None = None

    async def start(self) -> None:
        app = web.Application(middlewares=[self._fail_safe, self._gate])
        app.on_response_prepare.append(_server_header)
        for path, handler in self.routes.items():
            app.router.add_get(path, handler)  # HEAD too
        runner = web.AppRunner(
            app, access_log=None, logger=_PROTOCOL_LOG, shutdown_timeout=STOP_TIMEOUT,
            keepalive_timeout=IDLE_TIMEOUT, max_line_size=MAX_LINE, max_field_size=MAX_LINE,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.config.bind, self.config.port).start()
        except OSError as exc:
            await runner.cleanup()
            raise HttpPortTaken(
                f"http port {self.config.bind}:{self.config.port} is taken ({exc.strerror or exc}); is another"
                " gateway running? set http.port, or http.enabled: false") from None
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self.log.info("http endpoint listening", url=f"http://{self.config.bind}:{self.port}/")

    async def stop(self) -> None:
        """Stop listening and close every connection (one still answering gets ``STOP_TIMEOUT``)."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # --- routes ---------------------------------------------------------------------------------
    async def _metrics(self, _: web.Request) -> web.Response:
        return _answer(200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry))

    async def _health(self, _: web.Request) -> web.Response:
        assert self.board is not None
        ok, body = self.board.public_health()
        return _json(200 if ok else 503, body)

    async def _status(self, _request: web.Request) -> web.Response:
        assert self.board is not None
        _, body = self.board.health()
        body["tag_count"] = self.board.live.count()
        return _json(200, body)

    async def _tags(self, request: web.Request) -> web.Response:
        assert self.board is not None
        query = request.query
        body = self.board.tags(
            query.get("q", ""), _int(query, "offset", 0) or 0, _int(query, "limit", None),
            history=query.get("history", "0") in ("1", "true"),
        )
        return _json(200, body)

    async def _history(self, request: web.Request) -> web.Response:
        found = await self._read_history(request)
        if isinstance(found, web.Response):
            return found
        return _json(200, {
            "source": found.source, "device": found.device, "tag": found.tag, "unit": found.unit,
            "since": iso(found.since_ns), "until": iso(found.until_ns), "bucket_s": found.width_ns / 1e9,
            "numeric": found.numeric,
            # [start ms, mean, min, max, worst quality, points]
            "buckets": [[b.start_ns // 1_000_000, finite(b.mean), finite(b.low), finite(b.high), b.quality.label,
                         b.count] for b in found.buckets],
        })

    async def _history_svg(self, request: web.Request) -> web.Response:
        found = await self._read_history(request)
        if isinstance(found, web.Response):
            return found
        return _answer(200, "image/svg+xml; charset=utf-8", render_svg(found).encode())

    async def _read_history(self, request: web.Request) -> History | web.Response:
        """The history a request asks for: ``source``, ``device``, ``tag`` and ``range`` (15m, 1h, 24h) or
        ``since``/``until`` (ms since the epoch: a zoom); or the error answer."""
        assert self.board is not None
        q = request.query
        source, device, tag = q.get("source", ""), q.get("device", ""), q.get("tag", "")
        if not (source and device and tag):
            return _json(400, {"error": "source, device and tag are required"})
        store = self.board.history
        if store is None:
            return _json(404, {"error": "no local store configured: add a sqlite sink to keep history"})
        now_ns = time.time_ns()
        if "since" in q or "until" in q:
            since, until = _int(q, "since", None), _int(q, "until", None)
            if since is None or until is None or not 0 <= since < until <= _LAST_MS or until - since < 1000:
                return _json(400, {"error": "since and until are ms since the epoch (before 2262), since < until, "
                                            "1 s apart"})
            since_ns, until_ns = since * 1_000_000, until * 1_000_000
        else:
            span = RANGES.get(q.get("range", "15m"))
            if span is None:
                return _json(400, {"error": f"range is one of {', '.join(RANGES)}"})
            since_ns, until_ns = now_ns - span * 1_000_000_000, now_ns
        try:
            found = await store.history(source, device, tag, since_ns, until_ns, MAX_BUCKETS)
        except HistoryUnavailable as exc:
            self.log.warning("history unavailable", error=str(exc))
            return _json(503, {"error": str(exc)})
        if found is None:
            return _json(404, {"error": f"no history of {source}.{device}.{tag} in the local store"})
        return found

    async def _page(self, _: web.Request) -> web.Response:
        if self._page_bytes is None:
            self._page_bytes = resources.files("gateway.web").joinpath("status.html").read_bytes()
        return _answer(200, "text/html; charset=utf-8", self._page_bytes)

    # --- middleware -----------------------------------------------------------------------------
    @web.middleware
    async def _fail_safe(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The outermost layer: a handler that raises answers 500 (no traceback to the client) and is logged
        with its traceback; the connection and the server carry on."""
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:
            self.log.exception("http request failed", method=request.method, path=request.path)
            return _text(500, "internal server error\n")

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Method, path, then auth: 405 and 404 are answered before credentials are asked for."""
        if request.method not in ("GET", "HEAD"):
            return _text(405, "method not allowed\n", {"Allow": ALLOWED})
        if request.match_info.http_exception is not None:
            return _text(404, "not found\n")
        auth = self._authorised(request)
        if auth is False:
            return _text(401, "authentication required\n", {"WWW-Authenticate": 'Basic realm="edge-gateway"'})
        if auth is not True:
            return _text(429, "too many wrong passwords; try again later\n", {"Retry-After": str(math.ceil(auth))})
        return await handler(request)

    def _authorised(self, request: web.Request) -> bool | float:
        """True, False (ask for credentials) or the seconds this address must wait (rate-limited)."""
        if self._auth is None or (self.config.public_health and _route_path(request) == "/health"):
            return True
        addr = request.remote or "?"
        now = time.monotonic()
        wait = self._logins.retry_after(addr, now)
        if wait > 0:
            return wait
        given = request.headers.get("Authorization")
        if given is None:
            return False
        if hmac.compare_digest(given.strip().encode("utf-8", "replace"), self._auth):
            self._logins.succeeded(addr)
            return True
        locked = self._logins.failed(addr, now)
        if locked is not None:
            self.log.warning("status page: wrong passwords; address refused for a while", client=addr,
                             seconds=locked)
            return locked
        return False


def _route_path(request: web.Request) -> str | None:
    """The path of the route the request was dispatched to (what the router matched, not the raw target)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else None
