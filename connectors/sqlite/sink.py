"""The ``sqlite`` sink: the Sink protocol over ``TimeSeriesStore``, plus scheduled retention."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from weakref import WeakKeyDictionary

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from connectors.sqlite.config import SqliteStoreConfig
from connectors.sqlite.store import (
    COMPACT_CHUNK,
    COMPACT_INTERVAL,
    DISK_CHECK_INTERVAL,
    ROW_BYTES_ESTIMATE,
    RetentionResult,
    StoreFormatError,
    TimeSeriesStore,
)
from gateway.disk import is_disk_full
from gateway.errors import PermanentSinkError, RetryableSinkError
from gateway.history import History
from gateway.metrics import NS
from gateway.model import Batch

if TYPE_CHECKING:
    from gateway.metrics import Metrics


class StoreMetrics:
    """The store's own families, registered once per registry (several sqlite sinks may share one)."""

    _by_registry: ClassVar[WeakKeyDictionary[CollectorRegistry, StoreMetrics]] = WeakKeyDictionary()

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.deleted = Counter(
            f"{NS}_store_deleted_points", "Points deleted by the store's retention", ["sink", "reason"],
            registry=r,
        )
        self.retention_runs = Counter(f"{NS}_store_retention_runs", "Retention passes run", ["sink"], registry=r)
        self.full = Counter(
            f"{NS}_store_full_errors", "Writes refused because the store or the disk was full", ["sink"],
            registry=r,
        )
        self.used_bytes = Gauge(
            f"{NS}_store_used_bytes", "Bytes of live data in the store (what max_size bounds)", ["sink"],
            registry=r,
        )
        self.series = Gauge(f"{NS}_store_series", "Series (source/device/tag/unit) in the store", ["sink"], registry=r)

    @classmethod
    def of(cls, registry: CollectorRegistry) -> StoreMetrics:
        found = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found


class SqliteStoreSink:
    """Writes batches into the local store. ``write`` returns after the commit, so once it returns
    the samples are in the database (and survive a power cut with ``synchronous: full``)."""

    def __init__(
        self,
        name: str,
        config: SqliteStoreConfig,
        *,
        path: str,
        metrics: Metrics | None = None,
        log: structlog.stdlib.BoundLogger | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.store = TimeSeriesStore(
            path,
            time_basis=config.time_basis,
            synchronous=config.synchronous,
            cache_bytes=int(config.cache_size),
            max_bytes=int(config.max_size),
            min_free_disk=int(config.min_free_disk),
            name=name,
        )
        self._metrics = StoreMetrics.of(metrics.registry) if metrics is not None else None
        self._log: Any = log if log is not None else structlog.get_logger("sqlite_store").bind(sink=name)
        self._maintenance_task: asyncio.Task[None] | None = None
        self._compaction_task: asyncio.Task[None] | None = None
        self._compaction_pause_until = 0.0  # monotonic; after a failure, no retry on every write
        self._disk_full = False  # the last write failed for a full disk (or max_size)

    @property
    def path(self) -> str:
        return self.store.path

    async def open(self) -> None:
        try:
            await self.store.open()
        except StoreFormatError as exc:
            raise PermanentSinkError(str(exc)) from exc
        except (sqlite3.Error, OSError) as exc:
            raise RetryableSinkError(f"cannot open store {self.path}: {exc}") from exc
        if self._maintenance_task is None or self._maintenance_task.done():
            self._maintenance_task = asyncio.create_task(self._maintenance_loop(), name=f"{self.name}-maintenance")

    async def write(self, batches: Sequence[Batch]) -> None:
        try:
            await self.store.write(batches)
            if (
                self.store.compaction_due
                and (self._compaction_task is None or self._compaction_task.done())
                and time.monotonic() >= self._compaction_pause_until
            ):
                # Queued on the store thread behind this write; the write has returned by then.
                self._compaction_task = asyncio.create_task(self._compact(), name=f"{self.name}-compaction")
            self._disk_full = False
        except sqlite3.Error as exc:
            if is_disk_full(exc):
                self._disk_full = True
                raise await self._full(batches, exc) from exc
            raise RetryableSinkError(f"store write failed: {exc}") from exc
        except RuntimeError as exc:  # written to before open() / after close()
            raise RetryableSinkError(str(exc)) from exc

    def health_problems(self) -> list[str]:
        return ["the local store's disk is full"] if self._disk_full else []

    async def close(self) -> None:
        # Cancelling only abandons the waits: a job already queued on the store thread still runs
        # before the close job, so the connection is never closed under it.
        tasks = [t for t in (self._maintenance_task, self._compaction_task) if t is not None]
        self._maintenance_task = self._compaction_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.close()

    async def history(self, source: str, device: str, tag: str, since_ns: int, until_ns: int,
                      max_buckets: int) -> History | None:
        """What the status page charts (``gateway.contracts.HistorySource``)."""
        return await self.store.history(source, device, tag, since_ns, until_ns, max_buckets)

    async def compact(self) -> int:
        """Move freshly written points into the series-clustered table (normally done automatically)."""
        return await self.store.compact()

    async def run_retention(self) -> RetentionResult:
        """One age + size retention pass (normally run every ``retention_interval``)."""
        started = time.monotonic()
        result = await self.store.enforce_retention(time.time_ns(), int(self.config.retention * 1e9))
        if self._metrics is not None:
            m = self._metrics
            m.retention_runs.labels(self.name).inc()
            m.deleted.labels(self.name, "age").inc(result.age_deleted)
            m.deleted.labels(self.name, "size").inc(result.size_deleted)
            m.used_bytes.labels(self.name).set(result.used_bytes)
            m.series.labels(self.name).set(result.series)
        if result.age_deleted or result.size_deleted:
            self._log.info(
                "store retention",
                deleted_by_age=result.age_deleted,
                deleted_by_size=result.size_deleted,
                used_bytes=result.used_bytes,
                seconds=round(time.monotonic() - started, 3),
            )
        return result

    async def _compact(self) -> None:
        try:
            await self.store.compact()
        except (sqlite3.Error, RuntimeError) as exc:
            # The points stay readable in ``recent``; the maintenance loop retries within a minute.
            self._compaction_pause_until = time.monotonic() + COMPACT_INTERVAL
            self._log.warning("store compaction failed", error=str(exc))
            if is_disk_full(exc):  # a chunk needs room in ``history`` before it frees ``recent``
                with contextlib.suppress(sqlite3.Error, RuntimeError):
                    freed = await self.store.make_room(COMPACT_CHUNK * ROW_BYTES_ESTIMATE)
                    if self._metrics is not None:
                        self._metrics.deleted.labels(self.name, "full").inc(freed)

    async def keep_disk_reserve(self) -> int:
        deleted = await self.store.keep_disk_reserve()
        if deleted:
            if self._metrics is not None:
                self._metrics.deleted.labels(self.name, "disk").inc(deleted)
            self._log.warning("disk nearly full; store overwrites its oldest points", deleted=deleted)
        return deleted

    async def _maintenance_loop(self) -> None:
        # Retention runs at once: after a long outage the store may hold points that expired meanwhile.
        next_retention = time.monotonic()
        next_compaction = next_retention + COMPACT_INTERVAL
        tick = min(DISK_CHECK_INTERVAL, self.config.retention_interval)
        while True:
            try:
                if time.monotonic() >= next_retention:
                    next_retention = time.monotonic() + self.config.retention_interval
                    await self.run_retention()
                await self.keep_disk_reserve()
            except (sqlite3.Error, OSError, RuntimeError) as exc:
                self._log.warning("store retention failed", error=str(exc))
            if time.monotonic() >= next_compaction:
                next_compaction = time.monotonic() + COMPACT_INTERVAL
                if self.store.recent_rows:
                    await self._compact()
            await asyncio.sleep(tick)

    async def _full(self, batches: Sequence[Batch], exc: sqlite3.Error) -> RetryableSinkError:
        """The disk (or ``max_size``) is full: free pages by deleting the oldest points, then let the
        spool retry. Never raised as a crash: the batch stays spooled until the retry fits."""
        needed = sum(len(b.samples) for b in batches) * ROW_BYTES_ESTIMATE
        if self._metrics is not None:
            self._metrics.full.labels(self.name).inc()
        try:
            freed = await self.store.make_room(needed)
        except (sqlite3.Error, OSError, RuntimeError) as err:
            self._log.warning("store full; could not delete old points", error=str(err))
            return RetryableSinkError(f"store full ({exc}); deleting old points failed: {err}")
        if self._metrics is not None:
            self._metrics.deleted.labels(self.name, "full").inc(freed)
        self._log.warning("store full; deleted oldest points", deleted=freed, error=str(exc))
        # Retry soon only if pages were freed; otherwise the engine's backoff waits for the disk.
        return RetryableSinkError(
            f"store full ({exc}); deleted {freed} oldest points, will retry", retry_after=0.1 if freed else None
        )
