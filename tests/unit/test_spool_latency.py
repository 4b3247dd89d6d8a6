"""The spool's part in latency: a small append is committed (and seen by a waiting reader) at once; an
acknowledged cursor rides along with the next commit instead of costing a commit of its own; the stage
timings of the commit and of the hand-off."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from gateway.metrics import Metrics
from gateway.model import Batch
from tests.unit.test_spool import counters, opened, read, rows
from tests.waiting import until


def commits(metrics: Metrics) -> float:
    return metrics.registry.get_sample_value("edgegw_spool_commit_seconds_count") or 0.0


def stage_count(metrics: Metrics, stage: str) -> float:
    return metrics.registry.get_sample_value("edgegw_stage_seconds_count", {"stage": stage}) or 0.0


async def test_a_small_append_reaches_a_waiting_reader_within_a_commit(tmp_path: Path) -> None:
    metrics = Metrics()
    async with opened(tmp_path / "s.db", metrics=metrics) as spool:
        reader = spool.reader("sink")
        await spool.flush()
        waiting = asyncio.create_task(read(reader))
        t0 = time.monotonic()
        await spool.append(Batch("src", counters(0, 3)))
        got = await waiting
        took = time.monotonic() - t0
        assert [s.value for b in got for s in b.samples] == [0, 1, 2]
        assert took < 0.5, took  # one WAL commit (about a millisecond), no interval, no timer
        assert stage_count(metrics, "emit_commit") == 1  # once per commit, not per sample
        assert spool.tail.committed_at(got[0].seq) is not None


async def test_an_ack_rides_along_with_the_next_commit_of_appends(tmp_path: Path) -> None:
    metrics = Metrics()
    path = tmp_path / "s.db"
    async with opened(path, metrics=metrics) as spool:
        spool.cursor_delay = 60.0
        reader = spool.reader("sink")
        await spool.append(Batch("src", counters(0, 2)))
        first = await read(reader)
        before = commits(metrics)
        await reader.ack(first[-1].seq)
        for _ in range(50):
            await asyncio.sleep(0)
        assert commits(metrics) == before  # an ack alone does not cost a commit at once...
        assert rows(path, "SELECT seq FROM cursors WHERE sink = 'sink'") == [(0,)]
        await spool.append(Batch("src", counters(2, 2)))
        second = await read(reader)  # ...it goes with the next appends
        assert [s.value for b in second for s in b.samples] == [2, 3]
        assert commits(metrics) == before + 1
        assert rows(path, "SELECT seq FROM cursors WHERE sink = 'sink'") == [(first[-1].seq,)]


async def test_an_ack_alone_is_committed_after_the_cursor_delay_or_by_a_flush(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with opened(path) as spool:
        spool.cursor_delay = 0.2
        reader = spool.reader("sink")
        await spool.append(Batch("src", counters(0, 2)))
        got = await read(reader)
        await reader.ack(got[-1].seq)
        await until(lambda: rows(path, "SELECT seq FROM cursors WHERE sink = 'sink'") == [(got[-1].seq,)],
                    timeout=5, what="the cursor committed on its own")
        spool.cursor_delay = 60.0
        await spool.append(Batch("src", counters(2, 1)))
        more = await read(reader)
        await reader.ack(more[-1].seq)
        await asyncio.wait_for(spool.flush(), 5)  # a flush does not wait out the delay
        assert rows(path, "SELECT seq FROM cursors WHERE sink = 'sink'") == [(more[-1].seq,)]
