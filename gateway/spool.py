"""The durable store-and-forward spool between sources and sinks: one SQLite file in WAL mode.

What a source emits is appended once, one row per batch, and every sink reads it through its own
cursor (a ``SpoolReader``), which moves only when the sink says its uplink accepted the data.

Guarantees
    Delivery is at-least-once and in order per sink. A reader only ever sees batches that are committed
    to SQLite, and an ack is written by the next write transaction (with whatever appends are queued),
    so after a crash a sink may be offered again the batches after its last persisted cursor, but never
    sees a gap and never a sequence number reused for other data (``meta.last_seq`` keeps ``seq``
    growing even when every row was deleted). A sink that is down only holds its own cursor back:
    collection and the other sinks go on, and the spool's bounds decide what happens to data the slow
    sink never took. A new sink starts at the head as of ``open()`` (see ``Spool.reader``).

Durability is a setting
    ``synchronous`` maps to ``PRAGMA synchronous``. ``normal`` (the default) survives a process crash
    or ``kill -9``: in WAL mode a commit is in the OS page cache when it returns, and the OS writes it
    out even if the process dies. ``full`` also survives a power cut, at the price of one fsync per
    commit (on SD cards and eMMC that is milliseconds and flash wear). ``off`` leaves syncing to the OS
    and may lose recent commits, or in rare cases damage the file, on a power cut.
    ``commit_interval`` groups appends for that many seconds before one commit: a crash can then lose
    up to that much data that sources already handed over, in exchange for far fewer flash writes.
    With ``0`` the spool commits as soon as its thread is free, which already groups whatever queued
    while the previous commit ran (group commit): one commit is in flight at a time, so under load
    commits grow larger instead of more frequent.

Bounds
    ``max_size`` bounds the payload bytes of spooled batches and ``max_age`` their age (either at 0
    means unbounded). ``overflow: drop_oldest`` deletes the oldest batches, even ones some sink has not
    delivered; ``drop_newest`` refuses the new batch. A full disk (``SQLITE_FULL``) is handled the
    same way: drop the oldest and retry, or refuse the new batches; the spool never stops on it.
    ``metrics.spool_dropped{reason}`` (``overflow``, ``age``, ``disk_full``, plus ``corrupt`` for a
    damaged row and ``invalid`` for an unstorable value) counts only samples that at least one sink
    still wanted: a registered reader whose sources match and that had not acked them, or a sink
    whose stored cursor is not yet registered in this run.

Age
    Edge boxes without a real-time clock boot in 1970, so ages within a run use the monotonic clock
    (the moment of ``append``). Rows left by a previous run only have a wall-clock ``created_ns``: their
    age is ``now - created_ns`` when that is sane (``>= 0``); a row from the "future" (the clock was
    later set back) counts as fresh, i.e. as if written at ``open()``. Eviction is never early; it may
    be late by ``max_age / 2048`` within a run and by the spacing of the sampled rows for old rows.

Garbage collection
    Rows every holding cursor has acked are deleted in one statement, at most every ``gc_interval``
    seconds, not per ack. A cursor holds rows back while its reader is registered, and a stored cursor
    of a sink not yet registered in this run holds them too (a sink whose uplink is down at start-up
    may register late), until ``unregister``. With no cursor at all nothing is collected.

Concurrency
    The SQLite connection lives on one thread of the spool's own single-worker executor (never the
    default executor). Appends are queued on the event loop and committed by a writer task that hands
    whole groups to that thread; readers at the head are served from a bounded in-memory tail of
    recently committed batches (``memory_batches``), so they never decode (they get the very sample
    lists that were appended); a reader behind the tail reads and decodes on the spool thread.
    ``append`` awaits only when more than ``memory_batches`` batches are not yet committed.

Encoding is columnar ``marshal`` (see ``gateway.spool_codec``); never pickle.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from operator import itemgetter
from pathlib import Path
from typing import Any, Final, TypeVar

from gateway.config.site import SpoolConfig
from gateway.errors import GatewayError
from gateway.logs import get_logger
from gateway.metrics import Metrics
from gateway.model import Batch, Sample, SpooledBatch
from gateway.spool_codec import CODEC, DecodeError, decode, encode

SCHEMA_VERSION: Final = 1
_SYNCHRONOUS: Final = {"off": "OFF", "normal": "NORMAL", "full": "FULL"}
_READ_SCAN_ROWS: Final = 4096  # rows one disk read may step over, so a read job stays short
_AGE_SAMPLES: Final = 256  # rows sampled at open to date what a previous run left
_CHECKPOINT_SPLIT: Final = 2048  # age checkpoints per max_age within a run
_DEAD_LETTER_SHARE: Final = 0.1  # dead letters may hold this share of max_size (at least 1 MiB)
_DROP_REASONS: Final = ("overflow", "age", "disk_full", "corrupt", "invalid")
_lo: Final = itemgetter(0)

_SCHEMA: Final = (
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value)",
    "CREATE TABLE IF NOT EXISTS batches(seq INTEGER PRIMARY KEY, source TEXT NOT NULL, n INTEGER NOT NULL,"
    " created_ns INTEGER NOT NULL, payload BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS cursors(sink TEXT PRIMARY KEY, seq INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS dead_letters(id INTEGER PRIMARY KEY, sink TEXT NOT NULL, seq INTEGER NOT NULL,"
    " source TEXT NOT NULL, error TEXT NOT NULL, created_ns INTEGER NOT NULL, payload BLOB NOT NULL)",
    # drop_newest: seq ranges a full sink skipped (it will never be offered them); additive, so schema 1 still
    "CREATE TABLE IF NOT EXISTS gaps(sink TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,"
    " PRIMARY KEY(sink, lo))",
)

_Row = tuple[int, str, list[Sample], float]
"""A queued batch: seq, source, samples, monotonic time of the append."""
_Dropped = tuple[int, str, int, str]
"""A batch some reader may have wanted, deleted or refused: seq, source, samples, reason."""
_Gaps = list[list[int]]
"""Ascending, disjoint [lo, hi] seq ranges (inclusive) one sink skipped; mutated in place."""
_View = tuple[str, Callable[[str], bool], float]
"""drop_newest: a registered sink as the writer sees it: name, source match, estimated backlog bytes."""
_T = TypeVar("_T")


class SpoolClosedError(GatewayError):
    """The spool is not open (yet, or any more), or the reader was unregistered."""


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


# --------------------------------------------------------------------------------------------------
# The spool thread: everything that touches the connection.


@dataclass(slots=True)
class _Job:
    gen: int
    rows: list[_Row]
    last_seq: int
    cursors: dict[str, int]
    dead: list[tuple[str, int, str, str, list[Sample]]]
    counts: list[tuple[int, int, list[tuple[int, int]]]]  # (after, upto] minus gaps: for readers just registered
    gc_upto: int  # every holding cursor is past this: delete without counting
    age_upto: int  # rows up to here are older than max_age
    min_acked: int  # rows at or below were wanted by no reader: deletions need no per-row detail
    created_ns: int
    views: list[_View] = field(default_factory=list)  # drop_newest with max_size: registered sinks
    held: list[str] = field(default_factory=list)  # drop_newest with max_size: stored cursors not registered
    gaps: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # sinks whose gaps changed
    gap_deletes: list[tuple[int, int]] = field(default_factory=list)  # ranges no holder wants


@dataclass(slots=True)
class _Result:
    stored: list[_Row] = field(default_factory=list)
    refused: list[_Dropped] = field(default_factory=list)
    dropped: list[_Dropped] = field(default_factory=list)
    skips: dict[int, tuple[str, ...]] = field(default_factory=dict)  # stored seq -> full sinks that skip it
    deleted_upto: int = 0
    counts: list[dict[str, int]] = field(default_factory=list)
    batches: int = 0
    samples: int = 0
    bytes: int = 0
    commit_seconds: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _OpenInfo:
    last_seq: int
    first_seq: int  # lowest stored seq (last_seq + 1 when empty)
    cursors: dict[str, int]
    batches: int
    samples: int
    bytes: int
    dated: list[tuple[int, int]]  # (seq, created_ns) of sampled rows, ascending
    gaps: dict[str, _Gaps]


@dataclass(slots=True)
class _ReadResult:
    batches: list[SpooledBatch]
    scanned: int  # every row up to here was returned or is of no interest
    damaged: list[tuple[int, str, int]]


def _is_full(exc: sqlite3.Error) -> bool:
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "is full" in str(exc)


class _Store:
    """Owns the connection. Every method runs on the spool thread only."""

    def __init__(self, path: Path, config: SpoolConfig) -> None:
        self.path = path
        self.config = config
        self._conn: sqlite3.Connection | None = None
        self.batches = self.samples = self.bytes = 0
        self.last_seq = 0
        self.log = get_logger("gateway.spool", path=str(path))

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise SpoolClosedError("spool is not open")
        return self._conn

    def open(self) -> _OpenInfo:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._open()
        except sqlite3.DatabaseError as exc:
            if not _is_damaged(exc):
                raise
            # A damaged file (power cut with synchronous=off, a foreign file) must not keep the gateway
            # down: keep it for inspection and start afresh.
            self.close()
            aside = self.path.with_name(f"{self.path.name}.damaged-{time.time_ns()}")
            self.log.error("spool file is damaged; moved aside, starting empty", error=str(exc),
                           moved_to=str(aside))
            os.replace(self.path, aside)
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}{suffix}", f"{aside}{suffix}")
            return self._open()

    def _open(self) -> _OpenInfo:
        conn = self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise GatewayError(f"spool {self.path}: SQLite refused WAL mode (got {mode})")
        conn.execute(f"PRAGMA synchronous={_SYNCHRONOUS[self.config.synchronous]}")
        conn.execute("PRAGMA busy_timeout=5000")  # an outside reader (CLI, tests) may hold the WAL briefly
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SCHEMA:
                conn.execute(stmt)
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            version = int(meta.get("schema_version", SCHEMA_VERSION))
            if version > SCHEMA_VERSION:
                raise GatewayError(f"spool {self.path}: schema version {version} is newer than this gateway's"
                                   f" ({SCHEMA_VERSION}); upgrade the gateway or move the file away")
            if meta.get("codec", CODEC) != CODEC:
                raise GatewayError(f"spool {self.path}: payload codec {meta['codec']!r} is unknown")
            conn.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                             [("schema_version", SCHEMA_VERSION), ("codec", CODEC)])
            conn.execute("COMMIT")
        except BaseException:
            self._rollback()
            raise
        batches, samples, nbytes, lo, hi = conn.execute(
            "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(length(payload)), 0), min(seq), max(seq)"
            " FROM batches").fetchone()
        cursors = dict(conn.execute("SELECT sink, seq FROM cursors").fetchall())
        gaps: dict[str, _Gaps] = {}
        for sink, g_lo, g_hi in conn.execute("SELECT sink, lo, hi FROM gaps ORDER BY sink, lo"):
            gaps.setdefault(sink, []).append([g_lo, g_hi])
        self.last_seq = max(int(meta.get("last_seq", 0)), hi or 0, *cursors.values(), 0)
        self.batches, self.samples, self.bytes = batches, samples, nbytes
        return _OpenInfo(self.last_seq, lo if lo is not None else self.last_seq + 1, cursors,
                         batches, samples, nbytes, self._date_rows(lo, hi), gaps)

    def _date_rows(self, lo: int | None, hi: int | None) -> list[tuple[int, int]]:
        """Sample up to _AGE_SAMPLES rows by seq (point look-ups, no scan) to date what is stored."""
        if lo is None or hi is None:
            return []
        step = max(1, (hi - lo) // _AGE_SAMPLES)
        out: list[tuple[int, int]] = []
        at = lo
        while True:
            row = self.conn.execute("SELECT seq, created_ns FROM batches WHERE seq >= ? ORDER BY seq LIMIT 1",
                                    (at,)).fetchone()
            if row is None:
                return out
            out.append((row[0], row[1]))
            if row[0] >= hi:
                return out
            at = min(row[0] + step, hi)

    def close(self) -> None:
        if self._conn is None:
            return
        try:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            self._conn.close()
            self._conn = None

    def call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return fn(self.conn)

    # -- reading -------------------------------------------------------------------------------------

    def read(self, after: int, upto: int, match: Callable[[str], bool], max_samples: int,
             gaps: Sequence[tuple[int, int]] = ()) -> _ReadResult:
        """Matching batches in (after, upto] outside ``gaps``, at most max_samples samples (always at least
        one batch)."""
        conn = self.conn
        chosen: list[tuple[int, str, int]] = []
        total = 0
        scanned = after
        contiguous = True  # no unwanted row between the chosen ones: fetch payloads with one range scan
        cur = conn.execute("SELECT seq, source, n FROM batches WHERE seq > ? AND seq <= ? ORDER BY seq",
                           (after, upto))
        try:
            for steps, (seq, source, n) in enumerate(cur, 1):
                if match(source) and not (gaps and _in_gaps(gaps, seq)):
                    if chosen and total + n > max_samples:
                        break
                    chosen.append((seq, source, n))
                    total += n
                elif chosen:
                    contiguous = False
                scanned = seq
                if steps >= _READ_SCAN_ROWS:
                    break
            else:
                scanned = upto
        finally:
            cur.close()
        if not chosen:
            return _ReadResult([], scanned, [])
        if contiguous:
            payloads = conn.execute("SELECT payload FROM batches WHERE seq >= ? AND seq <= ? ORDER BY seq",
                                    (chosen[0][0], chosen[-1][0])).fetchall()
        else:
            payloads = [conn.execute("SELECT payload FROM batches WHERE seq = ?", (seq,)).fetchone()
                        for seq, _, _ in chosen]
        out: list[SpooledBatch] = []
        damaged: list[tuple[int, str, int]] = []
        for (seq, source, n), (payload,) in zip(chosen, payloads, strict=True):
            try:
                out.append(SpooledBatch(seq, source, decode(payload, n)))
            except DecodeError:
                damaged.append((seq, source, n))
        return _ReadResult(out, scanned, damaged)

    # -- writing -------------------------------------------------------------------------------------

    def write(self, job: _Job) -> _Result:
        """One transaction: deletions, appends, cursors, dead letters. Handles a full disk in place."""
        encoded: list[tuple[_Row, bytes]] = []
        refused: list[_Dropped] = []
        errors: dict[str, int] = {}
        for row in job.rows:
            try:
                encoded.append((row, encode(row[2])))
            except Exception as exc:  # one malformed batch must not wedge the spool: refuse it, keep going
                errors["encode"] = errors.get("encode", 0) + 1
                self.log.error("batch not spooled: unstorable value", source=row[1], error=str(exc))
                refused.append((row[0], row[1], len(row[2]), "invalid"))
        freed: list[_Dropped] = []
        freed_upto = 0
        commits: list[float] = []
        while True:
            try:
                result = self._write_once(job, encoded)
                break
            except sqlite3.OperationalError as exc:
                self._rollback()
                if not _is_full(exc):
                    raise
                errors["disk_full"] = errors.get("disk_full", 0) + 1
                if not encoded:
                    raise  # not even cursors fit: the writer keeps them and retries later
                if self.config.overflow == "drop_oldest" and self.batches:
                    try:
                        t0 = time.perf_counter()
                        freed_upto = self._free_for_disk(2 * sum(len(p) for _, p in encoded), job, freed)
                        commits.append(time.perf_counter() - t0)
                        continue
                    except sqlite3.OperationalError as exc2:
                        self._rollback()
                        if not _is_full(exc2):
                            raise
                refused.extend((row[0], row[1], len(row[2]), "disk_full") for row, _ in encoded)
                encoded = []
        result.refused[:0] = refused
        result.dropped[:0] = freed
        result.deleted_upto = max(result.deleted_upto, freed_upto)
        result.commit_seconds[:0] = commits
        for kind, count in errors.items():
            result.errors[kind] = result.errors.get(kind, 0) + count
        return result

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    def _write_once(self, job: _Job, encoded: list[tuple[_Row, bytes]]) -> _Result:
        conn = self.conn
        res = _Result()
        t0 = time.perf_counter()
        batches, samples, nbytes = self.batches, self.samples, self.bytes  # applied only after COMMIT
        conn.execute("BEGIN IMMEDIATE")
        # Counts first: rows this job inserts reach the new readers through the writer's per-commit path.
        res.counts = [self._count(after, upto, gaps) for after, upto, gaps in job.counts]
        for lo, hi in job.gap_deletes:  # skipped by every full sink, acked by every other: nobody's data
            d_b, d_s, d_bytes = conn.execute(
                "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(length(payload)), 0) FROM batches"
                " WHERE seq >= ? AND seq <= ?", (lo, hi)).fetchone()
            if d_b:
                conn.execute("DELETE FROM batches WHERE seq >= ? AND seq <= ?", (lo, hi))
                batches, samples, nbytes = batches - d_b, samples - d_s, nbytes - d_bytes
        upto = 0
        # GC: every holding cursor is past gc_upto, so no detail; age: detail where a cursor is behind.
        for limit, detail_after in ((job.gc_upto, job.gc_upto), (job.age_upto, job.min_acked)):
            if limit > upto:
                d_b, d_s, d_bytes = self._delete_upto(limit, detail_after, "age", res.dropped)
                batches, samples, nbytes = batches - d_b, samples - d_s, nbytes - d_bytes
                upto = limit
        accepted: list[tuple[_Row, bytes]] = []
        max_size = int(self.config.max_size)
        if max_size <= 0:
            accepted = encoded
        elif self.config.overflow == "drop_newest":
            accepted = self._accept_per_sink(job, encoded, nbytes, max_size, res)
        else:
            accepted = list(encoded)
            new_bytes = sum(len(p) for _, p in accepted)
            while accepted and new_bytes > max_size:  # the new data alone is too much: keep its newest part
                row, payload = accepted.pop(0)
                new_bytes -= len(payload)
                res.refused.append((row[0], row[1], len(row[2]), "overflow"))
            excess = nbytes + new_bytes - max_size
            if excess > 0 and batches:
                limit, d_b, d_s, d_bytes = self._delete_oldest(excess, job.min_acked, "overflow", res.dropped)
                batches, samples, nbytes = batches - d_b, samples - d_s, nbytes - d_bytes
                upto = max(upto, limit)
        if accepted:
            conn.executemany(
                "INSERT INTO batches(seq, source, n, created_ns, payload) VALUES (?, ?, ?, ?, ?)",
                [(row[0], row[1], len(row[2]), job.created_ns, payload) for row, payload in accepted])
            batches += len(accepted)
            samples += sum(len(row[2]) for row, _ in accepted)
            nbytes += sum(len(p) for _, p in accepted)
        if job.cursors:
            conn.executemany(
                "INSERT INTO cursors(sink, seq) VALUES (?, ?) ON CONFLICT(sink) DO UPDATE SET seq = excluded.seq",
                list(job.cursors.items()))
        if job.last_seq > self.last_seq:
            conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('last_seq', ?)", (job.last_seq,))
        if job.dead:
            self._insert_dead_letters(job)
        for sink, ranges in job.gaps.items():
            conn.execute("DELETE FROM gaps WHERE sink = ?", (sink,))
            conn.executemany("INSERT INTO gaps(sink, lo, hi) VALUES (?, ?, ?)", [(sink, lo, hi) for lo, hi in ranges])
        conn.execute("COMMIT")
        self.batches, self.samples, self.bytes = batches, samples, nbytes
        self.last_seq = max(self.last_seq, job.last_seq)
        res.stored = [row for row, _ in accepted]
        res.deleted_upto = upto
        res.batches, res.samples, res.bytes = batches, samples, nbytes
        res.commit_seconds.append(time.perf_counter() - t0)
        return res

    def _count(self, after: int, upto: int, gaps: list[tuple[int, int]]) -> dict[str, int]:
        """Stored samples per source in (after, upto], leaving out a sink's ``gaps``."""
        out: dict[str, int] = {}
        for lo, hi in _outside(after + 1, upto, gaps):
            for source, n in self.conn.execute(
                    "SELECT source, sum(n) FROM batches WHERE seq >= ? AND seq <= ? GROUP BY source", (lo, hi)):
                out[source] = out.get(source, 0) + n
        return out

    def _accept_per_sink(self, job: _Job, encoded: list[tuple[_Row, bytes]], nbytes: int, max_size: int,
                         res: _Result) -> list[tuple[_Row, bytes]]:
        """drop_newest: ``max_size`` bounds each sink's backlog. A batch is kept while some sink that wants
        it has room; sinks that are full skip it. Refused only when every sink that wants it is full (or,
        with no sink at all, when the spool is).

        Backlogs are estimated from each sink's pending samples at the spool's mean size per sample;
        a stored cursor not registered yet counts the whole spool as its backlog.
        """
        accepted: list[tuple[_Row, bytes]] = []
        backlog = {sink: est for sink, _, est in job.views}
        held_backlog = float(nbytes)
        room = max_size - nbytes
        for row, payload in encoded:
            size = len(payload)
            source = row[1]
            keep = False
            wanted = False
            skip: list[str] = []
            for sink, match, _ in job.views:
                if match(source):
                    wanted = True
                    if backlog[sink] + size > max_size:
                        skip.append(sink)
                    else:
                        backlog[sink] += size
                        keep = True
            for sink in job.held:
                wanted = True
                if held_backlog + size > max_size:
                    skip.append(sink)
                else:
                    keep = True
            if not wanted:
                keep = size <= room  # no sink yet: a sink registered later gets this run's data
            if keep:
                accepted.append((row, payload))
                room -= size
                held_backlog += size
                if skip:
                    res.skips[row[0]] = tuple(skip)
            else:
                res.refused.append((row[0], row[1], len(row[2]), "overflow"))
        return accepted

    def _delete_upto(self, upto: int, detail_after: int, reason: str,
                     dropped: list[_Dropped]) -> tuple[int, int, int]:
        """Delete every row with seq <= upto; rows past ``detail_after`` are listed in ``dropped``.

        Returns the batches, samples and payload bytes deleted.
        """
        conn = self.conn
        quiet = min(upto, detail_after)
        n_b, n_s, n_bytes = conn.execute(
            "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(length(payload)), 0) FROM batches WHERE seq <= ?",
            (quiet,)).fetchone()
        if upto > quiet:
            for seq, source, n, size in conn.execute(
                    "SELECT seq, source, n, length(payload) FROM batches WHERE seq > ? AND seq <= ?",
                    (quiet, upto)).fetchall():
                dropped.append((seq, source, n, reason))
                n_b += 1
                n_s += n
                n_bytes += size
        conn.execute("DELETE FROM batches WHERE seq <= ?", (upto,))
        return n_b, n_s, n_bytes

    def _delete_oldest(self, need: int, detail_after: int, reason: str,
                       dropped: list[_Dropped]) -> tuple[int, int, int, int]:
        """Delete the oldest rows until ``need`` payload bytes are freed (or none are left).

        Rows past ``detail_after`` are listed in ``dropped``. Returns the highest deleted seq and the
        batches, samples and bytes deleted.
        """
        conn = self.conn
        upto = n_b = n_s = freed = 0
        while freed < need:
            chunk = conn.execute("SELECT seq, source, n, length(payload) FROM batches WHERE seq > ? ORDER BY seq"
                                 " LIMIT 256", (upto,)).fetchall()
            if not chunk:
                break
            for seq, source, n, size in chunk:
                if seq > detail_after:
                    dropped.append((seq, source, n, reason))
                n_b += 1
                n_s += n
                freed += size
                upto = seq
                if freed >= need:
                    break
        if upto:
            conn.execute("DELETE FROM batches WHERE seq <= ?", (upto,))
        return upto, n_b, n_s, freed

    def _free_for_disk(self, need: int, job: _Job, dropped: list[_Dropped]) -> int:
        """The disk is full: delete the oldest rows in a transaction of their own, so the retry can reuse
        their pages. Returns the highest deleted seq."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        found: list[_Dropped] = []
        upto, n_b, n_s, freed = self._delete_oldest(max(need, 1), job.min_acked, "disk_full", found)
        conn.execute("COMMIT")
        dropped.extend(found)
        self.batches -= n_b
        self.samples -= n_s
        self.bytes -= freed
        return upto

    def _insert_dead_letters(self, job: _Job) -> None:
        conn = self.conn
        rows = []
        for sink, seq, source, error, samples in job.dead:
            try:
                payload = encode(samples)
            except Exception as exc:  # keep the record of the rejection even if the data cannot be kept
                payload, error = b"", f"{error} (payload not storable: {exc})"
            rows.append((sink, seq, source, error, job.created_ns, payload))
        conn.executemany(
            "INSERT INTO dead_letters(sink, seq, source, error, created_ns, payload) VALUES (?, ?, ?, ?, ?, ?)",
            rows)
        cap = max(1 << 20, int(int(self.config.max_size) * _DEAD_LETTER_SHARE))
        held = conn.execute("SELECT coalesce(sum(length(payload)), 0) FROM dead_letters").fetchone()[0]
        if held > cap:  # rare path: keep the newest dead letters within their share
            keep = 0
            for row_id, size in conn.execute("SELECT id, length(payload) FROM dead_letters ORDER BY id DESC"
                                             ).fetchall():
                keep += size
                if keep > cap:
                    conn.execute("DELETE FROM dead_letters WHERE id <= ?", (row_id,))
                    break


def _in_gaps(gaps: Sequence[Sequence[int]], seq: int) -> bool:
    i = bisect_right(gaps, seq, key=_lo) - 1
    return i >= 0 and seq <= gaps[i][1]


def _outside(lo: int, hi: int, gaps: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """[lo, hi] minus ``gaps``, as inclusive ranges."""
    out: list[tuple[int, int]] = []
    at = lo
    for g_lo, g_hi in gaps:
        if g_hi < at:
            continue
        if g_lo > hi:
            break
        if g_lo > at:
            out.append((at, g_lo - 1))
        at = g_hi + 1
    if at <= hi:
        out.append((at, hi))
    return out


def _intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Intersection of two ascending lists of disjoint inclusive ranges."""
    out: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def _is_damaged(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)


# --------------------------------------------------------------------------------------------------
# The event-loop side.


class SpoolReader:
    """One sink's view of the spool: a read position and an acked cursor, both sequence numbers.

    ``next`` moves the read position; ``ack`` moves the cursor (persisted with the next commit);
    ``rewind`` puts the read position back on the cursor after a failed write.
    """

    def __init__(self, spool: Spool, sink: str, sources: Sequence[str], cursor: int, *, counting: bool) -> None:
        self.sink = sink
        self.sources = tuple(sources)
        self._spool = spool
        self._all = "*" in self.sources
        self._memo: dict[str, bool] = {}
        self._acked = cursor
        self._pos = cursor  # everything up to here was returned by next() or does not match
        self._last_out = cursor  # highest seq returned by next(); rows after it up to _pos do not match
        self._inflight: deque[tuple[int, int]] = deque()  # (seq, samples) returned and not yet acked
        self._pending = 0  # matching committed samples after _acked (may dip below 0 while counting)
        # Phase of the initial count of what is already stored after a stored cursor:
        # 0 done (or nothing to count), 1 waiting for the writer, 2 counted by the running job.
        self._phase = 1 if counting else 0
        self._count_upto = spool._committed if counting else 0
        self._epoch = 0  # bumped by rewind: a disk read that straddles it is discarded
        self._gaps = spool._gaps.setdefault(sink, [])  # seqs skipped while this sink was full (drop_newest)
        self._kept = spool._committed  # no row kept for this sink after here (a new gap may extend the last)
        self._event = asyncio.Event()
        self._registered = True

    def _match(self, source: str) -> bool:
        m = self._memo.get(source)
        if m is None:
            m = self._memo[source] = self._all or any(fnmatchcase(source, p) for p in self.sources)
        return m

    def _forget(self, seq: int, n: int) -> None:
        """Samples that stop being pending (acked or deleted)."""
        if self._phase == 1 and seq <= self._count_upto:
            return  # the initial count, still to come, will not include them
        self._pending -= n

    async def next(self, max_samples: int) -> list[SpooledBatch]:
        """Wait for committed batches past the read position that match this reader's sources.

        Returns consecutive matching batches with at most ``max_samples`` samples in total, but always
        at least one batch.
        """
        spool = self._spool
        while True:
            if not self._registered or spool._closed or spool._failed:
                raise SpoolClosedError(f"spool reader {self.sink!r} is closed")
            self._event.clear()  # before looking: a commit during the look sets it again
            if self._pos < spool._floor:
                out = await self._read_disk(max_samples)
                if out:
                    return out
                continue  # moved forward (or was rewound): look again, possibly in the tail
            out = spool._read_tail(self, max_samples)
            if out:
                return out
            if self._acked >= self._last_out and self._pos > self._acked:
                self._acked = self._pos  # nothing in flight and nothing wanted up to here: step over it
                spool._wake.set()  # which may let garbage collection go further
            await self._event.wait()

    async def _read_disk(self, max_samples: int) -> list[SpooledBatch]:
        spool = self._spool
        epoch, start = self._epoch, self._pos
        gaps = [(lo, hi) for lo, hi in self._gaps]
        res = await spool._on_thread(spool._store.read, start, spool._floor, self._match, max(1, max_samples), gaps)
        if res.damaged:
            spool._damaged(res.damaged, self.sink)
        if epoch != self._epoch or not self._registered:
            return []  # rewound (or dropped) meanwhile: look again from the new position
        pos = self._pos  # deletions meanwhile may have moved it forward
        out = [b for b in res.batches if b.seq > pos]
        for seq, source, n in res.damaged:
            if seq > pos and self._match(source):
                self._forget(seq, n)
        self._pos = max(pos, res.scanned)
        if out:
            self._inflight.extend((b.seq, len(b.samples)) for b in out)
            self._last_out = out[-1].seq
        return out

    async def ack(self, seq: int) -> None:
        """The sink accepted everything up to ``seq``. The cursor is persisted by the next commit."""
        if seq <= self._acked:
            return
        fl = self._inflight
        while fl and fl[0][0] <= seq:
            s, n = fl.popleft()
            self._forget(s, n)
        self._acked = seq
        if self._pos < seq:
            self._pos = seq
        self._spool._cursor_moved(self.sink, seq)

    def rewind(self) -> None:
        """After a failed write: the next ``next()`` starts again right after the acked cursor."""
        self._pos = self._last_out = self._acked
        self._inflight.clear()
        self._epoch += 1

    def pending_samples(self) -> int:
        """Committed samples of this reader's sources it has not acked (exact up to concurrent deletes)."""
        return max(0, self._pending)

    def oldest_pending_age(self) -> float:
        """Seconds since the oldest unacked batch was appended (monotonic), 0.0 when nothing is pending."""
        if self._pending <= 0:
            return 0.0
        return self._spool._age_of(self._acked + 1)


class Spool:
    """The spool of one gateway: ``open``, then ``append`` from the pipelines and ``reader`` per sink."""

    gc_interval: float = 1.0
    """Seconds between garbage collections of rows every cursor has passed."""

    def __init__(self, path: Path, config: SpoolConfig, metrics: Metrics) -> None:
        self.path = Path(path)
        self.config = config
        self.metrics = metrics
        self.log = get_logger("gateway.spool", path=str(self.path))
        self._store = _Store(self.path, config)
        self._executor: ThreadPoolExecutor | None = None
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
        self._pending: list[_Row] = []
        self._inflight_rows = 0
        self._dirty: dict[str, int] = {}
        self._dead: list[tuple[str, int, str, str, list[Sample]]] = []
        self._gen = 0  # bumped by every request that needs a commit
        self._done_gen = 0  # highest gen whose requests are committed
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
        self._dropped = dict.fromkeys(_DROP_REASONS, 0)
        self._last_drop_log = 0.0
        self.last_drop_mono: float | None = None
        """Monotonic time of the last drop some sink missed (None: none in this run)."""
        # Tail of committed batches: parallel lists from _tail_off on; every committed row > _floor is in it.
        self._tail_seq: list[int] = []
        self._tail: list[SpooledBatch] = []
        self._tail_mono: list[float] = []
        self._tail_off = 0
        self._floor = 0
        # Age checkpoints (ascending): every row with seq <= _cp_seq[i] was appended by _cp_mono[i].
        self._cp_seq: list[int] = []
        self._cp_mono: list[float] = []
        self._cp_step = (self._max_age or 7 * 86400.0) / _CHECKPOINT_SPLIT
        # Cursors.
        self._readers: dict[str, SpoolReader] = {}
        self._cursors: dict[str, int] = {}  # last known cursor of every sink (stored or acked)
        self._held: dict[str, int] = {}  # stored cursors of sinks not registered in this run yet
        self._counting: list[SpoolReader] = []  # readers whose initial count the running job computes
        # drop_newest: what each full sink skipped, persisted with the next commit when it changed.
        self._gaps: dict[str, _Gaps] = {}
        self._gaps_dirty: set[str] = set()
        self._moves = self._moves_collected = 0  # acks: gap ranges are worth collecting again after one
        self._held_kept: dict[str, int] = {}
        # What each sink will never get, by reason (this run; kept across hot reloads), and the part of
        # it not logged yet: the log's figures add up to the metric's.
        self._sink_dropped: dict[str, dict[str, int]] = {}
        self._m_sink_drop: dict[tuple[str, str], Any] = {}
        self._drop_log: dict[str, dict[str, int]] = {}
        # Metrics children, resolved once.
        self._m_drop = {r: metrics.spool_dropped.labels(r) for r in _DROP_REASONS}
        self._m_err: dict[str, Any] = {}

    # -- lifecycle -----------------------------------------------------------------------------------

    async def open(self) -> None:
        """Start the spool thread, create or migrate the schema, recover seq, cursors and totals."""
        if self._opened:
            raise GatewayError("spool is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        try:
            info = await self._on_thread(self._store.open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._opened = True
        self._next_seq = info.last_seq + 1
        self._committed = self._floor = self._open_head = info.last_seq
        self._deleted_upto = info.first_seq - 1
        self._batches, self._samples, self._bytes = info.batches, info.samples, info.bytes
        self._cursors = dict(info.cursors)
        self._held = dict(info.cursors)
        self._gaps = info.gaps
        self._held_kept = dict.fromkeys(info.cursors, info.last_seq)
        self._date_previous_run(info.dated)
        self._last_gc = time.monotonic()
        self._room.set()
        self._set_gauges()
        self._writer = asyncio.create_task(self._run_writer(), name="spool-writer")
        self._writer.add_done_callback(self._writer_done)
        self.log.info("spool open", batches=info.batches, samples=info.samples, bytes=info.bytes,
                      last_seq=info.last_seq, cursors=info.cursors)

    def _date_previous_run(self, dated: list[tuple[int, int]]) -> None:
        now_mono, now_wall = time.monotonic(), time.time_ns()
        last = float("-inf")
        for seq, created_ns in dated:
            age = (now_wall - created_ns) / 1e9
            mono = now_mono - age if age >= 0 else now_mono  # from the "future": the clock was set back
            last = max(last, mono)  # keep checkpoints ordered; a later row is never older
            self._cp_seq.append(seq)
            self._cp_mono.append(last)

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
            self._executor.shutdown(wait=True)
            for reader in self._readers.values():
                reader._event.set()
            for _, fut in self._waiters:
                if not fut.done():
                    fut.set_exception(SpoolClosedError("spool closed before the commit"))
            self._waiters.clear()
            self._room.set()
            self._log_drops(force=True)
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
        if not self._opened or self._closing:
            raise SpoolClosedError("spool is not open")
        self._dead.extend((sink, b.seq, b.source, error, b.samples) for b in batches)
        self._request()
        await self.flush()

    def _request(self) -> None:
        self._gen += 1
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
                                       span).fetchone()[0] for span in _outside(cursor + 1, 1 << 62, gaps))
            conn.execute("DELETE FROM cursors WHERE sink = ?", (sink,))  # autocommit: outside any batch
            conn.execute("DELETE FROM gaps WHERE sink = ?", (sink,))
            return int(pending)

        pending = await self._call(forget)
        self._wake.set()  # GC may now go further
        return pending

    def _cursor_moved(self, sink: str, seq: int) -> None:
        self._moves += 1
        self._cursors[sink] = seq
        self._dirty[sink] = seq
        self._request()

    def _read_tail(self, r: SpoolReader, max_samples: int) -> list[SpooledBatch]:
        seqs, tail = self._tail_seq, self._tail
        i = bisect_right(seqs, r._pos, self._tail_off)
        end = len(seqs)
        out: list[SpooledBatch] = []
        total = 0
        pos = r._pos
        match = r._match
        inflight = r._inflight
        gaps = r._gaps
        while i < end:
            b = tail[i]
            if match(b.source) and not (gaps and _in_gaps(gaps, seqs[i])):
                n = len(b.samples)
                if out and total + n > max_samples:
                    break
                out.append(b)
                inflight.append((b.seq, n))
                total += n
            pos = seqs[i]
            i += 1
        r._pos = pos
        if out:
            r._last_out = out[-1].seq
        return out

    def _age_of(self, seq: int) -> float:
        """Seconds since the row ``seq`` (or the first one after it) was appended; a lower bound off the tail."""
        now = time.monotonic()
        if seq > self._floor:
            i = bisect_left(self._tail_seq, seq, self._tail_off)
            return max(0.0, now - self._tail_mono[i]) if i < len(self._tail_seq) else 0.0
        k = bisect_left(self._cp_seq, seq)
        return max(0.0, now - self._cp_mono[k]) if k < len(self._cp_seq) else 0.0

    # -- stats and helpers ---------------------------------------------------------------------------

    def stats(self) -> SpoolStats:
        return SpoolStats(self._batches, self._samples, self._bytes, self._committed,
                          len(self._pending) + self._inflight_rows, dict(self._dropped))

    async def _on_thread(self, fn: Callable[..., _T], *args: Any) -> _T:
        if self._executor is None:
            raise SpoolClosedError("spool is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn(connection)`` on the spool thread (tests and diagnostics)."""
        return await self._on_thread(self._store.call, fn)

    def _error(self, kind: str, n: int = 1) -> None:
        child = self._m_err.get(kind)
        if child is None:
            child = self._m_err[kind] = self.metrics.spool_errors.labels(kind)
        child.inc(n)

    def _count_drop(self, reason: str, n: int) -> None:
        """Samples at least one sink missed (counted once, however many sinks missed them)."""
        self.last_drop_mono = time.monotonic()
        self._dropped[reason] += n
        self._m_drop[reason].inc(n)

    def _sink_drop(self, sink: str, reason: str, n: int) -> None:
        """Samples ``sink`` will never get."""
        per = self._sink_dropped.setdefault(sink, {})
        per[reason] = per.get(reason, 0) + n
        log = self._drop_log.setdefault(sink, {})
        log[reason] = log.get(reason, 0) + n
        child = self._m_sink_drop.get((sink, reason))
        if child is None:
            child = self._m_sink_drop[(sink, reason)] = self.metrics.sink_dropped.labels(sink, reason)
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
        self._sink_drop(sink, "overflow", n)

    def dropped_by_sink(self) -> dict[str, dict[str, int]]:
        """Samples each sink will never get in this run, by reason (kept across hot reloads)."""
        return {sink: dict(per) for sink, per in self._sink_dropped.items()}

    def _damaged(self, rows: list[tuple[int, str, int]], sink: str) -> None:
        self._error("corrupt", len(rows))
        self.log.error("damaged spool rows skipped", seqs=[r[0] for r in rows], sink=sink)
        n = sum(r[2] for r in rows)
        self._count_drop("corrupt", n)
        self._sink_drop(sink, "corrupt", n)
        self._log_drops()

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

    def _age_cutoff(self, now: float) -> int:
        if self._max_age <= 0 or not self._cp_mono:
            return 0
        k = bisect_right(self._cp_mono, now - self._max_age)
        return self._cp_seq[k - 1] if k else 0

    def _maintenance_delay(self, now: float) -> float | None:
        delays = []
        if self._max_age > 0 and self._cp_mono:
            delays.append(self._cp_mono[0] + self._max_age - now)
        if self._gc_floor() > self._deleted_upto:
            delays.append(self._last_gc + self.gc_interval - now)
        return max(0.0, min(delays)) if delays else None

    def _has_work(self, now: float) -> bool:
        return self._gen != self._done_gen or self._gc_due(now) or self._age_cutoff(now) > self._deleted_upto

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
                self._error("disk_full" if isinstance(exc, sqlite3.Error) and _is_full(exc) else "io")
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

    def _take_job(self) -> _Job:
        now = time.monotonic()
        rows, self._pending = self._pending, []
        self._inflight_rows = len(rows)
        cursors, self._dirty = self._dirty, {}
        dead, self._dead = self._dead, []
        count_readers = [r for r in self._readers.values() if r._phase == 1]
        counts = []
        for r in count_readers:
            r._phase = 2
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
        age_upto = self._age_cutoff(now)
        self._work_since = None
        self._urgent.clear()
        job = _Job(
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
        free = [(floor + 1, self._committed)]
        for sink, acked in holders:
            unwanted: list[tuple[int, int]] = [(0, acked)]
            for lo, hi in self._gaps.get(sink, ()):
                if lo <= unwanted[-1][1] + 1:
                    unwanted[-1] = (unwanted[-1][0], max(unwanted[-1][1], hi))
                else:
                    unwanted.append((lo, hi))
            free = _intersect(free, unwanted)
            if not free:
                break
        return free

    def _restore(self, job: _Job) -> None:
        self._pending[:0] = job.rows
        self._inflight_rows = 0
        for sink, seq in job.cursors.items():
            self._dirty.setdefault(sink, seq)  # a newer ack queued meanwhile wins
        self._dead[:0] = job.dead
        self._gaps_dirty.update(job.gaps)
        for r in self._counting:
            if r._phase == 2:
                r._phase = 1
        if self._work_since is None:
            self._work_since = time.monotonic()

    def _apply(self, job: _Job, res: _Result) -> None:
        self._inflight_rows = 0
        readers = list(self._readers.values())
        woken: set[SpoolReader] = set()
        # Initial counts first: this job's own deletions and inserts then adjust them like everyone's.
        for r, per_source in zip(self._counting, res.counts, strict=True):
            if r._phase == 2 and self._readers.get(r.sink) is r:
                r._pending += sum(n for source, n in per_source.items() if r._match(source))
                r._phase = 0
                woken.add(r)
        self._counting = []
        if res.deleted_upto:
            self._deleted(res.deleted_upto, res.dropped, readers)
        prev = self._committed
        tail_seq, tail, tail_mono = self._tail_seq, self._tail, self._tail_mono
        stored_samples = 0
        skips = res.skips
        held = self._held
        for seq, source, samples, mono in res.stored:
            n = len(samples)
            stored_samples += n
            tail_seq.append(seq)
            tail.append(SpooledBatch(seq, source, samples))
            tail_mono.append(mono)
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
                self._count_drop("overflow", n)
            prev = seq
        if res.stored:
            self._committed = prev
            self.metrics.spool_appended.inc(stored_samples)
            self._checkpoint(prev, res.stored[-1][3])
        for _, source, n, reason in res.refused:
            missed = False
            for r in readers:
                if r._match(source):
                    missed = True
                    self._sink_drop(r.sink, reason, n)
            for sink in held:
                missed = True
                self._sink_drop(sink, reason, n)
            if missed:
                self._count_drop(reason, n)
        self._trim_tail()
        self._batches, self._samples, self._bytes = res.batches, res.samples, res.bytes
        self._set_gauges()
        for seconds in res.commit_seconds:
            self.metrics.spool_commit_seconds.observe(seconds)
        for kind, count in res.errors.items():
            self._error(kind, count)
        if self._gaps_dirty:
            self._request()  # persist what the full sinks skipped
        if self._drop_log:
            self._log_drops()
        self._done_gen = job.gen
        if self._waiters:
            still = []
            for target, fut in self._waiters:
                if fut.done():
                    continue
                if target <= job.gen:
                    fut.set_result(None)
                else:
                    still.append((target, fut))
            self._waiters = still
        if len(self._pending) <= self._bound:
            self._room.set()
        for r in woken:
            r._event.set()

    def _deleted(self, upto: int, dropped: list[_Dropped], readers: list[SpoolReader]) -> None:
        """Rows up to ``upto`` are gone: count what some cursor still wanted, move cursors past them."""
        gaps = self._gaps
        for seq, source, n, reason in dropped:
            missed = False
            for sink, c in self._held.items():
                if seq > c and not (gaps.get(sink) and _in_gaps(gaps[sink], seq)):
                    missed = True
                    self._sink_drop(sink, reason, n)
            for r in readers:
                if seq > r._acked and r._match(source) and not (r._gaps and _in_gaps(r._gaps, seq)):
                    missed = True
                    r._forget(seq, n)
                    self._sink_drop(r.sink, reason, n)
            if missed:
                self._count_drop(reason, n)
        for r in readers:
            fl = r._inflight
            while fl and fl[0][0] <= upto:
                fl.popleft()  # already forgotten above
            if r._acked < upto:
                r._acked = upto
            if r._pos < upto:
                r._pos = upto
        self._deleted_upto = max(self._deleted_upto, upto)
        k = bisect_right(self._cp_seq, upto)
        if k:
            del self._cp_seq[:k]
            del self._cp_mono[:k]
        self._tail_off = max(self._tail_off, bisect_right(self._tail_seq, upto, self._tail_off))
        self._floor = max(self._floor, upto)

    def _checkpoint(self, seq: int, mono: float) -> None:
        if self._cp_mono and mono - self._cp_mono[-1] < self._cp_step:
            self._cp_seq[-1], self._cp_mono[-1] = seq, mono  # coalesce: eviction at most _cp_step late
        else:
            self._cp_seq.append(seq)
            self._cp_mono.append(mono)

    def _trim_tail(self) -> None:
        """Keep at most ``memory_batches`` batches and about ``memory_samples`` samples decoded in memory.

        Both bounds matter: one source may emit 10 batches of 10,000 samples a second, another 1,000
        batches of one sample. The newest batch always stays, so a reader at the head never decodes.
        """
        tail, off = self._tail, self._tail_off
        keep_from = max(off, len(tail) - self.config.memory_batches)
        budget = self.config.memory_samples
        i = len(tail)
        while i > keep_from:
            budget -= len(tail[i - 1].samples)
            if budget < 0 and i < len(tail):
                break
            i -= 1
        if i > off:
            self._tail_off = off = i
            self._floor = max(self._floor, self._tail_seq[off - 1])
        if off >= 64 or (off and off * 2 > len(tail)):  # compact: trimmed batches must really be freed
            del self._tail_seq[:off]
            del self._tail[:off]
            del self._tail_mono[:off]
            self._tail_off = 0

    def _log_drops(self, *, force: bool = False) -> None:
        """At most one line per 10 s: what each sink lost since the previous line, and its totals (the
        figures of ``edgegw_sink_dropped_samples_total``); the rest is logged at close."""
        now = time.monotonic()
        if not self._drop_log or (not force and now - self._last_drop_log < 10.0):
            return
        self._last_drop_log = now
        since, self._drop_log = self._drop_log, {}
        self.log.warning("spool dropped data", samples=since, policy=self.config.overflow,
                         total=self.dropped_by_sink())
