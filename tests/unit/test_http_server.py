"""The HTTP endpoint on its own, on 127.0.0.1 port 0: keep-alive, GET/HEAD only, 404, basic auth with the
wrong-password lockout, a failing handler answering 500 while the server carries on, bounded headers, a
taken port, and a stop that closes every connection."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest

from gateway.config.site import HttpConfig
from gateway.history import History, HistoryUnavailable
from gateway.http_server import LOCKOUT_FIRST, HttpEndpoint, HttpPortTaken, _Logins
from gateway.live import LiveTags
from gateway.logs import configure_logging
from gateway.metrics import Metrics
from gateway.status import StatusBoard

SECRET = "s3cr3t-pw"
Start = Callable[..., Awaitable[HttpEndpoint]]


class Board(StatusBoard):
    """A healthy status board with nothing configured (what it judges is tested elsewhere), that can be
    made to fail."""

    def __init__(self) -> None:
        super().__init__(dict, list, LiveTags(0), Metrics(), device_grace=0.0)
        self.broken = False

    def health(self) -> tuple[bool, dict[str, Any]]:
        if self.broken:
            raise RuntimeError("the board is broken")
        return True, {"status": "ok", "problems": [], "devices": [], "sinks": []}


@pytest.fixture
def logs() -> Iterator[io.StringIO]:
    """The project's logging, as JSON lines into a buffer; the root logger is put back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    started: list[HttpEndpoint] = []

    async def run(board: StatusBoard | None = None, **http: Any) -> HttpEndpoint:
        endpoint = HttpEndpoint(HttpConfig(port=0, **http), Metrics(), board if board is not None else Board())
        await endpoint.start()
        started.append(endpoint)
        return endpoint

    yield run
    for endpoint in started:
        await endpoint.stop()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes,
                   head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    """One request and its answer on an open connection (HTTP/1.1, body by Content-Length)."""
    writer.write(request)
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    size = 0 if head_only else int(headers.get("content-length", "0"))
    body = await asyncio.wait_for(reader.readexactly(size), 5)
    return int(status_line.split(" ")[1]), headers, body


async def test_keep_alive_answers_several_requests_on_one_connection(start: Start) -> None:
    endpoint = await start()
    created: list[object] = []
    reused: list[object] = []
    trace = aiohttp.TraceConfig()

    async def on_create(session: aiohttp.ClientSession, ctx: object, params: object) -> None:
        created.append(params)

    async def on_reuse(session: aiohttp.ClientSession, ctx: object, params: object) -> None:
        reused.append(params)

    trace.on_connection_create_end.append(on_create)
    trace.on_connection_reuseconn.append(on_reuse)
    base = f"http://127.0.0.1:{endpoint.port}"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), trace_configs=[trace],
                                     timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(f"{base}/health") as r:
            assert r.status == 200 and await r.json() == {"status": "ok", "problems": []}
        async with session.get(f"{base}/api/status") as r:
            assert r.status == 200 and (await r.json())["tag_count"] == 0
        async with session.get(f"{base}/metrics") as r:
            assert r.status == 200 and "edgegw_" in await r.text()
    assert len(created) == 1 and len(reused) == 2

    # The same on a raw socket: two answers, one connection, kept open after both.
    reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
    try:
        status, headers, body = await exchange(reader, writer, b"GET /health HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert status == 200 and json.loads(body)["status"] == "ok"
        assert headers["cache-control"] == "no-store" and headers.get("connection", "").lower() != "close"
        status, headers, body = await exchange(reader, writer, b"GET / HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert status == 200 and headers["content-type"] == "text/html; charset=utf-8" and b"<html" in body
    finally:
        writer.close()
        await writer.wait_closed()


async def test_get_and_head_only_and_404_for_unknown_paths(start: Start) -> None:
    endpoint = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
    try:
        for request in (b"POST /api/status HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}",
                        b"DELETE /nope HTTP/1.1\r\nHost: gw\r\n\r\n"):
            status, headers, body = await exchange(reader, writer, request)
            assert (status, headers["allow"], body) == (405, "GET, HEAD", b"method not allowed\n")
        status, headers, body = await exchange(reader, writer, b"GET /nope HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (status, body) == (404, b"not found\n")
        assert headers["server"] == "edge-gateway"  # no library versions on an unauthenticated page
        status, _, body = await exchange(reader, writer, b"GET /health/ HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert status == 404
        status, headers, _ = await exchange(reader, writer, b"HEAD /health HTTP/1.1\r\nHost: gw\r\n\r\n",
                                            head_only=True)
        assert status == 200 and headers["content-type"] == "application/json"
        assert headers["server"] == "edge-gateway"
        assert int(headers["content-length"]) == len(b'{"status":"ok","problems":[]}')
        # no body came after the HEAD answer: the next answer starts right away
        status, _, body = await exchange(reader, writer, b"GET /api/tags?q=x&offset=2&limit=zz&history=1 "
                                                         b"HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert status == 200 and json.loads(body) == {"total": 0, "offset": 2, "tags": []}
    finally:
        writer.close()
        await writer.wait_closed()


async def test_a_failing_handler_answers_500_is_logged_and_the_server_carries_on(
        start: Start, logs: io.StringIO) -> None:
    board = Board()
    endpoint = await start(board)
    board.broken = True
    reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
    try:
        status, _, body = await exchange(reader, writer, b"GET /api/status HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert (status, body) == (500, b"internal server error\n")  # no traceback, no message
        # the same connection still answers
        status, _, _ = await exchange(reader, writer, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert status == 200
    finally:
        writer.close()
        await writer.wait_closed()
    board.broken = False
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
            session.get(f"http://127.0.0.1:{endpoint.port}/api/status") as r:
        assert r.status == 200
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    (failed,) = [line for line in lines if line["event"] == "http request failed"]
    assert failed["level"] == "error" and failed["logger"] == "gateway.http"
    assert failed["method"] == "GET" and failed["path"] == "/api/status"
    assert failed["exception"][0]["exc_type"] == "RuntimeError"
    assert failed["exception"][0]["exc_value"] == "the board is broken"
    assert failed["exception"][0]["frames"]  # the traceback
    assert not [line for line in lines if line["logger"].startswith("aiohttp")]  # no access log


async def test_basic_auth_rate_limits_wrong_passwords_and_keeps_health_public(start: Start) -> None:
    endpoint = await start(username="admin", password=SECRET)
    base = f"http://127.0.0.1:{endpoint.port}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

        async def get(path: str, auth: str | None = None) -> aiohttp.ClientResponse:
            async with session.get(base + path, headers={"Authorization": auth} if auth else {}) as r:
                await r.read()
                return r

        r = await get("/metrics")
        assert r.status == 401 and r.headers["WWW-Authenticate"] == 'Basic realm="edge-gateway"'
        assert (await get("/nope")).status == 404
        assert (await get("/health")).status == 200
        assert (await get("/metrics", basic("admin", SECRET))).status == 200
        assert (await get("/", "Bearer \u00e9t\u00e9")).status == 401  # not ASCII: refused, never an error
        codes = [(await get("/api/status", basic("admin", f"guess{i}"))).status for i in range(4)]
        assert codes == [401, 401, 401, 429]  # five wrong within a minute, counting the one above
        r = await get("/api/status", basic("admin", SECRET))
        assert r.status == 429 and 29 <= int(r.headers["Retry-After"]) <= LOCKOUT_FIRST  # the right one waits
        assert (await get("/health")).status == 200  # never locked out


async def test_health_needs_auth_when_not_public(start: Start) -> None:
    endpoint = await start(username="admin", password=SECRET, public_health=False)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(f"http://127.0.0.1:{endpoint.port}/health") as r:
            assert r.status == 401
        async with session.get(f"http://127.0.0.1:{endpoint.port}/health",
                               headers={"Authorization": basic("admin", SECRET)}) as r:
            assert r.status == 200


def test_lockouts_double_up_to_the_maximum() -> None:
    logins = _Logins()
    now, lengths = 0.0, []
    for _ in range(7):
        for _ in range(4):
            assert logins.failed("10.0.0.9", now) is None
        length = logins.failed("10.0.0.9", now)
        assert length is not None and logins.retry_after("10.0.0.9", now) == length
        assert logins.retry_after("10.0.0.8", now) == 0  # per address
        lengths.append(length)
        now += length + 1
    assert lengths == [30, 60, 120, 240, 480, 900, 900]
    logins.succeeded("10.0.0.9")
    assert logins.retry_after("10.0.0.9", now - 500) == 0


async def test_an_oversized_header_is_refused_and_the_server_carries_on(start: Start, logs: io.StringIO) -> None:
    endpoint = await start()
    reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
    try:
        big = b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
        status, _, _ = await exchange(reader, writer, big)
        assert status == 400
    finally:
        writer.close()
        await writer.wait_closed()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session, \
            session.get(f"http://127.0.0.1:{endpoint.port}/health") as r:
        assert r.status == 200
    lines = [json.loads(line) for line in logs.getvalue().splitlines()]
    (bad,) = [line for line in lines if line["event"].startswith("http: bad request")]
    assert bad["event"] == "http: bad request from 127.0.0.1 (LineTooLong)"
    assert bad["level"] == "warning" and "exception" not in bad  # the client's fault: one line, no traceback
    assert "aaaa" not in logs.getvalue()  # nothing of the request quoted


async def test_a_taken_port_stops_the_start() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        endpoint = HttpEndpoint(HttpConfig(port=port), Metrics(), Board())
        with pytest.raises(HttpPortTaken, match=f"http port 127.0.0.1:{port} is taken"):
            await endpoint.start()
        assert endpoint.port is None
        await endpoint.stop()  # nothing to stop: no error


async def test_stop_closes_idle_keep_alive_connections(start: Start) -> None:
    endpoint = await start()
    assert endpoint.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", endpoint.port)
    try:
        status, _, _ = await exchange(reader, writer, b"GET /metrics HTTP/1.1\r\nHost: gw\r\n\r\n")
        assert status == 200
        await asyncio.wait_for(endpoint.stop(), 5)
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the server hung up
    finally:
        writer.close()
        await writer.wait_closed()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", endpoint.port)


class _History:
    """A HistorySource that fails as an unreadable store does, or counts what it was asked."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, int]] = []

    async def history(self, source: str, device: str, tag: str, since_ns: int, until_ns: int,
                      max_buckets: int) -> History | None:
        self.asked.append((since_ns, until_ns))
        raise HistoryUnavailable("the local store /data/store.db cannot be read: file is not a database")


async def test_history_answers_503_when_the_store_cannot_be_read_and_400_beyond_int64(
        start: Start, logs: io.StringIO) -> None:
    board = Board()
    source = _History()
    board.history = source
    endpoint = await start(board)
    base = f"http://127.0.0.1:{endpoint.port}/api/history?source=line&device=m1&tag=v"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.get(f"{base}&range=1h") as r:
            assert r.status == 503 and "cannot be read: file is not a database" in (await r.json())["error"]
        async with session.get(f"{base}&since=0&until=9223372036855") as r:  # past int64 ns
            assert r.status == 400 and "before 2262" in (await r.json())["error"]
        async with session.get(f"{base}&since=0&until=9223372036854") as r:  # the last ms that fits
            assert r.status == 503
        svg = base.replace("/api/history?", "/api/history.svg?")
        async with session.get(f"{svg}&range=15m") as r:
            assert r.status == 503
    assert source.asked[1] == (0, 9223372036854 * 1_000_000)  # the refused zoom never reached the store
    assert '"history unavailable"' in logs.getvalue() and "Traceback" not in logs.getvalue()
