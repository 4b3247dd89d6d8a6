"""The gateway's HTTP endpoint (stdlib asyncio, no framework): ``/metrics`` in Prometheus text format.

Deliberately tiny: GET only, one request per connection, bounded header size. A port that is taken is
logged and the gateway runs on without the endpoint; collection matters more than observability.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from gateway.config.site import HttpConfig
from gateway.logs import get_logger
from gateway.metrics import Metrics

Route = Callable[[], Awaitable[tuple[int, str, bytes]]]
MAX_HEADER = 16 * 1024


class HttpEndpoint:
    def __init__(self, config: HttpConfig, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.log = get_logger("gateway.http")
        self.routes: dict[str, Route] = {"/metrics": self._metrics}
        self._server: asyncio.Server | None = None
        self.port: int | None = None

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(self._handle, self.config.bind, self.config.port)
        except OSError as exc:
            self.log.error("http endpoint not started", bind=self.config.bind, port=self.config.port,
                           error=exc.strerror or str(exc))
            return
        self.port = self._server.sockets[0].getsockname()[1]
        self.log.info("http endpoint listening", url=f"http://{self.config.bind}:{self.port}/metrics")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
            self._server = None

    async def _metrics(self) -> tuple[int, str, bytes]:
        return 200, CONTENT_TYPE_LATEST, generate_latest(self.metrics.registry)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10.0)
            if len(head) > MAX_HEADER:
                raise ValueError("header too large")
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            path = target.split("?", 1)[0]
            route = self.routes.get(path)
            if method not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"method not allowed\n"
            elif route is None:
                status, ctype, body = 404, "text/plain", b"not found\n"
            else:
                status, ctype, body = await route()
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "Error")
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
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
