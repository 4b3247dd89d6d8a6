"""Failures stay local: exception responses, silent units, dead servers, dropped connections."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
import yaml

from connectors.modbus.config import ModbusSourceConfig
from connectors.modbus.source import ModbusSource
from gateway.live import LiveTags
from gateway.metrics import Metrics
from gateway.model import Batch, Quality, Sample
from gateway.status import StatusBoard
from gateway.status_codes import BAD_TIMEOUT as STATUS_TIMEOUT
from simulators.modbus.config import SimFault, SimulatorConfig
from simulators.modbus.process import start_subprocess
from simulators.modbus.server import running_simulator
from tests.servers import free_port


class Recorder:
    def __init__(self) -> None:
        self.batches: list[tuple[float, Batch]] = []
        self.changed = asyncio.Event()

    async def emit(self, batch: Batch) -> None:
        self.batches.append((time.monotonic(), batch))
        self.changed.set()

    def samples(self, device: str | None = None) -> list[Sample]:
        return [s for _, b in self.batches for s in b.samples if device is None or s.device == device]

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not pred():
            left = deadline - time.monotonic()
            assert left > 0, "condition not met before the deadline"
            self.changed.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), left)


@asynccontextmanager
async def running(source: ModbusSource, rec: Recorder) -> AsyncIterator[None]:
    task = asyncio.create_task(source.run(rec.emit))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def source_cfg(port: int, devices: dict[str, Any], **kw: Any) -> ModbusSourceConfig:
    return ModbusSourceConfig.model_validate({"host": "127.0.0.1", "port": port, "interval": "100ms",
                                              "timeout": "300ms", "reconnect_initial": "50ms",
                                              "reconnect_max": "200ms", "devices": devices, **kw})


def sim_tag(name: str, address: int, value: float = 1.0, dtype: str = "int16") -> dict[str, Any]:
    return {"name": name, "address": address, "type": dtype, "signal": "constant", "value": value}


def gw_tag(name: str, address: int, dtype: str = "int16") -> dict[str, Any]:
    return {"name": name, "address": address, "type": dtype}



def exported(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, {"source": "m", **labels})
    assert value is not None, (name, labels)
    return value

async def test_exception_marks_only_the_failing_register_bad_and_keeps_the_link() -> None:
    port = free_port()
    sim = SimulatorConfig.model_validate({"devices": {"plc": {"unit": 1, "tags": [
        sim_tag("a", 0, 11), sim_tag("b", 1, 12), sim_tag("c", 200, 13), sim_tag("d", 201, 14)],
        "faults": [{"table": "holding", "address": 200, "exception": 2}]}}})
    metrics = Metrics()
    cfg = source_cfg(port, {"plc": {"unit": 1, "tags": [gw_tag(n, a) for n, a in
                                                         (("a", 0), ("b", 1), ("c", 200), ("d", 201))]}})
    rec = Recorder()
    source = ModbusSource("m", cfg, metrics=metrics)
    async with running_simulator(sim, port=port) as server, running(source, rec):
        await rec.wait_for(lambda: len(rec.batches) >= 3)
        last = {s.tag: s for s in rec.samples()}  # each tag's latest sample
        assert (last["a"].value, last["a"].quality, last["b"].value) == (11, Quality.GOOD, 12)
        # c and d share one read; only c's register answers exception 2: the read is narrowed down to it
        assert (last["c"].quality, last["c"].status, last["d"].quality, last["d"].value) == (
            Quality.BAD, 2, Quality.GOOD, 14)
        assert source.splits == 1
        # the link stayed up: same server connection throughout, device counted as connected
        assert len(server.server.active_connections) == 1
        plc = source.health.devices["plc"]
        assert plc.connected is True and plc.errors["IllegalDataAddress"] >= 3
        # the metrics are a view of the source's own account
        assert exported(metrics, "edgegw_device_connected", device="plc") == 1
        assert exported(metrics, "edgegw_device_errors_total", device="plc", code="IllegalDataAddress") >= 3
        assert metrics.device_reads.labels("m", "plc")._value.get() >= 3
        # the fault is lifted: the block comes back GOOD without a reconnect
        server.set_faults("plc", [])
        n = len(rec.batches)
        await rec.wait_for(lambda: len(rec.batches) > n + 1)
        last = {s.tag: s for s in rec.samples()}
        assert (last["c"].value, last["d"].value, last["c"].quality) == (13, 14, Quality.GOOD)


async def test_silent_unit_costs_one_timeout_per_tick_and_never_drops_the_link() -> None:
    port = free_port()
    sim = SimulatorConfig.model_validate({"devices": {
        "good": {"unit": 1, "tags": [sim_tag("x", 0, 5)]},
        "dead": {"unit": 2, "tags": [sim_tag("y", 0), sim_tag("z", 300)], "faults": [{"no_response": True}]},
    }})
    metrics = Metrics()
    # the dead unit has three reads per tick (three far-apart blocks); only the first may cost a timeout
    cfg = source_cfg(port, {
        "dead": {"unit": 2, "tags": [gw_tag("y", 0), gw_tag("z", 300), gw_tag("w", 600)]},
        "good": {"unit": 1, "tags": [gw_tag("x", 0)]},
    }, timeout="500ms")
    rec = Recorder()
    source = ModbusSource("m", cfg, metrics=metrics)
    async with running_simulator(sim, port=port) as server, running(source, rec):
        await rec.wait_for(lambda: len([s for s in rec.samples("good") if s.quality == Quality.GOOD]) >= 8)
        assert len(server.server.active_connections) == 1  # pymodbus did not close the link
    good_times = [t for t, b in rec.batches if b.samples[0].device == "good"]
    gaps = [b - a for a, b in itertools.pairwise(good_times)]
    assert max(gaps) < 1.0, gaps  # one 0.5 s timeout + the 0.1 s interval (+ slack); three would be >= 1.5 s
    dead = rec.samples("dead")
    assert {s.status for s in dead} == {STATUS_TIMEOUT} and all(s.quality == Quality.BAD for s in dead)
    assert all(s.value == 5 for s in rec.samples("good"))
    dead_health, good_health = source.health.devices["dead"], source.health.devices["good"]
    assert (dead_health.connected, dead_health.reason) == (False, "not answering (BadTimeout)")
    assert good_health.connected is True and good_health.last_good_ns > 0
    assert dead_health.errors["BadTimeout"] >= 8 and dead_health.last_good_ns == 0
    assert exported(metrics, "edgegw_device_connected", device="dead") == 0
    assert exported(metrics, "edgegw_device_connected", device="good") == 1
    assert exported(metrics, "edgegw_device_errors_total", device="dead", code="BadTimeout") >= 8


async def test_silent_device_does_not_delay_another_connection() -> None:
    port = free_port()
    sim = SimulatorConfig.model_validate({"devices": {
        "good": {"unit": 1, "tags": [sim_tag("x", 0, 5)]},
        "dead": {"unit": 2, "tags": [sim_tag("y", 0)], "faults": [{"no_response": True}]},
    }})
    slow = source_cfg(port, {"dead": {"unit": 2, "tags": [gw_tag("y", 0)]}}, timeout="1s")
    fast = source_cfg(port, {"good": {"unit": 1, "tags": [gw_tag("x", 0)]}}, interval="50ms")
    rec_dead, rec_good = Recorder(), Recorder()
    async with running_simulator(sim, port=port), running(ModbusSource("a", slow), rec_dead), \
            running(ModbusSource("b", fast), rec_good):
        await rec_good.wait_for(lambda: len(rec_good.batches) >= 30)
    times = [t for t, _ in rec_good.batches]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < 0.6, gaps  # 50 ms interval; the other link's 1 s timeouts never show up here
    assert all(s.quality == Quality.GOOD and s.value == 5 for s in rec_good.samples())


async def test_dropped_connection_is_reconnected() -> None:
    port = free_port()
    sim = SimulatorConfig.model_validate({"devices": {"plc": {"unit": 1, "tags": [sim_tag("a", 0, 3)]}}})
    rec = Recorder()
    source = ModbusSource("m", source_cfg(port, {"plc": {"unit": 1, "tags": [gw_tag("a", 0)]}}))
    async with running_simulator(sim, port=port) as server, running(source, rec):
        await rec.wait_for(lambda: len(rec.samples()) >= 2)
        server.set_faults("plc", [SimFault(drop_connection=True)])
        await rec.wait_for(lambda: any(s.quality == Quality.BAD for s in rec.samples()))
        server.set_faults("plc", [])
        n = len(rec.samples())
        await rec.wait_for(lambda: any(s.quality == Quality.GOOD for s in rec.samples()[n:]))
        assert rec.samples()[-1].value == 3


@pytest.mark.timeout(60)
async def test_server_restart_resumes_without_restarting_the_source(tmp_path: Path) -> None:
    port = free_port()
    desc = tmp_path / "sim.yaml"
    desc.write_text(yaml.safe_dump({"devices": {"plc": {"unit": 1, "tags": [
        {"name": "f", "address": 0, "type": "float32", "signal": "constant", "value": 2.5}]}}}))
    rec = Recorder()
    source = ModbusSource("m", source_cfg(port, {"plc": {"unit": 1, "tags": [gw_tag("f", 0, "float32")]}}))
    proc = start_subprocess(desc, port=port)
    try:
        async with running(source, rec):
            await rec.wait_for(lambda: any(s.quality == Quality.GOOD for s in rec.samples()), timeout=20)
            proc.terminate()
            proc.wait(10)
            await rec.wait_for(lambda: rec.samples()[-1].quality == Quality.BAD)
            n = len(rec.samples())
            proc = start_subprocess(desc, port=port)
            await rec.wait_for(lambda: any(s.quality == Quality.GOOD for s in rec.samples()[n:]), timeout=20)
            assert rec.samples()[-1].value == 2.5
    finally:
        proc.terminate()
        proc.wait(10)


async def test_slow_response_times_out_and_the_late_frame_does_not_corrupt_later_reads() -> None:
    port = free_port()
    sim = SimulatorConfig.model_validate({"devices": {"plc": {"unit": 1, "tags": [
        sim_tag("a", 0, 21), sim_tag("b", 100, 22)]}}})
    metrics = Metrics()
    rec = Recorder()
    cfg = source_cfg(port, {"plc": {"unit": 1, "tags": [gw_tag("a", 0), gw_tag("b", 100)]}}, max_gap=0)
    source = ModbusSource("m", cfg, metrics=metrics)
    async with running_simulator(sim, port=port) as server, running(source, rec):
        await rec.wait_for(lambda: len(rec.samples()) >= 2)
        server.set_faults("plc", [SimFault(table="holding", address=0, delay=0.5)])  # timeout is 300 ms
        await rec.wait_for(lambda: any(s.status == STATUS_TIMEOUT for s in rec.samples()))
        server.set_faults("plc", [])
        n = len(rec.samples())
        await rec.wait_for(lambda: len([s for s in rec.samples()[n:] if s.quality == Quality.GOOD]) >= 6)
    # whatever the late answers did to the stream, no value ever landed on the wrong tag
    for s in rec.samples():
        if s.quality == Quality.GOOD:
            assert s.value == {"a": 21, "b": 22}[s.tag]
    assert source.health.devices["plc"].errors["BadTimeout"] >= 1


async def test_the_status_board_tells_slow_replies_and_a_silent_unit_from_a_dropped_link() -> None:
    port = free_port()
    sim = SimulatorConfig.model_validate({"devices": {
        "slow": {"unit": 1, "tags": [sim_tag("x", 0, 5)], "faults": [{"delay": "250ms"}]},
        "dead": {"unit": 2, "tags": [sim_tag("y", 0)], "faults": [{"no_response": True}]},
        "fine": {"unit": 3, "tags": [sim_tag("z", 0, 7)]},
    }})
    cfg = source_cfg(port, {"slow": {"unit": 1, "tags": [gw_tag("x", 0)]},
                            "dead": {"unit": 2, "tags": [gw_tag("y", 0)]},
                            "fine": {"unit": 3, "tags": [gw_tag("z", 0)]}},
                     timeout="600ms", slow_after="150ms", interval="200ms")
    metrics = Metrics()
    live = LiveTags(0)
    board = StatusBoard(lambda: {"m": ["dead", "fine", "slow"]}, list, live, metrics, device_grace=0.0)
    rec = Recorder()
    source = ModbusSource("m", cfg, metrics=metrics)

    async def emit(batch: Batch) -> None:
        live.record("m", batch.samples)
        await rec.emit(batch)

    async with running_simulator(sim, port=port):
        task = asyncio.create_task(source.run(emit))
        try:
            await rec.wait_for(lambda: {s.device for s in rec.samples()} == {"slow", "dead", "fine"}
                               and len(rec.samples("slow")) >= 2)
            rows = {d["device"]: d for d in board.devices()}
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert rows["slow"]["state"] == "slow" and rows["slow"]["reason"].startswith("replies take 0.2")
    assert 240 <= rows["slow"]["reply_ms"] < 600
    assert (rows["dead"]["state"], rows["dead"]["reason"]) == ("timeout", "not answering (BadTimeout)")
    assert rows["dead"]["errors_recent"]["BadTimeout"] >= 1
    assert rows["fine"]["state"] == "ok" and rows["fine"]["reply_ms"] < 150
    assert source.health.devices["fine"].link is True  # one connection, up: the dead unit is not a link problem
