"""The spool of one gateway, on the event loop: appends, the writer task, readers' bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from gateway.config.site import SpoolConfig
from gateway.errors import GatewayError
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.model import Batch, Sample, SpooledBatch
from gateway.spool.drops import DropLedger
from gateway.spool.ranges import Gaps, in_gaps, outside
from gateway.spool.reader import InitialCount, SpoolReader
from gateway.spool.retention import AgeCheckpoints, unwanted_ranges
from gateway.spool.storage import (
    Dropped,
    ReadResult,
    Row,
    SpoolClosedError,
    Storage,
    WriteJob,
    WriteResult,
    is_full,
)
from gateway.spool.tail import Tail
from gateway.stages import EMIT_COMMIT, stage
from gateway.threads import WorkerThread

_T = TypeVar("_T")


@dataclass(slots=True)
class SpoolStats:
    batches: int
    samples: int
    bytes: int
    last_seq: int
    """Highest committed sequence number."""
    uncommitted: int
    """Batches appended but not yet committed."""
    dropped: dict[str, int]
    """Samples dropped in this run, by reason."""


class Spool:
    """The spool of one gateway: ``open``, then ``append`` from the pipelines and ``reader`` per sink."""

    gc_interval: float = 1.0
    """Seconds between garbage collections of rows every cursor has passed."""
    cursor_delay: float = 1.0
    """Seconds an acknowledged cursor may wait to ride along with the next commit of appends before it is
    committed alone: a sink that delivers every commit at once acks as often as data is committed, and one
    SQLite transaction per ack would double the commits. A crash in between offers those batches again
    (at-least-once); ``flush`` and ``close`` commit it at once."""

    def __init__(self, path: Path, config: SpoolConfig, metrics: Metrics) -> None:
        self.path = Path(path)
        self.config = config
        self.metrics = metrics
        self.log = get_logger("gateway.spool", path=str(self.path))
        self._store = Storage(self.path, config)
        self._executor: WorkerThread | None = None
        self._writer: asyncio.Task[None] | None = None
        self._opened = False
        self._closed = False
        self._closing = False
        self._failed = False  # the writer task died of a bug
        self._close_done: asyncio.Future[None] | None = None
        self._max_age = float(config.max_age)
        self._bound = config.memory_batches
        # Append queue and writer state.
        self._next_seq = 1
        self._pending: list[Row] = []
        self._inflight_rows = 0
        self._dirty: dict[str, int] = {}
        self._dead: list[tuple[str, int, str, str, list[Sample]]] = []
        self._gen = 0  # bumped by every request that needs a commit
        self._eager_gen = 0  # the last gen that needs a commit at once (not just a cursor move)
        self._done_gen = 0  # highest gen whose requests are committed
        self._cursor_since: float | None = None  # when the oldest cursor move not yet committed was made
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._work_since: float | None = None
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._room = asyncio.Event()
        # Committed state, as the loop knows it.
        self._committed = 0  # highest committed seq
        self._open_head = 0  # highest seq at open(): where a new sink starts
        self._deleted_upto = 0  # every row at or below is gone
        self._last_gc = 0.0
        self._batches = self._samples = self._bytes = 0
        self.drops = DropLedger(metrics, self.log, config.overflow)
        """Monotonic time of the last drop some sink missed (None: none in this run)."""
        self.tail = Tail(0)
        """Committed batches kept decoded for readers at the head (``gateway.spool.tail``)."""
        self._ages = AgeCheckpoints(self._max_age)
        # Cursors.
        self._readers: dict[str, SpoolReader] = {}
        self._cursors: dict[str, int] = {}  # last known cursor of every sink (stored or acked)
        self._held: dict[str, int] = {}  # stored cursors of sinks not registered in this run yet
        self._counting: list[SpoolReader] = []  # readers whose initial count the running job computes
        # drop_newest: what each full sink skipped, persisted with the next commit when it changed.
        self._gaps: dict[str, Gaps] = {}
        self._gaps_dirty: set[str] = set()
        self._moves = self._moves_collected = 0  # acks: gap ranges are worth collecting again after one
        self._held_kept: dict[str, int] = {}
        # What each sink will never get, by reason (this run; kept across hot reloads), and the part of
        # it not logged yet: the log's figures add up to the metric's.
        # Metrics children, resolved once.
        self._m_err: dict[str, Any] = {}
        self._emit_commit = stage(metrics, EMIT_COMMIT)

    # -- lifecycle -----------------------------------------------------------------------------------

    async def open(self) -> None:
        """Start the spool thread, create or migrate the schema, recover seq, cursors and totals."""
        if self._opened:
            raise GatewayError("spool is already open")
        self._executor = WorkerThread("spool")
        try:
            info = await self._on_thread(self._store.open)
        except BaseException:
            self._executor.close()
            self._executor = None
            raise
        self._opened = True
        self._next_seq = info.last_seq + 1
        self._committed = self._open_head = info.last_seq
        self.tail = Tail(info.last_seq)
        self._deleted_upto = info.first_seq - 1
        self._batches, self._samples, self._bytes = info.batches, info.samples, info.bytes
        self._cursors = dict(info.cursors)
        self._held = dict(info.cursors)
        self._gaps = info.gaps
        self._held_kept = dict.fromkeys(info.cursors, info.last_seq)
        self._ages.date_previous_run(info.dated)
        self._last_gc = time.monotonic()
        self._room.set()
        self._set_gauges()
        self._writer = asyncio.create_task(self._run_writer(), name="spool-writer")
        self._writer.add_done_callback(self._writer_done)
        self.log.info("spool open", batches=info.batches, samples=info.samples, bytes=info.bytes,
                      last_seq=info.last_seq, cursors=info.cursors)

    async def close(self) -> None:
        """Commit everything pending (appends and cursors), collect acked rows, checkpoint the WAL and
        stop the thread. Idempotent."""
        if not self._opened or self._closed:
            return
        if self._close_done is not None:
            await asyncio.shield(self._close_done)
            return
        self._close_done = asyncio.get_running_loop().create_future()
        self._closing = True
        self._urgent.set()
        self._wake.set()
        try:
            if self._writer is not None and not self._failed:
                with contextlib.suppress(Exception):  # a crash was logged by _writer_done already
                    await self._writer
            await self._on_thread(self._store.close)
        finally:
            self._closed = True
            assert self._executor is not None
            self._executor.close(wait=True)
            for reader in self._readers.values():
                reader._event.set()
            for _, fut in self._waiters:
                if not fut.done():
                    fut.set_exception(SpoolClosedError("spool closed before the commit"))
            self._waiters.clear()
            self._room.set()
            self.drops.log_due(force=True)
            self._close_done.set_result(None)
            self.log.info("spool closed", batches=self._batches, last_seq=self._committed)

    # -- appending -----------------------------------------------------------------------------------

    async def append(self, batch: Batch) -> None:
        """Queue one batch for the next commit. Awaits only while too many batches are uncommitted.

        The spool keeps ``batch.samples`` as is (it is what head readers get): do not mutate it afterwards.
        """
        if not self._opened or self._closing:
            raise SpoolClosedError("spool is not open")
        samples = batch.samples
        if not samples:
            return
        seq = self._next_seq
        self._next_seq = seq + 1
        self._pending.append((seq, batch.source, samples, time.monotonic()))
        self._request()
        if len(self._pending) + self._inflight_rows > self._bound:
            self._urgent.set()
            while len(self._pending) + self._inflight_rows > self._bound and not self._closing:
                self._room.clear()
                await self._room.wait()

    async def flush(self) -> None:
        """Return once everything appended (and acked, registered, dead-lettered) before the call is committed."""
        if not self._opened or self._closed:
            return
        target = self._gen
        if self._done_gen >= target:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, fut))
        self._urgent.set()
        self._wake.set()
        await fut

    async def dead_letter(self, sink: str, batches: Sequence[SpooledBatch], error: str) -> None:
        """Store batches a sink rejected for good in ``dead_letters``; returns once committed."""
        await self.dead_letter_each(sink, [(b, error) for b in batches])

    async def dead_letter_each(self, sink: str, letters: Sequence[tuple[SpooledBatch, str]]) -> None:
        """Store each batch (or the part of one a sink rejected) with its own error; returns once committed.

        The table ``dead_letters`` holds everything any sink refused for good, as samples (the batch
        payload format), with the sink, the batch's seq and source, the error and the time; its size is
        capped (``Storage._insert_dead_letters``). ``gateway.deadletters`` reads, replays and purges it.
        """
        if not self._opened or self._closing:
            raise SpoolClosedError("spool is not open")
        self._dead.extend((sink, b.seq, b.source, error, b.samples) for b, error in letters)
        self._request()
        await self.flush()

    def _request(self) -> None:
        self._gen += 1
        self._eager_gen = self._gen
        if self._work_since is None:
            self._work_since = time.monotonic()
        self._wake.set()

    # -- readers -------------------------------------------------------------------------------------

    def reader(self, sink: str, sources: Sequence[str] = ("*",)) -> SpoolReader:
        """Register (or re-register) a sink's reader; fnmatch globs on ``Batch.source``.

        A sink with a stored cursor resumes after it. A new sink starts at the head as it was at ``open()``:
        it gets only new data, no backlog of earlier runs, but everything appended in this run, even when
        it registers after the sources started (the runtime connects a sink's uplink before it asks for a
        reader). Its start is persisted with the next commit, so a crash cannot move it.
        Calling it again for a registered sink with the same sources returns the same reader, rewound.
        """
        if not self._opened or self._closing:
            raise SpoolClosedError("spool is not open")
        current = self._readers.get(sink)
        if current is not None:
            if current.sources == tuple(sources):
                current.rewind()
                return current
            self.unregister(sink)
        self._held.pop(sink, None)
        cursor = self._cursors.get(sink)
        if cursor is None:
            cursor = self._cursors[sink] = self._dirty[sink] = self._open_head
        cursor = max(cursor, self._deleted_upto)  # rows up to there are gone anyway
        r = SpoolReader(self, sink, sources, cursor, counting=cursor < self._committed)
        self._readers[sink] = r
        self._request()
        return r

    def unregister(self, sink: str) -> None:
        """The sink's reader no longer holds back GC (its stored cursor stays for a later run)."""
        r = self._readers.pop(sink, None)
        self._held.pop(sink, None)
        if r is not None:
            r._registered = False
            r._event.set()
            self._wake.set()  # GC may now go further

    @property
    def stored_sinks(self) -> list[str]:
        """Sinks with a cursor in the spool (this run's and earlier runs')."""
        return sorted(self._cursors)

    async def release(self, sink: str) -> int:
        """Forget a sink that is no longer configured: its cursor stops holding rows back, and is deleted.
        Returns how many stored samples it had not acked (what it will never get)."""
        self.unregister(sink)
        cursor = self._cursors.pop(sink, None)
        self._dirty.pop(sink, None)
        gaps = [(lo, hi) for lo, hi in self._gaps.pop(sink, [])]
        self._gaps_dirty.discard(sink)
        self._held_kept.pop(sink, None)
        if cursor is None:
            return 0

        def forget(conn: sqlite3.Connection) -> int:
            pending = sum(conn.execute("SELECT coalesce(sum(n), 0) FROM batches WHERE seq >= ? AND seq <= ?",
                                       span).fetchone()[0] for span in outside(cursor + 1, 1 << 62, gaps))
            conn.execute("DELETE FROM cursors WHERE sink = ?", (sink,))  # autocommit: outside any batch
            conn.execute("DELETE FROM gaps WHERE sink = ?", (sink,))
            return int(pending)

        pending = await self._call(forget)
        self._wake.set()  # GC may now go further
        return pending

    def cursor_moved(self, sink: str, seq: int) -> None:
        self._moves += 1
        self._cursors[sink] = seq
        self._dirty[sink] = seq
        self._gen += 1  # committed with the next appends, or alone after ``cursor_delay``
        if self._cursor_since is None:
            self._cursor_since = time.monotonic()
            self._wake.set()  # an idle writer learns when it is due
        if seq > self.tail.floor and self._readers:  # what every reader acked is never read from memory again
            self.tail.cut(min(r._acked for r in self._readers.values()))

    # -- what readers ask of the spool (``gateway.spool.reader.ReaderHost``) ---------------------------

    @property
    def committed(self) -> int:
        return self._committed

    def usable(self) -> bool:
        return not (self._closed or self._failed)

    def gaps_of(self, sink: str) -> Gaps:
        return self._gaps.setdefault(sink, [])

    async def read_stored(self, after: int, upto: int, match: Callable[[str], bool], max_samples: int,
                          gaps: Sequence[tuple[int, int]]) -> ReadResult:
        return await self._on_thread(self._store.read, after, upto, match, max_samples, gaps)

    def nudge(self) -> None:
        """A reader stepped over rows it does not want: garbage collection may go further."""
        self._wake.set()

    def age_of(self, seq: int) -> float:
        """Seconds since the row ``seq`` (or the first one after it) was appended; a lower bound off the tail."""
        appended = self.tail.appended_at(seq) if seq > self.tail.floor else self._ages.appended_at(seq)
        return 0.0 if appended is None else max(0.0, time.monotonic() - appended)

    # -- stats and helpers ---------------------------------------------------------------------------

    def stats(self) -> SpoolStats:
        return SpoolStats(self._batches, self._samples, self._bytes, self._committed,
                          len(self._pending) + self._inflight_rows, dict(self.drops.by_reason))

    async def _on_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise SpoolClosedError("spool is not open")
        return await self._executor.run(fn, *args)

    async def _call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn(connection)`` on the spool thread (tests and diagnostics)."""
        return await self._on_thread(self._store.call, fn)

    def _error(self, kind: str, n: int = 1) -> None:
        child = self._m_err.get(kind)
        if child is None:
            child = self._m_err[kind] = self.metrics.spool_errors.labels(kind)
        child.inc(n)

    def _skip(self, sink: str, seq: int, n: int, kept: int) -> None:
        """drop_newest: the full ``sink`` skips the stored row ``seq``; extend its last gap when no row
        was kept for it since."""
        gaps = self._gaps.setdefault(sink, [])
        if gaps and gaps[-1][1] >= kept:
            gaps[-1][1] = seq
        else:
            gaps.append([seq, seq])
        self._gaps_dirty.add(sink)
        self.drops.lost_for(sink, "overflow", n)

    def dropped_by_sink(self) -> dict[str, dict[str, int]]:
        """Samples each sink will never get in this run, by reason (kept across hot reloads)."""
        return self.drops.by_sink()

    @property
    def last_drop_mono(self) -> float | None:
        """Monotonic time of the last drop some sink missed (None: none in this run)."""
        return self.drops.last_drop_mono

    def damaged(self, rows: list[tuple[int, str, int]], sink: str) -> None:
        self._error("corrupt", len(rows))
        self.log.error("damaged spool rows skipped", seqs=[r[0] for r in rows], sink=sink)
        n = sum(r[2] for r in rows)
        self.drops.lost("corrupt", n)
        self.drops.lost_for(sink, "corrupt", n)
        self.drops.log_due()

    def _set_gauges(self) -> None:
        self.metrics.spool_bytes.set(self._bytes)
        self.metrics.spool_batches.set(self._batches)

    # -- the writer task -----------------------------------------------------------------------------

    def _writer_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        # A bug, not I/O (I/O errors are retried inside): fail loudly instead of letting appends hang.
        self.log.error("spool writer crashed; appends now fail", exc_info=task.exception())
        self._error("crash")
        self._closing = self._failed = True
        for _, fut in self._waiters:
            if not fut.done():
                fut.set_exception(SpoolClosedError("spool writer crashed"))
        self._waiters.clear()
        self._room.set()
        for reader in self._readers.values():
            reader._event.set()

    def _gc_floor(self) -> int:
        """Highest seq every holding cursor has passed; 0 when no cursor holds anything (collect nothing)."""
        floors = [r._acked for r in self._readers.values()]
        floors.extend(self._held.values())
        return min(floors) if floors else 0

    def _gc_due(self, now: float) -> bool:
        collectable = self._gc_floor() > self._deleted_upto or (
            self._moves != self._moves_collected and any(self._gaps.values()))
        return collectable and (now - self._last_gc >= self.gc_interval or self._closing)

    def _maintenance_delay(self, now: float) -> float | None:
        delays = []
        if self._cursor_since is not None and self._gen != self._done_gen:
            delays.append(self._cursor_since + self.cursor_delay - now)
        if (aged := self._ages.next_due(now)) is not None:
            delays.append(aged)
        if self._gc_floor() > self._deleted_upto:
            delays.append(self._last_gc + self.gc_interval - now)
        return max(0.0, min(delays)) if delays else None

    def _has_work(self, now: float) -> bool:
        if self._eager_gen > self._done_gen:
            return True
        if self._gen != self._done_gen and (  # only cursor moves: due when asked for, or after a while
                self._urgent.is_set() or self._closing or self._cursor_since is None
                or now - self._cursor_since >= self.cursor_delay):
            return True
        return self._gc_due(now) or self._ages.cutoff(now) > self._deleted_upto

    async def _run_writer(self) -> None:
        failures = 0
        while True:
            now = time.monotonic()
            if not self._has_work(now):
                if self._closing:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._maintenance_delay(now)):
                        await self._wake.wait()
                continue
            interval = self.config.commit_interval
            if interval > 0 and self._work_since is not None and not self._urgent.is_set() and not self._closing:
                delay = self._work_since + interval - now
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await self._urgent.wait()
            job = self._take_job()
            try:
                result = await self._on_thread(self._store.write, job)
            except Exception as exc:  # I/O trouble must not end the spool: keep everything and retry
                self._restore(job)
                failures += 1
                self._error("disk_full" if isinstance(exc, sqlite3.Error) and is_full(exc) else "io")
                self.log.error("spool commit failed; keeping the data queued and retrying", error=str(exc),
                               attempt=failures)
                if self._closing and failures >= 3:
                    self.log.error("spool closing without committing queued data",
                                   batches=len(self._pending), cursors=len(self._dirty))
                    return
                await asyncio.sleep(min(5.0, 0.05 * 2 ** failures))
                continue
            failures = 0
            self._apply(job, result)

    def _take_job(self) -> WriteJob:
        now = time.monotonic()
        rows, self._pending = self._pending, []
        self._inflight_rows = len(rows)
        cursors, self._dirty = self._dirty, {}
        dead, self._dead = self._dead, []
        count_readers = [r for r in self._readers.values() if r._count is InitialCount.WAITING]
        counts = []
        for r in count_readers:
            r._count = InitialCount.RUNNING
            counts.append((r._acked, r._count_upto, [(lo, hi) for lo, hi in r._gaps]))
        self._counting = count_readers
        floor = self._gc_floor()
        gc_upto = 0
        gap_deletes: list[tuple[int, int]] = []
        if self._gc_due(now):
            self._moves_collected = self._moves
            gc_upto = floor if floor > self._deleted_upto else 0
            gap_deletes = self._prune_gaps(floor)
            self._last_gc = now
        age_upto = self._ages.cutoff(now)
        self._work_since = self._cursor_since = None
        self._urgent.clear()
        job = WriteJob(
            gen=self._gen, rows=rows, last_seq=self._next_seq - 1, cursors=cursors, dead=dead, counts=counts,
            gc_upto=gc_upto, age_upto=age_upto if age_upto > self._deleted_upto else 0,
            min_acked=floor if (self._readers or self._held) else self._next_seq, created_ns=time.time_ns(),
            gap_deletes=gap_deletes,
        )
        if self.config.overflow == "drop_newest" and int(self.config.max_size) > 0:
            per_sample = self._bytes / self._samples if self._samples else 0.0
            job.views = [(r.sink, r._match, r.pending_samples() * per_sample) for r in self._readers.values()]
            job.held = list(self._held)
        if self._gaps_dirty:
            job.gaps = {sink: [(lo, hi) for lo, hi in self._gaps.get(sink, [])] for sink in self._gaps_dirty}
            self._gaps_dirty = set()
        return job

    def _prune_gaps(self, floor: int) -> list[tuple[int, int]]:
        """Forget gaps every holder is past; return the seq ranges above ``floor`` that no holder wants
        (each full sink skipped them and every other sink acked them), for the writer to delete."""
        holders = [(r.sink, r._acked) for r in self._readers.values()] + list(self._held.items())
        if not any(self._gaps.get(sink) for sink, _ in holders):
            return []
        for sink, acked in holders:
            gaps = self._gaps.get(sink)
            if gaps and gaps[0][1] <= acked:
                k = 0
                while k < len(gaps) and gaps[k][1] <= acked:
                    k += 1
                del gaps[:k]  # in place: the reader holds this very list
                self._gaps_dirty.add(sink)
        return unwanted_ranges(holders, self._gaps, floor, self._committed)

    def _restore(self, job: WriteJob) -> None:
        self._pending[:0] = job.rows
        self._inflight_rows = 0
        for sink, seq in job.cursors.items():
            self._dirty.setdefault(sink, seq)  # a newer ack queued meanwhile wins
        self._dead[:0] = job.dead
        self._gaps_dirty.update(job.gaps)
        if job.cursors and self._cursor_since is None:
            self._cursor_since = time.monotonic()
        for r in self._counting:
            if r._count is InitialCount.RUNNING:
                r._count = InitialCount.WAITING
        if self._work_since is None:
            self._work_since = time.monotonic()

    def _apply(self, job: WriteJob, res: WriteResult) -> None:
        self._inflight_rows = 0
        readers = list(self._readers.values())
        woken: set[SpoolReader] = set()
        # Initial counts first: this job's own deletions and inserts then adjust them like everyone's.
        for r, per_source in zip(self._counting, res.counts, strict=True):
            if r._count is InitialCount.RUNNING and self._readers.get(r.sink) is r:
                r._pending += sum(n for source, n in per_source.items() if r._match(source))
                r._count = InitialCount.DONE
                woken.add(r)
        self._counting = []
        if res.deleted_upto:
            self._deleted(res.deleted_upto, res.dropped, readers)
        prev = self._committed
        add_to_tail = self.tail.add
        done_at = time.monotonic()
        stored_samples = 0
        skips = res.skips
        held = self._held
        for seq, source, samples, mono in res.stored:
            n = len(samples)
            stored_samples += n
            add_to_tail(seq, source, samples, mono, done_at)
            skip = skips.get(seq) if skips else None
            for r in readers:
                if r._match(source) and not (skip and r.sink in skip):
                    if seq > r._acked:
                        r._pending += n
                    r._kept = seq
                    woken.add(r)
                else:
                    if skip and r.sink in skip:
                        self._skip(r.sink, seq, n, r._kept)
                    if r._pos >= prev and r._acked >= r._last_out:
                        r._pos = r._acked = seq  # idle at the head and not interested: step over it
            if held:
                for sink in held:
                    if skip and sink in skip:
                        self._skip(sink, seq, n, self._held_kept.get(sink, 0))
                    else:
                        self._held_kept[sink] = seq
            if skip:
                self.drops.lost("overflow", n)
            prev = seq
        if res.stored:
            self._committed = prev
            self._emit_commit.observe(done_at - res.stored[0][3])  # the commit's oldest row waited longest
            self.metrics.spool_appended.inc(stored_samples)
            self._ages.committed(prev, res.stored[-1][3])
        for _, source, n, reason in res.refused:
            missed = False
            for r in readers:
                if r._match(source):
                    missed = True
                    self.drops.lost_for(r.sink, reason, n)
            for sink in held:
                missed = True
                self.drops.lost_for(sink, reason, n)
            if missed:
                self.drops.lost(reason, n)
        self.tail.trim(self.config.memory_batches, self.config.memory_samples)
        self._batches, self._samples, self._bytes = res.batches, res.samples, res.bytes
        self._set_gauges()
        for seconds in res.commit_seconds:
            self.metrics.spool_commit_seconds.observe(seconds)
        for kind, count in res.errors.items():
            self._error(kind, count)
        done = job.gen
        if self._gaps_dirty:
            # Persist what the full sinks skipped in the next commit; a flush waiting on this one waits for
            # that one too (one round more, never longer), so what it returns on is on disk, gaps included.
            self._request()
            done = job.gen - 1
        self.drops.log_due()
        self._done_gen = done
        if self._waiters:
            still = []
            for target, fut in self._waiters:
                if fut.done():
                    continue
                if target <= done:
                    fut.set_result(None)
                else:
                    still.append((target, fut))
            self._waiters = still
        if len(self._pending) <= self._bound:
            self._room.set()
        for r in woken:
            r._event.set()

    def _deleted(self, upto: int, dropped: list[Dropped], readers: list[SpoolReader]) -> None:
        """Rows up to ``upto`` are gone: count what some cursor still wanted, move cursors past them."""
        gaps = self._gaps
        for seq, source, n, reason in dropped:
            missed = False
            for sink, c in self._held.items():
                if seq > c and not (gaps.get(sink) and in_gaps(gaps[sink], seq)):
                    missed = True
                    self.drops.lost_for(sink, reason, n)
            for r in readers:
                if seq > r._acked and r._match(source) and not (r._gaps and in_gaps(r._gaps, seq)):
                    missed = True
                    r._forget(seq, n)
                    self.drops.lost_for(r.sink, reason, n)
            if missed:
                self.drops.lost(reason, n)
        for r in readers:
            fl = r._inflight
            while fl and fl[0][0] <= upto:
                fl.popleft()  # already forgotten above
            if r._acked < upto:
                r._acked = upto
            if r._pos < upto:
                r._pos = upto
        self._deleted_upto = max(self._deleted_upto, upto)
        self._ages.cut(upto)
        self.tail.cut(upto)
