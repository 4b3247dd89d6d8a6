"""The InfluxDB v2 sink: line protocol from samples, one synchronous request at a time on its own thread.

Error semantics (the delivery loop retries a ``RetryableSinkError`` with backoff, keeping data spooled):

- 5xx, 429 and connection errors: retryable, honouring ``Retry-After``.
- 401/403: logged as an error (the token or its permissions are wrong) and retried, never dropped.
- 400/413: the request is split in halves until the rejected points are isolated, and every good point
  is written. The samples each rejected point came from are handed, with the server's message, to the
  ``DeadLetters`` the sink was built with: the runtime stores them in the spool's dead letters (read
  and replayed with ``edge-gateway deadletters``) when the write returns, and
  ``edgegw_sink_dead_lettered_samples`` counts them.
- any other status (404 unknown bucket, ...): a configuration problem, logged as an error and retried.

A write made of several requests that fails half-way is retried whole: points are keyed by series and
timestamp, so writing one twice overwrites it with the same value.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import time
from collections.abc import Sequence

import structlog

from connectors.influxdb.adapter import HttpRejected, InfluxWriter
from connectors.influxdb.config import InfluxSinkConfig
from connectors.influxdb.lines import LineBuilder, Lines
from gateway.config.site import SiteConfig
from gateway.contracts import DeadLetters
from gateway.errors import RetryableSinkError
from gateway.health import UplinkState
from gateway.model import Batch
from gateway.redact import redact

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
        dead_letters: DeadLetters,
        log: structlog.stdlib.BoundLogger,
    ) -> None:
        self.name = name
        self.config = config
        self.log = log
        self.builder = LineBuilder(config, site)
        self.dead_letters = dead_letters
        self.dead_lettered = 0
        """Samples of points the server rejected for good (in writes that returned)."""
        self._writer: InfluxWriter | None = None
        self._last_auth_log = -_AUTH_LOG_EVERY
        self._auth_refused = False

    async def open(self) -> None:
        if self._writer is None:
            self._writer = InfluxWriter(self.config, self.name, self.log)

    async def write(self, batches: Sequence[Batch]) -> None:
        built = self.builder.build(batches)
        rejected: list[tuple[int, str]] = []  # (line, error) of points the server refused for good
        step = self.config.max_request_lines
        for i in range(0, len(built.lines), step):
            await self._send(built.lines, i, min(i + step, len(built.lines)), rejected)
        if rejected:  # only once the whole write went through: a retried write must not reject twice
            self._reject(batches, built, rejected)

    async def _send(self, lines: list[str], lo: int, hi: int, rejected: list[tuple[int, str]]) -> None:
        """Write ``lines[lo:hi]``; a 400/413 splits it until the refused points are single lines."""
        writer = self._writer
        assert writer is not None, "write before open"
        try:
            await writer.post("\n".join(lines[lo:hi]).encode())
            self._auth_refused = False
            return
        except HttpRejected as exc:
            status = exc.status
            if status in (400, 413):
                if hi - lo > 1:
                    mid = (lo + hi) // 2
                    await self._send(lines, lo, mid, rejected)
                    await self._send(lines, mid, hi, rejected)
                    return
                rejected.append((lo, str(exc)))
                self.log.error("InfluxDB rejected a point; its samples go to the dead letters", status=status,
                               error=exc.message, line=lines[lo][:300])
                return
            if status in (401, 403):
                self._auth_refused = True
                now = time.monotonic()
                if now - self._last_auth_log >= _AUTH_LOG_EVERY:
                    self._last_auth_log = now
                    self.log.error("InfluxDB refuses the token; data stays spooled until it is fixed",
                                   status=status, url=writer.endpoint, error=exc.message)
                raise RetryableSinkError(f"not authorized (HTTP {status}): {exc.message}") from None
            if status == 429 or status >= 500:
                raise RetryableSinkError(str(exc), retry_after=exc.retry_after) from None
            self.log.error("InfluxDB refused the write; check url, org and bucket", status=status,
                           error=exc.message)
            raise RetryableSinkError(str(exc), retry_after=exc.retry_after) from None

    def _reject(self, batches: Sequence[Batch], built: Lines, rejected: list[tuple[int, str]]) -> None:
        """Hand the samples behind each rejected line to the dead letters, by the batch they came from."""
        starts = list(itertools.accumulate((len(b.samples) for b in batches), initial=0))
        for line, error in rejected:
            first, n = built.firsts[line], built.counts[line]
            k = bisect.bisect_right(starts, first) - 1  # a line never spans batches
            at = first - starts[k]
            self.dead_letters.reject(k, batches[k].samples[at:at + n], error)
            self.dead_lettered += n

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

    def uplink(self) -> UplinkState:
        """The write endpoint requests go to (``gateway.contracts.UplinkReport``); HTTP has no standing link."""
        writer = self._writer
        n = len(self.config.endpoints())
        if writer is None:
            return UplinkState(redact(self.config.endpoints()[0]), None, n, 0)
        return UplinkState(writer.endpoint, None, n, writer.failovers)

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
