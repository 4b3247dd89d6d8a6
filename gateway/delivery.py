"""One sink's delivery loop: spool reader -> sink.write -> ack, with retry and dead-lettering.

The loop never drops a batch on a retryable error: the cursor stays where it was and the same
batches are offered again after a backoff (honouring a server's Retry-After). A permanent rejection of a
multi-batch write is retried batch by batch so one bad batch cannot take its neighbours down; a single
batch the uplink rejects for good goes to the spool's dead-letter table and the cursor moves past it.
A sink that isolates the bad samples itself hands them to its ``WriteRejections`` during the write; the
loop stores them in the same table before it acknowledges the write.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

from gateway.backoff import Backoff
from gateway.contracts import PublishClock, Sink, UplinkProbe
from gateway.errors import PermanentSinkError, RetryableSinkError
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.model import Batch, Sample, SpooledBatch
from gateway.spool import Spool, SpoolReader
from gateway.stages import COMMIT_SINK, PUBLISH_ACK, SINK_PUBLISH, stage

OPEN_FAILURES = 3
"""Failed opens in a row (without a delivery between) that make the sink unhealthy."""
FAILING_FOR = 60.0
"""Seconds of failing writes without a delivery that make the sink unhealthy."""


class WriteRejections:
    """The ``gateway.contracts.DeadLetters`` the runtime gives one sink: what the sink refused inside the
    write in flight, grouped per batch and error, until the delivery loop stores it (before the ack) or
    forgets it (the write failed and is retried whole)."""

    def __init__(self) -> None:
        self._batches: Sequence[SpooledBatch] = ()
        self._rejected: dict[tuple[int, str], list[Sample]] = {}

    def begin(self, batches: Sequence[SpooledBatch]) -> None:
        self._batches = batches
        self._rejected = {}

    def reject(self, batch: int, samples: Sequence[Sample], error: str) -> None:
        if not 0 <= batch < len(self._batches):
            raise IndexError(f"reject: no batch {batch} in the write in flight ({len(self._batches)} batches)")
        if samples:
            self._rejected.setdefault((batch, error), []).extend(samples)

    def take(self) -> list[tuple[SpooledBatch, str]]:
        """What the write rejected, one dead letter per batch and error; empties the collection."""
        batches, rejected = self._batches, self._rejected
        self._batches, self._rejected = (), {}
        return [(SpooledBatch(batches[i].seq, batches[i].source, samples), error)
                for (i, error), samples in rejected.items()]


def _ago(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


class DeliveryLoop:
    def __init__(
        self,
        sink: Sink,
        spool: Spool,
        sources: Sequence[str],
        metrics: Metrics,
        *,
        max_samples: int,
        retry_initial: float,
        retry_max: float,
        linger: float = 0.0,
        rejections: WriteRejections | None = None,
    ) -> None:
        self.sink = sink
        self.rejections = rejections or WriteRejections()
        self.spool = spool
        self.sources = list(sources)
        self.max_samples = max_samples
        self.linger = linger
        self.backoff = Backoff(retry_initial, retry_max)
        self.log = get_logger("gateway.delivery", sink=sink.name)
        self._out = metrics.samples_out.labels(sink.name)
        self._retryable = metrics.sink_failures.labels(sink.name, "retryable")
        self._permanent = metrics.sink_failures.labels(sink.name, "permanent")
        self._dead = metrics.sink_dead_lettered.labels(sink.name)
        self._write_time = metrics.sink_write_seconds.labels(sink.name)
        self._last_delivery = metrics.sink_last_delivery.labels(sink.name)
        self._commit_sink = stage(metrics, COMMIT_SINK)
        self._sink_publish = stage(metrics, SINK_PUBLISH)
        self._publish_ack = stage(metrics, PUBLISH_ACK)
        self._clock = sink if isinstance(sink, PublishClock) else None
        self.reader: SpoolReader | None = None
        self.delivered = 0
        self.last_delivery_mono: float | None = None
        self.last_delivery_wall: float | None = None
        self._failing = False
        self._failing_since: float | None = None
        self._open_failures = 0  # opens that failed since the last delivery
        self._jammed = False  # a batch the uplink refuses for good could not be dead-lettered either
        self.resumed_on_uplink = 0  # retries started by the uplink coming back, not by the backoff
        self.last_error: str | None = None
        self._writing = False
        self._stop_requested = False
        self._lingering = False
        self._last_write = 0.0  # seconds the last successful write took
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        """Open the sink and deliver until stopped. Raises only if ``open`` fails (the supervisor retries)."""
        self._task = asyncio.current_task()
        # Register first: a sink whose uplink is down at start holds its data from the first moment.
        self.reader = reader = self.spool.reader(self.sink.name, self.sources)
        try:
            await self.sink.open()
        except Exception:
            self._open_failures += 1  # the supervisor retries; repeated failures show in /health
            raise
        try:
            while not self._stop_requested:
                batches = await reader.next(self.max_samples)
                committed = self.spool.tail.committed_at(batches[0].seq)
                if committed is not None:  # from the tail; a backlog read from the file is not timed
                    self._commit_sink.observe(time.monotonic() - committed)
                self._writing = True
                try:
                    await self._deliver(reader, batches)
                finally:
                    self._writing = False
                if self.linger:
                    # A sink that keeps up (less arrived during the write than it carried, e.g. nothing) never
                    # pauses: the next commit wakes it, and what came meanwhile goes at once. One losing
                    # ground (more arrived than it carried, yet less than a full write) pauses for as long as
                    # that write took, at most ``linger``, so the next carries more: a write costs about the
                    # same whether it carries 50 samples or 5,000. A backlog of full writes goes without pauses.
                    written = sum(len(b.samples) for b in batches)
                    if written < reader.pending_samples() < self.max_samples:
                        await self._linger(reader, min(self.linger, self._last_write))
        finally:
            reader.rewind()
            await asyncio.shield(self._close())

    async def _linger(self, reader: SpoolReader, pause: float) -> None:
        """Pause for ``pause`` seconds; a stop during the pause first delivers what the pause held back, so a
        clean stop leaves nothing behind that a sink without linger would have delivered."""
        self._lingering = True
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), pause)
        finally:
            self._lingering = False
        if self._stop_requested and reader.pending_samples() > 0:
            batches = await reader.next(self.max_samples)
            self._writing = True
            try:
                await self._deliver(reader, batches)
            finally:
                self._writing = False

    def request_stop(self) -> None:
        """Stop after the write in flight (if any) has been acked, so a clean stop re-sends nothing.

        An idle or failing loop is cancelled at once; a write that hangs is cancelled by the runtime's
        deadline, and its batch is simply offered again at the next start (at-least-once).
        """
        self._stop_requested = True
        if self._lingering:
            self._wake.set()  # deliver what the pause held back, then stop
            return
        if self._task is not None and (not self._writing or self._failing):
            self._task.cancel()  # idle, or waiting out a backoff: nothing in flight worth waiting for

    async def _close(self) -> None:
        try:
            await self.sink.close()
        except Exception as exc:  # closing a broken uplink must not mask why we stopped
            self.log.warning("sink close failed", error=str(exc))

    async def _deliver(self, reader: SpoolReader, batches: list[SpooledBatch]) -> None:
        while True:
            try:
                t0 = time.monotonic()
                self.rejections.begin(batches)
                await self.sink.write(_as_batches(batches))
                self._timed(t0, time.monotonic())
            except RetryableSinkError as exc:
                self._retryable.inc()
                delay = self.backoff.next()
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                self._transition_failing(str(exc), delay)
                if self._stop_requested:
                    raise asyncio.CancelledError from exc
                if exc.retry_after is None and isinstance(self.sink, UplinkProbe):
                    # retry the moment the uplink is back (a server's Retry-After is always honoured)
                    if await self.sink.wait_uplink(delay):
                        self.resumed_on_uplink += 1
                        self.backoff.reset()
                        self.log.info("uplink is back; retrying now")
                    continue
                await asyncio.sleep(delay)
                continue
            except PermanentSinkError as exc:
                self._permanent.inc()
                if len(batches) > 1:
                    for one in batches:  # isolate the bad batch; the good ones still go through
                        await self._deliver(reader, [one])
                    return
                n = len(batches[0].samples)
                self.log.error("sink rejected a batch permanently; dead-lettered", seq=batches[0].seq,
                               samples=n, error=str(exc))
                try:
                    await self.spool.dead_letter(self.sink.name, batches, str(exc))
                except Exception:
                    self._jammed = True  # it stays spooled and is offered again; /health says so
                    raise
                self._jammed = False
                self._dead.inc(n)
                await reader.ack(batches[-1].seq)
                return
            n = sum(len(b.samples) for b in batches)
            rejected = self.rejections.take()
            if rejected:  # stored before the ack: a failure here leaves the write to be offered again
                try:
                    await self.spool.dead_letter_each(self.sink.name, rejected)
                except Exception:
                    self._jammed = True
                    raise
                dead = sum(len(b.samples) for b, _ in rejected)
                self._dead.inc(dead)
                n -= dead
            await reader.ack(batches[-1].seq)
            self._out.inc(n)
            self.delivered += n
            self.last_delivery_mono = time.monotonic()
            self.last_delivery_wall = time.time()
            self._last_delivery.set(self.last_delivery_wall)
            self._open_failures = 0
            self._jammed = False
            if self._failing:
                self._failing = False
                self._failing_since = None
                self.backoff.reset()
                self.log.info("sink delivering again")
            return

    def _timed(self, t0: float, t1: float) -> None:
        self._last_write = t1 - t0
        self._write_time.observe(t1 - t0)
        published = self._clock.published_mono if self._clock is not None else 0.0
        if t0 <= published <= t1:
            self._sink_publish.observe(published - t0)
            self._publish_ack.observe(t1 - published)
        else:  # the sink does not say when it sent: the whole write counts as sending
            self._sink_publish.observe(t1 - t0)

    def health_problems(self) -> list[str]:
        """Short public reasons why this sink is unhealthy now: its own (a reconnect loop, a refused
        login) when it reports them, a batch it can neither deliver nor dead-letter, repeated failures to
        open its uplink, writes failing for longer than ``FAILING_FOR`` without a delivery."""
        sink = self.sink
        out = list(sink.health_problems())
        if self._jammed:
            out.append("a batch it can neither deliver nor dead-letter")
        if self._open_failures >= OPEN_FAILURES:
            out.append(f"cannot open its uplink ({self._open_failures} attempts)")
        if self._failing_since is not None and time.monotonic() - self._failing_since >= FAILING_FOR:
            out.append(f"writes failing for {_ago(time.monotonic() - self._failing_since)}")
        return out

    @property
    def failing(self) -> bool:
        return self._failing

    def _transition_failing(self, error: str, delay: float) -> None:
        self.last_error = error
        if not self._failing:
            self._failing = True
            self._failing_since = time.monotonic()
            self.log.warning("sink write failed; keeping data spooled and retrying", error=error,
                             retry_in=round(delay, 2))


def _as_batches(batches: list[SpooledBatch]) -> list[Batch]:
    return [Batch(b.source, b.samples) for b in batches]
