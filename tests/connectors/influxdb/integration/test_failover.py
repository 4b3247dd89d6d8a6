"""The InfluxDB sink's write endpoints (``urls``): against fake InfluxDB servers on real sockets (which status
moves a request to the next endpoint and which does not), and a gateway writing to two real VictoriaMetrics,
the first stopped mid-run, losing nothing."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import structlog.testing

from bench.servers import Server
from bench.servers import victoria_metrics as vm_server
from connectors.influxdb.config import InfluxSinkConfig
from connectors.influxdb.sink import InfluxSink
from gateway.errors import RetryableSinkError
from gateway.health import UplinkState
from gateway.logs import get_logger
from gateway.model import Batch
from gateway.runtime import Runtime
from tests.connectors.influxdb.integration.test_sink import SITE, Rejections, Reply, error, fake_influx, ok, samples
from tests.gateways import StartGateway
from tests.servers import free_port
from tests.waiting import until


def make_sink(urls: list[str], rejections: Rejections | None = None, **cfg: object) -> InfluxSink:
    config = InfluxSinkConfig.model_validate({"urls": urls, "token": "t", "org": "o", "bucket": "b", **cfg})
    return InfluxSink("tsdb", config, SITE, dead_letters=rejections or Rejections(), log=get_logger("test"))


@pytest.mark.timeout(30)
async def test_a_refused_connection_or_a_5xx_moves_writes_to_the_next_endpoint() -> None:
    replies: dict[str, Reply] = {"a": ok([]), "b": ok([])}
    dead = f"http://127.0.0.1:{free_port()}"
    with structlog.testing.capture_logs() as logs, fake_influx(lambda _: replies["a"]) as a, \
            fake_influx(lambda _: replies["b"]) as b:
        sink = make_sink([dead, a.url, b.url])
        assert sink.uplink() == UplinkState(dead, None, 3, 0)
        await sink.open()
        await sink.write([Batch("plc", samples())])  # the dead one is passed over at once
        assert sink.uplink() == UplinkState(a.url, None, 3, 0)  # a first write moves nothing
        replies["a"] = error(503, "overloaded")
        await sink.write([Batch("plc", samples(ts=2_000_000_000_000_000_000))])
        assert sink.uplink() == UplinkState(b.url, None, 3, 1)
        await sink.write([Batch("plc", samples(ts=2_000_000_001_000_000_000))])  # stays on b
        replies["a"], replies["b"] = ok([]), error(500, "disk full")
        # b fails, the dead one is tried again and refuses, a takes it: around the list in one write
        await sink.write([Batch("plc", samples(ts=2_000_000_002_000_000_000))])
        assert sink.uplink() == UplinkState(a.url, None, 3, 2)
        await sink.close()
    assert len(a.accepted_lines()) == 2 and len(b.accepted_lines()) == 2
    moved = [e for e in logs if e["event"] == "InfluxDB endpoint failed; trying the next"]
    assert [e["url"] for e in moved] == [dead, a.url, b.url, dead]
    assert all(e["log_level"] == "warning" for e in moved)


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("status", "dead_lettered"), [(401, False), (400, True), (404, False), (429, False)])
async def test_what_every_endpoint_would_answer_alike_does_not_move(status: int, dead_lettered: bool) -> None:
    rejections = Rejections()
    with fake_influx(lambda _: error(status, "no")) as a, fake_influx(ok) as b:
        sink = make_sink([a.url, b.url], rejections)
        await sink.open()
        if dead_lettered:  # a point the store refuses for good goes to the dead letters, not to b
            await sink.write([Batch("plc", samples())])
        else:
            with pytest.raises(RetryableSinkError):
                await sink.write([Batch("plc", samples())])
        assert sink.uplink().endpoint == a.url
        await sink.close()
    assert b.requests == [] and bool(rejections.got) is dead_lettered


@pytest.mark.timeout(30)
async def test_every_endpoint_failing_is_retryable_after_one_round() -> None:
    asked: list[str] = []

    def busy(name: str) -> Reply:
        asked.append(name)
        return error(503, "busy", {"Retry-After": "3"})

    with fake_influx(lambda _: busy("a")) as a, fake_influx(lambda _: busy("b")) as b:
        sink = make_sink([a.url, b.url])
        await sink.open()
        with pytest.raises(RetryableSinkError) as err:
            await sink.write([Batch("plc", samples())])
        await sink.close()
    assert asked == ["a", "b"] and err.value.retry_after == 3.0  # each once; the delivery loop backs off


def export(port: int) -> set[tuple[str, int, float]]:
    """(series, ms, value) of every point of the test's measurement in the VictoriaMetrics on ``port``."""
    base = f"http://127.0.0.1:{port}"
    urllib.request.urlopen(f"{base}/internal/force_flush", timeout=5).read()
    q = urllib.parse.urlencode({"match[]": '{__name__=~"fo_.*"}'})
    out = set()
    for line in urllib.request.urlopen(f"{base}/api/v1/export?{q}", timeout=10).read().splitlines():
        row = json.loads(line)
        name = row["metric"]["__name__"]
        out.update((name, ts, v) for ts, v in zip(row["timestamps"], row["values"], strict=True))
    return out


def committed(db: Path, before_ns: int) -> set[tuple[str, int, float]]:
    con = sqlite3.connect(db)
    try:
        return {(f"fo_{tag}", ts // 1_000_000, float(v)) for tag, ts, v in con.execute(
            "SELECT s.tag, p.ts_ns, p.value FROM points p JOIN series s ON s.id = p.series_id WHERE p.ts_ns < ?",
            (before_ns,))}
    finally:
        con.close()


@pytest.mark.timeout(90)
async def test_first_victoria_metrics_stopped_mid_run_loses_nothing(tmp_path: Path, gateway: StartGateway) -> None:
    for d in ("vm1", "vm2"):
        (tmp_path / d).mkdir()
    vm1, vm2 = vm_server(tmp_path / "vm1"), vm_server(tmp_path / "vm2")
    servers: list[Server] = [vm1, vm2]
    try:
        for s in servers:
            await asyncio.to_thread(s.start)
        runtime: Runtime = await gateway({
            "data_dir": str(tmp_path / "data"), "http": {"enabled": False},
            "sources": {"line": {"type": "synthetic", "interval": "20ms", "devices": {"m1": {"tags": [
                {"name": f"c{i}", "signal": "counter"} for i in range(10)]}}}},
            "sinks": {
                "store": {"type": "sqlite"},  # the record of what the spool committed
                "tsdb": {"type": "influxdb", "urls": [f"http://127.0.0.1:{vm1.port}", f"http://127.0.0.1:{vm2.port}"],
                         "measurement": "fo", "timeout": "2s", "retry_max": "1s"},
            },
        })
        sink, loop = runtime.sinks["tsdb"], runtime.deliveries["tsdb"]
        await until(lambda: loop.delivered > 1000, 15, "writing to the first")
        await asyncio.to_thread(vm1.stop)
        t_stop = time.monotonic()
        before = loop.delivered
        await until(lambda: loop.delivered > before, 15, "writing to the second")
        moved_after = time.monotonic() - t_stop
        await until(lambda: loop.delivered > before + 500, 15, "a second of writes to the second")
        t_cut = time.time_ns()
        store = runtime.deliveries["store"]
        await until(lambda: time.time_ns() > t_cut + 1_500_000_000 and loop.reader is not None
                    and store.reader is not None and loop.reader.oldest_pending_age() < 0.5
                    and store.reader.oldest_pending_age() < 0.5, 20, "both sinks drained")
        uplink = sink.uplink()  # type: ignore[attr-defined]
        expected = await asyncio.to_thread(committed, tmp_path / "data" / "store.db", t_cut)
        await asyncio.to_thread(vm1.start)  # its data dir holds what it took before it stopped
        first = await asyncio.to_thread(export, vm1.port)
        second = await asyncio.to_thread(export, vm2.port)
    finally:
        for s in servers:
            await asyncio.to_thread(s.stop)
    assert len(expected) > 1000
    print(f"{len(expected)} samples committed: {len(first)} written to the first, {len(second)} to the second; "
          f"writes went on {moved_after:.2f} s after the first stopped")
    assert first and second
    missing = expected - first - second
    assert not missing, f"{len(missing)} of {len(expected)} committed samples in neither store: {sorted(missing)[:5]}"
    assert uplink == UplinkState(f"http://127.0.0.1:{vm2.port}", None, 2, 1)
    assert moved_after < 10, moved_after
