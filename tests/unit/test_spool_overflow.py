"""Spool overflow is decided per sink: a full spool never refuses what a healthy sink can still take."""

from __future__ import annotations

import random
from pathlib import Path

import structlog

from gateway.config.site import SpoolConfig
from gateway.metrics import Metrics
from gateway.model import Batch
from gateway.spool import Spool, SpoolReader
from tests.unit.test_spool import (
    counters,
    dropped,
    nothing_ready,
    opened,
    payload_size,
    read,
    rows,
    values,
)
from tests.waiting import until as poll


def sink_dropped(metrics: Metrics, sink: str, reason: str = "overflow") -> float:
    return metrics.registry.get_sample_value(
        "edgegw_sink_dropped_samples_total", {"sink": sink, "reason": reason}) or 0.0


async def deliver_all(reader: SpoolReader) -> list[int]:
    """Read and ack everything the reader has now (the healthy sink)."""
    got: list[int] = []
    while reader.pending_samples():
        batches = await read(reader)
        got += values(batches)
        await reader.ack(batches[-1].seq)
    return got


async def test_drop_newest_stops_only_the_full_sink(tmp_path: Path) -> None:
    metrics = Metrics()
    size = payload_size(10)
    config = SpoolConfig(max_size=3 * size, overflow="drop_newest")
    async with opened(tmp_path / "s.db", config, metrics) as spool:
        spool.gc_interval = 0.0
        local = spool.reader("local")
        uplink = spool.reader("uplink")  # its uplink is down: it never reads
        delivered: list[int] = []
        for _ in range(10):
            await spool.append(Batch("src", counters(0, 10)))  # equal payloads: exact size arithmetic
            await spool.flush()
            delivered += await deliver_all(local)
        # The local store got every sample; the uplink keeps its oldest three batches and skips the rest.
        assert len(delivered) == 100
        assert spool.stats().dropped["overflow"] == 70
        assert sink_dropped(metrics, "uplink") == 70
        assert sink_dropped(metrics, "local") == 0
        assert dropped(metrics, "overflow") == 70
        assert uplink.pending_samples() == 30
        assert spool.dropped_by_sink() == {"uplink": {"overflow": 70}}
        # What only the uplink skipped and the local store delivered is collected: the file stays bounded.
        await poll(lambda: spool.stats().batches == 3)
        assert spool.stats().bytes == 3 * size
        # The uplink comes back: its three batches, then (once it has room again) new data, never the gap.
        got = await read(uplink)
        assert [b.seq for b in got] == [1, 2, 3]
        await uplink.ack(3)
        assert await nothing_ready(spool, uplink)
        await spool.append(Batch("src", counters(0, 10)))
        await spool.flush()
        assert [b.seq for b in await read(uplink)] == [11]
        assert uplink.pending_samples() == 10
        assert [b.seq for b in await read(local)] == [11]


async def test_drop_newest_refuses_only_when_every_interested_sink_is_full(tmp_path: Path) -> None:
    metrics = Metrics()
    size = payload_size(10)
    config = SpoolConfig(max_size=2 * size, overflow="drop_newest")
    async with opened(tmp_path / "s.db", config, metrics) as spool:
        a = spool.reader("a")
        spool.reader("b")
        other = spool.reader("other", ["elsewhere"])  # healthy, but wants none of this source
        for _ in range(5):
            await spool.append(Batch("src", counters(0, 10)))
            await spool.flush()
        assert spool.stats().batches == 2
        assert (sink_dropped(metrics, "a"), sink_dropped(metrics, "b")) == (30, 30)
        assert sink_dropped(metrics, "other") == 0
        assert dropped(metrics, "overflow") == 30  # the samples lost, counted once
        assert [bt.seq for bt in await read(a)] == [1, 2]
        assert other.pending_samples() == 0


async def test_drop_newest_gaps_survive_a_restart(tmp_path: Path) -> None:
    size = payload_size(10)
    config = SpoolConfig(max_size=2 * size, overflow="drop_newest")
    async with opened(tmp_path / "s.db", config) as spool:
        local = spool.reader("local")
        spool.reader("uplink")
        for i in range(6):
            await spool.append(Batch("src", counters(0, 10)))
            await spool.flush()
            if i < 4:
                await deliver_all(local)
        # The local store has not taken the last two batches: they stay stored, though the uplink skipped them.
        assert rows(tmp_path / "s.db", "SELECT sink, lo, hi FROM gaps") == [("uplink", 3, 6)]
    async with opened(tmp_path / "s.db", config) as spool:
        assert spool.stats().batches == 4
        uplink = spool.reader("uplink")
        local = spool.reader("local")
        await spool.flush()  # the restarted readers count their backlog with the next commit
        assert (uplink.pending_samples(), local.pending_samples()) == (20, 20)
        assert [b.seq for b in await read(uplink)] == [1, 2]
        await uplink.ack(2)
        assert await nothing_ready(spool, uplink)
        assert [b.seq for b in await read(local)] == [5, 6]
        await spool.append(Batch("src", counters(0, 10)))
        assert [b.seq for b in await read(uplink)] == [7]


async def test_drop_oldest_drops_only_from_the_laggards_view(tmp_path: Path) -> None:
    metrics = Metrics()
    size = payload_size(10)
    config = SpoolConfig(max_size=3 * size, overflow="drop_oldest")
    async with opened(tmp_path / "s.db", config, metrics) as spool:
        local = spool.reader("local")
        uplink = spool.reader("uplink")
        delivered: list[int] = []
        for _ in range(8):
            await spool.append(Batch("src", counters(0, 10)))
            await spool.flush()
            delivered += await deliver_all(local)
        assert len(delivered) == 80
        assert (sink_dropped(metrics, "uplink"), sink_dropped(metrics, "local")) == (50, 0)
        assert [b.seq for b in await read(uplink)] == [6, 7, 8]


async def test_logged_drops_add_up_to_the_metric(tmp_path: Path) -> None:
    metrics = Metrics()
    size = payload_size(10)
    config = SpoolConfig(max_size=2 * size, overflow="drop_newest")
    with structlog.testing.capture_logs() as logs:
        async with opened(tmp_path / "s.db", config, metrics) as spool:
            local = spool.reader("local")
            spool.reader("uplink")
            for _ in range(30):
                await spool.append(Batch("src", counters(0, 10)))
                await spool.flush()
                await deliver_all(local)
    lines = [e for e in logs if e["event"] == "spool dropped data"]
    assert lines, "no drop was logged"
    logged = sum(e["samples"].get("uplink", {}).get("overflow", 0) for e in lines)
    assert logged == sink_dropped(metrics, "uplink") == 280
    assert lines[-1]["total"] == {"uplink": {"overflow": 280}}


async def test_random_workload_accounts_for_every_sample_per_sink(tmp_path: Path) -> None:
    """Model check: for every sink, delivered + dropped + pending = appended for its sources, each sink
    sees its samples in order and never twice, across drop_newest/drop_oldest, slow sinks and restarts."""
    rng = random.Random(1234)
    for overflow in ("drop_newest", "drop_oldest"):
        path = tmp_path / f"{overflow}.db"
        size = payload_size(10)
        config = SpoolConfig(max_size=6 * size, overflow=overflow)
        sinks = {"all": ["*"], "a": ["a"], "slow": ["*"]}
        appended = dict.fromkeys(sinks, 0)
        delivered: dict[str, list[int]] = {k: [] for k in sinks}
        drops = dict.fromkeys(sinks, 0)
        counter = 0
        for _run in range(3):
            metrics = Metrics()
            spool = Spool(path, config, metrics)
            await spool.open()
            spool.gc_interval = 0.0
            readers = {k: spool.reader(k, v) for k, v in sinks.items()}
            for _ in range(120):
                source = rng.choice("ab")
                await spool.append(Batch(source, counters(counter, 10)))
                counter += 10
                for k, pats in sinks.items():
                    if "*" in pats or source in pats:
                        appended[k] += 10
                await spool.flush()
                for k, r in readers.items():
                    if rng.random() < (0.15 if k == "slow" else 0.7) and r.pending_samples():
                        batches = await read(r, rng.choice([10, 30, 1000]))
                        delivered[k] += values(batches)
                        await r.ack(batches[-1].seq)
            await spool.flush()
            for k in sinks:
                drops[k] += int(sink_dropped(metrics, k))
                assert delivered[k] == sorted(set(delivered[k])), f"{k}: out of order or twice"
                assert len(delivered[k]) + drops[k] + readers[k].pending_samples() == appended[k], (overflow, k)
            await spool.close()
        assert drops["slow"] > 0  # the workload really overflowed for the slow sink
