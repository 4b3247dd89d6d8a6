"""The embedded store (``sqlite`` sink), its reading API and ``edge-gateway query``, on real files."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from pydantic import ValidationError

import connectors.sqlite.store as store_module
from connectors.sqlite.cli import QUERY_COMMAND, format_time, format_value, parse_when, store_path
from connectors.sqlite.config import SqliteStoreConfig
from connectors.sqlite.plugin import PLUGIN
from connectors.sqlite.query import PointRow, StoreNotFoundError, list_series, query_points
from connectors.sqlite.sink import SqliteStoreSink
from connectors.sqlite.store import APPLICATION_ID, StoreFormatError, TimeSeriesStore
from gateway.config.base import SinkConfigBase
from gateway.errors import PermanentSinkError, RetryableSinkError
from gateway.metrics import Metrics
from gateway.model import Batch, Quality, Sample
from tests import REPO

SEC = 1_000_000_000
T0 = 1_714_543_200 * SEC  # 2024-05-01T06:00:00Z: fixed, for exact CLI output (no retention runs there)


def recent_t0() -> int:
    """A start time an hour ago, whole seconds, so the sink's 30-day retention keeps the points."""
    return (time.time_ns() // SEC - 3600) * SEC


def table_rows(db: Path) -> dict[str, int]:
    """Rows per physical table, to tell compacted points from fresh ones."""
    with sqlite3.connect(db) as conn:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("recent", "history")}


def view_rows(db: Path) -> int:
    """What ad-hoc SQL sees: the ``points`` view over both tables."""
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM points").fetchone()[0])


def file_size(path: str) -> int:
    return Path(path).stat().st_size


def same(a: object, b: object) -> bool:
    """Equality that treats NaN as equal to NaN and keeps bool apart from int (True != 1 here)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def assert_samples_equal(got: Sequence[Sample], want: Sequence[Sample]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g._replace(value=None) == w._replace(value=None)
        assert same(g.value, w.value), (g, w)
        assert type(g.quality) is Quality


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TimeSeriesStore]:
    s = TimeSeriesStore(str(tmp_path / "store.db"))
    await s.open()
    yield s
    await s.close()


def make_sink(tmp_path: Path, metrics: Metrics | None = None, **options: Any) -> SqliteStoreSink:
    config = SqliteStoreConfig(**options)
    return SqliteStoreSink("store", config, path=config.resolve_path(str(tmp_path)), metrics=metrics)


# --- values, timestamps and units round-trip --------------------------------------------------------

ALL_TYPES = [
    Sample("plc1", "temp", 21.5, Quality.GOOD, 0, T0, T0 + 1_500_000, "degC"),
    Sample("plc1", "temp_neg", -0.125, Quality.GOOD, 0, T0, T0 + 7, "degC"),
    Sample("plc1", "count", 42, Quality.GOOD, 0, T0, T0 + 1, None),
    Sample("plc1", "negative", -(2**63), Quality.UNCERTAIN, 0x408F0000, T0, T0, None),
    Sample("plc1", "huge", 2**64 + 5, Quality.GOOD, 0, T0, T0, None),
    Sample("plc1", "running", True, Quality.GOOD, 0, T0, T0 + 2, None),
    Sample("plc1", "stopped", False, Quality.GOOD, 0, T0, T0 + 2, None),
    Sample("plc1", "zero_int", 0, Quality.GOOD, 0, T0, T0, None),
    Sample("plc1", "zero_float", 0.0, Quality.GOOD, 0, T0, T0, None),
    Sample("plc1", "recipe", "Müller 7\tA", Quality.GOOD, 0, T0, T0 + 3, None),
    Sample("plc1", "empty", "", Quality.GOOD, 0, T0, T0, None),
    Sample("plc1", "missing", None, Quality.BAD, 0x80350000, T0, T0 + 4, "bar"),
    Sample("plc1", "nan", math.nan, Quality.BAD, 2, T0, T0, None),
    Sample("plc1", "inf", -math.inf, Quality.UNCERTAIN, 0, T0, T0, None),
    # No device timestamp: the point is placed at the gateway's; source_ts reads back as 0.
    Sample("plc1", "no_source_ts", 1.0, Quality.GOOD, 0, 0, T0 + 9, None),
    # No gateway timestamp either way round.
    Sample("plc1", "no_gateway_ts", 2.0, Quality.GOOD, 0, T0 - SEC, 0, None),
    # A device clock behind the gateway: negative offset.
    Sample("plc1", "late_clock", 3.0, Quality.GOOD, 0, T0 - 3 * SEC, T0, None),
    # Arrays and matrices (OPC-UA) come back as lists; the server timestamp when the tag carries it.
    Sample("plc1", "levels", [1, -2, 3], Quality.GOOD, 0, T0, T0, None),
    Sample("plc1", "matrix", [[1.5, 2.0], [3.0, 4.25]], Quality.GOOD, 0, T0, T0, None, T0 + 11),
    Sample("plc1", "names", ["a", "b"], Quality.GOOD, 0, T0, T0, None, T0 - SEC),
]


@pytest.mark.parametrize("compacted", [False, True], ids=["fresh", "compacted"])
async def test_every_value_type_round_trips(store: TimeSeriesStore, compacted: bool) -> None:
    assert await store.write([Batch("line1", ALL_TYPES)]) == len(ALL_TYPES)
    if compacted:
        assert await store.compact() == len(ALL_TYPES)
    assert table_rows(Path(store.path)) == (
        {"recent": 0, "history": len(ALL_TYPES)} if compacted else {"recent": len(ALL_TYPES), "history": 0}
    )
    assert view_rows(Path(store.path)) == len(ALL_TYPES)
    rows = query_points(store.path)
    by_tag = {row.tag: row for row in rows}
    assert_samples_equal([by_tag[s.tag].to_sample() for s in ALL_TYPES], ALL_TYPES)
    assert {row.source for row in rows} == {"line1"}
    # The point's time is the source timestamp, or the gateway's when the device sent none.
    assert by_tag["no_source_ts"].ts_ns == T0 + 9
    assert by_tag["late_clock"].ts_ns == T0 - 3 * SEC
    assert by_tag["huge"].value == 2**64 + 5 and type(by_tag["huge"].value) is int
    assert by_tag["running"].value is True and by_tag["stopped"].value is False
    assert by_tag["count"].value == 42 and type(by_tag["count"].value) is int
    assert type(by_tag["zero_float"].value) is float


async def test_gateway_time_basis_orders_by_receive_time(tmp_path: Path) -> None:
    s = TimeSeriesStore(str(tmp_path / "g.db"), time_basis="gateway")
    await s.open()
    try:
        # A PLC whose clock is in 1970: with the gateway basis the point sits at receive time.
        sample = Sample("plc1", "temp", 20.0, Quality.GOOD, 0, 5 * SEC, T0, "degC")
        await s.write([Batch("line1", [sample])])
        (row,) = query_points(s.path)
        assert row.ts_ns == T0
        assert row.to_sample() == sample
        assert query_points(s.path, since_ns=T0 - SEC) == [row]
    finally:
        await s.close()


async def test_unit_change_starts_a_new_series(store: TimeSeriesStore) -> None:
    await store.write([Batch("line1", [Sample("plc1", "p", 2.0, source_ts=T0, gateway_ts=T0, unit="bar")])])
    later = Sample("plc1", "p", 29.0, source_ts=T0 + SEC, gateway_ts=T0 + SEC, unit="psi")
    await store.write([Batch("line1", [later])])
    rows = query_points(store.path, tag="p")
    assert [(r.value, r.unit) for r in rows] == [(2.0, "bar"), (29.0, "psi")]
    assert [(s.unit, s.points) for s in list_series(store.path)] == [("bar", 1), ("psi", 1)]


@pytest.mark.parametrize("compact_between", [False, True], ids=["both-fresh", "first-compacted"])
async def test_redelivered_batch_is_stored_once_and_latest_copy_wins(
    store: TimeSeriesStore, compact_between: bool
) -> None:
    first = Batch("line1", [Sample("plc1", "temp", 1.0, source_ts=T0, gateway_ts=T0)])
    again = Batch("line1", [Sample("plc1", "temp", 2.0, Quality.UNCERTAIN, source_ts=T0, gateway_ts=T0 + 5)])
    await store.write([first])
    if compact_between:
        await store.compact()
    await store.write([again])
    (row,) = query_points(store.path)
    assert (row.value, row.quality, row.gateway_ts) == (2.0, Quality.UNCERTAIN, T0 + 5)
    await store.compact()
    (row,) = query_points(store.path)
    assert (row.value, row.quality) == (2.0, Quality.UNCERTAIN)
    assert table_rows(Path(store.path)) == {"recent": 0, "history": 1}


async def test_compaction_in_chunks_keeps_the_latest_copy(
    store: TimeSeriesStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "COMPACT_CHUNK", 7)
    for version in range(3):  # the same 10 points delivered three times, each copy newer
        await store.write([Batch("line1", [Sample("plc1", f"t{i % 2}", version * 100 + i, source_ts=T0 + i)
                                           for i in range(10)])])
    assert await store.compact() == 30
    assert table_rows(Path(store.path)) == {"recent": 0, "history": 10}
    assert [r.value for r in query_points(store.path)] == [200 + i for i in range(10)]
    assert store.recent_rows == 0


# --- queries ----------------------------------------------------------------------------------------


def grid(t0: int) -> list[Batch]:
    """Two sources, two devices each with two tags, ten points per tag one second apart."""
    out = []
    for source in ("line1", "line2"):
        samples = [
            Sample(device, tag, float(i), Quality.GOOD, 0, t0 + i * SEC, t0 + i * SEC, "u")
            for i in range(10)
            for device in ("press_1", "press_2")
            for tag in ("temp", "Data[3]")
        ]
        out.append(Batch(source, samples))
    return out


def keys(rows: Sequence[PointRow]) -> list[tuple[str, str, str, int]]:
    return [(r.source, r.device, r.tag, (r.ts_ns - T0) // SEC) for r in rows]


@pytest.fixture(params=["fresh", "compacted", "mixed"])
async def grid_store(request: pytest.FixtureRequest, store: TimeSeriesStore) -> TimeSeriesStore:
    batches = grid(T0)
    if request.param == "mixed":  # line1 compacted, line2 still in the append table
        await store.write(batches[:1])
        await store.compact()
        await store.write(batches[1:])
    else:
        await store.write(batches)
        if request.param == "compacted":
            await store.compact()
    return store


async def test_query_filters_by_device_tag_and_source(grid_store: TimeSeriesStore) -> None:
    db = grid_store.path
    assert len(query_points(db)) == 80
    rows = query_points(db, device="press_2", tag="temp", source="line1")
    assert keys(rows) == [("line1", "press_2", "temp", i) for i in range(10)]
    assert [r.value for r in rows] == [float(i) for i in range(10)]
    assert {(r.source, r.device) for r in query_points(db, device="press_1")} == {
        ("line1", "press_1"),
        ("line2", "press_1"),
    }
    assert {r.tag for r in query_points(db, tag="temp")} == {"temp"}
    # Brackets are literal (a PLC array tag), * and ? are wildcards.
    assert {r.tag for r in query_points(db, tag="Data[3]")} == {"Data[3]"}
    assert query_points(db, tag="Data3") == []
    assert len(query_points(db, device="press_?", tag="te*", source="line2")) == 20
    assert query_points(db, device="nope") == []


async def test_query_time_range_is_since_inclusive_until_exclusive(grid_store: TimeSeriesStore) -> None:
    rows = query_points(grid_store.path, device="press_1", tag="temp", source="line1", since_ns=T0 + 3 * SEC,
                        until_ns=T0 + 6 * SEC)
    assert [(r.ts_ns - T0) // SEC for r in rows] == [3, 4, 5]
    assert len(query_points(grid_store.path, since_ns=T0 + 9 * SEC)) == 8
    assert query_points(grid_store.path, until_ns=T0) == []


async def test_query_last_n_and_ordering(grid_store: TimeSeriesStore) -> None:
    db = grid_store.path
    newest = query_points(db, tag="temp", limit=3, order="desc")
    # Newest first; ties broken by series order (source, device, tag).
    assert keys(newest) == [
        ("line2", "press_2", "temp", 9), ("line2", "press_1", "temp", 9), ("line1", "press_2", "temp", 9)
    ]
    oldest = query_points(db, device="press_1", tag="temp", source="line2", limit=2)
    assert keys(oldest) == [("line2", "press_1", "temp", 0), ("line2", "press_1", "temp", 1)]
    ascending = query_points(db)
    assert [r.ts_ns for r in ascending] == sorted(r.ts_ns for r in ascending)
    assert keys(query_points(db, device="press_1", tag="temp", source="line1", until_ns=T0 + 5 * SEC, limit=1,
                             order="desc")) == [("line1", "press_1", "temp", 4)]
    with pytest.raises(ValueError):
        query_points(db, limit=0)


async def test_list_series_counts_and_spans(grid_store: TimeSeriesStore) -> None:
    series = list_series(grid_store.path, source="line1")
    assert [(s.device, s.tag, s.unit, s.points) for s in series] == [
        ("press_1", "Data[3]", "u", 10), ("press_1", "temp", "u", 10),
        ("press_2", "Data[3]", "u", 10), ("press_2", "temp", "u", 10),
    ]
    assert {(s.first_ns, s.last_ns) for s in series} == {(T0, T0 + 9 * SEC)}
    assert len(list_series(grid_store.path)) == 8


def test_query_refuses_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(StoreNotFoundError):
        query_points(tmp_path / "absent.db")
    assert not (tmp_path / "absent.db").exists()  # a reader never creates a store
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    with pytest.raises(StoreFormatError):
        query_points(foreign)
    text = tmp_path / "notes.txt"
    text.write_text("not a database at all, just some text that is long enough" * 20)
    with pytest.raises(StoreFormatError):
        list_series(text)


async def test_store_refuses_a_foreign_database(tmp_path: Path) -> None:
    foreign = tmp_path / "other.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    sink = make_sink(tmp_path, path=str(foreign))
    with pytest.raises(PermanentSinkError, match="not an edge-gateway store"):
        await sink.open()
    await sink.close()
    with sqlite3.connect(foreign) as conn:  # untouched
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_schema")] == ["t"]


# --- retention --------------------------------------------------------------------------------------


async def test_retention_by_age_deletes_old_points_and_keeps_new(tmp_path: Path) -> None:
    metrics = Metrics()
    sink = make_sink(tmp_path, metrics, retention="1d")
    await sink.open()
    try:
        now = time.time_ns()
        old = [Sample("plc1", "temp", float(i), source_ts=now - (3 - i) * 86400 * SEC, gateway_ts=now)
               for i in range(2)]  # 3 and 2 days old
        new = [Sample("plc1", "temp", 9.0, source_ts=now - 3600 * SEC, gateway_ts=now),
               Sample("plc2", "flag", True, source_ts=now - 60 * SEC, gateway_ts=now)]
        await sink.write([Batch("line1", old + new)])
        await sink.compact()
        await sink.write([Batch("line1", [Sample("plc3", "x", 1, source_ts=now - 5 * 86400 * SEC, gateway_ts=now)])])
        result = await sink.run_retention()
        # The pass open() started may have taken some of them already: count across passes.
        assert result.size_deleted == 0
        assert [(r.device, r.value) for r in query_points(sink.path)] == [("plc1", 9.0), ("plc2", True)]
        assert metrics.registry.get_sample_value(
            "edgegw_store_deleted_points_total", {"sink": "store", "reason": "age"}
        ) == 3
        assert (metrics.registry.get_sample_value("edgegw_store_retention_runs_total", {"sink": "store"}) or 0) >= 1
    finally:
        await sink.close()


async def test_retention_runs_on_open_without_a_write(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    writer = TimeSeriesStore(str(db))
    await writer.open()
    now = time.time_ns()
    await writer.write([Batch("line1", [Sample("plc1", "a", 1.0, source_ts=now - 40 * 86400 * SEC),
                                        Sample("plc1", "b", 2.0, source_ts=now)])])
    await writer.close()
    sink = make_sink(tmp_path)  # 30 days
    await sink.open()
    try:
        for _ in range(200):
            if len(query_points(db)) == 1:
                break
            await asyncio.sleep(0.01)
        assert [r.tag for r in query_points(db)] == ["b"]
    finally:
        await sink.close()


async def fill(store: TimeSeriesStore, t0: int, points: int, tags: int = 20, per_write: int = 2000) -> None:
    for start in range(0, points, per_write):
        samples = [
            Sample("plc1", f"tag{k % tags}", k * 0.25, Quality.GOOD, 0, t0 + k * 1_000_000, t0 + k * 1_000_000)
            for k in range(start, min(start + per_write, points))
        ]
        await store.write([Batch("line1", samples)])


async def test_retention_by_size_deletes_the_oldest_and_keeps_the_newest(tmp_path: Path) -> None:
    db = str(tmp_path / "store.db")
    unbounded = TimeSeriesStore(db)
    await unbounded.open()
    await fill(unbounded, T0, 120_000)
    await unbounded.compact()
    await fill(unbounded, T0 + 120_000 * 1_000_000, 10_000)  # some still fresh
    used_before = await unbounded.used_bytes()
    await unbounded.close()
    limit = 2 * 1024 * 1024
    assert used_before > limit

    bounded = TimeSeriesStore(db, max_bytes=limit)
    await bounded.open()
    try:
        result = await bounded.enforce_retention(time.time_ns(), 0)  # no age limit
        assert result.age_deleted == 0 and result.size_deleted > 0
        assert limit * 0.5 < result.used_bytes <= limit * store_module.LOW_WATER  # trimmed, not emptied
        kept = query_points(db)
        assert len(kept) == 130_000 - result.size_deleted
        # Exactly the oldest went: what is left is a contiguous tail in time, ending with the newest.
        first_kept = kept[0].ts_ns
        assert kept[-1].ts_ns == T0 + 129_999 * 1_000_000
        assert [r.ts_ns for r in kept] == [first_kept + i * 1_000_000 for i in range(len(kept))]
        # A second pass below the high-water mark deletes nothing.
        again = await bounded.enforce_retention(time.time_ns(), 0)
        assert again.size_deleted == 0
    finally:
        await bounded.close()


async def test_full_store_frees_the_oldest_raises_retryable_and_then_accepts(tmp_path: Path) -> None:
    metrics = Metrics()
    sink = make_sink(tmp_path, metrics, max_size="1MiB", retention=0)
    await sink.open()
    t0 = recent_t0()
    failed: list[Batch] | None = None
    k = 0
    try:
        for _ in range(200):  # ~40 bytes a point: 1 MiB fills within ~30k points
            batch = [Batch("line1", [Sample("plc1", f"t{i % 10}", float(k + i), source_ts=t0 + (k + i) * 1000)
                                     for i in range(1000)])]
            try:
                await sink.write(batch)
            except RetryableSinkError as exc:
                assert "full" in str(exc)
                failed = batch
                break
            k += 1000
        assert failed is not None, "the 1 MiB cap was never reached"
        # The failed write left nothing behind (one transaction), and room was made by deleting the oldest.
        rows = query_points(sink.path)
        assert rows[-1].ts_ns == t0 + (k - 1) * 1000
        assert rows[0].ts_ns > t0
        assert len(rows) < k
        assert sink.health_problems() == ["the local store's disk is full"]
        # The spool retries the same batch: it now fits.
        await sink.write(failed)
        assert sink.health_problems() == []
        newest = query_points(sink.path, limit=1, order="desc")
        assert newest[0].ts_ns == t0 + (k + 999) * 1000
        assert metrics.registry.get_sample_value("edgegw_store_full_errors_total", {"sink": "store"}) == 1
        assert metrics.registry.get_sample_value(
            "edgegw_store_deleted_points_total", {"sink": "store", "reason": "full"}
        ) == k + 1000 - len(query_points(sink.path))
        assert file_size(sink.path) <= 1024 * 1024  # the cap holds for the file itself
    finally:
        await sink.close()


class _DiskUsage(NamedTuple):
    total: int
    used: int
    free: int


def free_pages_bytes(db: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("PRAGMA freelist_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0])


async def test_low_disk_stops_growth_by_overwriting_the_oldest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk_free = 1 << 40
    monkeypatch.setattr(shutil, "disk_usage", lambda _: _DiskUsage(1 << 41, 1 << 40, disk_free))
    metrics = Metrics()
    sink = make_sink(tmp_path, metrics, min_free_disk="8MiB", retention=0)
    await sink.open()
    try:
        t0 = recent_t0()
        await fill(sink.store, t0, 200_000)
        await sink.compact()
        assert await sink.keep_disk_reserve() == 0  # plenty of disk
        spare = free_pages_bytes(sink.path)  # the pages compaction freed count as reserve
        disk_free = 8 * 1024 * 1024 - spare - 1024 * 1024  # 1 MiB short
        deleted = await sink.keep_disk_reserve()
        rows = query_points(sink.path)
        assert 0 < deleted < 100_000 and len(rows) == 200_000 - deleted
        assert rows[0].ts_ns > t0 and rows[-1].ts_ns == t0 + 199_999 * 1_000_000  # oldest gone, newest kept
        assert free_pages_bytes(sink.path) - spare >= 1024 * 1024
        # The freed pages now hold the reserve the disk lacks: no further deleting while they last.
        assert await sink.keep_disk_reserve() == 0
        assert metrics.registry.get_sample_value(
            "edgegw_store_deleted_points_total", {"sink": "store", "reason": "disk"}
        ) == deleted
    finally:
        await sink.close()


async def test_make_room_deletes_nothing_when_the_file_has_free_pages(tmp_path: Path) -> None:
    s = TimeSeriesStore(str(tmp_path / "store.db"))
    await s.open()
    try:
        await fill(s, T0, 20_000)
        await s.compact()  # frees the append table's pages
        assert await s.make_room(4096) == 0
        assert len(query_points(s.path)) == 20_000
    finally:
        await s.close()


# --- the sink ---------------------------------------------------------------------------------------


async def test_sink_survives_close_and_reopen(tmp_path: Path) -> None:
    t0 = recent_t0()
    sink = make_sink(tmp_path)
    await sink.open()
    await sink.write([Batch("line1", [Sample("plc1", "temp", 1.5, source_ts=t0, unit="degC")])])
    await sink.close()
    await sink.close()  # idempotent
    with pytest.raises(RetryableSinkError):
        await sink.write([Batch("line1", [Sample("plc1", "temp", 9.9, source_ts=t0 + SEC)])])

    await sink.open()  # the supervisor reopens the same object
    await sink.write([Batch("line1", [Sample("plc1", "temp", 2.5, source_ts=t0 + SEC, unit="degC")])])
    await sink.compact()
    await sink.close()

    other = make_sink(tmp_path)  # and a new process opens the same file
    await other.open()
    try:
        await other.write([Batch("line1", [Sample("plc1", "temp", 3.5, source_ts=t0 + 2 * SEC, unit="degC")]),
                           Batch("line2", [Sample("plc1", "temp", 4.5, source_ts=t0 + 2 * SEC, unit="degC")])])
        rows = query_points(other.path)
        assert [(r.source, r.value) for r in rows] == [("line1", 1.5), ("line1", 2.5), ("line1", 3.5), ("line2", 4.5)]
        with sqlite3.connect(other.path) as conn:  # the cached series ids were reused, not duplicated
            assert conn.execute("SELECT source, device, tag, unit FROM series ORDER BY id").fetchall() == [
                ("line1", "plc1", "temp", "degC"), ("line2", "plc1", "temp", "degC")
            ]
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        await other.close()


async def test_write_of_many_batches_is_one_transaction(tmp_path: Path) -> None:
    sink = make_sink(tmp_path)
    await sink.open()
    try:
        t0 = recent_t0()
        batches = [Batch(f"src{i}", [Sample("d", "t", i, source_ts=t0)]) for i in range(5)]
        with sqlite3.connect(sink.path) as conn:
            before = conn.execute("PRAGMA data_version").fetchone()[0]
            await sink.write(batches)
            after = conn.execute("PRAGMA data_version").fetchone()[0]
        assert after == before + 1  # another connection saw exactly one commit
        assert sorted(int(r.value or 0) for r in query_points(sink.path)) == [0, 1, 2, 3, 4]
        assert {type(r.value) for r in query_points(sink.path)} == {int}
    finally:
        await sink.close()


async def test_compaction_is_scheduled_after_enough_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "COMPACT_ROWS", 50)
    metrics = Metrics()
    sink = make_sink(tmp_path, metrics)
    await sink.open()
    try:
        # Let the maintenance pass open() starts finish first (it then sleeps for a minute).
        for _ in range(200):
            if metrics.registry.get_sample_value("edgegw_store_retention_runs_total", {"sink": "store"}):
                break
            await asyncio.sleep(0.01)
        await fill(sink.store, recent_t0(), 30, per_write=30)
        await sink.write([Batch("line1", [Sample("plc1", "x", 1.0, source_ts=recent_t0())] * 1)])
        assert table_rows(Path(sink.path))["recent"] == 31  # not due yet
        await sink.write([Batch("line1", [Sample("plc1", f"y{i}", 1.0, source_ts=recent_t0()) for i in range(30)])])
        for _ in range(200):
            if table_rows(Path(sink.path)) == {"recent": 0, "history": 61}:
                break
            await asyncio.sleep(0.01)
        assert table_rows(Path(sink.path)) == {"recent": 0, "history": 61}
    finally:
        await sink.close()


async def test_plugin_builds_the_sink_under_data_dir(tmp_path: Path) -> None:
    from gateway.plugins import BuildContext, sink_plugin

    assert sink_plugin("sqlite") is PLUGIN
    config = PLUGIN.config_model.model_validate({"type": "sqlite", "retention": "7d", "max_size": "256MiB"})
    assert (config.retention, int(config.max_size)) == (7 * 86400.0, 256 * 1024 * 1024)
    ctx = BuildContext(metrics=Metrics(), site=None, data_dir=str(tmp_path), log=_Log())  # type: ignore[arg-type]
    sink = PLUGIN.factory("local_store", config, ctx)
    assert sink.name == "local_store"
    assert isinstance(sink, SqliteStoreSink) and sink.path == str(tmp_path / "store.db")
    await sink.open()
    await sink.write([Batch("line1", [Sample("d", "t", 1.0, source_ts=recent_t0())])])
    await sink.close()
    assert len(query_points(tmp_path / "store.db")) == 1


class _Log:
    def bind(self, **_: object) -> _Log:
        return self

    def info(self, *_: object, **__: object) -> None:
        pass

    def warning(self, *_: object, **__: object) -> None:
        pass


def test_config_defaults_and_validation(tmp_path: Path) -> None:
    cfg = SqliteStoreConfig()
    assert (cfg.type, cfg.retention, int(cfg.max_size), cfg.synchronous) == ("sqlite", 30 * 86400.0, 1024**3, "normal")
    assert cfg.resolve_path("/data") == "/data/store.db"
    assert SqliteStoreConfig(path="hist/line.db").resolve_path("/data") == "/data/hist/line.db"
    assert SqliteStoreConfig(path="/var/lib/x.db").resolve_path("/data") == "/var/lib/x.db"
    assert int(SqliteStoreConfig(max_size=0).max_size) == 0
    for bad in ({"max_size": "10KiB"}, {"synchronous": "off"}, {"retention": "soon"}, {"bogus": 1}):
        with pytest.raises(ValidationError):
            SqliteStoreConfig.model_validate(bad)
    described = SqliteStoreConfig.model_json_schema()["properties"]
    missing = [name for name in SqliteStoreConfig.model_fields if name != "type"
               and "description" not in described[name]]
    assert missing == []


def test_sample_yaml_is_a_valid_config() -> None:
    data = yaml.safe_load((REPO / "connectors" / "sqlite" / "sample.yaml").read_text())
    cfg = SqliteStoreConfig.model_validate(data)
    assert (cfg.type, cfg.retention, int(cfg.max_size), cfg.time_basis) == ("sqlite", 30 * 86400.0, 1024**3, "source")


# --- edge-gateway query -----------------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edge-gateway query")
    QUERY_COMMAND.configure(parser)
    return parser.parse_args(argv)


@pytest.fixture
async def cli_db(tmp_path: Path) -> Path:
    db = tmp_path / "store.db"
    s = TimeSeriesStore(str(db))
    await s.open()
    await s.write([
        Batch("line1", [
            Sample("filler", "temperature", 60.25, Quality.GOOD, 0, T0 + 250_000_000, T0 + 251_000_000, "degC"),
            Sample("capper", "running", True, Quality.GOOD, 0, T0 + 500_000_000, T0 + 500_000_000),
            Sample("filler", "bottles", 1200, Quality.UNCERTAIN, 0, T0 + SEC, T0 + SEC),
        ]),
        Batch("line2", [Sample("filler", "temperature", None, Quality.BAD, 0x80350000, T0 + 2 * SEC, T0 + 2 * SEC,
                               "degC")]),
    ])
    await s.compact()
    await s.write([Batch("line1", [Sample("capper", "running", False, Quality.GOOD, 0, T0 + 3 * SEC, T0 + 3 * SEC)])])
    await s.close()
    return db


def test_cli_table_output(cli_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert QUERY_COMMAND.run(parse("--db", str(cli_db))) == 0
    out = capsys.readouterr().out
    assert out.splitlines() == [
        "TIME                      SOURCE  DEVICE  TAG          VALUE  UNIT  QUALITY",
        "2024-05-01T06:00:00.250Z  line1   filler  temperature  60.25  degC  good",
        "2024-05-01T06:00:00.500Z  line1   capper  running      true   -     good",
        "2024-05-01T06:00:01.000Z  line1   filler  bottles      1200   -     uncertain",
        "2024-05-01T06:00:02.000Z  line2   filler  temperature  -      degC  bad (BadAttributeIdInvalid)",
        "2024-05-01T06:00:03.000Z  line1   capper  running      false  -     good",
    ]


def test_cli_csv_output_with_filters(cli_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert QUERY_COMMAND.run(parse("--db", str(cli_db), "--format", "csv", "--device", "filler")) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [
        ["time", "source", "device", "tag", "value", "unit", "quality", "status", "status_name", "server_time",
         "state"],
        ["2024-05-01T06:00:00.250Z", "line1", "filler", "temperature", "60.25", "degC", "good", "0", "Good", "", ""],
        ["2024-05-01T06:00:01.000Z", "line1", "filler", "bottles", "1200", "", "uncertain", "0", "Good", "", ""],
        ["2024-05-01T06:00:02.000Z", "line2", "filler", "temperature", "", "degC", "bad", str(0x80350000),
         "BadAttributeIdInvalid", "", ""],
    ]


def test_cli_last_n_time_range_and_source(cli_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert QUERY_COMMAND.run(parse("--db", str(cli_db), "--last", "2", "--format", "csv")) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))[1:]
    assert [(r[0], r[3], r[4]) for r in rows] == [
        ("2024-05-01T06:00:02.000Z", "temperature", ""), ("2024-05-01T06:00:03.000Z", "running", "false")
    ]
    args = parse("--db", str(cli_db), "--since", "2024-05-01T06:00:00.5Z", "--until", "2024-05-01T08:00:02+02:00",
                 "--source", "line1", "--format", "csv")
    assert QUERY_COMMAND.run(args) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))[1:]
    assert [(r[0], r[3]) for r in rows] == [
        ("2024-05-01T06:00:00.500Z", "running"), ("2024-05-01T06:00:01.000Z", "bottles")
    ]


def test_cli_series_listing(cli_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert QUERY_COMMAND.run(parse("--db", str(cli_db), "--series", "--format", "csv")) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [
        ["source", "device", "tag", "unit", "points", "first", "last"],
        ["line1", "capper", "running", "", "2", "2024-05-01T06:00:00.500Z", "2024-05-01T06:00:03.000Z"],
        ["line1", "filler", "bottles", "", "1", "2024-05-01T06:00:01.000Z", "2024-05-01T06:00:01.000Z"],
        ["line1", "filler", "temperature", "degC", "1", "2024-05-01T06:00:00.250Z", "2024-05-01T06:00:00.250Z"],
        ["line2", "filler", "temperature", "degC", "1", "2024-05-01T06:00:02.000Z", "2024-05-01T06:00:02.000Z"],
    ]
    assert QUERY_COMMAND.run(parse("--db", str(cli_db), "--series", "--source", "line2")) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["SOURCE", "DEVICE", "TAG", "UNIT", "POINTS", "FIRST", "LAST"]
    assert out[1].split() == ["line2", "filler", "temperature", "degC", "1", "2024-05-01T06:00:02.000Z",
                              "2024-05-01T06:00:02.000Z"]
    assert len(out) == 2


async def test_cli_missing_and_empty_store_return_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert QUERY_COMMAND.run(parse("--db", str(tmp_path / "none.db"))) == 1
    err = capsys.readouterr().err
    assert "no store at" in err and "none.db" in err and "Traceback" not in err
    assert not (tmp_path / "none.db").exists()

    empty = TimeSeriesStore(str(tmp_path / "empty.db"))
    await empty.open()
    await empty.close()
    assert QUERY_COMMAND.run(parse("--db", str(tmp_path / "empty.db"))) == 1
    captured = capsys.readouterr()
    assert "the store is empty" in captured.err and captured.out == ""
    assert QUERY_COMMAND.run(parse("--db", str(tmp_path / "empty.db"), "--series")) == 1
    assert "the store is empty" in capsys.readouterr().err


def test_cli_no_match_returns_1(cli_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert QUERY_COMMAND.run(parse("--db", str(cli_db), "--tag", "nothing*")) == 1
    captured = capsys.readouterr()
    assert "no points match the filters" in captured.err and captured.out == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "yesterday-ish"], "--since: expected a duration"),
        (["--until", "2024-13-45"], "--until: expected a duration"),
        (["--last", "0"], "--last must be at least 1"),
        (["--since", "2024-05-02", "--until", "2024-05-01"], "--since must be before --until"),
        (["--series", "--last", "3"], "--series lists whole series"),
        (["--sink", "x"], "--db names the store file itself"),
    ],
)
def test_cli_bad_arguments_return_2_with_one_line(
    cli_db: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert QUERY_COMMAND.run(parse("--db", str(cli_db), *argv)) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("edge-gateway query: ")
    assert message in captured.err


def test_cli_config_errors_return_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert QUERY_COMMAND.run(parse("-c", str(tmp_path / "missing.yaml"))) == 2
    err = capsys.readouterr().err
    assert "missing.yaml" in err and "Traceback" not in err


def test_cli_reads_the_store_the_config_names(cli_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = yaml.safe_load((REPO / "connectors" / "sqlite" / "sample.yaml").read_text())
    config = cli_db.parent / "gateway.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(cli_db.parent),
        "sources": {"line1": {"type": "synthetic", "devices": {"d": {"tags": [{"name": "t", "signal": "sine"}]}}}},
        "sinks": {"local_store": sample},
    }))
    assert QUERY_COMMAND.run(parse("-c", str(config), "--tag", "bottles", "--format", "csv")) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[1][3:5] == ["bottles", "1200"]
    assert QUERY_COMMAND.run(parse("-c", str(config), "--sink", "nope")) == 2
    assert "no sink 'nope'" in capsys.readouterr().err


def test_query_shows_the_word_of_a_value_map_from_the_config(cli_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sample = yaml.safe_load((REPO / "connectors" / "sqlite" / "sample.yaml").read_text())
    config = cli_db.parent / "gateway.yaml"
    tags = [{"name": "running", "signal": "constant", "value": 1, "states": {0: "stopped", 1: "running"}},
            {"name": "bottles", "signal": "constant", "value": 1, "states": {1200: "full crate"}}]
    config.write_text(yaml.safe_dump({
        "data_dir": str(cli_db.parent),
        "sources": {"line1": {"type": "synthetic", "devices": {"capper": {"tags": tags[:1]},
                                                                "filler": {"tags": tags[1:]}}}},
        "sinks": {"local_store": sample},
    }))
    assert QUERY_COMMAND.run(parse("-c", str(config), "--source", "line1")) == 0
    # a bool maps like 0/1; a tag without a map prints as before
    assert capsys.readouterr().out.splitlines() == [
        "TIME                      SOURCE  DEVICE  TAG          VALUE              UNIT  QUALITY",
        "2024-05-01T06:00:00.250Z  line1   filler  temperature  60.25              degC  good",
        "2024-05-01T06:00:00.500Z  line1   capper  running      true (running)     -     good",
        "2024-05-01T06:00:01.000Z  line1   filler  bottles      1200 (full crate)  -     uncertain",
        "2024-05-01T06:00:03.000Z  line1   capper  running      false (stopped)    -     good",
    ]
    assert QUERY_COMMAND.run(parse("-c", str(config), "--source", "line1", "--format", "csv")) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert [(r[3], r[4], r[10]) for r in rows[1:]] == [
        ("temperature", "60.25", ""), ("running", "true", "running"), ("bottles", "1200", "full crate"),
        ("running", "false", "stopped")]


@dataclass
class _Config:
    data_dir: str = "/data"
    sinks: dict[str, SinkConfigBase] = field(default_factory=dict)


def test_store_path_picks_the_sqlite_sink() -> None:
    from connectors.sqlite.cli import UsageError

    other = SinkConfigBase(type="mqtt")
    assert store_path(_Config(), None) == "/data/store.db"  # nothing configured: the default store
    one = _Config(sinks={"up": other, "hist": SqliteStoreConfig(path="h.db")})
    assert store_path(one, None) == "/data/h.db"
    assert store_path(one, "hist") == "/data/h.db"
    with pytest.raises(UsageError, match="type mqtt, not sqlite"):
        store_path(one, "up")
    two = _Config(sinks={"a": SqliteStoreConfig(path="a.db"), "b": SqliteStoreConfig(path="/x/b.db")})
    with pytest.raises(UsageError, match="several sqlite sinks"):
        store_path(two, None)
    assert store_path(two, "b") == "/x/b.db"
    with pytest.raises(UsageError, match="no sqlite sink"):
        store_path(_Config(sinks={"up": other}), None)


def test_time_parsing_and_formatting() -> None:
    now = T0 + 12_345
    assert parse_when("1h", now, "--since") == now - 3600 * SEC
    assert parse_when("90", now, "--since") == now - 90 * SEC
    assert parse_when("now", now, "--since") == now
    assert parse_when("2024-05-01T06:00:00Z", now, "--since") == T0
    assert parse_when("2024-05-01T06:00:00", now, "--since") == T0  # naive is UTC
    assert parse_when("2024-05-01T08:00:00.125+02:00", now, "--since") == T0 + 125_000_000
    assert format_time(T0 + 999_999_999) == "2024-05-01T06:00:00.999Z"
    assert format_time(0) == "1970-01-01T00:00:00.000Z"


def test_query_through_the_real_cli(cli_db: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "query", "--db", str(cli_db), "--tag", "running", "--format", "csv"],
        capture_output=True, text=True, timeout=30, check=False, env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "time,source,device,tag,value,unit,quality,status,status_name,server_time,state",
        "2024-05-01T06:00:00.500Z,line1,capper,running,true,,good,0,Good,,",
        "2024-05-01T06:00:03.000Z,line1,capper,running,false,,good,0,Good,,",
    ]
    bad = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "query", "--db", str(cli_db), "--since", "whenever"],
        capture_output=True, text=True, timeout=30, check=False, env=env,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


async def test_a_timestamp_no_sqlite_integer_holds_never_jams_the_store(store: TimeSeriesStore) -> None:
    opcua_min = -11_644_473_600 * SEC  # 1601-01-01, the OPC-UA minimum date: beyond int64 in ns
    samples = [
        Sample("plc1", "min_date", 1.0, Quality.GOOD, 0, opcua_min, T0, None),
        Sample("plc1", "negative", 2.0, Quality.GOOD, 0, -5 * SEC, T0 + 1, None),
        Sample("plc1", "far_future", 3.0, Quality.GOOD, 0, 2**64, T0 + 2, None),
        Sample("plc1", "server_min", 4.0, Quality.GOOD, 0, T0 + 3, T0 + 3, None, opcua_min),
        Sample("plc1", "fine", 5.0, Quality.GOOD, 0, T0 + 4, T0 + 4, None),
    ]
    assert await store.write([Batch("line1", samples)]) == len(samples)
    by_tag = {row.tag: row for row in query_points(store.path)}
    assert by_tag["min_date"].ts_ns == T0 and by_tag["min_date"].source_ts == 0  # filed under receive time
    assert by_tag["negative"].ts_ns == T0 + 1
    assert by_tag["far_future"].ts_ns == T0 + 2
    assert by_tag["server_min"].ts_ns == T0 + 3 and by_tag["server_min"].server_ts == 0
    assert by_tag["fine"].value == 5.0
    assert await store.write([Batch("line1", [Sample("plc1", "after", 6.0, Quality.GOOD, 0, T0 + 5, T0 + 5, None)])])


async def test_a_schema_1_store_is_migrated_and_keeps_its_points(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"""
        BEGIN;
        CREATE TABLE series (id INTEGER PRIMARY KEY, source TEXT NOT NULL, device TEXT NOT NULL, tag TEXT NOT NULL,
                             unit TEXT NOT NULL DEFAULT '', UNIQUE (source, device, tag, unit));
        CREATE TABLE recent (series_id INTEGER NOT NULL, ts_ns INTEGER NOT NULL, value, flags INTEGER NOT NULL,
                             quality INTEGER NOT NULL, status INTEGER NOT NULL, src_off INTEGER, gw_off INTEGER);
        CREATE TABLE history (series_id INTEGER NOT NULL, ts_ns INTEGER NOT NULL, value, flags INTEGER NOT NULL,
                              quality INTEGER NOT NULL, status INTEGER NOT NULL, src_off INTEGER, gw_off INTEGER,
                              PRIMARY KEY (series_id, ts_ns)) WITHOUT ROWID;
        CREATE VIEW points AS SELECT series_id, ts_ns, value, flags, quality, status, src_off, gw_off FROM history
            UNION ALL SELECT series_id, ts_ns, value, flags, quality, status, src_off, gw_off FROM recent;
        INSERT INTO series VALUES (1, 'line1', 'plc1', 'temp', 'degC');
        INSERT INTO history VALUES (1, {T0}, 20.5, 0, 0, 0, 0, 5);
        INSERT INTO recent VALUES (1, {T0 + SEC}, 21.5, 0, 0, 0, 0, NULL);
        PRAGMA application_id = {APPLICATION_ID};
        PRAGMA user_version = 1;
        COMMIT;
    """)
    conn.close()
    s = TimeSeriesStore(str(path))
    await s.open()
    try:
        await s.write([Batch("line1", [Sample("plc1", "temp", 22.5, Quality.GOOD, 0, T0 + 2 * SEC, T0 + 2 * SEC,
                                              "degC", T0 + SEC)])])
    finally:
        await s.close()
    rows = query_points(str(path))
    assert [(r.value, r.gateway_ts, r.server_ts) for r in rows] == [
        (20.5, T0 + 5, 0), (21.5, 0, 0), (22.5, T0 + 2 * SEC, T0 + SEC)]
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == 2
        assert check.execute("SELECT count(*) FROM points").fetchone()[0] == 3


def test_arrays_print_as_json_in_query_output() -> None:
    assert format_value([1, 2.5, [True, None]], table=False) == "[1,2.5,[true,null]]"
    assert format_value([math.nan, math.inf], table=False) == "[null,null]"
