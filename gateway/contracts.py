"""The contracts plug-ins implement. Each is a ``typing.Protocol``: plug-ins need not inherit anything."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gateway.model import Batch, Sample, Value

if TYPE_CHECKING:
    from gateway.health import SourceHealth, UplinkState
    from gateway.history import History
    from gateway.writes import WriteKind

Emit = Callable[[Batch], Awaitable[None]]
"""Hands one batch to the engine. It awaits only when the pipeline applies back-pressure."""


@runtime_checkable
class Source(Protocol):
    """Reads equipment and pushes batches: polling (Modbus) and subscriptions (OPC-UA) both fit.

    ``run`` returns or raises only when the source stops; the engine's supervisor restarts it with
    backoff if it raises. It must not swallow ``asyncio.CancelledError``.

    ``health`` is the source's own account of its devices (link up, last good read, last error code and
    reason, error counts; ``gateway.health``), updated as it reads: metrics, ``/health`` and the status
    page are views of it. ``close`` releases what the source holds (connections, serial ports, threads)
    once it is stopped for good (shutdown, or removed or replaced by a hot reload); it is called after
    ``run`` ended, and once.
    """

    name: str
    health: SourceHealth

    async def run(self, emit: Emit) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class WritableSource(Source, Protocol):
    """A source whose devices accept writes. Each raises ``gateway.errors.WriteError`` when refused.

    ``write_kind`` says what a tag accepts (``gateway.writes.coerce`` checks a value against it before
    ``write`` is called with the raw value); a source whose types are known only from the device (OPC-UA)
    asks it, waiting a short while for the link. ``write`` refuses anything not exactly its raw type
    itself too: it is the last step before the device.
    """

    async def write_kind(self, device: str, tag: str) -> WriteKind: ...

    async def write(self, device: str, tag: str, value: Value) -> None: ...


@runtime_checkable
class Sink(Protocol):
    """Delivers batches to an uplink.

    ``write`` returns only once the uplink accepted every sample of ``batches``; otherwise it raises
    ``RetryableSinkError`` (the batches stay spooled and are retried) or ``PermanentSinkError``
    (they are dead-lettered and skipped). A sink that can tell which samples its uplink refused for
    good (the InfluxDB sink isolates bad points) delivers the rest, hands those to the
    ``DeadLetters`` it was built with, and returns. ``open`` connects and ``close`` releases; both may
    be called again after a failure when the supervisor restarts the sink.

    ``health_problems`` is the sink's own account of its uplink, as short public reasons: each is a few
    words an operator can act on ("reconnect loop: 9 connections lost in 5 min", "the broker refuses the
    login"), never a host, a credential or a count of data; an empty list means nothing is wrong.
    ``/health`` shows them without authentication, beside what the engine knows (backlog age, failing
    writes, drops).
    """

    name: str

    async def open(self) -> None: ...

    async def write(self, batches: Sequence[Batch]) -> None: ...

    async def close(self) -> None: ...

    def health_problems(self) -> list[str]: ...


@runtime_checkable
class DeadLetters(Protocol):
    """Where a sink puts the samples its uplink refused for good while it delivers the rest of the same
    write (``BuildContext.dead_letters``). Behind it is the spool's one dead-letter table, read, replayed
    and purged with ``edge-gateway deadletters``.

    ``reject`` is called from within ``Sink.write``: ``batch`` is the position, in the ``batches`` that
    ``write`` got, of the batch ``samples`` come from (each dead letter keeps that batch's source and
    spool sequence number), and ``error`` is the uplink's reason. Nothing is stored yet: what a write
    rejected is stored once it returns, before its batches are acknowledged, and forgotten if it raises
    (the write is then retried whole, so nothing is dead-lettered twice).
    """

    def reject(self, batch: int, samples: Sequence[Sample], error: str) -> None: ...


@runtime_checkable
class UplinkProbe(Protocol):
    """Optional for sinks: lets the delivery loop retry the moment the uplink is back instead of when its
    backoff ends.

    ``wait_uplink`` returns True as soon as the uplink came back after being down (an MQTT CONNACK, a
    store's health endpoint answering again), False once ``timeout`` passed. An uplink that is up while
    writes still fail must not return True early: the backoff then runs its course.
    """

    async def wait_uplink(self, timeout: float) -> bool: ...


@runtime_checkable
class UplinkReport(Protocol):
    """Optional for sinks with several uplink endpoints (the brokers of a cluster, several write endpoints):
    ``uplink`` says which one the sink is on now and how often it moved (``gateway.health.UplinkState``).
    ``/api/status`` shows it per sink and ``/metrics`` exports it; ``/health`` never names an endpoint. Read
    when asked, from any thread's latest writes: keep it cheap."""

    def uplink(self) -> UplinkState: ...


@runtime_checkable
class HistorySource(Protocol):
    """Optional for sinks that keep what they write (the embedded store): a tag's history in time buckets,
    for the status page's chart (``gateway.history``). None when the sink has no such tag."""

    async def history(self, source: str, device: str, tag: str, since_ns: int, until_ns: int,
                      max_buckets: int) -> History | None: ...


@runtime_checkable
class PublishClock(Protocol):
    """Optional for sinks: when the last write put its last message on the uplink, so the delivery loop can
    tell sending from waiting for the acks (``gateway.stages``: ``sink_publish`` and ``publish_ack``).

    ``published_mono`` is that moment in ``time.monotonic()`` seconds, set by ``write`` before it waits for
    the uplink's acknowledgements.
    """

    published_mono: float
