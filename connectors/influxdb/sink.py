"""The InfluxDB v2 sink: line protocol from samples, one synchronous request at a time on its own thread.

Error semantics (the delivery loop retries a ``RetryableSinkError`` with backoff, keeping data spooled):

- 5xx, 429 and connection errors: retryable, honouring ``Retry-After``.
- 401/403: logged as an error (the token or its permissions are wrong) and retried, never dropped.
- 400/413: the request is split in halves until the rejected points are isolated; those go to the
  dead-letter store (``<data_dir>/<sink>.dead.db``) and ``edgegw_sink_dead_lettered_samples`` counts
  their samples, while every good point is written.
- any other status (404 unknown bucket, ...): a configuration problem, logged as an error and retried.

A write made of several requests that fails half-way is retried whole: points are keyed by series and
timestamp, so writing one twice overwrites it with the same value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import structlog

from connectors.influxdb.adapter import HttpRejected, InfluxWriter
from connectors.influxdb.config import InfluxSinkConfig
from connectors.influxdb.deadletters import DeadLetterStore
from connectors.influxdb.lines import LineBuilder
from gateway.config.site import SiteConfig
from gateway.errors import RetryableSinkError
from gateway.metrics import Metrics
from gateway.model import Batch

_AUTH_LOG_EVERY = 60.0
PROBE_EVERY = 1.0
"""While writes fail, how often the server's health endpoint is asked whether it is back."""


class InfluxSink:
    def __init__(
        self,
        name: str,
        config: InfluxSinkConfig,
        site: SiteConfig,
        *,
        dead_letter_path: str,
        metrics: Metrics,
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self.name = name
        self.config = config
        self.log = log
        self.builder = LineBuilder(config, site)
        self.dead_letter_path = dead_letter_path
        self._dead = metrics.sink_dead_lettered.labels(name)
        self.dead_lettered = 0
        self._writer: InfluxWriter | None = None
        self._store: DeadLetterStore | None = None
        self._last_auth_log = -_AUTH_LOG_EVERY
        self._auth_refused = False

    async def open(self) -> None:
        if self._writer is None:
            self._writer = InfluxWriter(self.config, self.name)
            self._store = DeadLetterStore(self.dead_letter_path)

    async def write(self, batches: Sequence[Batch]) -> None:
        lines, counts = self.builder.build(batches)
        step = self.config.max_request_lines
        for i in range(0, len(lines), step):
            await self._send(lines[i:i + step], counts[i:i + step])

    async def _send(self, lines: list[str], counts: list[int]) -> None:
        writer = self._writer
        assert writer is not None, "write before open"
        try:
            await writer.post("\n".join(lines).encode())
            self._auth_refused = False
            return
        except HttpRejected as exc:
            status = exc.status
            if status in (400, 413):
                if len(lines) > 1:
                    mid = len(lines) // 2
                    await self._send(lines[:mid], counts[:mid])
                    await self._send(lines[mid:], counts[mid:])
                    return
                await self._dead_letter(lines, counts, status, exc.message)
                return
            if status in (401, 403):
                self._auth_refused = True
                now = time.monotonic()
                if now - self._last_auth_log >= _AUTH_LOG_EVERY:
                    self._last_auth_log = now
                    self.log.error("InfluxDB refuses the token; data stays spooled until it is fixed",
                                   status=status, url=self.config.url, error=exc.message)
                raise RetryableSinkError(f"not authorized (HTTP {status}): {exc.message}") from None
            if status == 429 or status >= 500:
                raise RetryableSinkError(str(exc), retry_after=exc.retry_after) from None
            self.log.error("InfluxDB refused the write; check url, org and bucket", status=status,
                           error=exc.message)
            raise RetryableSinkError(str(exc), retry_after=exc.retry_after) from None

    async def _dead_letter(self, lines: list[str], counts: list[int], status: int, error: str) -> None:
        store, writer = self._store, self._writer
        assert store is not None and writer is not None
        await writer.run(lambda: store.add(self.name, lines, status, error))
        n = sum(counts)
        self.dead_lettered += n
        self._dead.inc(n)
        self.log.error("InfluxDB rejected a point; dead-lettered", status=status, error=error, line=lines[0][:300],
                       samples=n, store=self.dead_letter_path)

    async def wait_uplink(self, timeout: float) -> bool:
        """True as soon as the server answers its health probe again after not answering (see
        ``UplinkProbe``); a server that answers while writes fail lets the backoff run its course."""
        writer = self._writer
        deadline = time.monotonic() + timeout
        was_down = False
        while writer is not None:
            up = await writer.run(writer.ping)
            if up and was_down:
                return True
            was_down = was_down or not up
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(PROBE_EVERY, remaining))
        await asyncio.sleep(timeout)
        return False

    def health_problems(self) -> list[str]:
        return ["the store refuses the token"] if self._auth_refused else []

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        store, self._store = self._store, None
        if writer is not None:
            if store is not None:
                await writer.run(store.close)
            writer.close()
