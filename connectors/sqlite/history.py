"""A tag's history in time buckets, aggregated by SQLite (``gateway.history`` draws it).

One query per request over compacted ``history`` (by its (series, ts) key) and the small ``recent`` table:
per bucket the mean, min and max of the numeric values, the worst quality and the count. A point delivered
twice (at-least-once: a batch re-sent after a lost ack lands in ``recent`` again, beside its first copy or
the compacted one) counts once: the two tables' rows are a ``UNION``, not the ``points`` view's ``UNION ALL``.
Booleans are stored as 0/1 and chart as such; text and arrays (JSON text) are not numbers: a tag that has
only those answers ``numeric=False``.
"""

from __future__ import annotations

import sqlite3

from connectors.sqlite.store import FLAG_JSON
from gateway.history import Bucket, History, bucket_width
from gateway.model import Quality

_SERIES = "SELECT id, unit FROM series WHERE source = ? AND device = ? AND tag = ? ORDER BY id"


def read_history(conn: sqlite3.Connection, source: str, device: str, tag: str, since_ns: int, until_ns: int,
                 max_buckets: int) -> History | None:
    """The buckets of ``source.device.tag`` in ``[since_ns, until_ns)``; None when the store has no such tag."""
    series = conn.execute(_SERIES, (source, device, tag)).fetchall()
    if not series:
        return None
    ids = [row[0] for row in series]
    unit = series[-1][1] or None  # a unit change starts a new series: the newest one names the axis
    width = bucket_width(since_ns, until_ns, max_buckets)
    marks = ",".join("?" * len(ids))
    rows = conn.execute(
        f"""SELECT (ts_ns - ?) / ? AS b,
                   avg(CASE WHEN typeof(value) IN ('integer', 'real') THEN value END),
                   min(CASE WHEN typeof(value) IN ('integer', 'real') THEN value END),
                   max(CASE WHEN typeof(value) IN ('integer', 'real') THEN value END),
                   max(quality), count(*),
                   sum(typeof(value) = 'text' OR (flags & {FLAG_JSON}) != 0)
            FROM (SELECT series_id, ts_ns, value, flags, quality FROM history
                  WHERE series_id IN ({marks}) AND ts_ns >= ? AND ts_ns < ?
                  UNION
                  SELECT series_id, ts_ns, value, flags, quality FROM recent
                  WHERE series_id IN ({marks}) AND ts_ns >= ? AND ts_ns < ?)
            GROUP BY b ORDER BY b""",
        (since_ns, width, *ids, since_ns, until_ns, *ids, since_ns, until_ns),
    ).fetchall()
    buckets = tuple(
        Bucket(since_ns + b * width, None if mean is None else float(mean), None if lo is None else float(lo),
               None if hi is None else float(hi), Quality(min(int(q), 2)), n)
        for b, mean, lo, hi, q, n, _text in rows)
    numeric = not rows or any(mean is not None for _, mean, *_ in rows) or not any(r[6] for r in rows)
    return History(source, device, tag, unit, since_ns, until_ns, width, buckets, numeric)
