"""Reading the store: the API behind ``edge-gateway query`` and anything else that wants history.

Readers open the file read-only with their own connection; WAL lets them run while the gateway
writes, each query seeing one consistent snapshot.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any, Literal, NamedTuple

from connectors.sqlite.store import APPLICATION_ID, StoreFormatError, decode_server_ts, decode_timestamps, decode_value
from gateway.model import Quality, Sample, Value


class StoreNotFoundError(FileNotFoundError):
    """No store file at the given path (the gateway has not written one yet, or a wrong path)."""


class PointRow(NamedTuple):
    """One stored point with its series. ``ts_ns`` is the point's time (the store's time basis)."""

    ts_ns: int
    source: str
    device: str
    tag: str
    value: Value
    unit: str | None
    quality: Quality
    status: int
    source_ts: int
    gateway_ts: int
    server_ts: int = 0

    def to_sample(self) -> Sample:
        return Sample(
            self.device, self.tag, self.value, self.quality, self.status, self.source_ts, self.gateway_ts,
            self.unit, self.server_ts,
        )


class SeriesRow(NamedTuple):
    source: str
    device: str
    tag: str
    unit: str | None
    points: int
    first_ns: int
    last_ns: int


def connect_readonly(db_path: str | Path) -> sqlite3.Connection:
    """Open a store read-only; never creates a file. Raises ``StoreNotFoundError`` / ``StoreFormatError``."""
    path = Path(db_path)
    if not path.is_file():
        raise StoreNotFoundError(f"no store at {path}")
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        try:
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        except sqlite3.DatabaseError as exc:  # "file is not a database"
            raise StoreFormatError(f"{path} is not an edge-gateway store ({exc})") from exc
        if app_id != APPLICATION_ID:
            raise StoreFormatError(f"{path} is not an edge-gateway store")
    except BaseException:
        conn.close()
        raise
    return conn


_VALUE_COLUMNS = "value, flags, quality, status, src_off, gw_off, srv_off"


def _glob(pattern: str) -> str:
    # Only * and ? are wildcards: PLC tag names such as "Data[3]" must match literally.
    return pattern.replace("[", "[[]")


def _series_where(device: str | None, tag: str | None, source: str | None) -> tuple[str, list[str]]:
    clauses: list[str] = []
    params: list[str] = []
    for column, pattern in (("source", source), ("device", device), ("tag", tag)):
        if pattern is not None:
            clauses.append(f"{column} GLOB ?")
            params.append(_glob(pattern))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def list_series(
    db_path: str | Path, device: str | None = None, tag: str | None = None, source: str | None = None
) -> list[SeriesRow]:
    """Series that hold points, sorted by source, device, tag; filters accept * and ? wildcards.

    ``points`` counts stored rows: a point delivered twice counts twice until compaction merges it.
    """
    where, params = _series_where(device, tag, source)
    sql = (
        "SELECT id, source, device, tag, unit,"
        " (SELECT count(*) FROM history WHERE series_id = s.id),"
        " (SELECT min(ts_ns) FROM history WHERE series_id = s.id),"
        " (SELECT max(ts_ns) FROM history WHERE series_id = s.id)"
        f" FROM series AS s{where} ORDER BY source, device, tag, unit"
    )
    with closing(connect_readonly(db_path)) as conn:
        conn.execute("BEGIN")
        recent = {
            sid: (count, first, last)
            for sid, count, first, last in conn.execute(
                "SELECT series_id, count(*), min(ts_ns), max(ts_ns) FROM recent GROUP BY series_id"
            )
        }
        out: list[SeriesRow] = []
        for sid, src, dev, tg, unit, count, first, last in conn.execute(sql, params):
            if sid in recent:
                r_count, r_first, r_last = recent[sid]
                count += r_count
                first = r_first if first is None else min(first, r_first)
                last = r_last if last is None else max(last, r_last)
            if count:
                out.append(SeriesRow(src, dev, tg, unit or None, count, first, last))
        conn.execute("COMMIT")
    return out


def query_points(
    db_path: str | Path,
    device: str | None = None,
    tag: str | None = None,
    source: str | None = None,
    since_ns: int | None = None,
    until_ns: int | None = None,
    limit: int | None = None,
    order: Literal["asc", "desc"] = "asc",
) -> list[PointRow]:
    """Points in ``[since_ns, until_ns)`` of the matching series, ordered by time.

    With ``limit``, the first ``limit`` points in that order: ``order="desc", limit=N`` is "the last N".
    Compacted points are read along each series' (series_id, ts_ns) key with the limit applied per
    series, so "last 10" costs a few index seeks per series however large the store is; the small
    ``recent`` table of fresh points is scanned once.
    """
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', not {order!r}")
    if limit is not None and limit < 1:
        raise ValueError("limit must be at least 1")
    where, params = _series_where(device, tag, source)
    ranges: list[str] = []
    bounds: list[int] = []
    if since_ns is not None:
        ranges.append("ts_ns >= ?")
        bounds.append(since_ns)
    if until_ns is not None:
        ranges.append("ts_ns < ?")
        bounds.append(until_ns)
    compacted_sql = (
        f"SELECT ts_ns, {_VALUE_COLUMNS} FROM history WHERE {' AND '.join(['series_id = ?', *ranges])}"
        f" ORDER BY ts_ns {order.upper()}" + (" LIMIT ?" if limit is not None else "")
    )
    recent_filters = [*ranges, *([f"series_id IN (SELECT id FROM series{where})"] if where else [])]
    recent_sql = (
        f"SELECT series_id, ts_ns, {_VALUE_COLUMNS} FROM recent"
        + (f" WHERE {' AND '.join(recent_filters)}" if recent_filters else "")
        + " ORDER BY rowid"
    )
    tail = [limit] if limit is not None else []
    # (series_id, ts_ns) -> stored columns: a key holds one point, the latest copy wins.
    found: dict[tuple[int, int], tuple[Any, ...]] = {}
    with closing(connect_readonly(db_path)) as conn:
        conn.execute("BEGIN")  # one snapshot for the series list and both point tables
        series = {
            sid: (rank, src, dev, tg, unit or None)
            for rank, (sid, src, dev, tg, unit) in enumerate(
                conn.execute(
                    f"SELECT id, source, device, tag, unit FROM series{where} ORDER BY source, device, tag, unit",
                    params,
                )
            )
        }
        for sid in series:
            for row in conn.execute(compacted_sql, [sid, *bounds, *tail]):
                found[sid, row[0]] = row[1:]
        for row in conn.execute(recent_sql, [*bounds, *(params if where else [])]):
            if row[0] in series:  # a point without its series row (a damaged file) cannot be labelled
                found[row[0], row[1]] = row[2:]
        conn.execute("COMMIT")
    ordered = sorted(found, key=lambda key: (key[1], series[key[0]][0]), reverse=order == "desc")
    if limit is not None:
        del ordered[limit:]
    points: list[PointRow] = []
    for sid, ts in ordered:
        _, src, dev, tg, unit = series[sid]
        value, flags, quality, status, src_off, gw_off, srv_off = found[sid, ts]
        source_ts, gateway_ts = decode_timestamps(ts, src_off, gw_off)
        value = decode_value(value, flags)
        points.append(PointRow(ts, src, dev, tg, value, unit, Quality(quality), status, source_ts, gateway_ts,
                               decode_server_ts(ts, srv_off)))
    return points
