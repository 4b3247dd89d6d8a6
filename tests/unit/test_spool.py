"""The durable spool: encoding, cursors, bounds, disk full, garbage collection, restart."""

from __future__ import annotations

import asyncio
import math
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import IntEnum
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest

from gateway.config.site import SpoolConfig
from gateway.metrics import Metrics
from gateway.model import Batch, Quality, Sample, SpooledBatch
from gateway.spool import Spool, SpoolClosedError, SpoolReader
from gateway.spool_codec import DecodeError, decode, encode
from tests.waiting import until as poll


def counters(start: int, n: int, device: str = "m1", tag: str = "c") -> list[Sample]:
    return [Sample(device, tag, v, Quality.GOOD, 0, v, v + 1, "u") for v in range(start, start + n)]


def values(batches: list[SpooledBatch]) -> list[Any]:
    return [s.value for b in batches for s in b.samples]


def dropped(metrics: Metrics, reason: str) -> float:
    return metrics.registry.get_sample_value("edgegw_spool_dropped_samples_total", {"reason": reason}) or 0.0


def errors(metrics: Metrics, kind: str) -> float:
    return metrics.registry.get_sample_value("edgegw_spool_errors_total", {"kind": kind}) or 0.0


@asynccontextmanager
async def opened(path: Path, config: SpoolConfig | None = None,
                 metrics: Metrics | None = None) -> AsyncIterator[Spool]:
    spool = Spool(path, config or SpoolConfig(), metrics or Metrics())
    await spool.open()
    try:
        yield spool
    finally:
        await spool.close()


async def read(reader: SpoolReader, max_samples: int = 1_000_000) -> list[SpooledBatch]:
    return await asyncio.wait_for(reader.next(max_samples), 5)


async def read_samples(reader: SpoolReader, n: int) -> list[SpooledBatch]:
    """Read until ``n`` samples came back (a reader behind the in-memory tail gets disk rows first)."""
    got: list[SpooledBatch] = []
    while sum(len(b.samples) for b in got) < n:
        got += await read(reader)
    return got


async def nothing_ready(spool: Spool, reader: SpoolReader) -> bool:
    """True when ``next`` has nothing to return once everything appended so far is committed."""
    await spool.flush()
    task = asyncio.create_task(reader.next(1_000_000))
    for _ in range(20):  # a tail read completes without any await; a disk read needs a few loop turns
        await asyncio.sleep(0)
    await spool.flush()
    for _ in range(20):
        await asyncio.sleep(0)
    ready = task.done()
    task.cancel()
    return not ready


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


# -- encoding ----------------------------------------------------------------------------------------


class Mode(IntEnum):
    AUTO = 3


EVERY_VALUE: list[Any] = [
    1.5, -0.0, math.inf, 1e-300, 0, -7, 2**100, -(2**70), True, False, "", "running", "Temperatur °C ✓ 温度",
    None, Mode.AUTO,
]


def every_value_samples() -> list[Sample]:
    return [
        Sample(f"dev_{i % 3}", f"tag_ü{i}", v, Quality(i % 3), (0x80350000 if i % 2 else 0) + i,
               1_700_000_000_123_456_789 + i, 1_700_000_000_223_456_789 + i, None if i % 4 else "°C")
        for i, v in enumerate(EVERY_VALUE)
    ]


def assert_same(got: list[Sample], want: list[Sample]) -> None:
    assert got == want
    for g, w in zip(got, want, strict=True):
        assert type(g) is Sample
        assert type(g.quality) is Quality and g.quality is w.quality
        expected_type = int if isinstance(w.value, IntEnum) else type(w.value)
        assert type(g.value) is expected_type, (g.value, w.value)


def test_codec_round_trips_every_value_type() -> None:
    want = every_value_samples()
    payload = encode(want)
    assert_same(decode(payload, len(want)), want)
    nan = decode(encode([Sample("d", "t", math.nan)]), 1)[0]
    assert math.isnan(nan.value)  # type: ignore[arg-type]


def test_codec_rejects_damage_instead_of_guessing() -> None:
    payload = encode(counters(0, 5))
    with pytest.raises(DecodeError):
        decode(payload[:-7], 5)
    with pytest.raises(DecodeError):
        decode(payload, 4)
    with pytest.raises(DecodeError):
        decode(b"\x00garbage", 1)


async def test_round_trip_through_disk_keeps_types_quality_and_status(tmp_path: Path) -> None:
    want = every_value_samples()
    async with opened(tmp_path / "s.db") as spool:
        spool.reader("sink")
        await spool.append(Batch("src", want))
    async with opened(tmp_path / "s.db") as spool:  # a fresh process reads it back from disk
        got = await read(spool.reader("sink"))
    assert [(b.seq, b.source) for b in got] == [(1, "src")]
    assert_same(got[0].samples, want)


async def test_unstorable_value_refuses_that_batch_only(tmp_path: Path) -> None:
    metrics = Metrics()
    async with opened(tmp_path / "s.db", metrics=metrics) as spool:
        reader = spool.reader("sink")
        await spool.append(Batch("src", [Sample("d", "t", Fraction(1, 4))]))  # a Real: stored as float
        await spool.append(Batch("src", [Sample("d", "t", object()), *counters(0, 2)]))  # type: ignore[arg-type]
        await spool.append(Batch("src", counters(5, 1)))
        got = await read(reader)
        assert [(b.seq, values([b])) for b in got] == [(1, [0.25]), (3, [5])]
        assert dropped(metrics, "invalid") == 3 and errors(metrics, "encode") == 1
    async with opened(tmp_path / "s.db") as spool:  # read back from disk: the Fraction was stored as a float
        got = await read(spool.reader("sink"))
        assert [type(s.value) for b in got for s in b.samples] == [float, int]


# -- order, readers, cursors ----------------------------------------------------------------------


async def test_batches_come_back_in_order_within_max_samples(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db") as spool:
        reader = spool.reader("sink")
        for i in range(10):
            await spool.append(Batch("src", counters(i * 5, 5)))
        first = await read(reader, 12)
        assert [b.seq for b in first] == [1, 2]  # a third batch would make 15 > 12
        single = await read(reader, 3)
        assert [b.seq for b in single] == [3]  # always at least one batch, even if larger
        rest = await read(reader)
        assert [b.seq for b in rest] == list(range(4, 11))
        assert values(first + single + rest) == list(range(50))


async def test_sources_select_by_glob(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db") as spool:
        presses = spool.reader("presses", ["press_*"])
        oven = spool.reader("oven", ["oven_1"])
        for source, start in (("press_1", 10), ("oven_1", 20), ("pump", 30), ("press_2", 40), ("oven_1", 50)):
            await spool.append(Batch(source, counters(start, 2)))
        await spool.flush()
        assert presses.pending_samples() == 4 and oven.pending_samples() == 4
        got_p = await read(presses)
        got_o = await read(oven)
        assert [(b.source, b.samples[0].value) for b in got_p] == [("press_1", 10), ("press_2", 40)]
        assert [(b.source, b.samples[0].value) for b in got_o] == [("oven_1", 20), ("oven_1", 50)]
        await presses.ack(got_p[-1].seq)
        await oven.ack(got_o[-1].seq)
        assert presses.pending_samples() == 0 and oven.pending_samples() == 0
        assert presses.oldest_pending_age() == 0.0
        assert await nothing_ready(spool, presses)


async def test_new_sink_gets_this_runs_data_but_no_older_backlog(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with opened(path) as spool:
        spool.reader("old")
        await spool.append(Batch("src", counters(0, 1)))
    async with opened(path) as spool:
        await spool.append(Batch("src", counters(1, 1)))  # sources may start before a sink registers
        await spool.flush()
        old = spool.reader("old")
        new = spool.reader("new")
        await spool.flush()
        assert (old.pending_samples(), new.pending_samples()) == (2, 1)
        assert values(await read_samples(old, 2)) == [0, 1]
        assert values(await read(new)) == [1]
        assert await nothing_ready(spool, new)
    # The new sink's start was persisted: a later run does not replay the first run's data to it.
    assert rows(path, "SELECT sink, seq FROM cursors ORDER BY sink") == [("new", 1), ("old", 0)]


async def test_ack_and_rewind(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db") as spool:
        reader = spool.reader("sink")
        for i in range(5):
            await spool.append(Batch("src", counters(i * 2, 2)))
        await spool.flush()
        assert reader.pending_samples() == 10
        first = await read(reader, 4)
        second = await read(reader, 4)
        assert [b.seq for b in first + second] == [1, 2, 3, 4]
        reader.rewind()  # nothing acked: everything again
        assert [b.seq for b in await read(reader, 4)] == [1, 2]
        await reader.ack(1)
        assert reader.pending_samples() == 8
        reader.rewind()  # back to just after the cursor, not to the start
        assert [b.seq for b in await read(reader, 4)] == [2, 3]
        await reader.ack(3)
        assert [b.seq for b in await read(reader)] == [4, 5]
        assert reader.pending_samples() == 4
        await spool.flush()  # an ack alone is committed promptly, without waiting for more appends
        assert rows(tmp_path / "s.db", "SELECT sink, seq FROM cursors") == [("sink", 3)]


async def test_tail_frees_at_once_what_every_reader_acked_and_keeps_what_one_may_reread(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db") as spool:
        fast, slow = spool.reader("fast"), spool.reader("slow")
        appended = [counters(i * 3, 3) for i in range(4)]
        for samples in appended:
            await spool.append(Batch("src", samples))
        await spool.flush()
        assert len(spool.tail) == 4
        await fast.ack((await read(fast))[-1].seq)
        await slow.ack((await read(slow, 6))[-1].seq)  # rows 1-2 acked by both: they leave memory at once
        assert (len(spool.tail), spool.tail.floor) == (2, 2)
        in_flight = await read(slow)
        slow.rewind()  # a failed write: what it had in flight comes again from memory, the very same lists
        again = await read(slow)
        assert [b.seq for b in again] == [3, 4]
        assert [b.samples for b in again] == [b.samples for b in in_flight]
        assert all(b.samples is s for b, s in zip(again, appended[2:], strict=True))
        await slow.ack(4)
        assert (len(spool.tail), spool.tail.floor) == (0, 4)
        await spool.append(Batch("src", counters(100, 1)))
        await spool.flush()
        assert [b.seq for b in await read(fast)] == [5]  # the head is served as before


async def test_reader_called_again_returns_the_same_reader_rewound(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db") as spool:
        reader = spool.reader("sink")
        await spool.append(Batch("src", counters(0, 3)))
        assert [b.seq for b in await read(reader)] == [1]
        again = spool.reader("sink")  # a sink restarted by its supervisor
        assert again is reader
        assert [b.seq for b in await read(again)] == [1]


async def test_restart_resumes_cursors_and_seq_never_goes_back(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with opened(path) as spool:
        reader = spool.reader("sink")
        for i in range(10):
            await spool.append(Batch("src", counters(i * 3, 3)))
        got = await read(reader, 12)
        assert [b.seq for b in got] == [1, 2, 3, 4]
        await reader.ack(4)
        # closing without a flush still commits the appends and the cursor
    assert rows(path, "SELECT seq FROM cursors WHERE sink = 'sink'") == [(4,)]
    async with opened(path) as spool:
        reader = spool.reader("sink")
        late = spool.reader("late")  # a sink new in this run only sees new data
        await spool.flush()
        assert reader.pending_samples() == 18
        got = await read(reader)
        assert [b.seq for b in got] == list(range(5, 11))
        assert values(got) == list(range(12, 30))
        await reader.ack(10)
        assert await nothing_ready(spool, late)
    async with opened(path) as spool:  # every row acked by the only sink: GC at close emptied the spool
        assert spool.stats().batches == 0
        reader = spool.reader("sink")
        await spool.append(Batch("src", counters(100, 1)))
        got = await read(reader)
        assert [b.seq for b in got] == [11]


async def test_unregistered_sink_resumes_from_its_stored_cursor(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db") as spool:
        keep = spool.reader("keep")
        gone = spool.reader("gone")
        for i in range(4):
            await spool.append(Batch("src", counters(i, 1)))
        await gone.ack((await read(gone, 2))[-1].seq)
        spool.unregister("gone")
        with pytest.raises(SpoolClosedError):
            await read(gone)
        again = spool.reader("gone")
        await spool.flush()
        assert again.pending_samples() == 2
        assert [b.seq for b in await read(again)] == [3, 4]
        assert keep.pending_samples() == 4


async def test_flush_close_and_closed_errors(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", SpoolConfig(), Metrics())
    with pytest.raises(SpoolClosedError):
        spool.reader("x")
    await spool.open()
    spool.reader("sink")
    await spool.append(Batch("src", counters(0, 4)))
    await spool.append(Batch("src", []))  # empty batches are not spooled
    await spool.flush()
    assert spool.stats().last_seq == 1 and spool.stats().samples == 4
    await spool.close()
    await spool.close()  # idempotent
    with pytest.raises(SpoolClosedError):
        await spool.append(Batch("src", counters(0, 1)))
    assert rows(tmp_path / "s.db", "SELECT seq, n FROM batches") == [(1, 4)]


async def test_sqlite_runs_on_the_spools_own_thread(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db", SpoolConfig(synchronous="full")) as spool:
        name = await spool._call(lambda conn: threading.current_thread().name)
        assert name.startswith("spool") and name != threading.current_thread().name
        assert await spool._call(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 2
        assert await spool._call(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"


async def test_commit_interval_groups_appends_and_readers_see_only_committed(tmp_path: Path) -> None:
    metrics = Metrics()
    async with opened(tmp_path / "s.db", SpoolConfig(commit_interval=30.0), metrics) as spool:
        reader = spool.reader("sink")
        await spool.flush()
        for i in range(5):
            await spool.append(Batch("src", counters(i, 1)))
        task = asyncio.create_task(reader.next(100))
        for _ in range(50):
            await asyncio.sleep(0)
        assert not task.done()  # appended but not committed: invisible to sinks
        assert spool.stats().last_seq == 0 and spool.stats().uncommitted == 5
        await spool.flush()  # a flush does not wait out the interval
        got = await asyncio.wait_for(task, 5)
        assert [b.seq for b in got] == [1, 2, 3, 4, 5]
        count = metrics.registry.get_sample_value("edgegw_spool_commit_seconds_count") or 0.0
        assert count == 2  # the reader's cursor, then all five batches in one commit
        assert metrics.registry.get_sample_value("edgegw_spool_appended_samples_total") == 5


async def test_append_awaits_only_past_the_uncommitted_bound(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db", SpoolConfig(memory_batches=16, commit_interval=30.0)) as spool:
        for i in range(16):
            coro = spool.append(Batch("src", counters(i, 1)))
            with pytest.raises(StopIteration):
                coro.send(None)  # completed without suspending
        blocked = asyncio.create_task(spool.append(Batch("src", counters(16, 1))))
        await asyncio.wait_for(blocked, 5)  # the bound forces a commit instead of waiting 30 s
        assert spool.stats().last_seq >= 16
        for i in range(17, 100):
            await spool.append(Batch("src", counters(i, 1)))
            assert spool.stats().uncommitted <= 16


# -- bounds --------------------------------------------------------------------------------------


def payload_size(n: int) -> int:
    return len(encode(counters(0, n)))


async def test_drop_oldest_drops_and_counts_exactly(tmp_path: Path) -> None:
    metrics = Metrics()
    size = payload_size(10)
    config = SpoolConfig(max_size=5 * size, overflow="drop_oldest")
    async with opened(tmp_path / "s.db", config, metrics) as spool:
        spool.gc_interval = 1e9
        reader = spool.reader("sink")
        for _ in range(8):
            await spool.append(Batch("src", counters(0, 10)))  # same values: same payload size
            await spool.flush()
        assert dropped(metrics, "overflow") == 30
        st = spool.stats()
        assert (st.batches, st.bytes, st.dropped["overflow"]) == (5, 5 * size, 30)
        assert reader.pending_samples() == 50
        assert [b.seq for b in await read(reader)] == [4, 5, 6, 7, 8]
        await reader.ack(8)
        # Rows every reader acked go uncounted when overflow deletes them.
        for _ in range(5):
            await spool.append(Batch("src", counters(0, 10)))
            await spool.flush()
        assert dropped(metrics, "overflow") == 30
        assert rows(tmp_path / "s.db", "SELECT min(seq), max(seq) FROM batches") == [(9, 13)]


async def test_drop_newest_refuses_and_counts(tmp_path: Path) -> None:
    metrics = Metrics()
    config = SpoolConfig(max_size=3 * payload_size(10), overflow="drop_newest")
    async with opened(tmp_path / "s.db", config, metrics) as spool:
        reader = spool.reader("sink")
        for i in range(5):
            await spool.append(Batch("src", counters(i * 10, 10)))
        await spool.flush()
        assert dropped(metrics, "overflow") == 20
        assert spool.stats().batches == 3
        got = await read(reader)
        assert [b.seq for b in got] == [1, 2, 3]
        assert values(got) == list(range(30))
        await reader.ack(3)
        spool.gc_interval = 0.0
        await poll(lambda: spool.stats().batches == 0)  # once collected there is room again
        await spool.append(Batch("src", counters(50, 10)))
        assert [b.seq for b in await read(reader)] == [6]  # refused seqs are never reused


async def test_age_eviction_within_a_run(tmp_path: Path) -> None:
    metrics = Metrics()
    async with opened(tmp_path / "s.db", SpoolConfig(max_age=0.3), metrics) as spool:
        reader = spool.reader("sink")
        for i in range(3):
            await spool.append(Batch("src", counters(i * 4, 4)))
        await spool.flush()
        assert reader.pending_samples() == 12
        await poll(lambda: spool.stats().batches == 0)
        assert dropped(metrics, "age") == 12
        assert reader.pending_samples() == 0
        await spool.append(Batch("src", counters(100, 1)))
        got = await read(reader)
        assert [(b.seq, values([b])) for b in got] == [(4, [100])]


async def test_age_of_rows_from_a_previous_run_comes_from_wall_time_when_sane(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with opened(path) as spool:
        spool.reader("sink")
        for i in range(6):
            await spool.append(Batch("src", counters(i, 1)))
    hour = 3600 * 10**9
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE batches SET created_ns = ? WHERE seq <= 3", (time.time_ns() - 2 * hour,))
        db.execute("UPDATE batches SET created_ns = ? WHERE seq > 3", (time.time_ns() + 5 * hour,))
    db.close()
    metrics = Metrics()
    async with opened(path, SpoolConfig(max_age=3600), metrics) as spool:
        reader = spool.reader("sink")
        await poll(lambda: spool.stats().batches == 3)  # two hours old: gone; "future" rows: fresh
        assert dropped(metrics, "age") == 3
        assert [b.seq for b in await read(reader)] == [4, 5, 6]
        assert reader.oldest_pending_age() < 60  # the future-dated rows count as written at open


async def test_gc_deletes_rows_every_reader_acked_and_only_those(tmp_path: Path) -> None:
    metrics = Metrics()
    async with opened(tmp_path / "s.db", metrics=metrics) as spool:
        spool.gc_interval = 0.05
        fast = spool.reader("fast")
        slow = spool.reader("slow")
        for i in range(6):
            await spool.append(Batch("src", counters(i, 1)))
        await fast.ack((await read(fast))[-1].seq)
        await slow.ack((await read(slow, 2))[-1].seq)
        await poll(lambda: spool.stats().batches == 4)
        assert rows(tmp_path / "s.db", "SELECT min(seq) FROM batches") == [(3,)]
        await slow.ack((await read(slow))[-1].seq)
        await poll(lambda: spool.stats().batches == 0)
        assert rows(tmp_path / "s.db", "SELECT count(*) FROM batches") == [(0,)]
        assert sum(spool.stats().dropped.values()) == 0
        assert metrics.registry.get_sample_value("edgegw_spool_batches") == 0


async def test_filtered_reader_does_not_hold_back_gc_of_other_sources(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db") as spool:
        spool.gc_interval = 0.05
        everything = spool.reader("everything")
        ovens = spool.reader("ovens", ["oven_*"])
        for i in range(5):
            await spool.append(Batch("press", counters(i, 1)))
        await everything.ack((await read(everything))[-1].seq)
        await poll(lambda: spool.stats().batches == 0)
        assert ovens.pending_samples() == 0


async def test_reader_that_never_acks_blocks_neither_appends_nor_others(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db", SpoolConfig(memory_batches=16)) as spool:
        stuck = spool.reader("stuck")
        live = spool.reader("live")
        received: list[Any] = []

        async def deliver() -> None:
            while len(received) < 500:
                got = await live.next(50)
                received.extend(values(got))
                await live.ack(got[-1].seq)

        task = asyncio.create_task(deliver())
        for i in range(100):  # far more batches than the in-memory tail holds
            await asyncio.wait_for(spool.append(Batch("src", counters(i * 5, 5))), 5)
        await asyncio.wait_for(task, 10)
        assert received == list(range(500))
        assert stuck.pending_samples() == 500 and live.pending_samples() == 0
        got = await read_samples(stuck, 500)  # the stuck one still has everything: from disk, then the tail
        assert values(got) == list(range(500))
        assert [b.seq for b in got] == list(range(1, 101))


async def test_sink_that_fails_keeps_its_data_and_gets_it_after_recovering(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db") as spool:
        reader = spool.reader("flaky")
        delivered: list[Any] = []
        attempts = 0

        async def run_sink() -> None:
            nonlocal attempts
            while len(delivered) < 60:
                got = await reader.next(7)
                attempts += 1
                if attempts % 3:  # two of three writes fail: the uplink is down
                    reader.rewind()
                    continue
                delivered.extend(values(got))
                await reader.ack(got[-1].seq)

        task = asyncio.create_task(run_sink())
        for i in range(20):
            await spool.append(Batch("src", counters(i * 3, 3)))
            await asyncio.sleep(0)
        await asyncio.wait_for(task, 10)
        assert delivered == list(range(60))  # nothing lost, nothing twice, in order
        assert reader.pending_samples() == 0


async def test_pending_age_is_monotonic_and_zero_when_caught_up(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db") as spool:
        reader = spool.reader("sink")
        t0 = time.monotonic()
        await spool.append(Batch("src", counters(0, 2)))
        await spool.flush()
        await poll(lambda: reader.oldest_pending_age() > 0.02)
        assert reader.oldest_pending_age() <= time.monotonic() - t0
        await reader.ack((await read(reader))[-1].seq)
        assert reader.oldest_pending_age() == 0.0


async def test_dead_letters_are_stored(tmp_path: Path) -> None:
    async with opened(tmp_path / "s.db") as spool:
        reader = spool.reader("sink")
        await spool.append(Batch("src", counters(0, 3)))
        bad = await read(reader)
        await spool.dead_letter("sink", bad, "HTTP 400: field type conflict")
        got = rows(tmp_path / "s.db", "SELECT sink, seq, source, error, payload FROM dead_letters")
        assert [r[:4] for r in got] == [("sink", 1, "src", "HTTP 400: field type conflict")]
        assert decode(got[0][4], 3) == counters(0, 3)


async def test_damaged_row_is_skipped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with opened(path) as spool:
        spool.reader("sink")
        for i in range(3):
            await spool.append(Batch("src", counters(i * 2, 2)))
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE batches SET payload = x'00ff' WHERE seq = 2")
    db.close()
    metrics = Metrics()
    async with opened(path, metrics=metrics) as spool:
        reader = spool.reader("sink")
        got = await read(reader)
        assert [b.seq for b in got] == [1, 3]
        assert errors(metrics, "corrupt") == 1 and dropped(metrics, "corrupt") == 2
        await reader.ack(3)
        assert reader.pending_samples() == 0


async def test_damaged_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    path.write_bytes(b"this is not a database" * 200)
    async with opened(path) as spool:
        spool.reader("sink")
        await spool.append(Batch("src", counters(0, 1)))
    assert rows(path, "SELECT seq FROM batches") == [(1,)]
    assert damaged_copies(tmp_path) == 1


def damaged_copies(directory: Path) -> int:
    return len(list(directory.glob("s.db.damaged-*")))


# -- disk full -----------------------------------------------------------------------------------


def big(i: int) -> list[Sample]:
    # Unique strings so the payload is ~12 KiB and takes pages of its own.
    return [Sample("m1", f"tag_{i}_{j}_" + "x" * 40, float(i * 1000 + j)) for j in range(200)]


async def fill_disk(spool: Spool, pages: int) -> None:
    def limit(conn: sqlite3.Connection) -> None:
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {count + pages}")

    await spool._call(limit)


async def test_disk_full_drops_oldest_counts_and_keeps_appending(tmp_path: Path) -> None:
    metrics = Metrics()
    async with opened(tmp_path / "s.db", SpoolConfig(overflow="drop_oldest"), metrics) as spool:
        spool.gc_interval = 1e9
        reader = spool.reader("sink")
        await spool.flush()
        await fill_disk(spool, 40)
        for i in range(1, 41):
            await spool.append(Batch("src", big(i)))
            await spool.flush()
            assert spool.stats().last_seq == i  # every append lands, the oldest make room
        assert errors(metrics, "disk_full") >= 1
        lost = dropped(metrics, "disk_full")
        st = spool.stats()
        assert lost > 0 and lost % 200 == 0
        assert st.samples + lost == 40 * 200  # every sample is either spooled or counted as dropped
        got = await read(reader, 10**6)
        assert [b.seq for b in got] == list(range(41 - st.batches, 41))
        assert got[-1].samples == big(40)


async def test_disk_full_drop_newest_refuses_counts_and_survives(tmp_path: Path) -> None:
    metrics = Metrics()
    async with opened(tmp_path / "s.db", SpoolConfig(overflow="drop_newest"), metrics) as spool:
        spool.gc_interval = 1e9
        reader = spool.reader("sink")
        await spool.flush()
        await fill_disk(spool, 40)
        for i in range(1, 41):
            await spool.append(Batch("src", big(i)))
            await spool.flush()
        st = spool.stats()
        assert 0 < st.batches < 40
        assert dropped(metrics, "disk_full") == (40 - st.batches) * 200
        got = await read(reader, 10**6)
        assert [b.seq for b in got] == list(range(1, st.batches + 1))  # the oldest are kept
        await reader.ack(got[-1].seq)  # cursor updates still commit on a full disk
        await spool.flush()
        assert await spool._call(lambda c: c.execute("SELECT seq FROM cursors").fetchall()) == [(st.batches,)]
