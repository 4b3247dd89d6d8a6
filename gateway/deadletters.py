"""The spool's dead letters seen from outside the gateway: read, replay, purge.

Everything a sink refused for good sits in one table of the spool file, ``dead_letters``: one row per
batch (or the part of one that a sink rejected) with the sink's name, the batch's seq and source, the
error, the time, and the samples in the spool's payload format (``gateway.spool_codec``). The running
gateway writes it (``Spool.dead_letter_each``); ``edge-gateway deadletters`` uses this module.

- Reading needs no coordination: a read-only connection (``mode=ro``, ``query_only``) sees one
  consistent snapshot while the gateway commits (WAL).
- Purging is one short ``DELETE``; SQLite serialises it with the gateway's commits (both wait on a
  busy file), and the gateway keeps no count of the table in memory, so it may run beside the gateway.
- Replaying builds the sink from the config through the plug-in registry and calls its ``write``: a
  second live copy of an uplink beside the gateway's own (a second MQTT session under the same client
  id, a second writer on the local store) must never exist, so the caller must hold the gateway's
  instance lock (``gateway.instance_lock``) for the whole replay.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from gateway.errors import GatewayError, PermanentSinkError
from gateway.metrics import Metrics
from gateway.model import Batch, Sample
from gateway.plugins import BuildContext, missing_requirement, sink_plugin
from gateway.spool_codec import DecodeError, decode, encode

if TYPE_CHECKING:
    import structlog

    from gateway.config.loader import GatewayConfig
    from gateway.contracts import Sink

BUSY_TIMEOUT_MS = 5000
"""How long a statement waits for the gateway's commit in progress (it holds the file for milliseconds)."""


class SpoolNotFoundError(GatewayError):
    """There is no spool file at the configured path (the gateway never ran with this data directory)."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    sink: str
    seq: int
    """The spool sequence number of the batch the samples came from."""
    source: str
    error: str
    created_ns: int
    """When it was dead-lettered (wall clock, ns)."""
    samples: list[Sample]
    readable: bool = True
    """False when the samples could not be kept (an unstorable value) or their payload is damaged."""


def spool_path(config: GatewayConfig) -> Path:
    """The spool file of a config: ``spool.path``, else ``<data_dir>/spool.db`` (what ``run`` opens)."""
    if config.spool.path:
        return Path(config.spool.path).expanduser()
    return Path(config.data_dir).expanduser() / "spool.db"


def connect(path: Path, *, write: bool = False) -> sqlite3.Connection:
    """Open the spool file; never creates one. Read-only unless ``write``."""
    if not path.is_file():
        raise SpoolNotFoundError(f"no spool at {path}")
    uri = f"{path.absolute().as_uri()}?mode={'rw' if write else 'ro'}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not write:
            conn.execute("PRAGMA query_only = 1")
        try:
            conn.execute("SELECT 1 FROM dead_letters LIMIT 0")
        except sqlite3.DatabaseError as exc:  # "no such table", "file is not a database"
            raise SpoolNotFoundError(f"{path} is not an edge-gateway spool ({exc})") from None
    except BaseException:
        conn.close()
        raise
    return conn


def read(conn: sqlite3.Connection, *, sink: str | None = None, ids: Sequence[int] | None = None,
         limit: int | None = None) -> list[DeadLetter]:
    """Dead letters, oldest first: all, or those of ``sink`` and/or with the given ``ids``; with ``limit``
    the newest ``limit`` of them."""
    where: list[str] = []
    args: list[object] = []
    if sink is not None:
        where.append("sink = ?")
        args.append(sink)
    if ids is not None:
        where.append(f"id IN ({','.join('?' * len(ids))})")
        args.extend(ids)
    sql = "SELECT id, sink, seq, source, error, created_ns, payload FROM dead_letters"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY id DESC"
    if limit is not None:
        sql += " LIMIT ?"
        args.append(limit)
    rows = conn.execute(sql, args).fetchall()
    rows.reverse()
    return [_letter(*row) for row in rows]


def _letter(id_: int, sink: str, seq: int, source: str, error: str, created_ns: int, payload: bytes) -> DeadLetter:
    if not payload:  # the spool kept the rejection but could not encode its samples
        return DeadLetter(id_, sink, seq, source, error, created_ns, [], readable=False)
    try:
        samples = decode(payload, None)
    except DecodeError:
        return DeadLetter(id_, sink, seq, source, error, created_ns, [], readable=False)
    return DeadLetter(id_, sink, seq, source, error, created_ns, samples)


def purge(conn: sqlite3.Connection, sink: str, before_ns: int | None = None) -> int:
    """Delete the dead letters of ``sink`` (dead-lettered before ``before_ns``); returns how many."""
    if before_ns is None:
        cur = conn.execute("DELETE FROM dead_letters WHERE sink = ?", (sink,))
    else:
        cur = conn.execute("DELETE FROM dead_letters WHERE sink = ? AND created_ns < ?", (sink, before_ns))
    return cur.rowcount


def _delivered(conn: sqlite3.Connection, letter: DeadLetter) -> None:
    conn.execute("DELETE FROM dead_letters WHERE id = ?", (letter.id,))


def _refused(conn: sqlite3.Connection, letter: DeadLetter, parts: Sequence[tuple[list[Sample], str]]) -> None:
    """The sink refused (some of) the samples again: the letter keeps only those, with the new error; a
    further error of the same write becomes a letter of its own. The time stays the first rejection's."""
    (samples, error), *more = parts
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("UPDATE dead_letters SET error = ?, payload = ? WHERE id = ?",
                     (error, encode(samples), letter.id))
        conn.executemany(
            "INSERT INTO dead_letters(sink, seq, source, error, created_ns, payload) VALUES (?, ?, ?, ?, ?, ?)",
            [(letter.sink, letter.seq, letter.source, e, letter.created_ns, encode(s)) for s, e in more])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


Outcome = Literal["delivered", "refused", "failed", "skipped"]


@dataclass(frozen=True, slots=True)
class Replayed:
    """What became of one dead letter: ``delivered`` (and deleted), ``refused`` again for good (kept
    with the new error: ``kept`` samples of it), ``failed`` (the uplink did not answer or broke; kept
    as it was) or ``skipped`` (not sent; ``error`` says why)."""

    letter: DeadLetter
    outcome: Outcome
    error: str = ""
    kept: int = 0


@dataclass(slots=True)
class _Refusals:
    """The ``DeadLetters`` a replayed sink gets: what it refused again, by error (one letter per write)."""

    by_error: dict[str, list[Sample]] = field(default_factory=dict)

    def reject(self, batch: int, samples: Sequence[Sample], error: str) -> None:
        if batch != 0:
            raise IndexError(f"reject: no batch {batch} in a replay (one dead letter per write)")
        self.by_error.setdefault(error, []).extend(samples)


async def replay(conn: sqlite3.Connection, letters: Sequence[DeadLetter], config: GatewayConfig, *,
                 timeout: float, log: structlog.stdlib.BoundLogger,
                 report: Callable[[Replayed], None] = lambda r: None) -> list[Replayed]:
    """Send each letter, alone, to the configured sink of its name, built as the gateway builds it; delete
    those it accepts, keep those it refuses with the new error. A sink whose uplink fails (a retryable
    error, a timeout) is not sent the rest of its letters. The caller holds the instance lock."""
    out: list[Replayed] = []

    def done(r: Replayed) -> None:
        out.append(r)
        report(r)

    by_sink: dict[str, list[DeadLetter]] = {}
    for letter in letters:
        by_sink.setdefault(letter.sink, []).append(letter)
    for name, group in by_sink.items():
        await _replay_sink(conn, name, group, config, timeout, log, done)
    return out


async def _replay_sink(conn: sqlite3.Connection, name: str, letters: list[DeadLetter], config: GatewayConfig,
                       timeout: float, log: structlog.stdlib.BoundLogger, done: Callable[[Replayed], None]) -> None:
    refusals = _Refusals()
    try:
        sink = _build(name, config, log, refusals)
    except Exception as exc:  # not configured, library missing, a factory refusing its config
        for letter in letters:
            done(Replayed(letter, "skipped", _text(exc)))
        return
    try:
        async with asyncio.timeout(timeout):
            await sink.open()
    except Exception as exc:
        for letter in letters:
            done(Replayed(letter, "failed", f"cannot open the sink: {_text(exc)}"))
        await _close(sink, log)
        return
    try:
        for i, letter in enumerate(letters):
            if not letter.readable:
                done(Replayed(letter, "skipped", "its samples could not be kept; nothing to send (purge it)"))
                continue
            refusals.by_error.clear()
            try:
                async with asyncio.timeout(timeout):
                    await sink.write([Batch(letter.source, letter.samples)])
            except PermanentSinkError as exc:
                _refused(conn, letter, [(letter.samples, str(exc))])
                done(Replayed(letter, "refused", str(exc), len(letter.samples)))
                continue
            except Exception as exc:  # retryable, a timeout, a broken sink: the uplink is not there
                error = "no answer within the timeout" if isinstance(exc, TimeoutError) else _text(exc)
                done(Replayed(letter, "failed", error))
                for rest in letters[i + 1:]:
                    done(Replayed(rest, "skipped", f"not sent: the sink failed on dead letter {letter.id}"))
                return
            if refusals.by_error:
                parts = list(refusals.by_error.items())
                _refused(conn, letter, [(samples, error) for error, samples in parts])
                done(Replayed(letter, "refused", parts[0][0], sum(len(s) for _, s in parts)))
            else:
                _delivered(conn, letter)
                done(Replayed(letter, "delivered"))
    finally:
        await _close(sink, log)


def _build(name: str, config: GatewayConfig, log: structlog.stdlib.BoundLogger, refusals: _Refusals) -> Sink:
    """The configured sink ``name``, built the way the runtime builds it, with this replay's refusals as
    its dead letters. Raises when it cannot be built here (not configured, its library missing)."""
    kcfg = config.sinks.get(name)
    if kcfg is None:
        raise GatewayError(f"no sink {name!r} in {config.path}")
    plugin = sink_plugin(kcfg.type)
    missing = missing_requirement(plugin)
    if missing is not None:
        raise GatewayError(missing)
    ctx = BuildContext(metrics=Metrics(), site=config.site, data_dir=os.path.expanduser(config.data_dir), log=log,
                       dead_letters=refusals, gateway_id=config.gateway.id)
    return plugin.factory(name, kcfg, ctx)


async def _close(sink: Sink, log: structlog.stdlib.BoundLogger) -> None:
    try:
        await sink.close()
    except Exception as exc:  # the outcome is decided; a messy close must not hide it
        log.warning("sink close failed", error=_text(exc))


def _text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__

