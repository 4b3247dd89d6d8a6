"""The embedded time-series store: one SQLite file (WAL) owned by one dedicated thread.

Layout. ``series`` maps (source, device, tag, unit) to a small integer id, cached in memory, so a
write is one ``executemany`` of plain tuples. Points live in two tables, and the view ``points``
shows both (for ad-hoc SQL: ``SELECT count(*) FROM points``):

* ``recent``: append-only (rowid order), where every write lands. An append dirties only the last
  few pages, so a commit writes about twice the data's size. Inserting straight into a table (or an
  index) clustered by series dirties one page per series in every commit instead: with 1000 tags
  that measured ~3 KB of WAL per 37-byte point and under 100k points/s, which wears out the SD card
  or eMMC of an edge box long before it fills.
* ``history``: a WITHOUT ROWID table clustered on (series_id, ts_ns), so range queries, "last N" and
  retention (delete a series' points before T) touch contiguous pages, and deleting the oldest points
  frees whole pages for reuse. ``compact`` moves ``recent`` into it in sorted chunks, every
  ``COMPACT_ROWS`` rows or minute, so each series page is written once per compaction, not per commit.

The key (series_id, ts_ns) holds one point per tag and instant, so a batch delivered twice (the spool
delivers at least once) collapses into one point: readers prefer the later copy, and compaction
keeps it.

Values keep SQLite's dynamic typing (the ``value`` column has no declared type, so no affinity
converts them); ``flags`` marks what SQLite cannot represent by itself: booleans, NaN, integers
beyond 64 bits, and arrays (JSON text). The timestamps that are not the time basis (source or
gateway, and an OPC-UA server timestamp) are stored as offsets from ``ts_ns`` (small, so SQLite's
varints keep them to a few bytes), NULL when the sample did not carry one. A timestamp no 64-bit
integer holds (a device clock at 1601-01-01) files the point under its receive time instead: a
sample must never stop the store.

Schema 2 added ``srv_off``; a schema-1 file is migrated in place when the store opens it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal, NamedTuple, TypeVar

from gateway.history import History, HistoryUnavailable
from gateway.model import Batch, Value
from gateway.threads import WorkerThread

SCHEMA_VERSION = 2
APPLICATION_ID = 0x45475453
"""``PRAGMA application_id`` of a store file ("EGTS"), so the query command recognises one."""

FLAG_BOOL = 1
FLAG_NAN = 2
FLAG_BIGINT = 4
FLAG_JSON = 8

COMPACT_ROWS = 200_000
"""Compaction is due once ``recent`` holds this many rows (readers scan ``recent``: keep it small)."""
COMPACT_INTERVAL = 60.0
"""... and runs at least this often (seconds) while ``recent`` holds anything."""
DISK_CHECK_INTERVAL = 10.0
"""How often (seconds) the sink compares the free disk space with ``min_free_disk``."""
COMPACT_CHUNK = 100_000
"""Rows moved per compaction transaction: bounds the WAL, and the free space a compaction needs
(each chunk frees the ``recent`` pages the next one reuses), which matters on a nearly full disk."""
HIGH_WATER = 0.9
"""Size retention starts when the stored data exceeds this fraction of ``max_size`` ..."""
LOW_WATER = 0.8
"""... and deletes the oldest points until it is below this one, so it runs rarely, in big steps."""
EMERGENCY_FRACTION = 0.1
"""When the disk is full, delete at least this fraction of the data so writes can reuse its pages."""
RESERVE_SLACK = 0.05
"""Below ``min_free_disk``, free this fraction of the data on top of the deficit, so trims come in steps."""
ROW_BYTES_ESTIMATE = 64
"""Generous size of one stored point including B-tree overhead (typically ~35 bytes)."""

_I64_MIN = -(2**63)
_I64_MAX = 2**63 - 1
_TS_MIN = 0  # a point's time: after 1970-01-01 (edge boxes without a clock boot there; a device may be worse)
_BUSY_TIMEOUT_MS = 5000
_JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024
_DELETE_CHUNK_SERIES = 256
_MAX_TRIM_ROUNDS = 16

POINT_COLUMNS = "series_id, ts_ns, value, flags, quality, status, src_off, gw_off, srv_off"

_VIEW = f"""CREATE VIEW IF NOT EXISTS points AS
    SELECT {POINT_COLUMNS} FROM history
    UNION ALL
    SELECT {POINT_COLUMNS} FROM recent;
"""
SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    device TEXT NOT NULL,
    tag TEXT NOT NULL,
    unit TEXT NOT NULL DEFAULT '',
    UNIQUE (source, device, tag, unit)
);
CREATE TABLE IF NOT EXISTS recent (
    series_id INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    value,
    flags INTEGER NOT NULL,
    quality INTEGER NOT NULL,
    status INTEGER NOT NULL,
    src_off INTEGER,
    gw_off INTEGER,
    srv_off INTEGER
);
CREATE TABLE IF NOT EXISTS history (
    series_id INTEGER NOT NULL,
    ts_ns INTEGER NOT NULL,
    value,
    flags INTEGER NOT NULL,
    quality INTEGER NOT NULL,
    status INTEGER NOT NULL,
    src_off INTEGER,
    gw_off INTEGER,
    srv_off INTEGER,
    PRIMARY KEY (series_id, ts_ns)
) WITHOUT ROWID;
""" + _VIEW
MIGRATE_1_TO_2 = """
ALTER TABLE recent ADD COLUMN srv_off INTEGER;
ALTER TABLE history ADD COLUMN srv_off INTEGER;
DROP VIEW IF EXISTS points;
""" + _VIEW
# ``unit`` is part of the series key (and '' instead of NULL, which UNIQUE would not match) so a
# unit change in the config starts a new series and old points keep the unit they were read in.

_INSERT = f"INSERT INTO recent ({POINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
# rowid last in the sort (and chunks in rowid order): of two copies of a point, the later arrival
# replaces the earlier.
_COMPACT = (
    f"INSERT OR REPLACE INTO history ({POINT_COLUMNS})"
    f" SELECT {POINT_COLUMNS} FROM recent WHERE rowid <= ? ORDER BY series_id, ts_ns, rowid"
)

SeriesKey = tuple[str, str, str, str]
"""(source, device, tag, unit or '')."""
Row = tuple[int, int, Value, int, int, int, int | None, int | None, int | None]
TimeBasis = Literal["source", "gateway"]
T = TypeVar("T")


class StoreFormatError(Exception):
    """The file is not a store of this schema version (another application's database, or newer)."""


class RetentionResult(NamedTuple):
    age_deleted: int
    size_deleted: int
    used_bytes: int
    series: int


def encode_value(value: object) -> tuple[Value, int]:
    """``(stored value, flags)`` for values outside the hot path's exact-type checks."""
    if value is None or isinstance(value, str):
        return value, 0
    if isinstance(value, bool):
        return int(value), FLAG_BOOL
    if isinstance(value, int):
        value = int(value)  # IntEnum and friends
        return (value, 0) if _I64_MIN <= value <= _I64_MAX else (str(value), FLAG_BIGINT)
    if isinstance(value, float):
        value = float(value)
        return (None, FLAG_NAN) if math.isnan(value) else (value, 0)
    if isinstance(value, list | tuple):  # an array or matrix
        return json.dumps(value, separators=(",", ":")), FLAG_JSON
    # A source broke the Value contract (bytes, ...): keep the reading readable, not the batch stuck.
    return str(value), 0


def decode_value(value: object, flags: int) -> Value:
    if flags & FLAG_BOOL:
        return bool(value)
    if flags & FLAG_NAN:
        return math.nan
    if flags & FLAG_BIGINT:
        return int(str(value))
    if flags & FLAG_JSON:
        decoded: Value = json.loads(str(value))
        return decoded
    if value is None or isinstance(value, int | float | str):
        return value
    return repr(value)  # a BLOB written by something else




class TimeSeriesStore:
    """The store. Every method that touches the database runs on the store's own single thread.

    One thread owns the connection so SQLite never sees concurrent use, writes and retention
    serialise without locks, and a slow fsync never blocks the event loop or the default executor.
    """

    def __init__(
        self,
        path: str,
        *,
        time_basis: TimeBasis = "source",
        synchronous: Literal["normal", "full"] = "normal",
        cache_bytes: int = 16 * 1024 * 1024,
        max_bytes: int = 0,
        min_free_disk: int = 0,
        name: str = "store",
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.min_free_disk = min_free_disk
        self._time_basis = time_basis
        self._synchronous = synchronous.upper()
        self._cache_kib = max(cache_bytes // 1024, 64)
        self._name = name
        self._executor: WorkerThread | None = None
        # Touched only on the executor thread.
        self._conn: sqlite3.Connection | None = None
        # Chart reads: their own thread and read-only connection, so a 24 h query (~100 ms) never holds
        # the writes queued behind it on the store's thread (WAL: readers and the writer do not block).
        self._reader: WorkerThread | None = None
        self._read_conn: sqlite3.Connection | None = None  # touched only on the reader thread
        self._ids: dict[SeriesKey, int] = {}
        self._recent_rows = 0  # rows in ``recent``; read from the loop thread to schedule compaction

    # -- async API (event loop side) ---------------------------------------------------------------

    @property
    def recent_rows(self) -> int:
        """Rows written since the last compaction (an upper bound: retention may have deleted some)."""
        return self._recent_rows

    @property
    def compaction_due(self) -> bool:
        return self._recent_rows >= COMPACT_ROWS

    async def open(self) -> None:
        if self._executor is None:
            self._executor = WorkerThread(f"sqlite-{self._name}")
        await self._call(self._open_sync)

    async def write(self, batches: Sequence[Batch]) -> int:
        """Store every sample of ``batches`` in one transaction; returns the number stored."""
        return await self._call(self._write_sync, batches)

    async def compact(self) -> int:
        """Move ``recent`` into the series-clustered ``history`` table; returns the rows moved."""
        return await self._call(self._compact_sync)

    async def enforce_retention(self, now_ns: int, max_age_ns: int) -> RetentionResult:
        return await self._call(self._retention_sync, now_ns, max_age_ns)

    async def keep_disk_reserve(self) -> int:
        """With less than ``min_free_disk`` free on the disk, stop the file from growing: delete the
        oldest points so writes reuse their pages. Returns the points deleted."""
        return await self._call(self._reserve_sync)

    async def make_room(self, needed_bytes: int) -> int:
        """After SQLITE_FULL: delete the oldest points if that gives a write pages to reuse."""
        return await self._call(self._make_room_sync, needed_bytes)

    async def used_bytes(self) -> int:
        return await self._call(lambda: _used_bytes(self._require()))

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            try:
                await reader.run(self._close_reader)
            finally:
                reader.close()
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await executor.run(self._close_sync)
        finally:
            # The close job was the last in the queue; the thread exits as soon as it is done.
            executor.close()

    async def history(self, source: str, device: str, tag: str, since_ns: int, until_ns: int,
                      max_buckets: int) -> History | None:
        """A tag's points in time buckets (``connectors.sqlite.history``), read on the reader thread; raises
        ``HistoryUnavailable`` when the file cannot be read."""
        from connectors.sqlite.history import read_history

        if self._executor is None:
            raise RuntimeError(f"store {self.path} is not open")
        if self._reader is None:
            self._reader = WorkerThread(f"sqlite-{self._name}-reads")

        def read() -> History | None:
            if self._read_conn is None:
                self._read_conn = open_read_only(self.path)
            return read_history(self._read_conn, source, device, tag, since_ns, until_ns, max_buckets)

        try:
            return await self._reader.run(read)
        except sqlite3.Error as exc:
            await self._reader.run(self._close_reader)  # a damaged or replaced file: open it afresh next time
            raise HistoryUnavailable(f"the local store {self.path} cannot be read: {exc}") from exc

    def _close_reader(self) -> None:
        conn, self._read_conn = self._read_conn, None
        if conn is not None:
            conn.close()

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        if self._executor is None:
            raise RuntimeError(f"store {self.path} is not open")
        return await self._executor.run(fn, *args)

    # -- store thread --------------------------------------------------------------------------------

    def _require(self) -> sqlite3.Connection:
        if self._conn is None:
            raise sqlite3.OperationalError(f"store {self.path} is not open")
        return self._conn

    def _open_sync(self) -> None:
        if self._conn is not None:
            return
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        # isolation_level=None: transactions are explicit, so one write is exactly one transaction.
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").fetchone()[0]
            if app_id != APPLICATION_ID and (app_id != 0 or tables):
                raise StoreFormatError(f"{self.path} is not an edge-gateway store; refusing to write into it")
            if version > SCHEMA_VERSION:
                raise StoreFormatError(
                    f"{self.path} has store schema {version}, newer than this gateway's {SCHEMA_VERSION}"
                )
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute(f"PRAGMA cache_size = -{self._cache_kib}")
            conn.execute(f"PRAGMA journal_size_limit = {_JOURNAL_SIZE_LIMIT}")
            conn.execute("PRAGMA temp_store = MEMORY")  # compaction's sort: no temp files on flash
            if version == 0:
                # One script, one transaction: executescript() would commit a transaction begun outside it.
                conn.executescript(
                    f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA application_id = {APPLICATION_ID};"
                    f" PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                )
            elif version == 1:
                conn.executescript(f"BEGIN IMMEDIATE; {MIGRATE_1_TO_2} PRAGMA user_version = 2; COMMIT;")
            if self.max_bytes:
                # The hard cap: SQLite answers SQLITE_FULL beyond it, which the sink handles like a
                # full disk. Retention normally keeps the data well below it.
                page_size = conn.execute("PRAGMA page_size").fetchone()[0]
                conn.execute(f"PRAGMA max_page_count = {max(self.max_bytes // page_size, 1)}")
            self._ids = {
                (source, device, tag, unit): sid
                for sid, source, device, tag, unit in conn.execute(
                    "SELECT id, source, device, tag, unit FROM series"
                )
            }
            self._recent_rows = conn.execute("SELECT count(*) FROM recent").fetchone()[0]
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.execute("PRAGMA optimize")
        finally:
            conn.close()

    def _write_sync(self, batches: Sequence[Batch]) -> int:
        conn = self._require()
        if not any(batch.samples for batch in batches):
            return 0
        conn.execute("BEGIN IMMEDIATE")
        created: list[SeriesKey] = []
        try:
            rows = self._encode(conn, batches, created)
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            self._rollback(conn, created)
            raise
        self._recent_rows += len(rows)
        return len(rows)

    def _compact_sync(self) -> int:
        conn = self._require()
        moved = 0
        try:
            while True:
                # The last rowid of the next chunk, or None once the rest fits in one chunk.
                boundary = conn.execute(
                    "SELECT rowid FROM recent ORDER BY rowid LIMIT 1 OFFSET ?", (COMPACT_CHUNK - 1,)
                ).fetchone()
                upper = boundary[0] if boundary else conn.execute("SELECT max(rowid) FROM recent").fetchone()[0]
                if upper is None:
                    break
                conn.execute("BEGIN IMMEDIATE")
                try:
                    moved += conn.execute(_COMPACT, (upper,)).rowcount
                    conn.execute("DELETE FROM recent WHERE rowid <= ?", (upper,))
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn, ())
                    raise
                if boundary is None:
                    break
        finally:
            self._recent_rows = max(0, self._recent_rows - moved)
        self._recent_rows = 0
        return moved

    def _rollback(self, conn: sqlite3.Connection, created: Iterable[SeriesKey]) -> None:
        for key in created:  # their rows are gone with the transaction
            self._ids.pop(key, None)
        if conn.in_transaction:
            # SQLite may already have rolled back (SQLITE_FULL); the original error is the one to raise.
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    def _encode(self, conn: sqlite3.Connection, batches: Sequence[Batch], created: list[SeriesKey]) -> list[Row]:
        """The hot loop: exact-type checks inline, everything unusual through ``encode_value``."""
        rows: list[Row] = []
        append = rows.append
        ids = self._ids
        by_source = self._time_basis == "source"
        for batch in batches:
            source = batch.source
            for device, tag, value, quality, status, source_ts, gateway_ts, unit, server_ts in batch.samples:
                key = (source, device, tag, unit or "")
                sid = ids.get(key)
                if sid is None:
                    sid = self._series_id(conn, key)
                    created.append(key)
                ts = (source_ts or gateway_ts) if by_source else (gateway_ts or source_ts)
                src_off = source_ts - ts if source_ts else None
                if not _TS_MIN < ts <= _I64_MAX or (src_off is not None and not _I64_MIN <= src_off <= _I64_MAX):
                    # a device clock no SQLite integer holds: file it under the receive time, never jam
                    if not _TS_MIN < ts <= _I64_MAX:
                        ts = gateway_ts if _TS_MIN < gateway_ts <= _I64_MAX else time.time_ns()
                    src_off = _offset(source_ts, ts)
                vt = type(value)
                flags = 0
                stored: Value = value
                if vt is float:
                    if value != value:
                        stored, flags = None, FLAG_NAN
                elif vt is int:
                    if not _I64_MIN <= value <= _I64_MAX:  # type: ignore[operator]
                        stored, flags = str(value), FLAG_BIGINT
                elif vt is bool:
                    flags = FLAG_BOOL
                elif vt is not str and value is not None:
                    stored, flags = encode_value(value)
                append(
                    (
                        sid,
                        ts,
                        stored,
                        flags,
                        quality,
                        status,
                        src_off,
                        gateway_ts - ts if gateway_ts else None,
                        _offset(server_ts, ts) if server_ts else None,
                    )
                )
        return rows

    def _series_id(self, conn: sqlite3.Connection, key: SeriesKey) -> int:
        row = conn.execute(
            "SELECT id FROM series WHERE source = ? AND device = ? AND tag = ? AND unit = ?", key
        ).fetchone()
        if row is None:
            cur = conn.execute("INSERT INTO series (source, device, tag, unit) VALUES (?, ?, ?, ?)", key)
            sid = cur.lastrowid
            assert sid is not None
        else:
            sid = int(row[0])
        self._ids[key] = sid
        return sid

    def _retention_sync(self, now_ns: int, max_age_ns: int) -> RetentionResult:
        conn = self._require()
        age_deleted = _delete_before(conn, now_ns - max_age_ns) if max_age_ns > 0 else 0
        size_deleted = 0
        if self.max_bytes and _used_bytes(conn) > self.max_bytes * HIGH_WATER:
            size_deleted = _trim_to(conn, int(self.max_bytes * LOW_WATER))
        return RetentionResult(age_deleted, size_deleted, _used_bytes(conn), len(self._ids))

    def _reserve_sync(self) -> int:
        if not self.min_free_disk:
            return 0
        conn = self._require()
        disk_free = shutil.disk_usage(os.path.dirname(os.path.abspath(self.path))).free
        page_size, page_count, free_pages = _page_stats(conn)
        # Free pages inside the file count as reserve: the store grows into them, not into the disk.
        # Waiting for ENOSPC is too late: a checkpoint then cannot extend the file, the WAL cannot be
        # reset, and not even a delete fits until someone else frees space.
        deficit = self.min_free_disk - disk_free - free_pages * page_size
        if deficit <= 0:
            return 0
        used = (page_count - free_pages) * page_size
        return _trim_to(conn, max(used - deficit - int(used * RESERVE_SLACK), 0))

    def _make_room_sync(self, needed_bytes: int) -> int:
        conn = self._require()
        # Lets the next transaction restart the WAL from its beginning instead of growing it; it
        # fails when the file cannot grow for pages that exist only in the WAL: delete anyway.
        with contextlib.suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        page_size, page_count, free_pages = _page_stats(conn)
        if free_pages * page_size >= needed_bytes:
            return 0  # the file has room; the disk or the WAL is what is full, deleting would not help
        used = (page_count - free_pages) * page_size
        target = used - max(needed_bytes, int(used * EMERGENCY_FRACTION))
        if self.max_bytes:
            target = min(target, int(self.max_bytes * LOW_WATER))
        return _trim_to(conn, max(target, 0))


def _page_stats(conn: sqlite3.Connection) -> tuple[int, int, int]:
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    page_count = conn.execute("PRAGMA page_count").fetchone()[0]
    free_pages = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int(page_size), int(page_count), int(free_pages)


def _used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of live data: the file minus its free pages (what ``max_size`` bounds)."""
    page_size, page_count, free_pages = _page_stats(conn)
    return (page_count - free_pages) * page_size


def _delete_before(conn: sqlite3.Connection, cutoff_ns: int) -> int:
    """Delete every point older than ``cutoff_ns``: one key-range delete per series, in chunks of
    series per transaction so a first run after a long outage does not build a huge WAL."""
    ids = [row[0] for row in conn.execute("SELECT id FROM series ORDER BY id")]
    deleted = 0
    for i in range(0, len(ids), _DELETE_CHUNK_SERIES):
        chunk = ids[i : i + _DELETE_CHUNK_SERIES]
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.executemany(
                "DELETE FROM history WHERE series_id = ? AND ts_ns < ?", [(sid, cutoff_ns) for sid in chunk]
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        deleted += max(cur.rowcount, 0)
    # ``recent`` is small (compaction empties it) and in arrival order: a plain scan is cheapest.
    deleted += max(conn.execute("DELETE FROM recent WHERE ts_ns < ?", (cutoff_ns,)).rowcount, 0)
    return deleted


def _time_span(conn: sqlite3.Connection) -> tuple[int, int] | None:
    # Per-series min/max are single index seeks; a plain min(ts_ns) over points would scan it all.
    row = conn.execute(
        "SELECT min(lo), max(hi) FROM (SELECT"
        " (SELECT min(ts_ns) FROM history WHERE series_id = s.id) AS lo,"
        " (SELECT max(ts_ns) FROM history WHERE series_id = s.id) AS hi FROM series AS s"
        " UNION ALL SELECT min(ts_ns), max(ts_ns) FROM recent)"
    ).fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


def _trim_to(conn: sqlite3.Connection, target_bytes: int) -> int:
    """Delete the oldest points (across all series) until the live data fits ``target_bytes``.

    Counting points is a full scan, so the cut-off time is estimated from the time span assuming a
    steady rate, and the estimate is repeated on what is left; an outlier (a device whose clock says
    1970) costs one extra round, not the whole store.
    """
    deleted = 0
    for _ in range(_MAX_TRIM_ROUNDS):
        used = _used_bytes(conn)
        if used <= target_bytes:
            break
        span = _time_span(conn)
        if span is None:
            break
        lo, hi = span
        if hi <= lo:
            break  # only the newest instant is left: it stays
        fraction = (used - target_bytes) / used
        deleted += _delete_before(conn, min(hi, lo + max(1, int((hi - lo) * fraction))))
    return deleted


def _offset(other: int, ts: int) -> int | None:
    """``other`` as an offset from ``ts``; None when absent (0) or beyond what SQLite's integers hold."""
    if not other:
        return None
    off = other - ts
    return off if _I64_MIN <= off <= _I64_MAX else None


def decode_server_ts(ts_ns: int, srv_off: int | None) -> int:
    return ts_ns + srv_off if srv_off is not None else 0


def decode_timestamps(ts_ns: int, src_off: int | None, gw_off: int | None) -> tuple[int, int]:
    """``(source_ts, gateway_ts)`` of a stored point; 0 where the sample did not carry one."""
    return (ts_ns + src_off if src_off is not None else 0, ts_ns + gw_off if gw_off is not None else 0)


def open_read_only(path: str) -> sqlite3.Connection:
    """A read-only connection beside the writer's (``mode=ro``: it can never write, lock out the writer for
    long, or create an empty database where the store is missing)."""
    conn = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, isolation_level=None)
    conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
    return conn
