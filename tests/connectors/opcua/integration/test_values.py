"""OPC-UA source against the simulator (asyncua server, in-process, real sockets): values of every common
type, quality and timestamps, server-side absolute deadband, addressing forms, bad nodes, polling."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import WriteError
from gateway.metrics import Metrics
from gateway.model import Quality
from tests.connectors.opcua.support import running, simulator
from tests.waiting import until as wait_until

NS = "urn:test:plant"

TYPED: list[tuple[str, str, Any]] = [
    ("Boolean", "b", True),
    ("SByte", "i8", -100),
    ("Byte", "u8", 200),
    ("Int16", "i16", -30000),
    ("UInt16", "u16", 60000),
    ("Int32", "i32", -2_000_000_000),
    ("UInt32", "u32", 4_000_000_000),
    ("Int64", "i64", -(2**62)),
    ("UInt64", "u64", 2**63 + 5),
    ("Float", "f32", 1.5),
    ("Double", "f64", 3.141592653589793),
]


def sim_cfg(**extra: Any) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [
        {"name": name, "type": t, "signal": "constant", "value": v} for t, name, v in TYPED
    ]
    variables += [
        {"name": "text", "type": "String", "signal": "text", "text": "hello"},
        {"name": "clock", "type": "DateTime", "signal": "clock"},
        {"name": "temp", "type": "Double", "unit": "degC", "signal": "constant", "value": 20.0},
        {"name": "setpoint", "type": "Float", "signal": "constant", "value": 5.0, "writable": True},
        {"name": "small", "type": "Int16", "signal": "constant", "value": 1, "writable": True},
        {"name": "fixed", "type": "Double", "signal": "constant", "value": 1.0},
    ]
    return {"namespace": NS, "update_interval": "100ms",
            "devices": {"m1": {"path": ["Line1"], "variables": variables}}, **extra}


def dev(url: str, tags: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"devices": {"m1": {"endpoint": url, "publishing_interval": "50ms", "sampling_interval": 0,
                               "tags": tags, **extra}}}


async def test_every_common_type_arrives_with_value_quality_and_timestamps(data_dir: Path) -> None:
    async with simulator(sim_cfg()) as sim:
        tags = [{"name": n, "node": f"nsu={NS};s=m1.{n}"} for _, n, _ in TYPED]
        tags += [{"name": "text", "node": f"nsu={NS};s=m1.text"}, {"name": "clock", "node": "ns=2;s=m1.clock"}]
        before = time.time_ns()
        async with running(dev(sim.url, tags), data_dir) as r:
            await wait_until(lambda: all(r.of(t["name"]) for t in tags), what="one sample per tag")
            for _, name, value in TYPED:
                s = r.of(name)[0]
                assert s.value == value and type(s.value) is type(value), (name, s.value)
                assert s.quality is Quality.GOOD and s.status == 0
                assert before - 5e9 < s.source_ts <= s.gateway_ts + 1e9
            assert r.of("text")[0].value == "hello"
            clock = r.of("clock")[0]
            parsed = datetime.fromisoformat(str(clock.value))
            assert parsed.tzinfo is not None and abs(parsed.timestamp() - time.time()) < 10
            # the source timestamp is the server's (taken before the notification reached us), not ours
            assert all(s.source_ts < s.gateway_ts for s in r.samples if s.tag != "clock")


async def test_source_or_server_timestamp_as_sample_time(data_dir: Path) -> None:
    async with simulator(sim_cfg()) as sim:
        tags = [{"name": "f64", "node": f"nsu={NS};s=m1.f64"}]
        async with running(dev(sim.url, tags, timestamp="server"), data_dir) as r:
            await wait_until(lambda: r.of("f64"))
            s = r.of("f64")[0]
            assert s.source_ts > 0 and s.source_ts <= s.gateway_ts
        async with running(dev(sim.url, tags, timestamp="gateway"), data_dir) as r:
            await wait_until(lambda: r.of("f64"))
            s = r.of("f64")[0]
            assert s.source_ts == s.gateway_ts
            assert s.server_ts == 0  # not asked for
        # the server timestamp beside the source timestamp, for one tag only
        both = [{"name": "f64", "node": f"nsu={NS};s=m1.f64", "server_timestamp": True},
                {"name": "i16", "node": f"nsu={NS};s=m1.i16"}]
        async with running(dev(sim.url, both), data_dir) as r:
            await wait_until(lambda: r.of("f64") and r.of("i16"))
            s, other = r.of("f64")[0], r.of("i16")[0]
            assert 0 < s.server_ts <= s.gateway_ts and s.gateway_ts - s.server_ts < 5 * 10**9
            assert s.source_ts > 0 and other.server_ts == 0


async def test_absolute_deadband_suppresses_small_changes(data_dir: Path) -> None:
    async with simulator(sim_cfg()) as sim:
        tags = [{"name": "temp", "node": f"nsu={NS};s=m1.temp", "server_deadband": 1.0},
                {"name": "plain", "node": f"nsu={NS};s=m1.fixed"}]
        async with running(dev(sim.url, tags), data_dir) as r:
            await wait_until(lambda: r.of("temp") and r.of("plain"))
            for v in (20.2, 20.4, 20.6, 25.0):  # each step is below 1.0 except the last
                await sim.set_value("m1", "temp", v)
            await sim.set_value("m1", "fixed", 7.0)  # a marker on an unfiltered tag, after the steps
            await wait_until(lambda: r.last("plain") is not None and r.last("plain").value == 7.0)  # type: ignore[union-attr]
            await wait_until(lambda: r.last("temp").value == 25.0)  # type: ignore[union-attr]
            assert [s.value for s in r.of("temp")] == [20.0, 25.0]


async def test_nsu_and_browse_path_resolve_and_one_bad_node_does_not_break_others(data_dir: Path) -> None:
    metrics = Metrics()
    async with simulator(sim_cfg()) as sim:
        tags = [
            {"name": "by_uri", "node": f"nsu={NS};s=m1.temp"},
            {"name": "by_path", "node": "/Objects/2:Line1/2:m1/2:temp"},
            {"name": "missing", "node": f"nsu={NS};s=m1.nope"},
            {"name": "bad_path", "node": "/Objects/2:Line1/2:nope"},
            {"name": "bad_ns", "node": "nsu=urn:not:there;s=x"},
        ]
        async with running(dev(sim.url, tags), data_dir, metrics) as r:
            await wait_until(lambda: all(r.of(t["name"]) for t in tags))
            assert r.of("by_uri")[0].value == r.of("by_path")[0].value == 20.0
            for name in ("missing", "bad_path", "bad_ns"):
                s = r.of(name)[0]
                assert s.quality is Quality.BAD and s.value is None and s.status & 0x80000000, name
            assert r.of("missing")[0].status == 0x80340000  # BadNodeIdUnknown, kept raw
            await sim.set_value("m1", "temp", 30.0)
            await wait_until(lambda: r.last("by_uri").value == 30.0)  # type: ignore[union-attr]
        errors = metrics.registry.get_sample_value(
            "edgegw_device_errors_total", {"source": "plant", "device": "m1", "code": "BadNodeIdUnknown"})
        assert errors is not None and errors >= 1
        reads = metrics.registry.get_sample_value("edgegw_device_reads_total", {"source": "plant", "device": "m1"})
        assert reads is not None and reads >= 2


async def test_polling_reads_in_batches_within_max_nodes_per_read(data_dir: Path) -> None:
    variables = [{"name": f"v{i}", "type": "Int32", "signal": "constant", "value": i} for i in range(25)]
    cfg = {"namespace": NS, "limits": {"max_nodes_per_read": 10}, "devices": {"m1": {"variables": variables}}}
    async with simulator(cfg) as sim:
        tags = [{"name": f"v{i}", "node": f"nsu={NS};s=m1.v{i}"} for i in range(25)]
        async with running(dev(sim.url, tags, mode="poll", poll_interval="100ms"), data_dir) as r:
            await wait_until(lambda: len(r.samples) >= 50)
            assert {s.tag: s.value for s in r.samples} == {f"v{i}": i for i in range(25)}
        assert sim.stats.read_calls and max(sim.stats.read_calls) <= 10
        assert sim.stats.read_calls.count(10) >= 4  # 25 nodes -> 10 + 10 + 5 per poll


async def test_writes_use_the_nodes_own_data_type_and_only_writable_tags(data_dir: Path) -> None:
    async with simulator(sim_cfg()) as sim:
        tags = [{"name": "setpoint", "node": f"nsu={NS};s=m1.setpoint", "writable": True},
                {"name": "small", "node": f"nsu={NS};s=m1.small", "writable": True},
                {"name": "temp", "node": f"nsu={NS};s=m1.temp"}]
        async with running(dev(sim.url, tags), data_dir) as r:
            await wait_until(lambda: r.source.devices["m1"].session is not None and r.of("setpoint"))
            await r.source.write("m1", "setpoint", 7)  # a Python int into a Float node: no BadTypeMismatch
            assert await sim.read_value("m1", "setpoint") == 7.0
            await r.source.write("m1", "small", 12)
            assert await sim.read_value("m1", "small") == 12
            await wait_until(lambda: r.last("setpoint").value == 7.0)  # type: ignore[union-attr]
            with pytest.raises(WriteError, match="not writable"):
                await r.source.write("m1", "temp", 1.0)
            with pytest.raises(WriteError, match="outside Int16"):
                await r.source.write("m1", "small", 40000)
            with pytest.raises(WriteError, match="no tag"):
                await r.source.write("m1", "nope", 1)


async def test_queue_overflow_is_counted(data_dir: Path) -> None:
    variables = [{"name": f"v{i}", "type": "Double", "signal": "ramp", "start": 0, "end": 100, "period": 1}
                 for i in range(20)]
    cfg = {"namespace": NS, "update_interval": "50ms", "devices": {"m1": {"variables": variables}}}
    async with simulator(cfg) as sim:
        tags = [{"name": f"v{i}", "node": f"nsu={NS};s=m1.v{i}"} for i in range(20)]
        source_cfg = {**dev(sim.url, tags), "queue_max": 10}
        from connectors.opcua.config import OpcUaSourceConfig
        from connectors.opcua.source import OpcUaSource

        src = OpcUaSource("plant", OpcUaSourceConfig.model_validate(source_cfg), data_dir=str(data_dir))
        import asyncio

        blocked = asyncio.Event()

        async def stuck_emit(batch: object) -> None:
            await blocked.wait()  # a pipeline that never takes anything

        task = asyncio.create_task(src.run(stuck_emit))
        try:
            await wait_until(lambda: src.dropped > 0, timeout=15)
            assert src._queue.qsize() == 10
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def test_removed_node_turns_bad_and_the_others_keep_flowing(data_dir: Path) -> None:
    async with simulator(sim_cfg()) as sim:
        tags = [{"name": "temp", "node": f"nsu={NS};s=m1.temp"}, {"name": "f64", "node": f"nsu={NS};s=m1.f64"}]
        async with running(dev(sim.url, tags, mode="poll", poll_interval="100ms"), data_dir) as r:
            await wait_until(lambda: r.of("temp") and r.of("f64"))
            await sim.apply("remove_node", ["m1", "temp"])  # the simulator's node-removed fault
            await wait_until(lambda: r.last("temp").quality is Quality.BAD)  # type: ignore[union-attr]
            assert r.last("temp").status == 0x80340000  # type: ignore[union-attr]  # BadNodeIdUnknown
            mark = len(r.samples)
            await wait_until(lambda: any(s.tag == "f64" and s.quality is Quality.GOOD for s in r.samples[mark:]))
            assert r.source.devices["m1"].sessions_opened == 1  # a bad node is not a broken link
