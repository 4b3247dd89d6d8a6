"""The spool's storage: one SQLite file in WAL mode, touched only from the spool's own thread.

Every method of ``Storage`` runs on that thread. One ``write`` is one transaction: deletions (garbage
collection, age, overflow), appends, cursors, gaps and dead letters together, so what a commit makes
durable is always consistent. A full disk is handled in place (drop the oldest or refuse the new).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from gateway.config.site import SpoolConfig
from gateway.disk import is_disk_full
from gateway.errors import GatewayError
from gateway.logs import get_logger
from gateway.model import Sample, SpooledBatch
from gateway.spool.ranges import Gaps, in_gaps, outside
from gateway.spool_codec import CODEC, DecodeError, decode, encode

SCHEMA_VERSION: Final = 1
_SYNCHRONOUS: Final = {"off": "OFF", "normal": "NORMAL", "full": "FULL"}
_READ_SCAN_ROWS: Final = 4096  # rows one disk read may step over, so a read job stays short
_AGE_SAMPLES: Final = 256  # rows sampled at open to date what a previous run left
_DEAD_LETTER_SHARE: Final = 0.1  # dead letters may hold this share of max_size (at least 1 MiB)

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

Row = tuple[int, str, list[Sample], float]
"""A queued batch: seq, source, samples, monotonic time of the append."""
Dropped = tuple[int, str, int, str]
"""A batch some reader may have wanted, deleted or refused: seq, source, samples, reason."""
SinkView = tuple[str, Callable[[str], bool], float]
"""drop_newest: a registered sink as the writer sees it: name, source match, estimated backlog bytes."""
_T = TypeVar("_T")


class SpoolClosedError(GatewayError):
    """The spool is not open (yet, or any more), or the reader was unregistered."""


# --------------------------------------------------------------------------------------------------
# The spool thread: everything that touches the connection.


@dataclass(slots=True)
class WriteJob:
    gen: int
    rows: list[Row]
    last_seq: int
    cursors: dict[str, int]
    dead: list[tuple[str, int, str, str, list[Sample]]]
    counts: list[tuple[int, int, list[tuple[int, int]]]]  # (after, upto] minus gaps: for readers just registered
    gc_upto: int  # every holding cursor is past this: delete without counting
    age_upto: int  # rows up to here are older than max_age
    min_acked: int  # rows at or below were wanted by no reader: deletions need no per-row detail
    created_ns: int
    views: list[SinkView] = field(default_factory=list)  # drop_newest with max_size: registered sinks
    held: list[str] = field(default_factory=list)  # drop_newest with max_size: stored cursors not registered
    gaps: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # sinks whose gaps changed
    gap_deletes: list[tuple[int, int]] = field(default_factory=list)  # ranges no holder wants


@dataclass(slots=True)
class WriteResult:
    stored: list[Row] = field(default_factory=list)
    refused: list[Dropped] = field(default_factory=list)
    dropped: list[Dropped] = field(default_factory=list)
    skips: dict[int, tuple[str, ...]] = field(default_factory=dict)  # stored seq -> full sinks that skip it
    deleted_upto: int = 0
    counts: list[dict[str, int]] = field(default_factory=list)
    batches: int = 0
    samples: int = 0
    bytes: int = 0
    commit_seconds: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class OpenInfo:
    last_seq: int
    first_seq: int  # lowest stored seq (last_seq + 1 when empty)
    cursors: dict[str, int]
    batches: int
    samples: int
    bytes: int
    dated: list[tuple[int, int]]  # (seq, created_ns) of sampled rows, ascending
    gaps: dict[str, Gaps]


@dataclass(slots=True)
class ReadResult:
    batches: list[SpooledBatch]
    scanned: int  # every row up to here was returned or is of no interest
    damaged: list[tuple[int, str, int]]


is_full = is_disk_full  # the one rule, shared with the local store


class Storage:
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

    def open(self) -> OpenInfo:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._open()
        except sqlite3.DatabaseError as exc:
            if not is_damaged(exc):
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

    def _open(self) -> OpenInfo:
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
        gaps: dict[str, Gaps] = {}
        for sink, g_lo, g_hi in conn.execute("SELECT sink, lo, hi FROM gaps ORDER BY sink, lo"):
            gaps.setdefault(sink, []).append([g_lo, g_hi])
        self.last_seq = max(int(meta.get("last_seq", 0)), hi or 0, *cursors.values(), 0)
        self.batches, self.samples, self.bytes = batches, samples, nbytes
        return OpenInfo(self.last_seq, lo if lo is not None else self.last_seq + 1, cursors,
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
             gaps: Sequence[tuple[int, int]] = ()) -> ReadResult:
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
                if match(source) and not (gaps and in_gaps(gaps, seq)):
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
            return ReadResult([], scanned, [])
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
        return ReadResult(out, scanned, damaged)

    # -- writing -------------------------------------------------------------------------------------

    def write(self, job: WriteJob) -> WriteResult:
        """One transaction: deletions, appends, cursors, dead letters. Handles a full disk in place."""
        encoded: list[tuple[Row, bytes]] = []
        refused: list[Dropped] = []
        errors: dict[str, int] = {}
        for row in job.rows:
            try:
                encoded.append((row, encode(row[2])))
            except Exception as exc:  # one malformed batch must not wedge the spool: refuse it, keep going
                errors["encode"] = errors.get("encode", 0) + 1
                self.log.error("batch not spooled: unstorable value", source=row[1], error=str(exc))
                refused.append((row[0], row[1], len(row[2]), "invalid"))
        freed: list[Dropped] = []
        freed_upto = 0
        commits: list[float] = []
        while True:
            try:
                result = self._write_once(job, encoded)
                break
            except sqlite3.OperationalError as exc:
                self._rollback()
                if not is_full(exc):
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
                        if not is_full(exc2):
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

    def _write_once(self, job: WriteJob, encoded: list[tuple[Row, bytes]]) -> WriteResult:
        conn = self.conn
        res = WriteResult()
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
        accepted: list[tuple[Row, bytes]] = []
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
        for lo, hi in outside(after + 1, upto, gaps):
            for source, n in self.conn.execute(
                    "SELECT source, sum(n) FROM batches WHERE seq >= ? AND seq <= ? GROUP BY source", (lo, hi)):
                out[source] = out.get(source, 0) + n
        return out

    def _accept_per_sink(self, job: WriteJob, encoded: list[tuple[Row, bytes]], nbytes: int, max_size: int,
                         res: WriteResult) -> list[tuple[Row, bytes]]:
        """drop_newest: ``max_size`` bounds each sink's backlog. A batch is kept while some sink that wants
        it has room; sinks that are full skip it. Refused only when every sink that wants it is full (or,
        with no sink at all, when the spool is).

        Backlogs are estimated from each sink's pending samples at the spool's mean size per sample;
        a stored cursor not registered yet counts the whole spool as its backlog.
        """
        accepted: list[tuple[Row, bytes]] = []
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
                     dropped: list[Dropped]) -> tuple[int, int, int]:
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
                       dropped: list[Dropped]) -> tuple[int, int, int, int]:
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

    def _free_for_disk(self, need: int, job: WriteJob, dropped: list[Dropped]) -> int:
        """The disk is full: delete the oldest rows in a transaction of their own, so the retry can reuse
        their pages. Returns the highest deleted seq."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        found: list[Dropped] = []
        upto, n_b, n_s, freed = self._delete_oldest(max(need, 1), job.min_acked, "disk_full", found)
        conn.execute("COMMIT")
        dropped.extend(found)
        self.batches -= n_b
        self.samples -= n_s
        self.bytes -= freed
        return upto

    def _insert_dead_letters(self, job: WriteJob) -> None:
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



def is_damaged(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)

