"""How the embedded store serves the status page's chart: on its own read-only connection and thread (a
chart never holds the writes), each point once however often it was delivered, and a clear error when the
file cannot be read."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from connectors.sqlite.store import TimeSeriesStore
from gateway.history import HistoryUnavailable
from gateway.model import Batch, Quality, Sample

SEC = 1_000_000_000
T0 = 1_780_000_000 * SEC


def points(*values: float) -> Batch:
    return Batch("line", [Sample("oven", "temp", v, Quality.GOOD, 0, T0 + i * SEC, T0 + i * SEC, "degC")
                          for i, v in enumerate(values)])


async def test_a_point_delivered_twice_counts_once(tmp_path: Path) -> None:
    store = TimeSeriesStore(str(tmp_path / "store.db"))
    await store.open()
    try:
        first = points(10.0, 20.0, 30.0, 40.0)
        await store.write([first])
        await store.compact()
        # at-least-once: the same batch again after a lost ack, beside its compacted copy, then twice more
        # while still in `recent`
        await store.write([first])
        await store.write([points(10.0, 20.0)])
        h = await store.history("line", "oven", "temp", T0, T0 + 4 * SEC, 2)
        assert h is not None
        assert [(b.count, b.mean, b.low, b.high) for b in h.buckets] == [(2, 15.0, 10.0, 20.0), (2, 35.0, 30.0, 40.0)]
    finally:
        await store.close()


async def test_a_chart_is_read_while_the_store_thread_is_busy(tmp_path: Path) -> None:
    store = TimeSeriesStore(str(tmp_path / "store.db"))
    await store.open()
    entered, release = threading.Event(), threading.Event()

    def hold() -> bool:
        entered.set()
        return release.wait(30)

    try:
        await store.write([points(1.0, 2.0, 3.0)])
        # Hold the store's own thread, as a long write or compaction would: the chart still answers.
        held = asyncio.ensure_future(store._call(hold))
        assert await asyncio.to_thread(entered.wait, 10)
        h = await asyncio.wait_for(store.history("line", "oven", "temp", T0, T0 + 3 * SEC, 3), 10)
        assert h is not None and [b.mean for b in h.buckets] == [1.0, 2.0, 3.0]
        assert not held.done()  # the write side was busy all along
        release.set()
        assert await held is True
        # and the reader sees what the writer commits afterwards (its connection is not a stale snapshot)
        await store.write([Batch("line", [Sample("oven", "temp", 9.0, Quality.GOOD, 0, T0 + 3 * SEC,
                                                 T0 + 3 * SEC, "degC")])])
        h = await store.history("line", "oven", "temp", T0, T0 + 4 * SEC, 4)
        assert h is not None and [b.mean for b in h.buckets] == [1.0, 2.0, 3.0, 9.0]
    finally:
        release.set()
        await store.close()


async def test_an_unreadable_file_is_a_clear_error_and_the_next_read_recovers(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = TimeSeriesStore(str(path))
    await store.open()
    try:
        await store.write([points(1.0)])
        garbage = tmp_path / "garbage.db"
        garbage.write_bytes(b"this is not an SQLite database" * 200)
        store.path = str(garbage)  # what the reader opens: as if the file had been replaced by junk
        with pytest.raises(HistoryUnavailable, match=r"garbage\.db cannot be read: file is not a database"):
            await store.history("line", "oven", "temp", T0, T0 + SEC, 1)
        store.path = str(path)
        h = await store.history("line", "oven", "temp", T0, T0 + SEC, 1)
        assert h is not None and h.buckets[0].mean == 1.0
    finally:
        await store.close()
