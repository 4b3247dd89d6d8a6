"""The one module that imports influxdb-client: a SYNCHRONOUS write API on its own single thread.

The library's batching mode is not used: it drops data after its retries and its ``flush()`` does
nothing. Each request here is one blocking HTTP POST of line protocol we built, run on this writer's
dedicated executor thread (never the default executor, which ``asyncio.run`` waits for without limit).
Library and urllib3 exceptions are turned into ``HttpRejected`` or ``RetryableSinkError`` here.

A write is one request on the client's own urllib3 pool (its TLS, proxy and timeout settings), built here:
the library's generated request path (parameter checks, serialisation, header assembly) cost ~0.13 ms of
CPU per request on top of urllib3's ~0.27, and the sink writes each commit. Errors are read as the library
reads them (a JSON body's ``message``, else the body, else the error headers, else the reason).

Bodies are gzipped here, at ``gzip_level``, not by the library: its ``enable_gzip`` always compresses at
level 9: ~6x the CPU of level 1 for a body only ~15-20 % smaller (line protocol of 10,000 samples:
23 ms vs 4 ms for the whole write).

Several write endpoints (``urls``): one client each, made when first used. A request goes to the current
endpoint; a connection error, a timeout or a 5xx sends it to the next at once, and the writer stays on
whichever accepted it. Only when every endpoint failed in a row does the request fail (retryable: the
delivery loop's backoff applies). Writing a point twice (a timed-out request the server did apply, then
the next endpoint) overwrites it with the same value.
"""

from __future__ import annotations

import contextlib
import json
import zlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import structlog
import urllib3
from influxdb_client.client.influxdb_client import InfluxDBClient

from connectors.influxdb.config import InfluxSinkConfig
from gateway.errors import RetryableSinkError
from gateway.redact import redact
from gateway.threads import WorkerThread

_ERROR_HEADERS = ("X-Platform-Error-Code", "X-Influx-Error", "X-InfluxDb-Error")


@dataclass(frozen=True)
class _Endpoint:
    client: InfluxDBClient
    pool: Any  # the client's urllib3 PoolManager
    url: str  # the write URL with org, bucket and precision
    headers: dict[str, str]


class HttpRejected(Exception):
    """The server answered a write with an error status."""

    def __init__(self, status: int, message: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


def _retry_after(value: object) -> float | None:
    try:
        return max(0.0, float(str(value))) if value is not None else None
    except ValueError:
        return None  # an HTTP date; the backoff applies instead


class InfluxWriter:
    def __init__(self, config: InfluxSinkConfig, name: str,
                 log: structlog.stdlib.BoundLogger | None = None) -> None:
        self.config = config
        self.log = log or structlog.get_logger("connectors.influxdb").bind(sink=name)
        self._thread = WorkerThread(f"influx-{name}")
        self._urls = config.endpoints()
        self._clients: list[_Endpoint | None] = [None] * len(self._urls)
        self._at = 0  # the endpoint requests go to (changed on this writer's thread only)
        self._last_ok: int | None = None
        self._moving = False  # failing over since the last accepted request: its moves were logged once
        self.failovers = 0
        """Requests accepted by another endpoint than the one that accepted the previous."""
        self._level = config.gzip_level if config.gzip else 0
        self._timeout = urllib3.Timeout(total=config.timeout)

    @property
    def endpoint(self) -> str:
        """The endpoint requests go to now, credentials masked."""
        return redact(self._urls[self._at])

    def _client(self, i: int) -> _Endpoint:
        made = self._clients[i]
        if made is None:
            # No library-level retries: the spool and the delivery loop retry, honouring Retry-After.
            cfg = self.config
            token = cfg.token.get_secret_value()
            client = InfluxDBClient(url=self._urls[i], token=token, org=cfg.org, timeout=int(cfg.timeout * 1000),
                                    retries=False)
            api = client.api_client
            headers = {**api.default_headers, "Content-Type": "text/plain; charset=utf-8",
                       "Accept": "application/json"}
            if self._level:
                headers["Accept-Encoding"] = "identity"  # as enable_gzip did: error bodies stay readable
                headers["Content-Encoding"] = "gzip"
            if token:
                headers["Authorization"] = f"Token {token}"
            query = urlencode({"org": cfg.org or "-", "bucket": cfg.bucket, "precision": cfg.precision})
            url = f"{self._urls[i].rstrip('/')}/api/v2/write?{query}"
            made = self._clients[i] = _Endpoint(client, api.rest_client.pool_manager, url, headers)
        return made

    def _post_to(self, i: int, body: bytes) -> None:
        e = self._client(i)
        try:
            r = e.pool.request("POST", e.url, body=body, headers=e.headers, timeout=self._timeout, retries=False,
                               redirect=False, preload_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise RetryableSinkError(f"cannot reach {redact(self._urls[i])}: {exc}") from None
        if not 200 <= r.status < 300:
            raise HttpRejected(r.status, _message(r), _retry_after(r.headers.get("Retry-After")))

    def _post(self, body: bytes) -> None:
        if self._level:
            body = zlib.compress(body, self._level, wbits=31)  # wbits 31: a gzip stream
        n = len(self._urls)
        for tried in range(1, n + 1):
            i = self._at
            try:
                self._post_to(i, body)
            except (RetryableSinkError, HttpRejected) as exc:
                if isinstance(exc, HttpRejected) and exc.status < 500:
                    raise  # the request itself, or the token: every endpoint would answer the same
                if n > 1:
                    self._at = (i + 1) % n
                    if not self._moving:  # once per outage, not per retry of a store that stays down
                        self.log.warning("InfluxDB endpoint failed; trying the next", url=redact(self._urls[i]),
                                         next=self.endpoint, error=str(exc))
                    if tried < n:
                        continue
                    self._moving = True
                raise
            if self._last_ok is not None and self._last_ok != i:
                self.failovers += 1
                self.log.warning("InfluxDB writes moved to another endpoint", url=self.endpoint,
                                 failovers=self.failovers)
            self._last_ok = i
            self._moving = False
            return

    def ping(self) -> bool:
        """Whether a write endpoint answers its health endpoint (``/ping``) now, the current one first; the
        first that answers becomes current."""
        n = len(self._urls)
        for k in range(n):
            i = (self._at + k) % n
            try:
                up = bool(self._client(i).client.ping())
            except Exception:  # any failure means "not yet"
                up = False
            if up:
                self._at = i
                return True
        return False

    async def post(self, body: bytes) -> None:
        await self._thread.run(self._post, body)

    async def run(self, fn: object) -> object:
        """Run a blocking callable on this writer's thread (the dead-letter store shares it)."""
        assert callable(fn)
        return await self._thread.run(fn)

    def close(self) -> None:
        for made in self._clients:
            if made is not None:
                with contextlib.suppress(Exception):
                    made.client.close()  # type: ignore[no-untyped-call]
        self._thread.close()


def _message(r: Any) -> str:
    """What the server said about a refused write (urllib3 response), as influxdb-client reads it."""
    if r.data:
        try:
            text = str(json.loads(r.data)["message"])
        except (ValueError, KeyError, TypeError):
            text = r.data.decode(errors="replace")
    else:
        text = next((r.headers[h] for h in _ERROR_HEADERS if h in r.headers), None) or r.reason or ""
    return text.strip()[:500]
